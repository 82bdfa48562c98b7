"""The ceiling for `scan`: a Flight server that does no work per query.

It reads lineitem's Parquet files into memory once (8192-row batches, as
Loch's batches are) and answers every Flight SQL statement with them from
Arrow C++'s Flight server: no planning, no decoding, no conversion. What
ADBC reaches from it is the most this machine gives ADBC into a
pyarrow.Table, with the same client and the same bytes.

usage: flight_reference.py LINEITEM_DIR PORT   (prints "ready" when serving)"""

import glob
import sys

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq


class Reference(flight.FlightServerBase):
    def __init__(self, location, batches):
        super().__init__(location)
        self.table = pa.Table.from_batches(batches)
        self.schema = self.table.schema

    def get_flight_info(self, context, descriptor):
        # Only statements; the driver's other calls (GetSqlInfo at connect)
        # are allowed to fail.
        if b"CommandStatementQuery" not in descriptor.command:
            raise flight.FlightUnimplementedError("statements only")
        endpoint = flight.FlightEndpoint(b"lineitem", [])
        return flight.FlightInfo(self.schema, descriptor, [endpoint], -1, -1)

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def main():
    directory, port = sys.argv[1], int(sys.argv[2])
    files = sorted(glob.glob(f"{directory}/*.parquet"))
    batches = [b for f in files for b in pq.ParquetFile(f).iter_batches(batch_size=8192)]
    server = Reference(f"grpc://127.0.0.1:{port}", batches)
    print("ready", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
