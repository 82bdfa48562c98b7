"""The reference for Loch's CREATE TABLE AS into Delta: the `deltalake`
package (delta-rs' Python binding) writing the same Parquet files as a new
Delta table, from pyarrow. Times the read (Parquet into a pyarrow.Table) and
the Delta write apart, RUNS times into fresh directories; prints one JSON
object with the medians.

usage: delta_write.py PARQUET_DIR OUT_DIR RUNS"""

import glob
import json
import os
import shutil
import statistics
import sys
import time

import pyarrow.dataset as ds
from deltalake import write_deltalake


def main():
    source, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reads, writes, rows = [], [], 0
    for i in range(runs + 1):
        target = os.path.join(out, f"run-{i}")
        shutil.rmtree(target, ignore_errors=True)
        start = time.perf_counter()
        table = ds.dataset(sorted(glob.glob(f"{source}/*.parquet"))).to_table()
        read = time.perf_counter() - start
        start = time.perf_counter()
        write_deltalake(target, table, mode="error")
        write = time.perf_counter() - start
        rows = table.num_rows
        del table
        shutil.rmtree(target, ignore_errors=True)
        if i > 0:
            reads.append(read)
            writes.append(write)
    print(json.dumps({
        "rows": rows,
        "read_s": statistics.median(reads),
        "write_s": statistics.median(writes),
    }))


if __name__ == "__main__":
    main()
