//! Real client programs against the real binary: psql (libpq) and psycopg 3.
//! `dev/test` installs both; a missing client fails the test, never skips it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use loch_tests::oracle::{self, Cell};
use loch_tests::{LochServer, tpch_query};

fn server() -> LochServer {
    LochServer::start_shared(env!("CARGO_TARGET_TMPDIR"))
}

fn psql(server: &LochServer, args: &[&str]) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "loch",
            "-d",
            "loch",
        ])
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap_or_else(|e| panic!("running psql (is postgresql-client installed?): {e}"));
    assert!(
        out.status.success(),
        "psql {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn psql_runs_queries_and_meta_commands() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let expected = oracle::run(&ctx, "select count(*) from lineitem").await;
    let Cell::Int(count) = expected[0][0] else {
        panic!()
    };

    let out = psql(
        &server,
        &[
            "-A",
            "-t",
            "-c",
            "select count(*) from tpch.lineitem",
            "-c",
            "\\echo done",
        ],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![count.to_string(), "done".to_string()]
    );

    // Aligned output with headers, a multi-statement string, and a setting.
    let out = psql(
        &server,
        &[
            "-c",
            "set search_path to tpch; select n_name, n_regionkey from nation where n_nationkey = 0",
        ],
    );
    assert!(out.contains("n_name"), "{out}");
    assert!(out.contains("ALGERIA"), "{out}");
    assert!(out.contains("(1 row)"), "{out}");

    // A script from stdin with an error in the middle: psql reports it with
    // the SQLSTATE and the server keeps going.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "select 1 as a;\nselect * from nope;\nselect 2 as b;\n",
    )
    .unwrap();
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "loch",
            "-d",
            "loch",
        ])
        .args(["-X", "-A", "-t", "-v", "VERBOSITY=verbose", "-f"])
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains('1') && stdout.contains('2'), "{stdout}");
    assert!(stderr.contains("42P01"), "{stderr}");
}

/// The Python of the venv dev/test made (`$LOCH_PYTHON`), else `python3`.
fn python() -> PathBuf {
    std::env::var_os("LOCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

#[tokio::test]
async fn psycopg_runs_the_22_tpch_queries() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(root.join("python/tpch_psycopg.py"))
        .arg(server.port.to_string())
        .arg(root.join("../benchmarks/queries/tpch"))
        .output()
        .unwrap_or_else(|e| panic!("running python: {e}"));
    assert!(
        out.status.success(),
        "psycopg script failed (is psycopg installed in $LOCH_PYTHON?):\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut seen = 0;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let n = v["q"].as_u64().unwrap() as usize;
        let got: Vec<Vec<Cell>> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(Cell::from_json).collect())
            .collect();
        let sql = tpch_query(n);
        let expected = oracle::run(&ctx, &sql).await;
        oracle::compare(&expected, &got, oracle::is_ordered(&sql))
            .unwrap_or_else(|e| panic!("q{n} through psycopg: {e}"));
        seen += 1;
    }
    assert_eq!(seen, 22);
}
