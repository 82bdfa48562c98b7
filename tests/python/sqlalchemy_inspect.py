"""SQLAlchemy 2 (the layer under Superset, pandas' read_sql and many
notebooks) over psycopg 3 against Loch: the dialect's connect-time checks,
the inspector calls Superset makes when it adds a table, and pandas.
Prints one JSON line per check; the Rust test compares them with the oracle.

usage: sqlalchemy_inspect.py PORT (password from PGPASSWORD)"""

import json
import os
import sys
import urllib.parse

import pandas
import sqlalchemy

from tpch_psycopg import cell


def emit(check, **seen):
    print(json.dumps({"check": check, **seen}), flush=True)


def main():
    port = int(sys.argv[1])
    password = urllib.parse.quote(os.environ["PGPASSWORD"], safe="")
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://loch:{password}@127.0.0.1:{port}/loch")
    inspector = sqlalchemy.inspect(engine)
    emit("server_version", version=list(engine.dialect.server_version_info))
    emit("schemas", names=inspector.get_schema_names())
    emit("tables", names=sorted(inspector.get_table_names(schema="tpch")))
    emit("views", names=inspector.get_view_names(schema="tpch"))
    emit(
        "columns",
        columns=[
            [c["name"], str(c["type"]), c["nullable"]]
            for c in inspector.get_columns("lineitem", schema="tpch")
        ],
    )
    emit("pk", constrained=inspector.get_pk_constraint("lineitem", schema="tpch")["constrained_columns"])
    emit("foreign_keys", count=len(inspector.get_foreign_keys("lineitem", schema="tpch")))
    emit("indexes", count=len(inspector.get_indexes("lineitem", schema="tpch")))
    emit("has_table", found=inspector.has_table("lineitem", schema="tpch"))

    frame = pandas.read_sql(
        "select n_regionkey, count(*) as nations from tpch.nation group by 1 order by 1", engine
    )
    emit("read_sql", rows=[[cell(v) for v in row] for row in frame.itertuples(index=False)])
    frame = pandas.read_sql_table("nation", engine, schema="tpch")
    emit(
        "read_sql_table",
        columns=list(frame.columns),
        rows=[[cell(v) for v in row] for row in frame.itertuples(index=False)],
    )


if __name__ == "__main__":
    main()
