//! pg wire front door, end to end with tokio-postgres against the real
//! binary: both query protocols, parameters, result formats, session
//! settings, transactions, the SQLSTATE of each error class (with the session
//! usable afterwards), cancel, statement_timeout, and malformed input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use loch_tests::LochServer;
use loch_tests::oracle::{self, Cell};
use tokio_postgres::{Client, SimpleQueryMessage};

fn server() -> LochServer {
    LochServer::start_shared(env!("CARGO_TARGET_TMPDIR"))
}

/// The values of the data rows of a simple query.
fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn assert_alive(client: &Client) {
    let rows = client
        .simple_query("select 1")
        .await
        .expect("session still usable");
    assert_eq!(simple_rows(&rows), vec![vec![Some("1".to_string())]]);
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test]
async fn simple_query_matches_the_oracle() {
    let server = server();
    let client = server.connect().await;
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let expected = oracle::run(&ctx, "select count(*) from lineitem").await;
    let rows = client
        .simple_query("select count(*) from tpch.lineitem")
        .await
        .unwrap();
    let Cell::Int(n) = expected[0][0] else {
        panic!("count is an int")
    };
    assert_eq!(simple_rows(&rows), vec![vec![Some(n.to_string())]]);
}

#[tokio::test]
async fn prepared_statement_with_parameters_in_binary() {
    let server = server();
    let client = server.connect().await;
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let select = "select l_orderkey, l_linenumber, l_quantity, l_extendedprice, l_shipdate, \
                  l_returnflag, l_comment from {t} where l_orderkey = {a} and l_linenumber <= {b} \
                  order by l_linenumber";
    let statement = client
        .prepare(
            &select
                .replace("{t}", "tpch.lineitem")
                .replace("{a}", "$1")
                .replace("{b}", "$2"),
        )
        .await
        .unwrap();
    assert_eq!(statement.params().len(), 2);
    assert_eq!(statement.params()[0], tokio_postgres::types::Type::INT8);
    assert_eq!(statement.params()[1], tokio_postgres::types::Type::INT4);
    let columns: Vec<_> = statement
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    use tokio_postgres::types::Type;
    assert_eq!(
        columns,
        vec![
            Type::INT8,
            Type::INT4,
            Type::NUMERIC,
            Type::NUMERIC,
            Type::DATE,
            Type::TEXT,
            Type::TEXT
        ]
    );
    for (orderkey, max_line) in [(1i64, 7i32), (7, 3), (32, 100)] {
        let rows = client
            .query(&statement, &[&orderkey, &max_line])
            .await
            .unwrap();
        let expected = oracle::run(
            &ctx,
            &select
                .replace("{t}", "lineitem")
                .replace("{a}", &orderkey.to_string())
                .replace("{b}", &max_line.to_string()),
        )
        .await;
        assert!(!expected.is_empty());
        oracle::compare(&expected, &oracle::pg_rows(&rows), true).unwrap();
    }
    // A parameter nothing constrains is text, as in PostgreSQL.
    let rows = client.query("select $1 as v", &[&"hello"]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "hello");
    // The same statement, run again with other values, after an error.
    let err = client.query("select * from nope", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    let rows = client.query(&statement, &[&1i64, &1i32]).await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn text_results_of_every_tpch_type() {
    let server = server();
    let client = server.connect().await;
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let sql = "select l_orderkey, l_linenumber, l_quantity, l_shipdate, l_returnflag \
               from {t} where l_orderkey = 3 order by l_linenumber";
    let expected = oracle::run(&ctx, &sql.replace("{t}", "lineitem")).await;
    let rows = client
        .simple_query(&sql.replace("{t}", "tpch.lineitem"))
        .await
        .unwrap();
    let got = simple_rows(&rows);
    assert_eq!(got.len(), expected.len());
    for (e, g) in expected.iter().zip(&got) {
        for (cell, text) in e.iter().zip(g) {
            let text = text.clone().expect("no nulls in lineitem");
            let parsed = match cell {
                Cell::Int(_) => Cell::Int(text.parse().unwrap()),
                Cell::Decimal(_) => Cell::Decimal(text.parse().unwrap()),
                _ => Cell::Text(text),
            };
            assert_eq!(&parsed, cell);
        }
    }
}

#[tokio::test]
async fn multi_statement_simple_queries() {
    let server = server();
    let client = server.connect().await;
    let messages = client
        .simple_query("select 1; select 2 as b")
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&messages),
        vec![vec![Some("1".to_string())], vec![Some("2".to_string())]]
    );
    // An error stops the rest of the string; the session goes on.
    let err = client
        .simple_query("select 1; selec 2; select 3")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42601");
    assert_alive(&client).await;
    // A statement after one whose rows fail while streaming never runs.
    let err = client
        .simple_query(
            "select cast(n_name as int) from tpch.nation; set search_path to tpch; select 1",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22P02");
    let rows = client.simple_query("show search_path").await.unwrap();
    assert_eq!(simple_rows(&rows), vec![vec![Some("public".to_string())]]);
    // State changes in order with the rows before them.
    let messages = client
        .simple_query("select 1; set search_path to tpch; show search_path")
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&messages),
        vec![vec![Some("1".to_string())], vec![Some("tpch".to_string())]]
    );
    // Empty queries are fine.
    client.simple_query("").await.unwrap();
    client.simple_query(";").await.unwrap();
    assert_alive(&client).await;
}

#[tokio::test]
async fn search_path_set_show_and_startup_option() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let nations = oracle::run(&ctx, "select count(*) from nation").await;
    let Cell::Int(nations) = nations[0][0] else {
        panic!()
    };

    let client = server.connect().await;
    let err = client
        .simple_query("select count(*) from nation")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    client
        .simple_query("SET search_path TO tpch")
        .await
        .unwrap();
    let rows = client
        .simple_query("select count(*) from nation")
        .await
        .unwrap();
    assert_eq!(simple_rows(&rows), vec![vec![Some(nations.to_string())]]);
    let rows = client.simple_query("SHOW search_path").await.unwrap();
    assert_eq!(simple_rows(&rows), vec![vec![Some("tpch".to_string())]]);
    let rows = client.simple_query("show server_version").await.unwrap();
    assert!(
        simple_rows(&rows)[0][0]
            .as_deref()
            .unwrap()
            .starts_with("16")
    );

    // Prepared statements see the session's schema too.
    let rows = client
        .query("select count(*) from nation", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), nations);

    // libpq's options=-c search_path=tpch at connect.
    let client = server.connect_with("options='-c search_path=tpch'").await;
    let rows = client
        .simple_query("select count(*) from region")
        .await
        .unwrap();
    assert_eq!(simple_rows(&rows).len(), 1);
    // RESET goes back to the default.
    client.simple_query("RESET search_path").await.unwrap();
    let err = client
        .simple_query("select count(*) from region")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    // Sessions are independent.
    let other = server.connect().await;
    let err = other
        .simple_query("select count(*) from region")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
}

#[tokio::test]
async fn transactions_are_accepted_and_failed_blocks_report_25p02() {
    let server = server();
    let mut client = server.connect().await;
    client
        .simple_query("BEGIN; select 1; COMMIT")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.query("select count(*) from tpch.region", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    client.simple_query("BEGIN").await.unwrap();
    let err = client.simple_query("select * from nope").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    let err = client.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02");
    let err = client.query("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02");
    client.simple_query("ROLLBACK").await.unwrap();
    assert_alive(&client).await;
}

#[tokio::test]
async fn savepoints_and_cursors_follow_postgresql() {
    let server = server();
    let client = server.connect().await;
    let ctx = oracle::tpch_context(&server.sample_dir()).await;

    // Outside a block.
    for sql in ["SAVEPOINT a", "RELEASE a", "DECLARE c CURSOR FOR select 1"] {
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "25P01", "{sql}");
    }

    // ROLLBACK TO leaves a failed block, by either protocol.
    client.simple_query("BEGIN; SAVEPOINT a").await.unwrap();
    let err = client.simple_query("select * from nope").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    let err = client.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02");
    client
        .simple_query("ROLLBACK TO SAVEPOINT a")
        .await
        .unwrap();
    assert_alive(&client).await;
    let err = client.query("select * from nope", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    let err = client.query("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02");
    client.execute("ROLLBACK TO a", &[]).await.unwrap();
    let rows = client.query("select 2", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    // Savepoints nest: releasing `a` takes `b` with it.
    client.simple_query("SAVEPOINT b; RELEASE a").await.unwrap();
    let err = client.simple_query("ROLLBACK TO b").await.unwrap_err();
    assert_eq!(sqlstate(&err), "3B001");
    // COMMIT of a failed block is a ROLLBACK, and ends it.
    client.simple_query("COMMIT").await.unwrap();
    let err = client.simple_query("SAVEPOINT c").await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P01");

    // A cursor read in pieces, by both protocols, gives the query's rows.
    let sql = "select n_nationkey, n_name from nation order by 1";
    let expected = oracle::run(&ctx, sql).await;
    client
        .simple_query(&format!(
            "BEGIN; DECLARE c CURSOR FOR {}",
            sql.replace("from nation", "from tpch.nation")
        ))
        .await
        .unwrap();
    let mut got = oracle::pg_rows(&client.query("FETCH 10 FROM c", &[]).await.unwrap());
    assert_eq!(got.len(), 10);
    let first_simple = client.simple_query("FETCH FORWARD 7 IN c").await.unwrap();
    assert_eq!(simple_rows(&first_simple).len(), 7);
    assert!(
        first_simple
            .iter()
            .any(|m| matches!(m, SimpleQueryMessage::CommandComplete(7))),
        "FETCH 7 completes with a count of 7"
    );
    got.extend(simple_rows(&first_simple).into_iter().map(|r| {
        vec![
            Cell::Int(r[0].as_ref().unwrap().parse().unwrap()),
            Cell::Text(r[1].clone().unwrap()),
        ]
    }));
    got.extend(oracle::pg_rows(
        &client.query("FETCH ALL FROM c", &[]).await.unwrap(),
    ));
    oracle::compare(&expected, &got, true).unwrap();
    assert!(
        client
            .query("FETCH 5 FROM c", &[])
            .await
            .unwrap()
            .is_empty()
    );
    let err = client
        .simple_query("DECLARE c CURSOR FOR select 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P03");
    client.simple_query("ROLLBACK; BEGIN").await.unwrap();
    let err = client.simple_query("FETCH 1 FROM c").await.unwrap_err();
    assert_eq!(sqlstate(&err), "34000", "the rollback closed the cursor");
    client.simple_query("ROLLBACK").await.unwrap();

    // WITH HOLD outlives its block's commit, until CLOSE.
    client
        .simple_query(
            "BEGIN; DECLARE h CURSOR WITH HOLD FOR select count(*) from tpch.region; COMMIT",
        )
        .await
        .unwrap();
    let rows = oracle::pg_rows(&client.query("FETCH ALL IN h", &[]).await.unwrap());
    oracle::compare(
        &oracle::run(&ctx, "select count(*) from region").await,
        &rows,
        true,
    )
    .unwrap();
    client.simple_query("CLOSE h").await.unwrap();
    let err = client.simple_query("CLOSE h").await.unwrap_err();
    assert_eq!(sqlstate(&err), "34000");
    assert_alive(&client).await;
}

/// (statement, expected SQLSTATE) for each error class.
const ERRORS: &[(&str, &str)] = &[
    ("selec 1", "42601"),
    ("select * from", "42601"),
    ("select * from no_such_table", "42P01"),
    ("select * from tpch.no_such_table", "42P01"),
    ("select no_such_column from tpch.nation", "42703"),
    ("select no_such_function(1)", "42883"),
    (
        "select n_name from tpch.nation group by n_regionkey",
        "42803",
    ),
    ("select n_name from tpch.nation a, tpch.nation b", "42702"),
    ("select 1 / 0", "22012"),
    ("select cast('abc' as int)", "22P02"),
    // Fails while rows stream, not while planning.
    ("select cast(n_name as int) from tpch.nation", "22P02"),
    (
        "select n_nationkey / (n_nationkey - n_nationkey) from tpch.nation",
        "22012",
    ),
    ("savepoint s1", "25P01"),
    ("fetch 1 from no_such_cursor", "34000"),
    ("fetch prior from no_such_cursor", "0A000"),
    ("show no_such_setting", "42704"),
    ("select current_setting('no_such_setting')", "42704"),
    ("select set_config('search_path', 'tpch', false)", "0A000"),
    ("set statement_timeout = 'soon'", "22023"),
];

#[tokio::test]
async fn errors_have_sqlstates_and_the_session_survives() {
    let server = server();
    let client = server.connect().await;
    for (sql, code) in ERRORS {
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(&sqlstate(&err), code, "simple protocol: {sql}: {err:?}");
        assert_alive(&client).await;
        let err = client.query(*sql, &[]).await.unwrap_err();
        assert_eq!(&sqlstate(&err), code, "extended protocol: {sql}: {err:?}");
        assert_alive(&client).await;
    }
    // Wrong parameter count is the client's mistake, not a server bug.
    let statement = client
        .prepare("select n_name from tpch.nation where n_nationkey = $1")
        .await
        .unwrap();
    assert_eq!(statement.params().len(), 1);
    assert_alive(&client).await;
    assert!(!server.log().contains("panicked"));
}

/// A statement that runs for minutes unless stopped. (Generated rows, so its
/// operators yield between batches; see docs/architecture.md on operators
/// that do not.)
const ENDLESS: &str = "select max(value) from generate_series(1, 1000000000000)";

#[tokio::test]
async fn cancel_request_stops_the_running_query() {
    let server = server();
    let client = server.connect().await;
    for _ in 0..3 {
        let token = client.cancel_token();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            token.cancel_query(tokio_postgres::NoTls).await
        });
        let started = std::time::Instant::now();
        let err = client.simple_query(ENDLESS).await.unwrap_err();
        canceller.await.unwrap().unwrap();
        assert_eq!(sqlstate(&err), "57014", "{err:?}");
        assert!(
            err.to_string().contains("user request") || format!("{err:?}").contains("user request")
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cancel took {:?}",
            started.elapsed()
        );
        assert_alive(&client).await;
    }
    // Extended protocol too.
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let err = client.query(ENDLESS, &[]).await.unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_eq!(sqlstate(&err), "57014");
    assert_alive(&client).await;
}

#[tokio::test]
async fn cancel_with_a_wrong_key_changes_nothing() {
    let server = server();
    let client = server.connect().await;
    // The statement ends by its own timeout, after another connection's
    // cancel key was used: if that cancel had hit this session, the error
    // would say "user request" and come at once.
    client
        .simple_query("SET statement_timeout = '2s'")
        .await
        .unwrap();
    let other = server.connect().await;
    let token = other.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let started = std::time::Instant::now();
    let err = client.simple_query(ENDLESS).await.unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_eq!(sqlstate(&err), "57014");
    assert!(format!("{err:?}").contains("statement timeout"), "{err:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_alive(&client).await;
    assert_alive(&other).await;
}

#[tokio::test]
async fn statement_timeout_cancels_with_57014() {
    let server = server();
    let client = server.connect().await;
    client
        .simple_query("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let rows = client.simple_query("SHOW statement_timeout").await.unwrap();
    assert_eq!(simple_rows(&rows), vec![vec![Some("300ms".to_string())]]);
    for _ in 0..2 {
        let err = client.simple_query(ENDLESS).await.unwrap_err();
        assert_eq!(sqlstate(&err), "57014");
        assert!(format!("{err:?}").contains("statement timeout"), "{err:?}");
        assert_alive(&client).await;
    }
    client
        .simple_query("RESET statement_timeout")
        .await
        .unwrap();
    let rows = client.simple_query("SHOW statement_timeout").await.unwrap();
    assert_eq!(simple_rows(&rows), vec![vec![Some("0".to_string())]]);
}

/// Sends `bytes` on a fresh TCP connection and reads until the server
/// closes it (or a short time passes).
fn send_raw(port: u16, bytes: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
}

fn startup_packet() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    body.extend_from_slice(b"user\0loch\0\0");
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let mut server = server();
    let client = server.connect().await;
    let port = server.port;
    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 64],
        vec![0, 0, 0, 3],
        {
            let mut v = startup_packet();
            // A Query message whose length is -1.
            v.extend_from_slice(&[b'Q', 0xff, 0xff, 0xff, 0xff]);
            v
        },
        {
            let mut v = startup_packet();
            // A Query with a length far beyond what follows.
            v.extend_from_slice(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b's']);
            v
        },
        {
            let mut v = startup_packet();
            // Invalid UTF-8 in a query string.
            v.extend_from_slice(&[b'Q', 0, 0, 0, 8, 0xc3, 0x28, 0xa0, 0]);
            v
        },
        {
            let mut v = startup_packet();
            // An unknown message type.
            v.extend_from_slice(&[b'@', 0, 0, 0, 4]);
            v
        },
    ];
    for bytes in cases {
        let handle = tokio::task::spawn_blocking(move || send_raw(port, &bytes));
        assert_alive(&client).await;
        handle.await.unwrap();
        assert_alive(&client).await;
    }
    assert!(server.is_alive());
    let fresh = server.connect().await;
    assert_alive(&fresh).await;
    assert!(!server.log().contains("panicked"), "{}", server.log_tail());
}

#[tokio::test]
async fn information_schema_columns_use_postgresql_type_names() {
    use arrow::datatypes::DataType;
    let server = server();
    let client = server.connect().await;
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let schema = oracle::table_schema(&ctx, "lineitem").await;
    let rows = client
        .query(
            "select column_name, data_type, cast(numeric_precision as bigint), \
             cast(numeric_scale as bigint) \
             from information_schema.columns \
             where table_schema = 'tpch' and table_name = 'lineitem' order by ordinal_position",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), schema.fields().len());
    for (row, field) in rows.iter().zip(schema.fields()) {
        let name: String = row.get(0);
        let data_type: String = row.get(1);
        assert_eq!(name, *field.name());
        let expected = match field.data_type() {
            DataType::Int32 => "integer",
            DataType::Int64 => "bigint",
            DataType::Decimal128(..) => "numeric",
            DataType::Utf8 | DataType::Utf8View => "text",
            DataType::Date32 => "date",
            other => panic!("no PostgreSQL name for {other} in this test"),
        };
        assert_eq!(data_type, expected, "{name}");
        if let DataType::Decimal128(p, s) = field.data_type() {
            let precision: Option<i64> = row
                .try_get::<_, Option<i64>>(2)
                .unwrap_or_else(|_| row.get::<_, Option<i32>>(2).map(i64::from));
            let scale: Option<i64> = row
                .try_get::<_, Option<i64>>(3)
                .unwrap_or_else(|_| row.get::<_, Option<i32>>(3).map(i64::from));
            assert_eq!(precision, Some(i64::from(*p)), "{name}");
            assert_eq!(scale, Some(i64::from(*s)), "{name}");
        }
    }
}

#[tokio::test]
async fn binary_results_of_the_types_drivers_decode() {
    let server = server();
    let client = server.connect().await;
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    // tokio-postgres asks for every result column in binary.
    let sql = "select true as b, cast(7 as smallint) as i2, cast(8 as int) as i4, \
               cast(9 as bigint) as i8, cast(1.5 as real) as f4, \
               cast(2.25 as double precision) as f8, cast(12.34 as decimal(10, 2)) as n, \
               cast(-0.5 as decimal(10, 4)) as n2, 'text' as t, \
               cast('2024-01-02' as date) as d, \
               cast('2024-01-02 03:04:05.123456' as timestamp) as ts, \
               cast(null as int) as nul";
    let rows = client.query(sql, &[]).await.unwrap();
    let types: Vec<String> = rows[0]
        .columns()
        .iter()
        .map(|c| c.type_().name().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "bool",
            "int2",
            "int4",
            "int8",
            "float4",
            "float8",
            "numeric",
            "numeric",
            "text",
            "date",
            "timestamp",
            "int4"
        ]
    );
    // chrono prints a space between date and time, Arrow a `T`.
    let normalize = |rows: Vec<Vec<Cell>>| -> Vec<Vec<Cell>> {
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|c| match c {
                        Cell::Text(t) => Cell::Text(t.replacen('T', " ", 1)),
                        other => other,
                    })
                    .collect()
            })
            .collect()
    };
    let expected = normalize(oracle::run(&ctx, sql).await);
    let got = normalize(oracle::pg_rows(&rows));
    oracle::compare(&expected, &got, true).unwrap();

    // bytea, in binary, is the bytes themselves.
    let row = client
        .query_one("select cast('\\x00ff41' as bytea)", &[])
        .await
        .unwrap();
    assert_eq!(row.columns()[0].type_().name(), "bytea");
    let expected = ctx
        .sql("select cast('\\x00ff41' as bytea)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let column =
        arrow::compute::cast(expected[0].column(0), &arrow::datatypes::DataType::Binary).unwrap();
    let expected = arrow::array::AsArray::as_binary::<i32>(&column)
        .value(0)
        .to_vec();
    assert_eq!(row.get::<_, Vec<u8>>(0), expected);
}
