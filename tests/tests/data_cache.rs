//! The executors' data cache, with real clients and `loch local`'s two
//! executors: a scan keeps the Parquet files it decoded, the next scans of
//! the same files (the same query, one with a filter, a Flight SQL client's
//! direct endpoints) take them, with the oracle's rows; a file rewritten in
//! place is read again, never served stale; `system.caches` shows each
//! executor's counters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use loch_tests::oracle::{self, Cell};
use loch_tests::{FORCE_DISTRIBUTION, LochServer, run_python_script, wait_alive};

/// Splits a file of the table into byte ranges, so that a scan of it runs
/// on the executors (one file is otherwise too small to distribute).
const SPLIT: &str = "SET datafusion.optimizer.repartition_file_min_size = 65536";

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Cell>> {
    oracle::pg_query(client, sql).await
}

/// (hits, misses, inserts) of the executors' data caches together, as
/// their last heartbeats reported them.
async fn counters(client: &tokio_postgres::Client) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT CAST(coalesce(sum(hits), 0) AS BIGINT), \
             CAST(coalesce(sum(misses), 0) AS BIGINT), \
             CAST(coalesce(sum(inserts), 0) AS BIGINT) \
             FROM system.caches WHERE name = 'data'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// Waits for the heartbeats to report counters that `done` accepts.
async fn wait_for(
    client: &tokio_postgres::Client,
    what: &str,
    done: impl Fn((i64, i64, i64)) -> bool,
) -> (i64, i64, i64) {
    let start = Instant::now();
    loop {
        let now = counters(client).await;
        if done(now) {
            return now;
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!("{what}: the data caches report {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The oracle over the Parquet files in `dir` as table `lineitem`, listed
/// now.
async fn oracle_lake(dir: &Path, sql: &str) -> Vec<Vec<Cell>> {
    oracle::run_over_dir(dir, "lineitem", &sql.replace("s.lineitem", "lineitem")).await
}

/// Rows of `sql` read with ADBC, which follows direct endpoints to the
/// executors.
fn adbc_rows(server: &LochServer, sql: &str) -> Vec<Vec<Cell>> {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("rows.arrow");
    let uri = server.flight_uri();
    let password = server.password();
    run_python_script(
        server,
        "query_adbc.py",
        &[
            uri.as_str(),
            "loch",
            password.as_str(),
            path.to_str().unwrap(),
            FORCE_DISTRIBUTION,
            SPLIT,
            sql,
        ],
        "adbc_driver_flightsql",
    );
    let file = std::fs::File::open(&path).unwrap();
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    oracle::arrow_rows(&batches)
}

#[tokio::test]
async fn scans_take_kept_files_until_a_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start_opts(dir.path(), 0.01, &[], &[]);
    let c = server.connect().await;
    wait_alive(&server, &c, 2).await;
    c.batch_execute(FORCE_DISTRIBUTION).await.unwrap();
    c.batch_execute(SPLIT).await.unwrap();
    let lake = tempfile::tempdir().unwrap();
    // lineitem: big enough at this scale for scans of one of its files to
    // run on the executors.
    let table = lake.path().join("lineitem");
    std::fs::create_dir(&table).unwrap();
    let mut parts: Vec<_> = std::fs::read_dir(server.sample_dir().join("lineitem"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    assert!(parts.len() >= 2, "{parts:?}");
    std::fs::copy(&parts[0], table.join("a.parquet")).unwrap();
    c.batch_execute(&format!(
        "CREATE SCHEMA s;
         CREATE EXTERNAL TABLE s.lineitem STORED AS PARQUET LOCATION '{}/'",
        table.display()
    ))
    .await
    .unwrap();
    let all = "SELECT * FROM s.lineitem";
    let filtered = "SELECT * FROM s.lineitem WHERE l_quantity > 40";
    let oracle_all = oracle_lake(&table, all).await;
    let oracle_filtered = oracle_lake(&table, filtered).await;

    // First scan: decoded and kept, on the executors that read it.
    let start = counters(&c).await;
    oracle::compare(&oracle_all, &rows(&c, all).await, false).unwrap();
    let kept = wait_for(&c, "first scan kept", |n| n.2 > start.2).await;

    // The same scan, and one with a filter: taken from the cache.
    oracle::compare(&oracle_all, &rows(&c, all).await, false).unwrap();
    let again = wait_for(&c, "second scan hit", |n| n.0 > kept.0).await;
    oracle::compare(&oracle_filtered, &rows(&c, filtered).await, false).unwrap();
    let hit_filtered = wait_for(&c, "filtered scan hit", |n| n.0 > again.0).await;

    // Flight SQL's direct endpoints: the executors serve the client from
    // what they keep (the second run at the latest: the first may project
    // the columns in another way than pg wire).
    oracle::compare(&oracle_all, &adbc_rows(&server, all), false).unwrap();
    let after_flight = wait_for(&c, "flight scan counted", |n| {
        n.0 + n.1 > hit_filtered.0 + hit_filtered.1
    })
    .await;
    oracle::compare(&oracle_all, &adbc_rows(&server, all), false).unwrap();
    wait_for(&c, "second flight scan hit", |n| n.0 > after_flight.0).await;

    // Another process rewrites the file in place: the next scans read the
    // new rows, never the kept ones.
    std::fs::copy(&parts[1], table.join("a.parquet")).unwrap();
    let oracle_new = oracle_lake(&table, all).await;
    assert_ne!(oracle_new.len(), 0);
    let got = rows(&c, all).await;
    oracle::compare(&oracle_new, &got, false).unwrap();
    assert!(
        oracle::compare(&oracle_all, &got, false).is_err(),
        "the rewritten file must not give the old rows"
    );
    oracle::compare(&oracle_new, &adbc_rows(&server, all), false).unwrap();

    // Each live executor has a row of its own.
    let executors = c
        .query_one(
            "SELECT count(DISTINCT executor) FROM system.caches WHERE name = 'data'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(executors.get::<_, i64>(0), 2);
}

#[tokio::test]
async fn no_data_cache_with_zero_megabytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start_opts(dir.path(), 0.01, &["--data-cache-mb", "0"], &[]);
    let c = server.connect().await;
    wait_alive(&server, &c, 2).await;
    c.batch_execute(FORCE_DISTRIBUTION).await.unwrap();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let sql = "SELECT * FROM tpch.orders";
    let expected = oracle::run(&ctx, &sql.replace("tpch.", "")).await;
    for _ in 0..2 {
        oracle::compare(&expected, &rows(&c, sql).await, false).unwrap();
    }
    let data_rows = c
        .query_one(
            "SELECT count(*) FROM system.caches WHERE name = 'data'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(data_rows.get::<_, i64>(0), 0);
}
