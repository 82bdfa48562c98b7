"""Runs the 22 TPC-H queries through the ADBC Flight SQL driver against a
running Loch and writes each result, as the driver returned it, to
OUT_DIR/q<n>.arrow (Arrow IPC file) for the Rust test to compare with its
oracle. Sets search_path once: the session must keep it across calls.

usage: tpch_adbc.py URI USER PASSWORD QUERIES_DIR OUT_DIR"""

import json
import pathlib
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa


def main():
    uri, user, password = sys.argv[1:4]
    queries, out = pathlib.Path(sys.argv[4]), pathlib.Path(sys.argv[5])
    with flight_sql.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
        with conn.cursor() as cur:
            cur.execute("SET search_path = tpch")
            for n in range(1, 23):
                cur.execute((queries / f"q{n}.sql").read_text())
                table = cur.fetch_arrow_table()
                with pa.OSFile(str(out / f"q{n}.arrow"), "wb") as sink:
                    with pa.ipc.new_file(sink, table.schema) as writer:
                        writer.write_table(table)
                print(json.dumps({"q": n, "rows": table.num_rows}), flush=True)


if __name__ == "__main__":
    main()
