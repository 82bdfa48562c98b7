"""`SELECT * FROM lineitem` into Python: ADBC Flight SQL into a
pyarrow.Table (median of RUNS after a warm-up) and psycopg 3 over pg wire
(one run). Prints one JSON object.

usage: scan.py FLIGHT_URI PG_PORT PASSWORD SQL RUNS"""

import json
import statistics
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg


def main():
    uri, port, password, sql, runs = sys.argv[1:6]
    runs = int(runs)
    result = {}
    with flight_sql.connect(uri, db_kwargs={"username": "loch", "password": password}) as conn:
        times, rows = [], 0
        for i in range(runs + 1):
            start = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute(sql)
                table = cur.fetch_arrow_table()
            elapsed = time.perf_counter() - start
            rows = table.num_rows
            del table
            if i > 0:
                times.append(elapsed)
        result["adbc"] = {"rows": rows, "rows_per_s": rows / statistics.median(times)}
        print(f"adbc: {rows} rows, {result['adbc']['rows_per_s'] / 1e6:.2f} M rows/s", file=sys.stderr)
    conninfo = f"host=127.0.0.1 port={port} user=loch dbname=loch"
    with psycopg.connect(conninfo, password=password, autocommit=True) as conn:
        start = time.perf_counter()
        rows = 0
        with conn.cursor() as cur:
            cur.execute(sql)
            while batch := cur.fetchmany(100_000):
                rows += len(batch)
        elapsed = time.perf_counter() - start
        result["psycopg"] = {"rows": rows, "rows_per_s": rows / elapsed}
        print(f"psycopg: {rows} rows, {result['psycopg']['rows_per_s'] / 1e6:.2f} M rows/s", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
