"""Runs the 22 TPC-H queries through psycopg 3 against a running Loch and
prints each result as JSON lines, one per query: {"q": n, "rows": [...]}.
Each cell is [tag, value]: i int, d decimal (text), f float, s text, b bool;
null is JSON null. The Rust test compares them with its oracle."""

import datetime
import decimal
import json
import pathlib
import sys

import psycopg


def cell(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return ["b", v]
    if isinstance(v, int):
        return ["i", v]
    if isinstance(v, decimal.Decimal):
        return ["d", str(v)]
    if isinstance(v, float):
        return ["f", v]
    if isinstance(v, (datetime.date, datetime.datetime)):
        return ["s", v.isoformat(sep=" ") if isinstance(v, datetime.datetime) else v.isoformat()]
    return ["s", str(v)]


def main():
    port, queries = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    conninfo = f"host=127.0.0.1 port={port} user=loch dbname=loch options='-c search_path=tpch'"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for n in range(1, 23):
            sql = (queries / f"q{n}.sql").read_text()
            with conn.cursor() as cur:
                cur.execute(sql)
                rows = [[cell(v) for v in row] for row in cur.fetchall()]
            print(json.dumps({"q": n, "rows": rows}), flush=True)


if __name__ == "__main__":
    main()
