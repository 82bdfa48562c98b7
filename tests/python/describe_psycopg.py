"""What psycopg learns about result columns from RowDescription: name, type
OID, and the precision and scale it reads from numeric's type modifier.

usage: describe_psycopg.py PORT SQL — prints one JSON line per column, for
the simple protocol (execute) and the extended one (prepare=True)."""

import json
import sys

import psycopg


def main():
    port, sql = int(sys.argv[1]), sys.argv[2]
    with psycopg.connect(host="127.0.0.1", port=port, user="loch", dbname="loch") as conn:
        for protocol, prepare in [("simple", False), ("extended", True)]:
            cur = conn.cursor()
            cur.execute(sql, prepare=prepare)
            for column in cur.description:
                print(json.dumps({
                    "protocol": protocol,
                    "name": column.name,
                    "type_code": column.type_code,
                    "precision": column.precision,
                    "scale": column.scale,
                }), flush=True)


if __name__ == "__main__":
    main()
