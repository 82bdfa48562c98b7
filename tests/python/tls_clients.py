"""TLS with real drivers: psycopg (libpq) and the ADBC Flight SQL driver.
Prints one JSON line per check; the Rust test decides what each should be.

usage: tls_clients.py PG_PORT FLIGHT_PORT CA_PEM OTHER_CA_PEM SQL SCAN_SQL...
The password comes from PGPASSWORD. CA_PEM is the CA that signed the
server's certificate, OTHER_CA_PEM one that did not."""

import json
import os
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg

from tpch_psycopg import cell


def emit(check, **seen):
    print(json.dumps({"check": check, **seen}), flush=True)


def psycopg_check(check, port, sql, **settings):
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="loch", dbname="loch", **settings) as conn:
            rows = [[cell(v) for v in row] for row in conn.execute(sql).fetchall()]
            emit(check, rows=rows, ssl_in_use=bool(conn.pgconn.ssl_in_use))
    except psycopg.Error as e:
        emit(check, error=f"{type(e).__name__}: {e}", sqlstate=getattr(e, "sqlstate", None))


def flight_check(check, uri, sql, **options):
    kwargs = {"username": "loch", "password": os.environ["PGPASSWORD"], **options}
    try:
        with flight_sql.connect(uri, db_kwargs=kwargs) as conn:
            cur = conn.cursor()
            cur.execute(sql)
            rows = [[cell(v) for v in row.values()] for row in cur.fetch_arrow_table().to_pylist()]
            emit(check, rows=rows)
    except adbc_driver_manager.Error as e:
        emit(check, error=f"{type(e).__name__}: {e}")


def flight_endpoints(check, uri, ca_pem, *statements):
    """Where the FlightInfo of the last statement points, after the others
    ran in the same session, and the rows read where it points with the
    same CA (pyarrow.flight, which shows the endpoints)."""
    import pyarrow.flight as flight

    from flight_lowlevel import statement_query

    client = flight.FlightClient(uri, tls_root_certs=ca_pem)
    header = client.authenticate_basic_token("loch", os.environ["PGPASSWORD"])
    options = flight.FlightCallOptions(headers=[header])
    for sql in statements:
        descriptor = flight.FlightDescriptor.for_command(statement_query(sql))
        info = client.get_flight_info(descriptor, options)
    locations = [e.locations[0].uri.decode() for e in info.endpoints if e.locations]
    rows = 0
    for endpoint in info.endpoints:
        if endpoint.locations:
            located = flight.FlightClient(endpoint.locations[0], tls_root_certs=ca_pem)
            rows += located.do_get(endpoint.ticket).read_all().num_rows
        else:
            rows += client.do_get(endpoint.ticket, options).read_all().num_rows
    emit(check, endpoints=len(info.endpoints), locations=locations, rows=rows)


def adbc_rows(check, uri, ca_pem, *statements):
    """Rows of the last statement through ADBC with the CA (it follows the
    endpoints' locations by itself)."""
    roots = adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value
    kwargs = {"username": "loch", "password": os.environ["PGPASSWORD"], roots: ca_pem}
    try:
        with flight_sql.connect(uri, db_kwargs=kwargs) as conn:
            cur = conn.cursor()
            for sql in statements:
                cur.execute(sql)
            emit(check, rows=cur.fetch_arrow_table().num_rows)
    except adbc_driver_manager.Error as e:
        emit(check, error=f"{type(e).__name__}: {e}")


def main():
    pg_port, flight_port, ca, other_ca, sql = sys.argv[1:6]
    # A scan forced onto the executors (statements after SQL).
    scan = sys.argv[6:]
    pg_port = int(pg_port)

    psycopg_check(
        "psycopg_verify_full", pg_port, sql, sslmode="verify-full", sslrootcert=ca, channel_binding="require"
    )
    psycopg_check("psycopg_wrong_ca", pg_port, sql, sslmode="verify-full", sslrootcert=other_ca)
    psycopg_check("psycopg_clear_text", pg_port, sql, sslmode="disable")

    roots = adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value
    with open(ca) as f:
        ca_pem = f.read()
    with open(other_ca) as f:
        other_pem = f.read()
    tls_uri = f"grpc+tls://127.0.0.1:{flight_port}"
    flight_check("adbc_tls", tls_uri, sql, **{roots: ca_pem})
    flight_check("adbc_wrong_ca", tls_uri, sql, **{roots: other_pem})
    flight_check("adbc_clear_text", f"grpc://127.0.0.1:{flight_port}", sql)
    flight_endpoints("tls_endpoints", tls_uri, ca_pem, *scan)
    adbc_rows("adbc_tls_scan", tls_uri, ca_pem, *scan)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
