//! Workload management with the real binary and real clients (tokio-postgres
//! and psql): the admission queue (RELIABILITY B3), memory limits with spill
//! and a query that fails alone with 53200 (B4), a server inside a memory
//! cgroup, per-role limits, and the settings only superusers may change.
//! Answers are checked against in-process DataFusion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loch_tests::oracle;
use loch_tests::{LochServer, TEST_SCALE, shared_data_dir, tpch_query};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The SQLSTATE and message of a failed call.
fn state_of(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// A pg wire client whose unqualified names are the TPC-H sample's.
async fn tpch(server: &LochServer) -> Client {
    server.connect_with("options='-c search_path=tpch'").await
}

/// The text of every cell of the rows of `sql`.
async fn text(client: &Client, sql: &str) -> String {
    let mut out = String::new();
    for message in client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    {
        if let SimpleQueryMessage::Row(r) = message {
            for i in 0..r.len() {
                out += r.get(i).unwrap_or("");
                out += "\n";
            }
        }
    }
    out
}

/// The first column of the rows of `sql`, as text.
async fn column(client: &Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .collect()
}

async fn number(client: &Client, sql: &str) -> i64 {
    column(client, sql).await[0].parse().unwrap()
}

/// Waits (polling, never a fixed sleep) until `sql` answers `want`.
async fn wait_for(client: &Client, sql: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = number(client, sql).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql}: {got}, waited for {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks a query's answer over pg wire against the oracle.
async fn check(client: &Client, ctx: &datafusion::prelude::SessionContext, sql: &str) {
    let expected = oracle::run(ctx, sql).await;
    let got = oracle::pg_query(client, sql).await;
    oracle::compare(&expected, &got, true).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The pids of the live executors.
async fn executor_pids(client: &Client) -> Vec<String> {
    let mut pids = column(
        client,
        "SELECT pid FROM system.executors WHERE state = 'alive' ORDER BY pid",
    )
    .await;
    pids.sort();
    pids
}

const QUEUED: &str = "SELECT queued FROM system.admission";
const RUNNING: &str = "SELECT running FROM system.admission";
const WAITING_QUERY: &str = "SELECT count(*) FROM orders";

/// B3 at CI size: 2 run, 4 wait and run in FIFO order, the rest get 53000 at
/// once; a waiting query is cancelled and another times out; `SELECT 1`,
/// psql's `\dt` and a lookup that ran fast before answer from a new
/// connection while the line is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admission_queue_runs_waits_and_refuses_in_order() {
    let tmp = env!("CARGO_TARGET_TMPDIR");
    drop(LochServer::start_shared(tmp));
    let server = LochServer::start_opts(
        &shared_data_dir(tmp),
        TEST_SCALE,
        &[
            "--max-concurrent-queries",
            "2",
            "--max-queued-queries",
            "4",
            // Generous, so a slow machine still counts the lookup as fast.
            "--fast-query-ms",
            "5000",
        ],
        &[],
    );
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let admin = tpch(&server).await;
    // A dashboard's lookup runs once, and is remembered as fast.
    let lookup =
        |key: u32| format!("SELECT o_orderkey, o_totalprice FROM orders WHERE o_orderkey = {key}");
    check(&admin, &ctx, &lookup(1)).await;

    // Two open cursors hold the two turns until they are closed.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let holder = tpch(&server).await;
        holder
            .batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT * FROM lineitem")
            .await
            .unwrap();
        holders.push(holder);
    }
    wait_for(&admin, RUNNING, 2).await;

    // A waiting query stops at its statement_timeout...
    let timed = tpch(&server).await;
    timed
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let e = timed.simple_query(WAITING_QUERY).await.unwrap_err();
    assert_eq!(state_of(&e).0, "57014", "{e:?}");
    assert_eq!(number(&admin, QUEUED).await, 0);

    // ... and on cancel.
    let cancelled = tpch(&server).await;
    let token = cancelled.cancel_token();
    let waiting = tokio::spawn(async move { cancelled.simple_query(WAITING_QUERY).await });
    wait_for(&admin, QUEUED, 1).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = waiting.await.unwrap().unwrap_err();
    assert_eq!(state_of(&e).0, "57014", "{e:?}");
    wait_for(&admin, QUEUED, 0).await;

    // Four wait, in the order they came.
    let done = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let client = tpch(&server).await;
        let done = Arc::clone(&done);
        waiters.push(tokio::spawn(async move {
            let rows = oracle::pg_query(&client, WAITING_QUERY).await;
            done.lock().unwrap().push(i);
            rows
        }));
        wait_for(&admin, QUEUED, i + 1).await;
    }
    // The next ones are refused at once.
    for _ in 0..4 {
        let client = tpch(&server).await;
        let refused =
            tokio::time::timeout(Duration::from_secs(10), client.simple_query(WAITING_QUERY))
                .await
                .expect("a query past the queue must be refused at once, not wait")
                .unwrap_err();
        let (code, message) = state_of(&refused);
        assert_eq!(code, "53000", "{message}");
        assert!(message.contains("--max-queued-queries 4"), "{message}");
    }
    assert_eq!(
        number(&admin, "SELECT refused FROM system.admission").await,
        4
    );

    // The catalog answers while the line is full.
    let fresh = tpch(&server).await;
    assert_eq!(column(&fresh, "SELECT 1").await, vec!["1"]);
    let conn = server.conn_str();
    let listing = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .arg(conn)
            .args(["-X", "-c", "\\dt tpch.*"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "psql \\dt: {listing:?}");
    assert!(out.contains("lineitem"), "{out}");

    // The same lookup with another value takes the fast lane past the line.
    check(&fresh, &ctx, &lookup(7)).await;
    assert_eq!(
        number(&admin, "SELECT fast_admitted FROM system.admission").await,
        1
    );
    assert_eq!(number(&admin, QUEUED).await, 4);

    // One turn frees: the four run one after another, first come first.
    holders[0].batch_execute("CLOSE c; COMMIT").await.unwrap();
    let expected = oracle::run(&ctx, WAITING_QUERY).await;
    for waiter in waiters {
        let got = waiter.await.unwrap();
        oracle::compare(&expected, &got, true).unwrap();
    }
    assert_eq!(*done.lock().unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(number(&admin, QUEUED).await, 0);
    holders[1].batch_execute("CLOSE c; COMMIT").await.unwrap();
    wait_for(&admin, RUNNING, 0).await;
}

/// B4: under a small per-query `memory_limit` a big sort spills (its
/// metrics say so) and answers right; a hash join over the limit fails
/// alone with 53200 while four small queries beside it succeed; every
/// process is the same afterwards, and no spill file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_spills_or_fails_alone_and_every_process_lives() {
    let tmp = env!("CARGO_TARGET_TMPDIR");
    drop(LochServer::start_shared(tmp));
    let spill = tempfile::tempdir().unwrap();
    let mut server = LochServer::start_opts(
        &shared_data_dir(tmp),
        TEST_SCALE,
        &[
            "--memory-limit",
            "2GiB",
            "--spill-dir",
            spill.path().to_str().unwrap(),
        ],
        &[],
    );
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let admin = tpch(&server).await;
    let pids = executor_pids(&admin).await;
    assert_eq!(pids.len(), 2);
    // The budget is divided between the three processes.
    let limits = number(&admin, "SELECT sum(limit_bytes) FROM system.memory").await;
    assert!(limits <= 2 << 30 && limits > (2 << 30) * 9 / 10, "{limits}");

    let sort = "SELECT count(*), min(l_comment), max(l_orderkey) FROM \
                (SELECT l_comment, l_orderkey FROM lineitem \
                 ORDER BY l_comment, l_orderkey OFFSET 10) t";
    let sorter = tpch(&server).await;
    sorter
        .batch_execute("SET memory_limit = '64MiB'")
        .await
        .unwrap();
    let explained = text(&sorter, &format!("EXPLAIN ANALYZE {sort}")).await;
    let spills: Vec<u64> = explained
        .split("spill_count=")
        .skip(1)
        .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    assert!(
        spills.iter().any(|&n| n > 0),
        "the sort should spill under 64MiB: {explained}"
    );
    check(&sorter, &ctx, sort).await;

    // A join whose build side does not fit fails alone.
    let join = "SELECT count(*) FROM lineitem JOIN orders ON l_orderkey = o_orderkey";
    let joiner = tpch(&server).await;
    joiner
        .batch_execute("SET memory_limit = '4MiB'")
        .await
        .unwrap();
    let small = "SELECT n_name, count(*) FROM nation JOIN region \
                 ON n_regionkey = r_regionkey GROUP BY n_name ORDER BY n_name";
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(tpch(&server).await);
    }
    let (failed, smalls) = tokio::join!(
        joiner.simple_query(join),
        futures::future::join_all(others.iter().map(|c| oracle::pg_query(c, small)))
    );
    let (code, message) = state_of(&failed.unwrap_err());
    assert_eq!(code, "53200", "{message}");
    assert!(message.contains("memory_limit"), "{message}");
    assert!(message.contains("HashJoin"), "{message}");
    let expected = oracle::run(&ctx, small).await;
    for got in smalls {
        oracle::compare(&expected, &got, true).unwrap();
    }
    // The failed query's session goes on.
    joiner.batch_execute("RESET memory_limit").await.unwrap();
    check(&joiner, &ctx, join).await;

    // Same processes, and nothing left in the spill directory.
    assert!(server.is_alive());
    assert_eq!(executor_pids(&admin).await, pids);
    wait_for(&admin, "SELECT sum(spill_files) FROM system.memory", 0).await;
    let left = loch_executor::memory::spill_files(spill.path());
    assert!(left.is_empty(), "spill files left: {left:?}");
}

/// A memory cgroup of this machine, removed when dropped (with whatever
/// still runs in it killed first).
struct Cgroup {
    dir: std::path::PathBuf,
}

impl Cgroup {
    /// A cgroup v1 or v2 memory cgroup limited to `bytes`, when this
    /// process may make one (root, a writable cgroup file system).
    fn create(bytes: u64) -> Option<Cgroup> {
        let name = format!("loch-test-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let (dir, limit_file) = if v2.exists() {
            (Path::new("/sys/fs/cgroup").join(&name), "memory.max")
        } else {
            (
                Path::new("/sys/fs/cgroup/memory").join(&name),
                "memory.limit_in_bytes",
            )
        };
        std::fs::create_dir(&dir).ok()?;
        let cgroup = Cgroup { dir };
        std::fs::write(cgroup.dir.join(limit_file), bytes.to_string()).ok()?;
        Some(cgroup)
    }

    fn procs(&self) -> String {
        self.dir.join("cgroup.procs").display().to_string()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..200 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid])
                    .status();
            }
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A server started inside a memory cgroup sizes itself from the cgroup's
/// limit, and four heavy queries at once each succeed or fail with 53200:
/// no process is killed for memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inside_a_memory_cgroup_heavy_queries_succeed_or_fail_alone() {
    let tmp = env!("CARGO_TARGET_TMPDIR");
    drop(LochServer::start_shared(tmp));
    let limit: u64 = 1536 << 20;
    let cgroup = Cgroup::create(limit);
    let mut server = match &cgroup {
        Some(cgroup) => {
            let script = format!("echo $$ > {} && exec \"$0\" \"$@\"", cgroup.procs());
            LochServer::start_wrapped(
                &shared_data_dir(tmp),
                TEST_SCALE,
                &["sh", "-c", &script],
                &[],
                &[],
            )
        }
        None => {
            eprintln!(
                "NOTE: cannot create a memory cgroup here (not root, or no writable cgroup \
                 file system): running with --memory-limit 1536MiB instead"
            );
            LochServer::start_opts(
                &shared_data_dir(tmp),
                TEST_SCALE,
                &["--memory-limit", "1536MiB"],
                &[],
            )
        }
    };
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let admin = tpch(&server).await;
    let pids = executor_pids(&admin).await;
    let limits = number(&admin, "SELECT sum(limit_bytes) FROM system.memory").await as u64;
    if cgroup.is_some() {
        // 80 % of the cgroup's limit, divided between the processes.
        let want = limit * 8 / 10;
        assert!(
            limits <= want && limits > want * 9 / 10,
            "{limits} of {want}"
        );
    }
    let clients = futures::future::join_all((0..4).map(|_| tpch(&server))).await;
    let queries = [9, 13, 18, 21];
    let answers = futures::future::join_all(
        clients
            .iter()
            .zip(queries)
            .map(|(client, n)| async move { (n, client.query(&tpch_query(n), &[]).await) }),
    )
    .await;
    for (n, answer) in answers {
        match answer {
            Ok(rows) => {
                let expected = oracle::run(&ctx, &tpch_query(n)).await;
                oracle::compare(&expected, &oracle::pg_rows(&rows), false)
                    .unwrap_or_else(|e| panic!("q{n}: {e}"));
            }
            Err(e) => assert_eq!(state_of(&e).0, "53200", "q{n}: {e:?}"),
        }
    }
    assert!(server.is_alive(), "the coordinator died");
    assert_eq!(executor_pids(&admin).await, pids, "an executor died");
    drop(clients);
    drop(admin);
    drop(server);
    drop(cgroup);
}

/// `ALTER ROLE … SET`: a role's statement_timeout and memory_limit are its
/// sessions' defaults, its users cannot raise the memory limit, and its
/// max_concurrent_queries holds its own queries back while others run.
/// Settings of memory, spill and parallelism are for superusers only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn role_limits_hold_and_resource_settings_are_for_superusers() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start_opts(dir.path(), 0.0, &["--executors", "0"], &[]);
    let admin = server.connect().await;
    admin
        .batch_execute(
            "CREATE TABLE nums AS SELECT * FROM generate_series(1, 100000);
             CREATE ROLE etl LOGIN PASSWORD 'etl-pw';
             GRANT SELECT ON nums TO etl;
             ALTER ROLE etl SET max_concurrent_queries = 1;
             ALTER ROLE etl SET statement_timeout = '5s';
             ALTER ROLE etl SET memory_limit = '64MiB';
             ALTER ROLE etl SET datafusion.execution.target_partitions = 3",
        )
        .await
        .unwrap();
    for (sql, code) in [
        ("ALTER ROLE etl SET work_mem = '4MB'", "0A000"),
        (
            "ALTER ROLE etl SET datafusion.execution.target_partitions = 'many'",
            "22023",
        ),
        ("ALTER ROLE etl SET max_concurrent_queries = 0", "22023"),
        ("ALTER ROLE etl SET memory_limit = 'lots'", "22023"),
        ("ALTER ROLE nobody SET statement_timeout = 1", "42704"),
    ] {
        let e = admin.simple_query(sql).await.unwrap_err();
        assert_eq!(state_of(&e).0, code, "{sql}: {e:?}");
    }

    let etl = server.connect_as("etl", "etl-pw").await.unwrap();
    assert_eq!(column(&etl, "SHOW statement_timeout").await, vec!["5s"]);
    assert_eq!(column(&etl, "SHOW memory_limit").await, vec!["64MiB"]);
    // A superuser gave the role its parallelism.
    assert_eq!(
        text(&etl, "SHOW datafusion.execution.target_partitions").await,
        "datafusion.execution.target_partitions\n3\n"
    );
    for sql in [
        "SET memory_limit = '128MiB'",
        "SET memory_limit = 0",
        "SET datafusion.execution.target_partitions = 64",
        "SET datafusion.runtime.memory_limit = '100G'",
        "SET distributed.files_per_task = 1",
        "ALTER ROLE etl SET max_concurrent_queries = 10",
    ] {
        let e = etl.simple_query(sql).await.unwrap_err();
        assert_eq!(state_of(&e).0, "42501", "{sql}: {e:?}");
    }
    etl.batch_execute(
        "SET memory_limit = '32MiB'; RESET memory_limit; \
         SET datafusion.execution.time_zone = '+02:00'",
    )
    .await
    .unwrap();
    assert_eq!(column(&etl, "SHOW memory_limit").await, vec!["64MiB"]);
    admin
        .batch_execute("SET datafusion.execution.target_partitions = 3")
        .await
        .unwrap();

    // The role's one turn is held by an open cursor: its next query waits
    // (and times out), another role's query runs.
    etl.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT * FROM nums")
        .await
        .unwrap();
    let second = server.connect_as("etl", "etl-pw").await.unwrap();
    second
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let count = "SELECT count(*) FROM nums WHERE value <= 1000";
    let e = second.simple_query(count).await.unwrap_err();
    assert_eq!(state_of(&e).0, "57014", "{e:?}");
    assert_eq!(column(&admin, count).await, vec!["1000"]);
    etl.batch_execute("CLOSE c; COMMIT").await.unwrap();
    assert_eq!(column(&second, count).await, vec!["1000"]);

    // RESET ALL forgets the role's settings.
    admin
        .batch_execute("ALTER ROLE etl RESET ALL")
        .await
        .unwrap();
    let fresh = server.connect_as("etl", "etl-pw").await.unwrap();
    assert_eq!(column(&fresh, "SHOW memory_limit").await, vec!["0"]);
}

/// The statements of B1's mix: TPC-H queries (on one line each) and point
/// lookups.
fn b1_mix(count: usize) -> Vec<String> {
    const QUERIES: [usize; 8] = [1, 3, 5, 6, 10, 12, 14, 19];
    (0..count)
        .map(|i| {
            if i % 3 == 2 {
                format!(
                    "SELECT o_orderkey, o_custkey, o_totalprice, o_orderdate FROM orders \
                     WHERE o_orderkey = {}",
                    1 + (i * 7919) % 150_000
                )
            } else {
                tpch_query(QUERIES[i % QUERIES.len()])
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        })
        .collect()
}

/// B1 at CI size: 32 pg wire clients and 8 ADBC Flight SQL clients at once,
/// TPC-H SF 0.1 queries and point lookups, the result cache on for half of
/// the sessions: every answer equals the oracle, no errors, no process
/// dies, and afterwards no task runs, nothing waits and no spill file is
/// left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_on_both_protocols_all_get_right_answers() {
    let tmp = env!("CARGO_TARGET_TMPDIR");
    drop(LochServer::start_shared(tmp));
    let spill = tempfile::tempdir().unwrap();
    let mut server = LochServer::start_opts(
        &shared_data_dir(tmp),
        TEST_SCALE,
        &["--spill-dir", spill.path().to_str().unwrap()],
        &[("LOCH_RESULT_CACHE_MB", "256")],
    );
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let admin = tpch(&server).await;
    let pids = executor_pids(&admin).await;

    const PG_CLIENTS: usize = 32;
    const PER_CLIENT: usize = 4;
    const ADBC_CLIENTS: usize = 8;
    let statements = b1_mix(PG_CLIENTS * PER_CLIENT);
    let mut expected = std::collections::HashMap::new();
    for sql in &statements {
        if !expected.contains_key(sql) {
            expected.insert(sql.clone(), oracle::run(&ctx, sql).await);
        }
    }

    // The Flight SQL clients run beside the pg wire ones.
    let adbc_statements = b1_mix(ADBC_CLIENTS * 3);
    let dir = tempfile::tempdir().unwrap();
    let sql_file = dir.path().join("mix.sql");
    std::fs::write(&sql_file, adbc_statements.join("\n")).unwrap();
    let out = dir.path().to_path_buf();
    let (uri, password) = (server.flight_uri(), server.password());
    let sql_path = sql_file.to_str().unwrap().to_string();
    let adbc = {
        let server_args = vec![
            uri,
            "loch".to_string(),
            password,
            sql_path,
            out.to_str().unwrap().to_string(),
            ADBC_CLIENTS.to_string(),
        ];
        let python = loch_tests::python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/concurrent_adbc.py");
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                .arg(script)
                .args(server_args)
                .output()
                .unwrap()
        })
    };

    let clients = futures::future::join_all((0..PG_CLIENTS).map(|_| tpch(&server))).await;
    let runs = clients.iter().enumerate().map(|(i, client)| {
        let statements = &statements;
        async move {
            if i % 2 == 1 {
                client
                    .batch_execute("SET use_cached_result = off")
                    .await
                    .unwrap();
            }
            let mut answers = Vec::new();
            for sql in statements.iter().skip(i).step_by(PG_CLIENTS) {
                let rows = client
                    .query(sql.as_str(), &[])
                    .await
                    .map(|rows| oracle::pg_rows(&rows));
                answers.push((sql.clone(), rows));
            }
            answers
        }
    });
    let answers = futures::future::join_all(runs).await;
    let mut checked = 0;
    for (sql, rows) in answers.into_iter().flatten() {
        let rows = rows.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        oracle::compare(&expected[&sql], &rows, oracle::is_ordered(&sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        checked += 1;
    }
    assert_eq!(checked, PG_CLIENTS * PER_CLIENT);

    let output = adbc.await.unwrap();
    assert!(
        output.status.success(),
        "concurrent_adbc.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), adbc_statements.len(), "{lines:?}");
    for line in &lines {
        assert!(line.get("error").is_none(), "ADBC: {line}");
        let n = line["line"].as_u64().unwrap() as usize;
        let sql = &adbc_statements[n];
        let file = std::fs::File::open(out.join(format!("{n}.arrow"))).unwrap();
        let batches: Vec<_> = arrow::ipc::reader::FileReader::try_new(file, None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let want = oracle::run(&ctx, sql).await;
        oracle::compare(
            &want,
            &oracle::arrow_rows(&batches),
            oracle::is_ordered(sql),
        )
        .unwrap_or_else(|e| panic!("ADBC {sql}: {e}"));
    }

    assert!(server.is_alive());
    assert_eq!(executor_pids(&admin).await, pids);
    wait_for(&admin, "SELECT sum(running_tasks) FROM system.executors", 0).await;
    wait_for(&admin, RUNNING, 0).await;
    assert_eq!(number(&admin, QUEUED).await, 0);
    assert_eq!(
        number(&admin, "SELECT refused FROM system.admission").await,
        0
    );
    let left = loch_executor::memory::spill_files(spill.path());
    assert!(left.is_empty(), "spill files left: {left:?}");
}
