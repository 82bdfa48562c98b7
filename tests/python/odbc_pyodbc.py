"""psqlODBC (the PostgreSQL Unicode driver of Debian's odbc-postgresql)
through pyodbc, in autocommit mode as Power BI and Excel use it. Prints
one JSON line per check; the Rust test compares them with the oracle.

usage: odbc_pyodbc.py PORT (password from PGPASSWORD)"""

import json
import os
import sys

import pyodbc

from tpch_psycopg import cell


def emit(check, **seen):
    print(json.dumps({"check": check, **seen}), flush=True)


def main():
    port = int(sys.argv[1])
    connection = (
        "DRIVER={PostgreSQL Unicode};SERVER=127.0.0.1;"
        f"PORT={port};DATABASE=loch;UID=loch;PWD={os.environ['PGPASSWORD']}"
    )
    conn = pyodbc.connect(connection, autocommit=True)
    cur = conn.cursor()
    cur.execute("select n_regionkey, count(*) from tpch.nation group by 1 order by 1")
    emit("query", rows=[[cell(v) for v in row] for row in cur.fetchall()])
    cur.execute("select n_name from tpch.nation where n_nationkey = ?", 3)
    emit("parameter", rows=[[cell(v) for v in row] for row in cur.fetchall()])
    try:
        cur.execute("select 1 / 0")
        cur.fetchall()
        emit("error", sqlstate=None)
    except pyodbc.Error as e:
        emit("error", sqlstate=e.args[0])
    cur.execute("select 40 + 2")
    emit("after_error", rows=[[cell(v) for v in row] for row in cur.fetchall()])
    tables = sorted(t.table_name for t in cur.tables(schema="tpch", tableType="TABLE"))
    emit("tables", names=tables)
    columns = [c.column_name for c in cur.columns(table="lineitem", schema="tpch")]
    emit("columns", names=columns)
    conn.close()


if __name__ == "__main__":
    main()
