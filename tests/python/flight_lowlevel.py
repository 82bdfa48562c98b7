"""Talks to Loch's Flight SQL port with pyarrow.flight alone (no Flight SQL
client library): Flight SQL messages are encoded here by hand, so the test
can send what a well-behaved client never would. Prints one JSON line per
check.

usage: flight_lowlevel.py URI USER PASSWORD MODE
  MODE tickets  tickets are bound to their session and good for one DoGet
  MODE sizes [SQL...]  every message of SELECT * FROM tpch.lineitem is small
                (after running the SQL statements, e.g. SET, in the session)
  MODE direct OUT SQL [SETUP...]  reads SQL's rows from the endpoints the
                FlightInfo names (executors, for direct endpoints), writes
                them to OUT (Arrow IPC file), and tries what a client must
                not be able to do with a direct ticket
  MODE cancel_direct SQL [SETUP...]  CancelFlightInfo stops a query read
                from direct endpoints, running and not yet started
  MODE abandon SQL [SETUP...]  starts reading every endpoint of SQL, then
                goes away: the executors' running tasks must fall back
  MODE cancel   CancelFlightInfo stops a streaming query and an unfetched one
  MODE close    CloseSession ends the session: its token stops working
  MODE expiry   a token stops working once unused for the server's TTL"""

import json
import sys
import threading
import time

import pyarrow.flight as flight

SQL_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def emit(check, **seen):
    print(json.dumps({"check": check, **seen}), flush=True)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, data):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def any_message(name, body):
    return field(1, (SQL_PREFIX + name).encode()) + field(2, body)


def statement_query(sql):
    return any_message("CommandStatementQuery", field(1, sql.encode()))


def login(uri, user, password):
    client = flight.FlightClient(uri)
    header = client.authenticate_basic_token(user, password)
    return client, flight.FlightCallOptions(headers=[header])


def info_for(client, options, sql):
    return client.get_flight_info(flight.FlightDescriptor.for_command(statement_query(sql)), options)


def error_of(fn):
    try:
        fn()
        return None
    except Exception as e:  # pyarrow raises ArrowKeyError for NOT_FOUND
        return f"{type(e).__name__}: {e}"


def tickets(uri, user, password):
    a, a_opts = login(uri, user, password)
    b, b_opts = login(uri, user, password)
    info = info_for(a, a_opts, "select n_name from tpch.nation order by n_nationkey")
    ticket = info.endpoints[0].ticket
    # Session b may not redeem session a's ticket ...
    emit("other_session", error=error_of(lambda: b.do_get(ticket, b_opts).read_all()))
    # ... a can, once.
    table = a.do_get(ticket, a_opts).read_all()
    emit("own_ticket", rows=table.num_rows, first=table.column(0)[0].as_py())
    emit("reused", error=error_of(lambda: a.do_get(ticket, a_opts).read_all()))
    forged = flight.Ticket(any_message("TicketStatementQuery", field(1, b"0123456789abcdef0123456789abcdef")))
    emit("forged", error=error_of(lambda: a.do_get(forged, a_opts).read_all()))
    emit("garbage", error=error_of(lambda: a.do_get(flight.Ticket(b"\xff\x00garbage"), a_opts).read_all()))
    # No token, a wrong token.
    emit("no_token", error=error_of(lambda: info_for(a, flight.FlightCallOptions(), "select 1")))
    bad = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer 00112233")])
    emit("wrong_token", error=error_of(lambda: info_for(a, bad, "select 1")))


# Flight's location for "the server this FlightInfo came from".
REUSE = "arrow-flight-reuse-connection://?"


def reader_for(client, options, endpoint):
    """DoGet of an endpoint where it says (its first location), else from
    the server the FlightInfo came from. Executors take no token: the
    ticket is the permission."""
    if endpoint.locations:
        located = flight.FlightClient(endpoint.locations[0])
        return located.do_get(endpoint.ticket)
    return client.do_get(endpoint.ticket, options)


def sizes(uri, user, password, *setup):
    client, options = login(uri, user, password)
    for sql in setup:
        info_for(client, options, sql)
    info = info_for(client, options, "select * from tpch.lineitem")
    rows, largest, messages = 0, 0, 0
    for endpoint in info.endpoints:
        for chunk in reader_for(client, options, endpoint):
            if chunk.data is None:
                continue
            messages += 1
            rows += chunk.data.num_rows
            largest = max(largest, chunk.data.serialize().size)
    emit("sizes", rows=rows, messages=messages, largest=largest, endpoints=len(info.endpoints))


def direct(uri, user, password, out, sql, *setup):
    import pyarrow as pa

    client, options = login(uri, user, password)
    for statement in setup:
        info_for(client, options, statement)
    info = info_for(client, options, sql)
    locations = [e.locations[0].uri.decode() for e in info.endpoints if e.locations]
    batches = []
    for endpoint in info.endpoints:
        batches.extend(reader_for(client, options, endpoint).read_all().to_batches())
    table = pa.Table.from_batches(batches, schema=info.schema)
    with pa.OSFile(out, "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    fallbacks = sum(1 for e in info.endpoints if [l.uri.decode() for l in e.locations][1:] == [REUSE])
    emit("direct", endpoints=len(info.endpoints), locations=locations, fallbacks=fallbacks, rows=table.num_rows)
    if not locations:
        return
    first = info.endpoints[0]
    executor = flight.FlightClient(first.locations[0])
    # Each ticket runs once...
    emit("replayed", error=error_of(lambda: executor.do_get(first.ticket).read_all()))
    # ...also when brought to the coordinator, which asks the executor first...
    emit("replayed_at_coordinator", error=error_of(lambda: client.do_get(first.ticket, options).read_all()))
    # ...only as the coordinator sealed it...
    raw = bytearray(info_for(client, options, sql).endpoints[0].ticket.ticket)
    raw[len(raw) // 2] ^= 0x01
    emit("tampered", error=error_of(lambda: executor.do_get(flight.Ticket(bytes(raw))).read_all()))
    emit("garbage", error=error_of(lambda: executor.do_get(flight.Ticket(b"LOCHDT2\0" + b"x" * 64)).read_all()))
    # A fresh ticket the client brings to the coordinator (its fallback
    # location) runs there, once, and no longer at its executor.
    fresh = info_for(client, options, sql).endpoints[0]
    at_coordinator = client.do_get(fresh.ticket, options).read_all().num_rows
    same_task = info_for(client, options, sql).endpoints[0]
    emit(
        "to_coordinator",
        rows=at_coordinator,
        at_executor=reader_for(client, options, same_task).read_all().num_rows,
        then_executor=error_of(lambda: flight.FlightClient(fresh.locations[0]).do_get(fresh.ticket).read_all()),
        again=error_of(lambda: client.do_get(fresh.ticket, options).read_all()),
    )
    # Nothing else is served on an executor's Flight port.
    emit("list_flights", error=error_of(lambda: list(executor.list_flights())))
    # Through the coordinator when the session asks: the same rows.
    info_for(client, options, "SET loch.flight_endpoints = 'coordinator'")
    info = info_for(client, options, sql)
    rows = sum(reader_for(client, options, e).read_all().num_rows for e in info.endpoints)
    emit(
        "through_coordinator",
        endpoints=len(info.endpoints),
        located=sum(1 for e in info.endpoints if e.locations),
        rows=rows,
    )


def running_tasks(client, options):
    info = info_for(client, options, "select sum(running_tasks) from system.executors")
    return reader_for(client, options, info.endpoints[0]).read_all().column(0)[0].as_py()


def abandon(uri, user, password, sql, *setup):
    client, options = login(uri, user, password)
    for statement in setup:
        info_for(client, options, statement)
    info = info_for(client, options, sql)
    located = [flight.FlightClient(e.locations[0]) for e in info.endpoints if e.locations]
    readers = [c.do_get(e.ticket) for c, e in zip(located, info.endpoints)]
    for reader in readers:
        reader.read_chunk()
    # Heartbeats carry the count: wait for them to show the streams.
    deadline = time.time() + 30
    during = running_tasks(client, options)
    while during < len(readers) and time.time() < deadline:
        time.sleep(0.2)
        during = running_tasks(client, options)
    for reader in readers:
        reader.cancel()
    for c in located:
        c.close()
    after = running_tasks(client, options)
    while after and time.time() < deadline + 30:
        time.sleep(0.2)
        after = running_tasks(client, options)
    emit("abandon", endpoints=len(readers), during=during, after=after)


def cancel_request(info):
    # CancelFlightInfoRequest { FlightInfo info = 1; }
    return flight.Action("CancelFlightInfo", field(1, info.serialize()))


def cancel_and_drain(client, options, info, reader, rows):
    """Sends CancelFlightInfo for `info`, then reads what `reader` still
    gives: (rows in all, the error it ended with, the cancel status)."""
    results = list(client.do_action(cancel_request(info), options))
    # CancelFlightInfoResult { CancelStatus status = 1; } -> bytes 0x08 <status>
    body = results[0].body.to_pybytes() if results else b""
    cancel_status = body[1] if len(body) == 2 and body[0] == 0x08 else None
    error = None
    try:
        while True:
            rows += reader.read_chunk().data.num_rows
    except StopIteration:
        pass
    except flight.FlightError as e:
        error = f"{type(e).__name__}: {e}"
    return rows, error, cancel_status


def cancel(uri, user, password):
    client, options = login(uri, user, password)
    # A query that streams far more than fits in the pipeline's buffers.
    sql = "select a.* from tpch.lineitem a join tpch.lineitem b on a.l_orderkey = b.l_orderkey"
    info = info_for(client, options, sql)
    reader = client.do_get(info.endpoints[0].ticket, options)
    first = reader.read_chunk()
    rows, error, cancel_status = cancel_and_drain(client, options, info, reader, first.data.num_rows)
    emit("cancel_running", rows=rows, error=error, cancel_status=cancel_status)
    # Cancelled before its DoGet: the ticket no longer runs anything.
    info = info_for(client, options, sql)
    list(client.do_action(cancel_request(info), options))
    emit("cancel_pending", error=error_of(lambda: client.do_get(info.endpoints[0].ticket, options).read_all()))
    # The session still works.
    table = client.do_get(info_for(client, options, "select 1 as x").endpoints[0].ticket, options).read_all()
    emit("after_cancel", rows=table.num_rows)


def cancel_direct(uri, user, password, sql, *setup):
    client, options = login(uri, user, password)
    for statement in setup:
        info_for(client, options, statement)
    info = info_for(client, options, sql)
    first, rest = info.endpoints[0], info.endpoints[1:]
    reader = reader_for(client, options, first)
    rows, error, cancel_status = cancel_and_drain(client, options, info, reader, reader.read_chunk().data.num_rows)
    emit(
        "cancel_direct_running",
        rows=rows,
        error=error,
        cancel_status=cancel_status,
        located=sum(1 for e in info.endpoints if e.locations),
    )
    pending = error_of(lambda: reader_for(client, options, rest[0]).read_all()) if rest else None
    emit("cancel_direct_pending", error=pending)
    table = client.do_get(info_for(client, options, "select 1 as x").endpoints[0].ticket, options).read_all()
    emit("after_cancel_direct", rows=table.num_rows)


def close(uri, user, password):
    client, options = login(uri, user, password)
    before = error_of(lambda: info_for(client, options, "select 1"))
    results = list(client.do_action(flight.Action("CloseSession", b""), options))
    after = error_of(lambda: info_for(client, options, "select 1"))
    emit("close", before=before, after=after, body=list(results[0].body.to_pybytes()) if results else None)


def expiry(uri, user, password):
    client, options = login(uri, user, password)
    before = error_of(lambda: info_for(client, options, "select 1"))
    time.sleep(3.0)
    after = error_of(lambda: info_for(client, options, "select 1"))
    emit("expiry", before=before, after=after)


def main():
    uri, user, password, mode = sys.argv[1:5]
    modes = {
        "tickets": tickets,
        "sizes": sizes,
        "direct": direct,
        "abandon": abandon,
        "cancel_direct": cancel_direct,
        "cancel": cancel,
        "close": close,
        "expiry": expiry,
    }
    modes[mode](uri, user, password, *sys.argv[5:])


if __name__ == "__main__":
    main()
