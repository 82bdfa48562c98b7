"""Sets up and checks data on the local object store servers (moto's S3,
Azurite, the GCS emulator) with independent clients: boto3 and
azure-storage-blob for buckets, the `deltalake` package for Delta tables.

  bucket STORE ENDPOINT NAME        creates a bucket (s3) or container (az)
  delta-write URL OPTIONS DIR       writes the Parquet files in DIR as a new
                                    Delta table at URL (one commit)
  delta-read URL OPTIONS            prints the table's version and rows

OPTIONS is a JSON object of deltalake storage options. Prints one JSON line.
"""

import glob
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from delta_interop import rows_of


def bucket(store, endpoint, name):
    if store == "s3":
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="loch",
            aws_secret_access_key="loch-secret",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=name)
    elif store == "az":
        from azure.storage.blob import BlobServiceClient

        # Azurite's well-known development account.
        key = (
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
        )
        conn = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={key};BlobEndpoint={endpoint}/devstoreaccount1;"
        )
        BlobServiceClient.from_connection_string(conn).create_container(name)
    else:
        raise SystemExit(f"unknown store {store}")
    print(json.dumps({"created": name}))


def main():
    mode = sys.argv[1]
    if mode == "bucket":
        bucket(*sys.argv[2:5])
        return
    url, options = sys.argv[2], json.loads(sys.argv[3])
    if mode == "delta-write":
        files = sorted(glob.glob(f"{sys.argv[4]}/*.parquet"))
        data = pa.concat_tables([pq.read_table(f) for f in files])
        # A checkpoint every 10 commits, as Loch gives its own tables.
        config = {"delta.checkpointInterval": "10"}
        write_deltalake(url, data, mode="error", storage_options=options, configuration=config)
    table = DeltaTable(url, storage_options=options)
    print(json.dumps({"version": table.version(), "rows": rows_of(table.to_pyarrow_table())}))


if __name__ == "__main__":
    main()
    # deltalake + pyarrow over a remote store abort in C++ teardown at
    # interpreter exit about one run in three ("terminate called without an
    # active exception"), after all work is done and printed: skip teardown.
    sys.stdout.flush()
    os._exit(0)
