"""psqlODBC (the PostgreSQL Unicode driver of Debian's odbc-postgresql)
through pyodbc: in autocommit mode as Power BI and Excel use it, in manual
commit mode (the driver wraps each statement in a savepoint and rolls back
to it on error), and with UseDeclareFetch=1 (results read through
DECLARE … CURSOR / FETCH). Prints one JSON line per check; the Rust test
compares them with the oracle.

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
    columns = [
        [c.column_name, c.type_name, c.column_size, c.decimal_digits]
        for c in cur.columns(table="lineitem", schema="tpch")
    ]
    emit("columns", columns=columns)
    conn.close()

    # Manual commit: psqlODBC sends SAVEPOINT before each statement, and
    # ROLLBACK TO it when one fails, so the transaction goes on.
    conn = pyodbc.connect(connection, autocommit=False)
    cur = conn.cursor()
    try:
        cur.execute("select * from tpch.no_such_table")
        emit("manual_error", sqlstate=None)
    except pyodbc.Error as e:
        emit("manual_error", sqlstate=e.args[0])
    cur.execute("select count(*) from tpch.region")
    emit("manual_after_error", rows=[[cell(v) for v in row] for row in cur.fetchall()])
    conn.commit()
    conn.close()

    # Declare/fetch: each result through a cursor, 1000 rows per FETCH.
    for autocommit in (True, False):
        mode = "autocommit" if autocommit else "manual"
        conn = pyodbc.connect(connection + ";UseDeclareFetch=1;Fetch=1000", autocommit=autocommit)
        cur = conn.cursor()
        cur.execute("select o_orderkey, o_totalprice from tpch.orders order by 1")
        emit(f"declare_fetch_{mode}", rows=[[cell(v) for v in row] for row in cur.fetchall()])
        try:
            cur.execute("select 1 / 0")
            cur.fetchall()
            emit(f"declare_fetch_error_{mode}", sqlstate=None)
        except pyodbc.Error as e:
            emit(f"declare_fetch_error_{mode}", sqlstate=e.args[0])
        cur.execute("select n_name from tpch.nation where n_nationkey = ?", 3)
        emit(f"declare_fetch_after_{mode}", rows=[[cell(v) for v in row] for row in cur.fetchall()])
        if not autocommit:
            conn.commit()
        conn.close()


if __name__ == "__main__":
    main()
