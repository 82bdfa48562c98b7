"""`SELECT * FROM lineitem` into Python: ADBC Flight SQL into a
pyarrow.Table from Loch and from a reference Flight server that does no
work per query (flight_reference.py: the ceiling of this client on this
machine), median of RUNS after a warm-up each, from Loch both from direct
endpoints and through the coordinator (running the query each time), and
repeated from the result cache; then psycopg 3 over pg wire (one run). Prints one JSON object.
With SCAN_ONLY=adbc in the environment, only the direct-endpoint ADBC scan.

usage: scan.py FLIGHT_URI PG_PORT PASSWORD SQL RUNS [LINEITEM_DIR]"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pyarrow as pa


def adbc_scan(uri, db_kwargs, sql, runs, prepare=True, setup=()):
    """Rows and rows/s of `sql` into a pyarrow.Table, in a session that first
    ran `setup`. `prepare=False` skips the DB-API's prepared statement (the
    reference server has none): the same DoGet path, one round trip less."""
    times, rows = [], 0
    with flight_sql.connect(uri, db_kwargs=db_kwargs) as conn:
        for statement in setup:
            with conn.cursor() as cur:
                cur.execute(statement)
        for i in range(runs + 1):
            start = time.perf_counter()
            with conn.cursor() as cur:
                if prepare:
                    cur.execute(sql)
                    table = cur.fetch_arrow_table()
                else:
                    cur.adbc_statement.set_sql_query(sql)
                    handle, _ = cur.adbc_statement.execute_query()
                    table = pa.RecordBatchReader._import_from_c(handle.address).read_all()
            elapsed = time.perf_counter() - start
            rows = table.num_rows
            del table
            if i > 0:
                times.append(elapsed)
    return {"rows": rows, "rows_per_s": rows / statistics.median(times)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_scan(lineitem_dir, sql, runs):
    port = free_port()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flight_reference.py")
    server = subprocess.Popen(
        [sys.executable, script, lineitem_dir, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the reference Flight server did not start")
        return adbc_scan(f"grpc://127.0.0.1:{port}", {}, sql, runs, prepare=False)
    finally:
        server.kill()
        server.wait()


def main():
    uri, port, password, sql, runs = sys.argv[1:6]
    lineitem_dir = sys.argv[6] if len(sys.argv) > 6 else None
    runs = int(runs)
    login = {"username": "loch", "password": password}
    # Running the query every time: the result cache off for the session.
    no_cache = "SET use_cached_result = false"
    result = {"adbc": adbc_scan(uri, login, sql, runs, setup=[no_cache])}
    print(f"adbc: {result['adbc']['rows_per_s'] / 1e6:.2f} M rows/s", file=sys.stderr)
    if os.environ.get("SCAN_ONLY") == "adbc":
        print(json.dumps(result))
        return
    # A distributed query's rows through the coordinator instead of from the
    # executors' direct endpoints (the same path with no executors).
    result["adbc_coordinator"] = adbc_scan(
        uri, login, sql, runs, setup=[no_cache, "SET loch.flight_endpoints = 'coordinator'"]
    )
    print(
        f"adbc through the coordinator: {result['adbc_coordinator']['rows_per_s'] / 1e6:.2f} M rows/s",
        file=sys.stderr,
    )
    # The same query repeated: the warm-up run keeps the result, the
    # measured runs are answered from the result cache.
    result["adbc_cached"] = adbc_scan(uri, login, sql, runs)
    print(
        f"adbc, repeated (result cache): {result['adbc_cached']['rows_per_s'] / 1e6:.2f} M rows/s",
        file=sys.stderr,
    )
    if lineitem_dir:
        result["adbc_reference"] = reference_scan(lineitem_dir, sql, runs)
        print(
            f"adbc from the no-work reference server: "
            f"{result['adbc_reference']['rows_per_s'] / 1e6:.2f} M rows/s",
            file=sys.stderr,
        )
    conninfo = f"host=127.0.0.1 port={port} user=loch dbname=loch"
    with psycopg.connect(conninfo, password=password, autocommit=True) as conn:
        start = time.perf_counter()
        rows = 0
        with conn.cursor() as cur:
            cur.execute(no_cache)
            cur.execute(sql)
            while batch := cur.fetchmany(100_000):
                rows += len(batch)
        elapsed = time.perf_counter() - start
        result["psycopg"] = {"rows": rows, "rows_per_s": rows / elapsed}
        print(f"psycopg: {result['psycopg']['rows_per_s'] / 1e6:.2f} M rows/s", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
