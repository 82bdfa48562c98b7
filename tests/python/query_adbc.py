"""Runs SQL statements in one ADBC Flight SQL session and writes the last
one's result, as the driver returned it, to OUT (Arrow IPC file) for the
Rust test to compare with its oracle. The driver reads every endpoint of
the FlightInfo, wherever its location points (executors, for direct
endpoints).

usage: query_adbc.py URI USER PASSWORD OUT SQL [SQL...]"""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa


def main():
    uri, user, password, out = sys.argv[1:5]
    statements = sys.argv[5:]
    with flight_sql.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
            table = cur.fetch_arrow_table()
    with pa.OSFile(out, "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    print(json.dumps({"check": "query", "rows": table.num_rows}), flush=True)


if __name__ == "__main__":
    main()
