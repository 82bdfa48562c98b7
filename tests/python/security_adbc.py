"""Flight SQL as one user, through the ADBC driver: prints one JSON line per
check. The Rust test decides what each user should have seen.

usage: security_adbc.py URI USER PASSWORD SQL_JSON
SQL_JSON: a JSON list of statements to run; each answers rows or an error.
A statement with "$1" runs as a prepared statement with the parameter 1."""

import json
import os
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager

from tpch_psycopg import cell


def emit(check, **seen):
    print(json.dumps({"check": check, **seen}), flush=True)


def error_text(e):
    return f"{type(e).__name__}: {e}"


def main():
    uri, user, password, statements = sys.argv[1:5]
    statements = json.loads(statements)

    try:
        with flight_sql.connect(uri, db_kwargs={"username": user, "password": password + "x"}) as c:
            c.cursor().execute("select 1")
        emit("wrong_password", error="")
    except adbc_driver_manager.Error as e:
        emit("wrong_password", error=error_text(e))

    with flight_sql.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
        cur = conn.cursor()
        for sql in statements:
            try:
                if "$1" in sql:
                    cur.execute(sql, parameters=(1,))
                else:
                    cur.execute(sql)
                rows = [[cell(v) for v in row.values()] for row in cur.fetch_arrow_table().to_pylist()]
                emit("statement", sql=sql, rows=rows)
            except adbc_driver_manager.Error as e:
                emit("statement", sql=sql, error=error_text(e))

        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        listed = []
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                for table in schema["db_schema_tables"] or []:
                    listed.append(f'{schema["db_schema_name"]}.{table["table_name"]}')
        emit("get_objects", tables=sorted(listed))
    sys.stdout.flush()
    # The deltalake/pyarrow teardown can abort the interpreter at exit.
    os._exit(0)


if __name__ == "__main__":
    main()
