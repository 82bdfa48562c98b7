//! Bounds on what a client can make Loch hold (docs/operations.md, "Bounds
//! on what a client holds"): each one reached with a real client
//! (tokio-postgres, the Rust Flight SQL client), refused with its SQLSTATE
//! or gRPC code, and the session, the user's other sessions and the server
//! go on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, NullArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::Action;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use futures::future::try_join_all;
use loch_tests::LochServer;
use tonic::transport::Channel;

/// Prepared statements a session may hold, on either protocol.
const MAX_PREPARED_STATEMENTS: usize = 1024;
/// Open cursors (`DECLARE`) and named portals a pg wire session may hold.
const MAX_CURSORS: usize = 1000;
/// Flight SQL sessions one user may have open.
const MAX_SESSIONS_PER_USER: usize = 256;
/// Largest pg wire message, and most bytes of one Flight SQL bind.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

fn shared() -> LochServer {
    LochServer::start_shared(env!("CARGO_TARGET_TMPDIR"))
}

/// A server of its own, for tests that create roles.
fn own(dir: &tempfile::TempDir) -> LochServer {
    LochServer::start_with(dir.path(), 0.01)
}

/// The message of a server error.
fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| format!("no server message: {e:?}"))
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e:?}"))
}

/// Asserts a Flight SQL client error is gRPC RESOURCE_EXHAUSTED with
/// `sqlstate` and `words` in its message.
fn assert_exhausted(e: &impl std::fmt::Debug, sqlstate: &str, words: &str) {
    let text = format!("{e:?}");
    assert!(
        text.contains("ResourceExhausted") || text.contains("resource has been exhausted"),
        "not RESOURCE_EXHAUSTED: {text}"
    );
    assert!(text.contains(&format!("SQLSTATE {sqlstate}")), "{text}");
    assert!(text.contains(words), "no {words:?} in {text}");
}

async fn channel(server: &LochServer) -> Channel {
    Channel::from_shared(server.flight_uri().replace("grpc://", "http://"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A Flight SQL session of `user`: a handshake on `channel`.
async fn login(
    channel: &Channel,
    user: &str,
    password: &str,
) -> Result<FlightSqlServiceClient<Channel>, arrow_flight::error::FlightError> {
    let mut client = FlightSqlServiceClient::new(channel.clone());
    client.handshake(user, password).await?;
    Ok(client)
}

/// Flight's `CloseSession` (what ADBC sends when a connection closes).
async fn close_session(client: &mut FlightSqlServiceClient<Channel>) {
    let results: Vec<_> = client
        .do_action(Action::new("CloseSession", ""))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    // CloseSessionResult { status: CLOSED }
    assert_eq!(results[0].body.as_ref(), [0x08, 1]);
}

/// The values of the one text column a Flight SQL query returned.
async fn flight_texts(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Vec<String> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let batches: Vec<RecordBatch> = client
            .do_get(endpoint.ticket.unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for batch in batches {
            let column = arrow::compute::cast(batch.column(0), &DataType::Utf8).unwrap();
            let texts = column.as_any().downcast_ref::<StringArray>().unwrap();
            out.extend(texts.iter().map(|v| v.unwrap_or_default().to_string()));
        }
    }
    out
}

#[tokio::test]
async fn pg_wire_prepared_statements_are_bounded_per_session() {
    let server = shared();
    let client = server.connect().await;
    // tokio-postgres names each statement and pipelines the Parse messages.
    let texts: Vec<String> = (0..MAX_PREPARED_STATEMENTS)
        .map(|i| format!("SELECT {i}"))
        .collect();
    let mut held = try_join_all(texts.iter().map(|text| client.prepare(text)))
        .await
        .unwrap();
    let err = client.prepare("SELECT 'one too many'").await.unwrap_err();
    assert_eq!(sqlstate(&err), "53400", "{err:?}");
    assert!(
        message(&err).contains(&format!(
            "at most {MAX_PREPARED_STATEMENTS} prepared statements"
        )),
        "{err:?}"
    );

    // The session goes on: simple queries run, held statements run.
    let rows = client.simple_query("SELECT 42").await.unwrap();
    assert!(!rows.is_empty());
    let last = held.last().unwrap();
    let n: i64 = client.query_one(last, &[]).await.unwrap().get(0);
    assert_eq!(n, MAX_PREPARED_STATEMENTS as i64 - 1);
    // Closing one (tokio-postgres sends Close when a statement is dropped)
    // frees its place.
    held.pop();
    let statement = client.prepare("SELECT $1 AS v").await.unwrap();
    let v: String = client
        .query_one(&statement, &[&"bound"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "bound");
    // Another session of the same user is not concerned.
    let other = server.connect().await;
    let v: i32 = other.query_one("SELECT 7::int", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
}

#[tokio::test]
async fn sql_prepare_is_bounded_per_session() {
    let server = shared();
    let client = server.connect().await;
    let prepare: String = (0..MAX_PREPARED_STATEMENTS)
        .map(|i| format!("PREPARE p{i} AS SELECT {i};"))
        .collect();
    client.batch_execute(&prepare).await.unwrap();
    let err = client
        .batch_execute("PREPARE one_more AS SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "53400", "{err:?}");
    client.batch_execute("DEALLOCATE p0").await.unwrap();
    client
        .batch_execute("PREPARE one_more AS SELECT 1")
        .await
        .unwrap();
}

#[tokio::test]
async fn pg_wire_cursors_and_portals_are_bounded_per_session() {
    let server = shared();
    let mut client = server.connect().await;

    // DECLARE: MAX_CURSORS open cursors per session.
    let declare: String = (0..MAX_CURSORS)
        .map(|i| format!("DECLARE c{i} CURSOR WITH HOLD FOR SELECT {i};"))
        .collect();
    client.batch_execute(&declare).await.unwrap();
    let err = client
        .batch_execute("DECLARE one_more CURSOR WITH HOLD FOR SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "53400", "{err:?}");
    assert!(message(&err).contains("open cursors"), "{err:?}");
    client.batch_execute("CLOSE c0").await.unwrap();
    client
        .batch_execute("DECLARE one_more CURSOR WITH HOLD FOR SELECT 'fetched'")
        .await
        .unwrap();
    let fetched = client
        .simple_query("FETCH 1 FROM one_more")
        .await
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        });
    assert_eq!(fetched.as_deref(), Some("fetched"));
    client.batch_execute("CLOSE ALL").await.unwrap();

    // Named portals, the protocol's cursors: as many per connection.
    let tx = client.transaction().await.unwrap();
    let statement = tx.prepare("SELECT 'portal'").await.unwrap();
    let portals = try_join_all((0..MAX_CURSORS).map(|_| tx.bind(&statement, &[])))
        .await
        .unwrap();
    let err = tx.bind(&statement, &[]).await.err().unwrap();
    assert_eq!(sqlstate(&err), "53400", "{err:?}");
    assert!(message(&err).contains("open portals"), "{err:?}");
    drop(portals);
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let portal = tx.bind(&statement, &[]).await.unwrap();
    let rows = tx.query_portal(&portal, 0).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "portal");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn pg_wire_message_over_the_bound_ends_only_its_connection() {
    let mut server = shared();
    let healthy = server.connect().await;
    let victim = server.connect().await;

    // A Query message just over the bound.
    let huge = format!("SELECT 1 -- {}", "x".repeat(MAX_MESSAGE_BYTES));
    let err = victim.simple_query(&huge).await.unwrap_err();
    assert_eq!(sqlstate(&err), "08P01", "{err:?}");
    let db = err.as_db_error().unwrap();
    assert_eq!(db.severity(), "FATAL");
    assert!(
        db.message().contains("Query message") && db.message().contains("64 MiB"),
        "{}",
        db.message()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !victim.is_closed() {
        assert!(Instant::now() < deadline, "the connection stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A message whose length lies (a password message of length 0): the
    // same FATAL error, over a raw socket.
    let port = server.port;
    let reply = tokio::task::spawn_blocking(move || lying_password_message(port))
        .await
        .unwrap();
    assert!(
        reply.contains("SFATAL") && reply.contains("C08P01"),
        "{reply:?}"
    );

    // The server and the other session go on; new connections are served.
    assert!(server.is_alive());
    let rows = healthy.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty());
    let fresh = server.connect().await;
    let v: i32 = fresh.query_one("SELECT 2::int", &[]).await.unwrap().get(0);
    assert_eq!(v, 2);
}

/// Starts a login as `loch`, answers the SASL request with a password
/// message whose length field says 0, and returns what the server sent
/// until it closed the connection.
fn lying_password_message(port: u16) -> String {
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0loch\0database\0loch\0\0");
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    socket.write_all(&startup).unwrap();
    // AuthenticationSASL first.
    let mut first = [0u8; 1];
    socket.read_exact(&mut first).unwrap();
    assert_eq!(first[0], b'R');
    let mut message = vec![b'p'];
    message.extend_from_slice(&0i32.to_be_bytes());
    message.extend_from_slice(&[0u8; 16]);
    socket.write_all(&message).unwrap();
    let mut reply = Vec::new();
    let _ = socket.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn flight_sessions_per_user_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = own(&dir);
    let admin = server.connect().await;
    admin
        .batch_execute(
            "CREATE USER many PASSWORD 'Many-Sessions-1'; \
             CREATE USER other PASSWORD 'Other-Sessions-1'",
        )
        .await
        .unwrap();
    let channel = channel(&server).await;
    let mut sessions = try_join_all(
        (0..MAX_SESSIONS_PER_USER).map(|_| login(&channel, "many", "Many-Sessions-1")),
    )
    .await
    .unwrap();
    let err = login(&channel, "many", "Many-Sessions-1")
        .await
        .err()
        .unwrap();
    assert_exhausted(
        &err,
        "53400",
        &format!("at most {MAX_SESSIONS_PER_USER} per user"),
    );

    // Other users log in; the user's sessions still work.
    let mut other = login(&channel, "other", "Other-Sessions-1").await.unwrap();
    let info = other.execute("SELECT 'other'".into(), None).await.unwrap();
    assert_eq!(flight_texts(&mut other, info).await, ["other"]);
    let first = &mut sessions[0];
    let info = first.execute("SELECT 'still'".into(), None).await.unwrap();
    assert_eq!(flight_texts(first, info).await, ["still"]);

    // Closing a session frees its place.
    close_session(&mut sessions.pop().unwrap()).await;
    let mut again = login(&channel, "many", "Many-Sessions-1").await.unwrap();
    let info = again.execute("SELECT 'again'".into(), None).await.unwrap();
    assert_eq!(flight_texts(&mut again, info).await, ["again"]);
}

#[tokio::test]
async fn connection_limit_counts_flight_sessions_and_pg_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = own(&dir);
    let admin = server.connect().await;
    admin
        .batch_execute("CREATE USER lim PASSWORD 'Lim-Limit-2-ok' CONNECTION LIMIT 2")
        .await
        .unwrap();
    let channel = channel(&server).await;
    let mut flight = login(&channel, "lim", "Lim-Limit-2-ok").await.unwrap();
    let pg = server.connect_as("lim", "Lim-Limit-2-ok").await.unwrap();

    // Two open: a third is refused on either protocol.
    let err = login(&channel, "lim", "Lim-Limit-2-ok")
        .await
        .err()
        .unwrap();
    assert_exhausted(&err, "53300", "too many connections for role");
    let err = server
        .connect_as("lim", "Lim-Limit-2-ok")
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&err), "53300", "{err:?}");
    // The admin is not concerned.
    login(&channel, "loch", &server.password()).await.unwrap();

    // What is open still works.
    let v: i32 = pg.query_one("SELECT 3::int", &[]).await.unwrap().get(0);
    assert_eq!(v, 3);
    let info = flight
        .execute("SELECT 'flight'".into(), None)
        .await
        .unwrap();
    assert_eq!(flight_texts(&mut flight, info).await, ["flight"]);

    // Closing the Flight SQL session frees a place for a pg connection.
    close_session(&mut flight).await;
    let third = server.connect_as("lim", "Lim-Limit-2-ok").await.unwrap();
    let v: i32 = third.query_one("SELECT 4::int", &[]).await.unwrap().get(0);
    assert_eq!(v, 4);
}

#[tokio::test]
async fn flight_prepared_statements_and_parameter_bytes_are_bounded() {
    let server = shared();
    let channel = channel(&server).await;
    let mut client = login(&channel, "loch", &server.password()).await.unwrap();
    let mut statement = client.prepare("SELECT $1 AS v".into(), None).await.unwrap();

    // A bind over MAX_MESSAGE_BYTES of text, sent as many messages.
    let row = "x".repeat(64 << 10);
    let rows = MAX_MESSAGE_BYTES / row.len() + 16;
    let texts: ArrayRef = Arc::new(StringArray::from(vec![row.as_str(); rows]));
    let big = RecordBatch::try_from_iter([("$1", texts)]).unwrap();
    statement.set_parameters(big).unwrap();
    let err = statement.execute().await.unwrap_err();
    assert_exhausted(&err, "53400", "at most 64 MiB of parameters");

    // Columns of nulls: next to nothing on the wire, yet every value kept
    // is a ScalarValue: counted all the same.
    let columns = 64;
    let nulls: Vec<ArrayRef> = (0..columns)
        .map(|_| Arc::new(NullArray::new(100_000)) as ArrayRef)
        .collect();
    let schema = Schema::new(
        (0..columns)
            .map(|i| Field::new(format!("${}", i + 1), DataType::Null, true))
            .collect::<Vec<_>>(),
    );
    let nulls = RecordBatch::try_new(Arc::new(schema), nulls).unwrap();
    statement.set_parameters(nulls).unwrap();
    let err = statement.execute().await.unwrap_err();
    assert_exhausted(&err, "53400", "at most 64 MiB of parameters");

    // The statement and the session go on.
    let one: ArrayRef = Arc::new(StringArray::from(vec!["bound"]));
    statement
        .set_parameters(RecordBatch::try_from_iter([("$1", one)]).unwrap())
        .unwrap();
    let info = statement.execute().await.unwrap();
    assert_eq!(flight_texts(&mut client, info).await, ["bound"]);
    statement.close().await.unwrap();

    // MAX_PREPARED_STATEMENTS per session.
    let mut held = try_join_all((0..MAX_PREPARED_STATEMENTS).map(|_| {
        let mut client = client.clone();
        async move { client.prepare("SELECT 1".into(), None).await }
    }))
    .await
    .unwrap();
    let err = client
        .prepare("SELECT 'one too many'".into(), None)
        .await
        .err()
        .unwrap();
    assert_exhausted(
        &err,
        "53400",
        &format!("at most {MAX_PREPARED_STATEMENTS} prepared statements"),
    );
    let info = client
        .execute("SELECT 'simple'".into(), None)
        .await
        .unwrap();
    assert_eq!(flight_texts(&mut client, info).await, ["simple"]);
    held.pop().unwrap().close().await.unwrap();
    let mut statement = client
        .prepare("SELECT 'prepared' AS v".into(), None)
        .await
        .unwrap();
    let info = statement.execute().await.unwrap();
    assert_eq!(flight_texts(&mut client, info).await, ["prepared"]);
}
