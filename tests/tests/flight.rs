//! Flight SQL with real clients: the ADBC Flight SQL driver (what pandas,
//! polars and notebooks use) and pyarrow.flight for what a well-behaved
//! client never sends. `dev/test` installs both into its venv; a missing
//! client fails the test, never skips it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use loch_tests::oracle::{self, Cell};
use loch_tests::{LochServer, json_rows, run_python_script, tpch_query, wait_alive};
use serde_json::Value;

fn server() -> LochServer {
    LochServer::start_shared(env!("CARGO_TARGET_TMPDIR"))
}

/// Runs tests/python/`script` with the server's Flight URI, user and
/// password, then `args`; returns the JSON lines it printed.
fn run_python(server: &LochServer, script: &str, args: &[&str]) -> Vec<Value> {
    run_python_as(server, script, "loch", &server.password(), args)
}

fn run_python_as(
    server: &LochServer,
    script: &str,
    user: &str,
    password: &str,
    args: &[&str],
) -> Vec<Value> {
    let uri = server.flight_uri();
    let mut all = vec![uri.as_str(), user, password];
    all.extend_from_slice(args);
    run_python_script(server, script, &all, "adbc-driver-flightsql or pyarrow")
}

/// The line of `check` among a script's output.
fn check<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| v["check"] == name)
        .unwrap_or_else(|| panic!("no {name:?} in {lines:?}"))
}

/// The error text of a check, asserting there was one.
fn error(v: &Value) -> String {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {v}"))
        .to_string()
}

fn read_ipc(path: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    arrow::ipc::reader::FileReader::try_new(file, None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

#[tokio::test]
async fn adbc_runs_the_22_tpch_queries() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benchmarks/queries/tpch");
    let out = tempfile::tempdir().unwrap();
    let lines = run_python(
        &server,
        "tpch_adbc.py",
        &[queries.to_str().unwrap(), out.path().to_str().unwrap()],
    );
    assert_eq!(lines.len(), 22);
    for n in 1..=22 {
        let sql = tpch_query(n);
        let expected = oracle::run(&ctx, &sql).await;
        let batches = read_ipc(&out.path().join(format!("q{n}.arrow")));
        let got = oracle::arrow_rows(&batches);
        oracle::compare(&expected, &got, oracle::is_ordered(&sql))
            .unwrap_or_else(|e| panic!("q{n} through ADBC Flight SQL: {e}"));
        // Arrow types survive the trip (decimals stay decimals, dates dates).
        let oracle_schema = ctx.sql(&sql).await.unwrap().schema().as_arrow().clone();
        let got_schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| panic!("q{n}: the IPC file holds no batch"));
        assert_eq!(
            got_schema.fields().len(),
            oracle_schema.fields().len(),
            "q{n}"
        );
        for (got, want) in got_schema.fields().iter().zip(oracle_schema.fields()) {
            let want = match want.data_type() {
                arrow::datatypes::DataType::Utf8View => arrow::datatypes::DataType::Utf8,
                other => other.clone(),
            };
            assert_eq!(got.data_type(), &want, "q{n} column {}", got.name());
        }
    }
}

#[tokio::test]
async fn adbc_prepared_statements_catalog_errors_and_ddl() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let lines = run_python(&server, "adbc_features.py", &[]);

    let wrong = check(&lines, "wrong_password");
    assert_eq!(wrong["refused"], true, "{wrong}");
    assert!(
        error(wrong).contains("Unauthenticated") || error(wrong).contains("UNAUTHENTICATED"),
        "{wrong}"
    );

    for name in ["prepared", "prepared_again", "search_path"] {
        let v = check(&lines, name);
        let expected = oracle::run(&ctx, v["oracle_sql"].as_str().unwrap()).await;
        assert!(!expected.is_empty(), "{name}");
        oracle::compare(&expected, &json_rows(v), true).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    let objects = &check(&lines, "get_objects")["tables"];
    let lineitem = &objects["loch.tpch.lineitem"];
    assert_eq!(lineitem["type"], "TABLE", "{objects}");
    let columns: Vec<&str> = lineitem["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(columns.len(), 16, "{columns:?}");
    assert_eq!(columns[0], "l_orderkey");
    for table in [
        "nation", "region", "orders", "customer", "part", "partsupp", "supplier",
    ] {
        assert!(
            objects.get(format!("loch.tpch.{table}")).is_some(),
            "{table} not listed"
        );
    }

    let fields = check(&lines, "table_schema")["fields"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(fields.len(), 16);
    assert_eq!(fields[0], serde_json::json!(["l_orderkey", "int64"]));
    assert_eq!(fields[5][0], "l_extendedprice");
    assert_eq!(fields[5][1], "decimal128(15, 2)");
    assert!(
        check(&lines, "table_types")["types"]
            .as_array()
            .unwrap()
            .contains(&Value::from("TABLE"))
    );

    let syntax = check(&lines, "syntax_error");
    assert_eq!(syntax["failed"], true);
    assert!(error(syntax).contains("42601"), "{syntax}");
    assert_eq!(
        json_rows(check(&lines, "after_error")),
        vec![vec![Cell::Int(42)]]
    );
    let unknown = check(&lines, "unknown_table");
    assert!(error(unknown).contains("42P01"), "{unknown}");

    let ddl = check(&lines, "ddl_dml");
    assert_eq!(ddl["inserted"], 3, "{ddl}");
    assert_eq!(
        json_rows(ddl),
        vec![
            vec![Cell::Int(1), Cell::Text("one".into())],
            vec![Cell::Int(2), Cell::Text("two".into())],
            vec![Cell::Int(3), Cell::Text("three".into())],
        ]
    );
    assert_eq!(
        json_rows(check(&lines, "show")),
        vec![vec![Cell::Text("tpch".into())]]
    );
}

#[test]
fn flight_tickets_belong_to_their_session_and_are_used_once() {
    let server = server();
    let lines = run_python(&server, "flight_lowlevel.py", &["tickets"]);
    let own = check(&lines, "own_ticket");
    assert_eq!(own["rows"], 25, "{own}");
    assert_eq!(own["first"], "ALGERIA", "{own}");
    for name in ["other_session", "reused", "forged"] {
        let e = error(check(&lines, name));
        assert!(
            e.contains("FlightServerError")
                || e.contains("NotFound")
                || e.contains("not found")
                || e.contains("unknown ticket"),
            "{name}: {e}"
        );
        assert!(e.contains("34000"), "{name}: {e}");
    }
    assert!(!error(check(&lines, "garbage")).is_empty());
    for name in ["no_token", "wrong_token"] {
        let e = error(check(&lines, name));
        assert!(e.contains("FlightUnauthenticatedError"), "{name}: {e}");
    }
    // The server survived all of it.
    let again = run_python(&server, "flight_lowlevel.py", &["tickets"]);
    assert_eq!(check(&again, "own_ticket")["rows"], 25);
}

#[tokio::test]
async fn flight_messages_stay_small_on_a_full_lineitem_scan() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let expected = oracle::run(&ctx, "select count(*) from lineitem").await;
    let Cell::Int(count) = expected[0][0] else {
        panic!()
    };
    // Scans placed on the executors (both of `loch local`'s), so batches
    // cross the exchange first.
    wait_alive(&server, &server.connect().await, 2).await;
    let lines = run_python(
        &server,
        "flight_lowlevel.py",
        &["sizes", loch_tests::FORCE_DISTRIBUTION],
    );
    let sizes = check(&lines, "sizes");
    assert_eq!(sizes["rows"], count, "{sizes}");
    let largest = sizes["largest"].as_u64().unwrap();
    // Under gRPC's common 4 MiB default receive limit, let alone 16 MiB.
    assert!(largest > 0 && largest <= 4 * 1024 * 1024, "{sizes}");
    // Streamed in many messages, not one buffered result...
    let messages = sizes["messages"].as_u64().unwrap();
    assert!(messages > 10, "{sizes}");
    // ...but not in slivers either: batches that came from executors are
    // sent whole (DataFusion's 8192 rows), not cut by an over-count of
    // their size. Per-message costs dominate a client's time otherwise.
    let rows = sizes["rows"].as_u64().unwrap();
    assert!(
        rows / messages >= 2048,
        "{} rows per message: {sizes}",
        rows / messages
    );
}

/// Scans cut into 16 chunks (8 partitions × 2 tasks), so each executor
/// is home to several and every endpoint streams a good share.
const SPREAD: &str = "SET datafusion.execution.target_partitions = 8";

/// A scan whose endpoints carry far more than a client's and the server's
/// gRPC buffers hold (about 100 MB each at scale 0.1), so a stream is still
/// running when the client stops reading.
const WIDE_SCAN: &str = "select *, repeat(l_comment, 8) as wide from tpch.lineitem";

/// A scan the executors run is read straight from them: one endpoint per
/// scan task, located at its executor, with a ticket only that executor
/// takes, once, unchanged. Grants, row filters and masks hold there too.
#[tokio::test]
async fn flight_reads_scans_straight_from_the_executors() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start(dir.path());
    let admin = server.connect().await;
    wait_alive(&server, &admin, 2).await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA crm;
             CREATE EXTERNAL TABLE crm.lineitem STORED AS PARQUET LOCATION '{}/lineitem/';
             CREATE USER ann PASSWORD 'ann-pw';
             GRANT USAGE ON SCHEMA crm TO ann;
             GRANT SELECT ON crm.lineitem TO ann;
             ALTER ROLE ann SET distributed.file_scan_config_bytes_per_partition = 65536;
             ALTER ROLE ann SET datafusion.execution.target_partitions = 8;
             ALTER TABLE crm.lineitem SET ROW FILTER l_quantity < 10;
             ALTER TABLE crm.lineitem ALTER COLUMN l_comment SET MASK left(l_comment, 3)",
            server.sample_dir().display()
        ))
        .await
        .unwrap();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let out = tempfile::tempdir().unwrap();

    // The admin, through pyarrow.flight.
    let sql = "select l_orderkey, l_linenumber, l_quantity, l_comment from tpch.lineitem";
    let path = out.path().join("admin.arrow");
    let lines = run_python(
        &server,
        "flight_lowlevel.py",
        &[
            "direct",
            path.to_str().unwrap(),
            sql,
            loch_tests::FORCE_DISTRIBUTION,
            SPREAD,
        ],
    );
    let direct = check(&lines, "direct");
    let locations: Vec<&str> = direct["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let endpoints = direct["endpoints"].as_u64().unwrap() as usize;
    assert!(endpoints >= 2, "{direct}");
    assert_eq!(
        locations.len(),
        endpoints,
        "every endpoint located: {direct}"
    );
    let mut distinct = locations.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "both executors serve: {direct}");
    let coordinator_port = server.flight_uri().rsplit(':').next().unwrap().to_string();
    assert!(
        locations
            .iter()
            .all(|l| l.starts_with("grpc+tcp://127.0.0.1:") && !l.ends_with(&coordinator_port)),
        "{direct}"
    );
    let expected = oracle::run(
        &ctx,
        "select l_orderkey, l_linenumber, l_quantity, l_comment from lineitem",
    )
    .await;
    oracle::compare(&expected, &oracle::arrow_rows(&read_ipc(&path)), false)
        .unwrap_or_else(|e| panic!("direct endpoints: {e}"));
    for (name, wants) in [
        ("replayed", "already redeemed"),
        ("tampered", "changed since it was issued"),
        ("garbage", "changed since it was issued"),
    ] {
        let e = error(check(&lines, name));
        assert!(
            e.contains(wants) && e.contains("FlightUnauthenticatedError"),
            "{name}: {e}"
        );
    }
    let replayed = error(check(&lines, "replayed_at_coordinator"));
    assert!(replayed.contains("already redeemed"), "{replayed}");
    // Every endpoint names the coordinator after its executor; a ticket
    // brought there runs there once, and then nowhere else.
    assert_eq!(direct["fallbacks"], direct["endpoints"], "{direct}");
    let to_coordinator = check(&lines, "to_coordinator");
    assert!(
        to_coordinator["rows"].as_u64().unwrap() > 0,
        "{to_coordinator}"
    );
    assert_eq!(
        to_coordinator["rows"], to_coordinator["at_executor"],
        "{to_coordinator}"
    );
    for refusal in ["then_executor", "again"] {
        let e = to_coordinator[refusal].as_str().unwrap_or_default();
        assert!(
            e.contains("already redeemed"),
            "{refusal}: {to_coordinator}"
        );
    }
    assert!(error(check(&lines, "list_flights")).contains("only DoGet"));
    let through = check(&lines, "through_coordinator");
    assert_eq!(through["endpoints"], 1, "{through}");
    assert_eq!(through["located"], 0, "{through}");
    assert_eq!(through["rows"], direct["rows"], "{through}");

    // A client that goes away mid-stream leaves nothing running.
    let lines = run_python(
        &server,
        "flight_lowlevel.py",
        &["abandon", WIDE_SCAN, loch_tests::FORCE_DISTRIBUTION, SPREAD],
    );
    let abandon = check(&lines, "abandon");
    assert!(abandon["endpoints"].as_u64().unwrap() >= 2, "{abandon}");
    // At least one stream is still running and counted (a client may
    // buffer a whole endpoint's rows: CI once saw 1 of 2 still running).
    assert!(
        abandon["during"].as_i64().unwrap() >= 1,
        "the streams count as running tasks: {abandon}"
    );
    assert_eq!(abandon["after"], 0, "{abandon}");

    // CancelFlightInfo reaches the executors: the running stream ends with
    // 57014, the endpoint not read yet never runs.
    let lines = run_python(
        &server,
        "flight_lowlevel.py",
        &[
            "cancel_direct",
            WIDE_SCAN,
            loch_tests::FORCE_DISTRIBUTION,
            SPREAD,
        ],
    );
    let running = check(&lines, "cancel_direct_running");
    assert!(running["located"].as_u64().unwrap() >= 2, "{running}");
    assert_eq!(running["cancel_status"], 1, "CANCELLED: {running}");
    let e = error(running);
    assert!(
        e.contains("FlightCancelledError") && e.contains("57014"),
        "{running}"
    );
    let pending = error(check(&lines, "cancel_direct_pending"));
    assert!(pending.contains("57014"), "{pending}");
    assert_eq!(check(&lines, "after_cancel_direct")["rows"], 1);

    // A reader with a row filter and a mask, through ADBC (which follows
    // the endpoints' locations by itself).
    let path = out.path().join("ann.arrow");
    let lines = run_python_as(
        &server,
        "query_adbc.py",
        "ann",
        "ann-pw",
        // Her role spreads her scans (only superusers may SET that).
        &[path.to_str().unwrap(), &sql.replace("tpch.", "crm.")],
    );
    let expected = oracle::run(
        &ctx,
        "select l_orderkey, l_linenumber, l_quantity, left(l_comment, 3) as l_comment
         from lineitem where l_quantity < 10",
    )
    .await;
    assert_eq!(check(&lines, "query")["rows"], expected.len());
    oracle::compare(&expected, &oracle::arrow_rows(&read_ipc(&path)), false)
        .unwrap_or_else(|e| panic!("ann through ADBC: {e}"));
    // The same for her through pyarrow, which shows the endpoints were the
    // executors'.
    let lines = run_python_as(
        &server,
        "flight_lowlevel.py",
        "ann",
        "ann-pw",
        &[
            "direct",
            path.to_str().unwrap(),
            &sql.replace("tpch.", "crm."),
        ],
    );
    let direct = check(&lines, "direct");
    assert!(direct["endpoints"].as_u64().unwrap() >= 2, "{direct}");
    assert_eq!(
        direct["locations"].as_array().unwrap().len() as u64,
        direct["endpoints"]
    );
    oracle::compare(&expected, &oracle::arrow_rows(&read_ipc(&path)), false)
        .unwrap_or_else(|e| panic!("ann through direct endpoints: {e}"));
}

/// A direct endpoint whose executor died after planning is served by the
/// coordinator: ADBC tries the endpoint's next location by itself, and the
/// coordinator runs the task the dead executor was given.
#[tokio::test]
async fn flight_direct_endpoints_fall_back_to_the_coordinator() {
    let dir = loch_tests::shared_data_dir(env!("CARGO_TARGET_TMPDIR"));
    drop(server());
    // A heartbeat timeout long enough that the coordinator still plans on
    // the killed executor: the client finds it gone, not the coordinator.
    let server = LochServer::start_opts(
        &dir,
        loch_tests::TEST_SCALE,
        &["--executors", "2", "--heartbeat-timeout-ms", "300000"],
        &[],
    );
    let admin = server.connect().await;
    wait_alive(&server, &admin, 2).await;
    let victim: i64 = admin
        .query_one(
            "SELECT pid FROM system.executors ORDER BY address LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let killed = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Dead (a zombie until the coordinator reaps it, or gone).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(format!("/proc/{victim}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "executor {victim} still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let alive: i64 = admin
        .query_one(
            "SELECT count(*) FROM system.executors WHERE state = 'alive'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(alive, 2, "the coordinator has not noticed yet");

    let sql = "select l_orderkey, l_linenumber, l_quantity, l_comment from tpch.lineitem";
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("fallback.arrow");
    let lines = run_python(
        &server,
        "query_adbc.py",
        &[
            path.to_str().unwrap(),
            loch_tests::FORCE_DISTRIBUTION,
            SPREAD,
            sql,
        ],
    );
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let expected = oracle::run(
        &ctx,
        "select l_orderkey, l_linenumber, l_quantity, l_comment from lineitem",
    )
    .await;
    assert_eq!(check(&lines, "query")["rows"], expected.len());
    oracle::compare(&expected, &oracle::arrow_rows(&read_ipc(&path)), false)
        .unwrap_or_else(|e| panic!("after losing an executor: {e}"));
    assert!(
        server
            .log()
            .contains("direct ticket run on the coordinator: its executor is out of reach"),
        "the dead executor's endpoints were not redeemed on the coordinator:\n{}",
        server.log_tail()
    );
}

#[tokio::test]
async fn flight_cancel_stops_running_and_pending_queries() {
    let server = server();
    let lines = run_python(&server, "flight_lowlevel.py", &["cancel"]);
    let running = check(&lines, "cancel_running");
    let e = error(running);
    assert!(
        e.contains("FlightCancelledError") && e.contains("57014"),
        "{running}"
    );
    // The join has ~2.4 M rows at scale 0.1: cancelling stopped it early.
    assert!(running["rows"].as_u64().unwrap() < 2_000_000, "{running}");
    assert_eq!(
        running["cancel_status"], 1,
        "CancelFlightInfoResult CANCELLED: {running}"
    );
    let pending = error(check(&lines, "cancel_pending"));
    assert!(
        pending.contains("57014") && pending.contains("Cancelled"),
        "{pending}"
    );
    assert_eq!(check(&lines, "after_cancel")["rows"], 1);
}

#[test]
fn flight_close_session_ends_the_token() {
    let server = server();
    let lines = run_python(&server, "flight_lowlevel.py", &["close"]);
    let v = check(&lines, "close");
    assert!(v["before"].is_null(), "{v}");
    assert_eq!(
        v["body"],
        serde_json::json!([8, 1]),
        "CloseSessionResult CLOSED: {v}"
    );
    assert!(
        v["after"]
            .as_str()
            .unwrap_or_default()
            .contains("FlightUnauthenticatedError"),
        "{v}"
    );
}

#[test]
fn flight_tokens_expire() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start_opts(
        dir.path(),
        0.0,
        &["--flight-token-ttl", "1"],
        &[("LOCH_ADMIN_PASSWORD", "correct horse")],
    );
    let lines = run_python_as(
        &server,
        "flight_lowlevel.py",
        "loch",
        "correct horse",
        &["expiry"],
    );
    let v = check(&lines, "expiry");
    assert!(v["before"].is_null(), "{v}");
    let after = v["after"].as_str().unwrap_or_default();
    assert!(after.contains("FlightUnauthenticatedError"), "{v}");
    // The password came from the environment: no password file was written.
    assert!(!dir.path().join("admin-password").exists());
}
