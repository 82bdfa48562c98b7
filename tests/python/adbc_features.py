"""Exercises the ADBC Flight SQL driver against a running Loch and prints one
JSON line per check: {"check": name, ...what it saw}. The Rust test asserts
on them (and compares query answers with its oracle).

usage: adbc_features.py URI USER PASSWORD"""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager

from tpch_psycopg import cell


def emit(check, **seen):
    print(json.dumps({"check": check, **seen}), flush=True)


def rows_of(table):
    return [[cell(v) for v in row.values()] for row in table.to_pylist()]


def error_text(e):
    return f"{type(e).__name__}: {e}"


def main():
    uri, user, password = sys.argv[1:4]

    # A wrong password is refused at connect.
    try:
        with flight_sql.connect(uri, db_kwargs={"username": user, "password": password + "x"}) as c:
            c.cursor().execute("select 1")
        emit("wrong_password", refused=False, error="")
    except adbc_driver_manager.Error as e:
        emit("wrong_password", refused=True, error=error_text(e))

    with flight_sql.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
        cur = conn.cursor()

        # A prepared statement with parameters ($n, PostgreSQL style).
        sql = (
            "select l_orderkey, l_linenumber, l_quantity, l_extendedprice, l_shipdate, "
            "l_returnflag, l_comment from tpch.lineitem "
            "where l_orderkey = $1 and l_linenumber <= $2 and l_shipmode <> $3 "
            "order by l_linenumber"
        )
        cur.execute(sql, parameters=(3, 5, "XXX"))
        emit(
            "prepared",
            rows=rows_of(cur.fetch_arrow_table()),
            oracle_sql=sql.replace("tpch.", "").replace("$1", "3").replace("$2", "5").replace("$3", "'XXX'"),
        )
        # The same statement again with other values (re-bind).
        cur.execute(sql, parameters=(7, 2, "XXX"))
        emit(
            "prepared_again",
            rows=rows_of(cur.fetch_arrow_table()),
            oracle_sql=sql.replace("tpch.", "").replace("$1", "7").replace("$2", "2").replace("$3", "'XXX'"),
        )

        # Catalog listings.
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        listed = {}
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                for table in schema["db_schema_tables"] or []:
                    columns = [c["column_name"] for c in table["table_columns"] or []]
                    listed[f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}'] = {
                        "type": table["table_type"],
                        "columns": columns,
                    }
        emit("get_objects", tables=listed)
        schema = conn.adbc_get_table_schema("lineitem", catalog_filter="loch", db_schema_filter="tpch")
        emit("table_schema", fields=[[f.name, str(f.type)] for f in schema])
        emit("table_types", types=sorted(conn.adbc_get_table_types()))

        # A syntax error, then a good query on the same connection.
        try:
            cur.execute("selec 1")
            emit("syntax_error", failed=False, error="")
        except adbc_driver_manager.Error as e:
            emit("syntax_error", failed=True, error=error_text(e))
        cur.execute("select 40 + 2 as answer")
        emit("after_error", rows=rows_of(cur.fetch_arrow_table()))

        # An unknown table.
        try:
            cur.execute("select * from no_such_table")
            emit("unknown_table", failed=False, error="")
        except adbc_driver_manager.Error as e:
            emit("unknown_table", failed=True, error=error_text(e))

        # DDL and DML through execute, and execute_update's row count.
        cur.execute("create table adbc_t (id int, name varchar)")
        stmt = cur.adbc_statement
        stmt.set_sql_query("insert into adbc_t values (1, 'one'), (2, 'two'), (3, 'three')")
        inserted = stmt.execute_update()
        cur.execute("select id, name from adbc_t order by id")
        emit("ddl_dml", inserted=inserted, rows=rows_of(cur.fetch_arrow_table()))
        cur.execute("drop table adbc_t")

        # Session state lives across calls: search_path set once.
        cur.execute("SET search_path = tpch")
        cur.execute("select count(*) as n from nation")
        emit("search_path", rows=rows_of(cur.fetch_arrow_table()), oracle_sql="select count(*) as n from nation")
        cur.execute("SHOW search_path")
        emit("show", rows=rows_of(cur.fetch_arrow_table()))
        cur.close()


if __name__ == "__main__":
    main()
