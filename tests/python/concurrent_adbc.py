"""B1's Flight SQL side: CLIENTS ADBC Flight SQL connections at once, each
running its share of SQL statements (one per line of the file SQL_FILE,
client i taking lines i, i + CLIENTS, ...) and writing each result as the
driver returned it to OUT_DIR/<line>.arrow for the Rust test to compare
with its oracle. Every other client turns the result cache off.

Prints one JSON line per statement: {"line": n, "rows": r} or
{"line": n, "error": "..."}.

usage: concurrent_adbc.py URI USER PASSWORD SQL_FILE OUT_DIR CLIENTS"""

import json
import pathlib
import sys
import threading

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa


def client(i, clients, uri, user, password, statements, out, results):
    try:
        with flight_sql.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
            with conn.cursor() as cur:
                cur.execute("SET search_path = tpch")
                if i % 2 == 1:
                    cur.execute("SET use_cached_result = off")
                for n in range(i, len(statements), clients):
                    try:
                        cur.execute(statements[n])
                        table = cur.fetch_arrow_table()
                        with pa.OSFile(str(out / f"{n}.arrow"), "wb") as sink:
                            with pa.ipc.new_file(sink, table.schema) as writer:
                                writer.write_table(table)
                        results.append({"line": n, "rows": table.num_rows})
                    except Exception as e:  # noqa: BLE001 - reported to the test
                        results.append({"line": n, "error": str(e)})
    except Exception as e:  # noqa: BLE001
        results.append({"client": i, "error": str(e)})


def main():
    uri, user, password = sys.argv[1:4]
    statements = [
        line for line in pathlib.Path(sys.argv[4]).read_text().split("\n") if line.strip()
    ]
    out, clients = pathlib.Path(sys.argv[5]), int(sys.argv[6])
    results = []
    threads = [
        threading.Thread(
            target=client, args=(i, clients, uri, user, password, statements, out, results)
        )
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
