"""psycopg 3 with parameters: the default cursor sends parameters in text
format and reads text results; a binary cursor reads binary results. Prints
one JSON line per mode with the rows (cells as in tpch_psycopg.py) and the
literal SQL the Rust test runs on its oracle."""

import json
import sys

import psycopg

from tpch_psycopg import cell

SQL = (
    "select l_orderkey, l_linenumber, l_quantity, l_extendedprice, l_shipdate, "
    "l_returnflag, l_comment from tpch.lineitem "
    "where l_orderkey = %s and l_linenumber <= %s and l_shipmode <> %s "
    "order by l_linenumber"
)
ORACLE = (
    "select l_orderkey, l_linenumber, l_quantity, l_extendedprice, l_shipdate, "
    "l_returnflag, l_comment from lineitem "
    "where l_orderkey = 3 and l_linenumber <= 5 and l_shipmode <> 'XXX' "
    "order by l_linenumber"
)


def main():
    port = int(sys.argv[1])
    conninfo = f"host=127.0.0.1 port={port} user=loch dbname=loch"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for mode, binary in (("text", False), ("binary", True)):
            with conn.cursor(binary=binary) as cur:
                cur.execute(SQL, (3, 5, "XXX"))
                rows = [[cell(v) for v in row] for row in cur.fetchall()]
            print(json.dumps({"mode": mode, "oracle_sql": ORACLE, "rows": rows}), flush=True)


if __name__ == "__main__":
    main()
