"""The independent Delta writer/reader: the `deltalake` package (delta-rs'
Python binding, with its own Rust build). Modes:

  write PATH    creates a Delta table at PATH with 3 rows (id, name, amount)
  append PATH   appends 2 rows to it (a new table version)
  read PATH     prints the table's version and all rows, sorted by the
                first column

Prints one JSON line: {"version": n, "rows": [[...], ...]}.
"""

import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from tpch_psycopg import cell

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.float64()),
    ]
)


def rows_of(table):
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = [[cell(c[i]) for c in columns] for i in range(table.num_rows)]
    rows.sort(key=lambda r: r[0][1])
    return rows


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "write":
        data = pa.table(
            {"id": [1, 2, 3], "name": ["ada", "bob", None], "amount": [1.5, -2.25, 1e10]},
            schema=SCHEMA,
        )
        write_deltalake(path, data, mode="error")
    elif mode == "append":
        data = pa.table(
            {"id": [4, 5], "name": ["dan", "eve"], "amount": [0.0, None]},
            schema=SCHEMA,
        )
        write_deltalake(path, data, mode="append")
    elif mode != "read":
        raise SystemExit(f"unknown mode {mode}")
    table = DeltaTable(path)
    print(
        json.dumps(
            {"version": table.version(), "rows": rows_of(table.to_pyarrow_table())}
        )
    )


if __name__ == "__main__":
    main()
    # deltalake 1.6 (with pyarrow 26) aborts in its runtime's teardown at
    # interpreter exit ("terminate called without an active exception")
    # after the work is done and committed: leave without running it.
    sys.stdout.flush()
    os._exit(0)
