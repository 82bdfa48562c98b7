//! Distributed execution: `loch local` with executor child processes.
//!
//! - TPC-H (SF 0.1) through pg wire with 1, 2 and 3 executors, with tiny
//!   partitions so every scan is spread over all executors, equal to
//!   in-process DataFusion; EXPLAIN shows the stages and their placement;
//!   the same over target_partitions {1, 4} x broadcast joins on/off.
//! - Executors killed and started between queries: `system.executors`
//!   reaches the expected count (polled, never a fixed sleep) and the next
//!   query is right; an executor whose coordinator is gone exits.
//! - An executor killed before the query's first row: the query is planned
//!   again on the executors left and answers right.
//! - The executors' and the registry's endpoints refuse calls without the
//!   cluster credential, with a wrong one, a stale one or a replayed one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loch_executor::cluster::{AUTH_HEADER, ClusterSecret};
use loch_tests::oracle;
use loch_tests::{FORCE_DISTRIBUTION, LochServer, loch_bin, tpch_query, wait_alive, wait_count};
use tonic::metadata::MetadataValue;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn alive(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM system.executors WHERE state = 'alive'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Until the executor with `pid` is listed as lost.
async fn wait_lost(server: &LochServer, client: &tokio_postgres::Client, pid: i64) {
    let sql = "SELECT count(*) FROM system.executors WHERE pid = $1 AND state = 'lost'";
    wait_count(server, client, sql, &[&pid], 1).await;
}

async fn check_queries(
    server: &LochServer,
    client: &tokio_postgres::Client,
    queries: &[usize],
) -> Vec<String> {
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let mut failures = Vec::new();
    for &n in queries {
        let sql = tpch_query(n);
        let expected = oracle::run(&ctx, &sql).await;
        match client.query(sql.as_str(), &[]).await {
            Ok(rows) => {
                if let Err(e) =
                    oracle::compare(&expected, &oracle::pg_rows(&rows), oracle::is_ordered(&sql))
                {
                    failures.push(format!("q{n}: {e}"));
                }
            }
            Err(e) => failures.push(format!("q{n}: {e:?}")),
        }
    }
    failures
}

async fn explain(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .simple_query(&format!("EXPLAIN {sql}"))
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .filter_map(|i| r.get(i))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn tpch_on_one_two_and_three_executors() {
    let dir = loch_tests::shared_data_dir(env!("CARGO_TARGET_TMPDIR"));
    // Generate the shared sample first (once), then use the same files.
    drop(LochServer::start_shared(env!("CARGO_TARGET_TMPDIR")));
    let mut failures = Vec::new();
    for executors in ["1", "2", "3"] {
        let server = LochServer::start_opts(
            &dir,
            loch_tests::TEST_SCALE,
            &["--executors", executors],
            &[],
        );
        let client = server.connect_with("options='-c search_path=tpch'").await;
        wait_alive(&server, &client, executors.parse().unwrap()).await;
        client.batch_execute(FORCE_DISTRIBUTION).await.unwrap();
        // With two or more executors the plan really is cut into stages
        // over them (with one, every stage would have one task, and such a
        // plan runs on the coordinator).
        let plan = explain(&client, &tpch_query(3)).await;
        if executors == "1" {
            assert!(plan.contains("Runs on the coordinator"), "{plan}");
        } else {
            assert!(
                plan.contains("DistributedExec")
                    && plan.contains(&format!("Placement over {executors} live executor(s)")),
                "{executors} executors: not distributed:\n{plan}"
            );
        }
        if executors == "2" {
            planning_follows_what_the_query_reads(&client).await;
        }
        let all: Vec<usize> = (1..=22).collect();
        for f in check_queries(&server, &client, &all).await {
            failures.push(format!("{executors} executors: {f}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A scan's task count follows the bytes of the columns it reads, not the
/// size of its files; and hash joins broadcast larger build sides than
/// single-process DataFusion would.
async fn planning_follows_what_the_query_reads(client: &tokio_postgres::Client) {
    // partsupp at SF 0.1 is about 4 MB of files, most of it ps_comment: all
    // of it is over two 1 MiB partitions' worth, its two key columns not.
    client
        .batch_execute("SET distributed.file_scan_config_bytes_per_partition = 1048576")
        .await
        .unwrap();
    let wide = explain(client, "SELECT * FROM partsupp").await;
    assert!(
        wide.contains("Placement over 2 live executor(s)"),
        "every column of partsupp: not distributed:\n{wide}"
    );
    let narrow = explain(client, "SELECT ps_partkey, ps_suppkey FROM partsupp").await;
    assert!(
        narrow.contains("Runs on the coordinator"),
        "two key columns of partsupp: distributed:\n{narrow}"
    );
    let setting = |name: &'static str| async move {
        client
            .query_one(
                "SELECT value FROM information_schema.df_settings WHERE name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(
        setting("datafusion.optimizer.hash_join_single_partition_threshold_rows").await,
        "2000000"
    );
    assert_eq!(
        setting("datafusion.optimizer.hash_join_single_partition_threshold").await,
        (32 << 20).to_string()
    );
    client.batch_execute(FORCE_DISTRIBUTION).await.unwrap();
}

#[tokio::test]
async fn executors_join_and_leave_between_queries() {
    let dir = loch_tests::shared_data_dir(env!("CARGO_TARGET_TMPDIR"));
    drop(LochServer::start_shared(env!("CARGO_TARGET_TMPDIR")));
    let secret = ClusterSecret::generate().unwrap();
    let cluster_port = free_port().to_string();
    let cluster_addr = format!("127.0.0.1:{cluster_port}");
    let mut server = LochServer::start_opts(
        &dir,
        loch_tests::TEST_SCALE,
        &[
            "--executors",
            "2",
            "--cluster-addr",
            &cluster_addr,
            "--heartbeat-timeout-ms",
            "1000",
        ],
        &[("LOCH_CLUSTER_SECRET", secret.to_hex())],
    );
    let client = server.connect_with("options='-c search_path=tpch'").await;
    wait_alive(&server, &client, 2).await;
    client.batch_execute(FORCE_DISTRIBUTION).await.unwrap();
    let queries = [1, 3, 9, 18];
    let failures = check_queries(&server, &client, &queries).await;
    assert!(failures.is_empty(), "2 executors: {failures:?}");

    // One executor dies: it is dropped from scheduling and queries still work.
    let pids: Vec<i64> = client
        .query("SELECT pid FROM system.executors ORDER BY address", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pids.len(), 2);
    let status = Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_lost(&server, &client, pids[0]).await;
    wait_alive(&server, &client, 1).await;
    let lost: i64 = client
        .query_one(
            "SELECT count(*) FROM system.executors WHERE state = 'lost'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lost, 1, "the dead executor is listed as lost");
    let failures = check_queries(&server, &client, &queries).await;
    assert!(failures.is_empty(), "after a kill: {failures:?}");

    // A new executor joins from outside and is used.
    let mut joined = Command::new(loch_bin())
        .arg("executor")
        .args(["--coordinator", &format!("http://{cluster_addr}")])
        .args(["--coordinator-timeout", "3"])
        .env("LOCH_CLUSTER_SECRET", secret.to_hex())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_alive(&server, &client, 2).await;
    let pid_listed: i64 = client
        .query_one(
            "SELECT count(*) FROM system.executors WHERE state = 'alive' AND pid = $1",
            &[&i64::from(joined.id())],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid_listed, 1);
    let failures = check_queries(&server, &client, &queries).await;
    assert!(failures.is_empty(), "after a join: {failures:?}");

    // The coordinator dies: its executors notice and exit.
    drop(client);
    let _ = Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status();
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = joined.try_wait().unwrap() {
            assert!(!status.success(), "exits with an error when orphaned");
            break;
        }
        assert!(Instant::now() < deadline, "orphaned executor still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A raw gRPC call with an empty message to `path`, carrying `credential`.
async fn call(addr: &str, path: &'static str, credential: Option<String>) -> tonic::Code {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(credential) = credential {
        request.metadata_mut().insert(
            AUTH_HEADER,
            MetadataValue::try_from(credential.as_str()).unwrap(),
        );
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let result = grpc
        .unary(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await;
    match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn internal_endpoints_refuse_calls_without_the_cluster_secret() {
    let dir = loch_tests::shared_data_dir(env!("CARGO_TARGET_TMPDIR"));
    drop(LochServer::start_shared(env!("CARGO_TARGET_TMPDIR")));
    let secret = ClusterSecret::generate().unwrap();
    let cluster_addr = format!("127.0.0.1:{}", free_port());
    let server = LochServer::start_opts(
        &dir,
        loch_tests::TEST_SCALE,
        &["--executors", "1", "--cluster-addr", &cluster_addr],
        &[("LOCH_CLUSTER_SECRET", secret.to_hex())],
    );
    let client = server.connect().await;
    wait_alive(&server, &client, 1).await;
    let executor: String = client
        .query_one("SELECT address FROM system.executors", &[])
        .await
        .unwrap()
        .get(0);
    let stranger = ClusterSecret::generate().unwrap();
    let ten_minutes_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 600_000;
    let registry = format!("http://{cluster_addr}");
    let targets = [
        (executor.as_str(), "/worker.WorkerService/GetWorkerInfo"),
        (executor.as_str(), "/worker.WorkerService/ExecuteTask"),
        (
            executor.as_str(),
            "/worker.WorkerService/CoordinatorChannel",
        ),
        (
            registry.as_str(),
            "/arrow.flight.protocol.FlightService/DoAction",
        ),
    ];
    for (addr, path) in targets {
        for (what, credential) in [
            ("none", None),
            ("garbage", Some("v1.1.2.3".to_string())),
            ("wrong secret", Some(stranger.sign())),
            ("stale", Some(secret.sign_at(ten_minutes_ago))),
        ] {
            assert_eq!(
                call(addr, path, credential).await,
                tonic::Code::Unauthenticated,
                "{path} with {what} credential"
            );
        }
    }
    // A valid credential gets through the check (the empty request itself
    // is then answered or refused by the service), exactly once.
    let credential = secret.sign();
    let first = call(
        &executor,
        "/worker.WorkerService/GetWorkerInfo",
        Some(credential.clone()),
    )
    .await;
    assert_ne!(first, tonic::Code::Unauthenticated);
    let replayed = call(
        &executor,
        "/worker.WorkerService/GetWorkerInfo",
        Some(credential),
    )
    .await;
    assert_eq!(replayed, tonic::Code::Unauthenticated, "replay refused");
    // Nothing the strangers sent registered an executor, and queries work.
    assert_eq!(alive(&client).await, 1);
    let rows = client
        .query("SELECT count(*) FROM tpch.nation", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 25);
}

#[tokio::test]
async fn tpch_config_grid_partitions_and_broadcast_joins() {
    let dir = loch_tests::shared_data_dir(env!("CARGO_TARGET_TMPDIR"));
    drop(LochServer::start_shared(env!("CARGO_TARGET_TMPDIR")));
    let server = LochServer::start_opts(&dir, loch_tests::TEST_SCALE, &["--executors", "2"], &[]);
    let client = server.connect_with("options='-c search_path=tpch'").await;
    wait_alive(&server, &client, 2).await;
    client.batch_execute(FORCE_DISTRIBUTION).await.unwrap();
    let all: Vec<usize> = (1..=22).collect();
    let mut failures = Vec::new();
    for partitions in [1, 4] {
        for broadcast in [true, false] {
            client
                .batch_execute(&format!(
                    "SET datafusion.execution.target_partitions = {partitions}; \
                     SET distributed.broadcast_joins = {broadcast}"
                ))
                .await
                .unwrap();
            for f in check_queries(&server, &client, &all).await {
                failures.push(format!(
                    "target_partitions={partitions} broadcast_joins={broadcast}: {f}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Kills -9 an executor that `system.executors` shows running a task.
async fn kill_a_busy_executor(watcher: &tokio_postgres::Client, running: &dyn Fn() -> bool) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim: i64 = loop {
        let busy = watcher
            .query(
                "SELECT pid FROM system.executors WHERE running_tasks > 0 AND state = 'alive' \
                 ORDER BY address",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = busy.first() {
            break row.get(0);
        }
        assert!(running(), "the query ended before a task was seen");
        assert!(Instant::now() < deadline, "no executor ever ran a task");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let status = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    victim
}

/// RELIABILITY C1: an executor killed before the query's first row costs
/// nothing but time: the query is planned again on the executors left and
/// answers right, and the session goes on.
#[tokio::test]
async fn executor_killed_before_the_first_row_the_query_is_planned_again() {
    let dir = loch_tests::shared_data_dir(env!("CARGO_TARGET_TMPDIR"));
    drop(LochServer::start_shared(env!("CARGO_TARGET_TMPDIR")));
    let server = LochServer::start_opts(
        &dir,
        loch_tests::TEST_SCALE,
        &["--executors", "2", "--heartbeat-timeout-ms", "1000"],
        &[],
    );
    let client = server.connect_with("options='-c search_path=tpch'").await;
    let watcher = server.connect().await;
    wait_alive(&server, &watcher, 2).await;
    client.batch_execute(FORCE_DISTRIBUTION).await.unwrap();

    // C1: a count that produces its one row only at the end.
    let long = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey \
                WHERE a.l_quantity + b.l_quantity > 0";
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let expected = oracle::run(&ctx, long).await;
    let running = tokio::spawn(async move {
        let result = client.query(long, &[]).await;
        (client, result)
    });
    let victim = kill_a_busy_executor(&watcher, &|| !running.is_finished()).await;
    let (client, result) = running.await.unwrap();
    let rows = result.expect("a query that lost an executor before its first row is planned again");
    oracle::compare(&expected, &oracle::pg_rows(&rows), false).unwrap();
    assert!(
        server.log().contains("planning the query again"),
        "no re-plan in the log:\n{}",
        server.log_tail()
    );
    wait_lost(&server, &watcher, victim).await;
    let failures = check_queries(&server, &client, &[1, 3, 18]).await;
    assert!(failures.is_empty(), "after the re-plan: {failures:?}");
}
