//! The result cache, with real clients: a repeated query is answered from
//! the kept result (the `system.caches` counters show it) with the same
//! rows as the oracle; a table that changed — a file added or rewritten
//! under a listing table, a Delta version committed by Loch or by the
//! `deltalake` package — is read again, never served stale; grants are
//! checked before any lookup; `use_cached_result` turns it off.
//!
//! The other test files run `loch local` with the cache off
//! (`LochServer` sets `LOCH_RESULT_CACHE_MB=0`), so they test execution.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use loch_tests::oracle::{self, Cell};
use loch_tests::{
    FORCE_DISTRIBUTION, LochServer, deltalake, json_rows, run_python_script, tpch_query,
};

const CACHE: (&str, &str) = ("LOCH_RESULT_CACHE_MB", "256");

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Cell>> {
    oracle::pg_query(client, sql).await
}

/// (hits, misses, inserts) of the result cache.
async fn counters(client: &tokio_postgres::Client) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT hits, misses, inserts FROM system.caches WHERE name = 'result'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The oracle over the Parquet files in `dir` as table `orders`, listed now.
async fn oracle_orders(dir: &Path, sql: &str) -> Vec<Vec<Cell>> {
    oracle::run_over_dir(dir, "orders", sql).await
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("{e}"))
}

#[tokio::test]
async fn repeated_queries_are_answered_from_kept_results_that_are_never_stale() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start_opts(dir.path(), 0.01, &[], &[CACHE]);
    let c = server.connect().await;
    let lake = tempfile::tempdir().unwrap();
    let orders = lake.path().join("orders");
    std::fs::create_dir(&orders).unwrap();
    let sample = server.sample_dir().join("orders");
    let mut parts: Vec<_> = std::fs::read_dir(&sample)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    assert!(parts.len() >= 2, "{parts:?}");
    std::fs::copy(&parts[0], orders.join("a.parquet")).unwrap();
    c.batch_execute(&format!(
        "CREATE SCHEMA s;
         CREATE EXTERNAL TABLE s.orders STORED AS PARQUET LOCATION '{}/'",
        orders.display()
    ))
    .await
    .unwrap();
    let q = "SELECT o_orderstatus, count(*), sum(o_totalprice) FROM s.orders \
             GROUP BY o_orderstatus ORDER BY o_orderstatus";
    let oracle_q = q.replace("s.orders", "orders");

    // First run: a miss, kept. Second: a hit, the same rows.
    let before = counters(&c).await;
    let first = rows(&c, q).await;
    oracle::compare(&oracle_orders(&orders, &oracle_q).await, &first, true).unwrap();
    let after_first = counters(&c).await;
    assert_eq!(after_first.1, before.1 + 1, "{after_first:?}");
    assert_eq!(after_first.2, before.2 + 1, "{after_first:?}");
    let second = rows(&c, q).await;
    assert_eq!(second, first);
    let after_second = counters(&c).await;
    assert_eq!(after_second.0, after_first.0 + 1, "{after_second:?}");

    // Another process adds a file: the next run reads it.
    std::fs::copy(&parts[1], orders.join("b.parquet")).unwrap();
    let grown = rows(&c, q).await;
    oracle::compare(&oracle_orders(&orders, &oracle_q).await, &grown, true).unwrap();
    assert_ne!(grown, first);
    // ... and rewrites one in place.
    std::fs::copy(&parts[1], orders.join("a.parquet")).unwrap();
    let rewritten = rows(&c, q).await;
    oracle::compare(&oracle_orders(&orders, &oracle_q).await, &rewritten, true).unwrap();
    assert_ne!(rewritten, grown);
    let hits = counters(&c).await.0;
    assert_eq!(hits, after_second.0, "changed tables must not hit");

    // A Delta table: each version Loch commits is read afresh.
    c.batch_execute(
        "CREATE TABLE s.d AS SELECT o_orderkey, o_totalprice FROM s.orders WHERE o_orderkey < 1000",
    )
    .await
    .unwrap();
    let qd = "SELECT count(*), sum(o_totalprice) FROM s.d";
    let oracle_d =
        |range: &str| format!("SELECT count(*), sum(o_totalprice) FROM orders WHERE {range}");
    let v0 = rows(&c, qd).await;
    oracle::compare(
        &oracle_orders(&orders, &oracle_d("o_orderkey < 1000")).await,
        &v0,
        true,
    )
    .unwrap();
    let hits = counters(&c).await.0;
    assert_eq!(rows(&c, qd).await, v0);
    assert_eq!(counters(&c).await.0, hits + 1);
    c.batch_execute(
        "INSERT INTO s.d SELECT o_orderkey, o_totalprice FROM s.orders \
         WHERE o_orderkey >= 1000 AND o_orderkey < 3000",
    )
    .await
    .unwrap();
    oracle::compare(
        &oracle_orders(&orders, &oracle_d("o_orderkey < 3000")).await,
        &rows(&c, qd).await,
        true,
    )
    .unwrap();
    c.batch_execute("DELETE FROM s.d WHERE o_orderkey < 500")
        .await
        .unwrap();
    oracle::compare(
        &oracle_orders(
            &orders,
            &oracle_d("o_orderkey >= 500 AND o_orderkey < 3000"),
        )
        .await,
        &rows(&c, qd).await,
        true,
    )
    .unwrap();

    // A Delta table another writer (the deltalake package) appends to.
    let ext = lake.path().join("ext");
    let ext = ext.to_str().unwrap();
    let py = |mode: &str| deltalake(&server, mode, ext);
    let written = py("write");
    c.batch_execute(&format!(
        "CREATE EXTERNAL TABLE s.ext STORED AS DELTA LOCATION '{ext}'"
    ))
    .await
    .unwrap();
    let qe = "SELECT id, name, amount FROM s.ext ORDER BY id";
    oracle::compare(&json_rows(&written), &rows(&c, qe).await, true).unwrap();
    oracle::compare(&json_rows(&written), &rows(&c, qe).await, true).unwrap();
    let appended = py("append");
    oracle::compare(&json_rows(&appended), &rows(&c, qe).await, true).unwrap();

    // Grants come first: a user without SELECT is refused though the
    // result is kept; once granted, the user gets the same rows.
    c.batch_execute(
        "CREATE USER ann PASSWORD 'ann-pw';
         GRANT USAGE ON SCHEMA s TO ann",
    )
    .await
    .unwrap();
    let ann = server.connect_as("ann", "ann-pw").await.unwrap();
    let expected = rows(&c, q).await;
    let kept = counters(&c).await;
    let refused = ann.query(q, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&refused), "42501", "{refused}");
    assert_eq!(counters(&c).await.0, kept.0);
    c.batch_execute("GRANT SELECT ON s.orders TO ann")
        .await
        .unwrap();
    assert_eq!(rows(&ann, q).await, expected);
    assert_eq!(rows(&ann, q).await, expected);

    // Turned off for a session: no lookups.
    let kept = counters(&c).await;
    c.batch_execute("SET use_cached_result = false")
        .await
        .unwrap();
    assert_eq!(rows(&c, q).await, expected);
    let off = counters(&c).await;
    assert_eq!((off.0, off.1), (kept.0, kept.1), "{off:?}");
    let bad = c
        .batch_execute("SET use_cached_result = maybe")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&bad), "22023", "{bad}");
    c.batch_execute("SET use_cached_result = on").await.unwrap();
    assert_eq!(rows(&c, q).await, expected);
    assert_eq!(counters(&c).await.0, kept.0 + 1);

    // Queries whose answer varies are never kept.
    let kept = counters(&c).await;
    for _ in 0..2 {
        rows(&c, "SELECT o_orderkey, random() FROM s.orders LIMIT 3").await;
        rows(&c, "SELECT count(*), now() FROM s.orders").await;
    }
    assert_eq!(counters(&c).await.2, kept.2);
}

#[tokio::test]
async fn tpch_and_flight_scans_from_the_cache_match_the_oracle() {
    let dir = loch_tests::shared_data_dir(env!("CARGO_TARGET_TMPDIR"));
    drop(LochServer::start_shared(env!("CARGO_TARGET_TMPDIR")));
    let server = LochServer::start_opts(&dir, loch_tests::TEST_SCALE, &[], &[CACHE]);
    let c = server.connect_with("options='-c search_path=tpch'").await;
    loch_tests::wait_alive(&server, &c, 2).await;
    c.batch_execute(FORCE_DISTRIBUTION).await.unwrap();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;

    // Every TPC-H query, distributed over the executors: the second run
    // comes from the cache and still matches the oracle.
    let before = counters(&c).await;
    for n in 1..=22 {
        let sql = tpch_query(n);
        let expected = oracle::run(&ctx, &sql).await;
        let ordered = oracle::is_ordered(&sql);
        for run in ["first", "cached"] {
            let got = rows(&c, &sql).await;
            oracle::compare(&expected, &got, ordered)
                .unwrap_or_else(|e| panic!("q{n} ({run} run): {e}"));
        }
    }
    let after = counters(&c).await;
    assert_eq!(after.0 - before.0, 22, "every second run hits: {after:?}");

    // Flight SQL: a scan that would read straight from the executors goes
    // through the coordinator once, is kept, and the next run is served
    // from the cache; both match the oracle.
    let sql = "SELECT l_orderkey, l_linenumber, l_quantity, l_comment FROM tpch.lineitem";
    let expected = oracle::run(&ctx, &sql.replace("tpch.", "")).await;
    let out = tempfile::tempdir().unwrap();
    let before = counters(&c).await;
    for run in 0..2 {
        let path = out.path().join(format!("run{run}.arrow"));
        let uri = server.flight_uri();
        let password = server.password();
        let lines = run_python_script(
            &server,
            "query_adbc.py",
            &[
                uri.as_str(),
                "loch",
                password.as_str(),
                path.to_str().unwrap(),
                FORCE_DISTRIBUTION,
                sql,
            ],
            "adbc_driver_flightsql",
        );
        assert_eq!(lines[0]["rows"].as_u64().unwrap() as usize, expected.len());
        let file = std::fs::File::open(&path).unwrap();
        let reader = arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
        let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
        oracle::compare(&expected, &oracle::arrow_rows(&batches), false)
            .unwrap_or_else(|e| panic!("flight run {run}: {e}"));
    }
    let after = counters(&c).await;
    // One lookup per run: a miss, then a hit.
    assert_eq!(after.0 - before.0, 1, "{after:?}");
    assert_eq!(after.1 - before.1, 1, "{after:?}");
    assert_eq!(after.2 - before.2, 1, "{after:?}");
}
