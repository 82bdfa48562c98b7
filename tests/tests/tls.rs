//! TLS on both protocols with real clients: psql and psycopg (libpq,
//! `sslmode=verify-full` against the CA `--tls-self-signed` wrote), the ADBC
//! Flight SQL driver over `grpc+tls://`, and tokio-postgres in clear text
//! against a server that requires TLS. Answers are checked against the
//! in-process DataFusion oracle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use loch_tests::oracle::{self, Cell};
use loch_tests::{LochServer, TEST_SCALE, json_rows, loch_bin, run_python_script};
use serde_json::Value;

const PASSWORD: &str = "Tls-Test-Password-1";
const SQL: &str = "select n_regionkey, count(*) from tpch.nation group by n_regionkey order by 1";

fn start(dir: &Path, extra: &[&str]) -> LochServer {
    let mut args = vec!["--tls-self-signed"];
    args.extend_from_slice(extra);
    LochServer::start_opts(dir, TEST_SCALE, &args, &[("LOCH_ADMIN_PASSWORD", PASSWORD)])
}

/// psql with `conninfo`; its stdout, or its stderr as the error.
fn psql(conninfo: &str, commands: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    cmd.arg(conninfo).args(["-X", "-A", "-t"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("psql (postgresql-client) is installed");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// libpq settings that verify the server against `ca`, plus `extra`.
fn verify_full(port: u16, ca: &Path, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user=loch dbname=loch sslmode=verify-full sslrootcert={} {extra}",
        ca.display()
    )
}

fn check<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| v["check"] == name)
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
}

fn error_of(line: &Value) -> String {
    line["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {line}"))
        .to_string()
}

#[tokio::test]
async fn tls_on_both_protocols_with_verified_certificates() {
    let dir = tempfile::tempdir().unwrap();
    // A CA that did not sign the server's certificate.
    let other = tempfile::tempdir().unwrap();
    let other_ca = another_ca(other.path());

    let server = start(dir.path(), &["--tls-required"]);
    let ca = dir.path().join("tls").join("ca.pem");
    assert!(ca.exists(), "--tls-self-signed writes the CA clients trust");
    let key = dir.path().join("tls").join("server.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the server key is readable by its owner only"
        );
    }

    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let expected = oracle::run(&ctx, &SQL.replace("tpch.", "")).await;

    // Clear text is refused before any password is exchanged: 28000.
    let clear = tokio_postgres::connect(&server.conn_str(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a clear-text login must be refused");
    let db = clear.as_db_error().unwrap_or_else(|| panic!("{clear:?}"));
    assert_eq!(db.code().code(), "28000", "{db:?}");
    assert!(db.message().contains("TLS"), "{db:?}");

    // psql, verifying the server against the CA, and binding the SCRAM
    // login to the certificate it saw (SCRAM-SHA-256-PLUS).
    let out = psql(
        &verify_full(server.port, &ca, "channel_binding=require"),
        &["\\conninfo", SQL],
    )
    .unwrap();
    assert!(out.contains("SSL connection"), "{out}");
    let rows: Vec<Vec<Cell>> = out
        .lines()
        .filter(|l| l.contains('|'))
        .map(|l| {
            l.split('|')
                .map(|c| Cell::Int(c.parse().unwrap()))
                .collect()
        })
        .collect();
    oracle::compare(&expected, &rows, true).unwrap();
    // The same psql with a CA that did not sign the certificate.
    let wrong = psql(&verify_full(server.port, &other_ca, ""), &["select 1"]).unwrap_err();
    assert!(wrong.contains("certificate verify failed"), "{wrong}");

    // psycopg and ADBC.
    let lines = run_python_script(
        &server,
        "tls_clients.py",
        &[
            server.port.to_string(),
            server.flight_port.to_string(),
            ca.display().to_string(),
            other_ca.display().to_string(),
            SQL.to_string(),
            loch_tests::FORCE_DISTRIBUTION.to_string(),
            "select * from tpch.lineitem".to_string(),
        ],
        "psycopg and adbc-driver-flightsql",
    );
    let full = check(&lines, "psycopg_verify_full");
    assert_eq!(full["ssl_in_use"], true, "{full}");
    oracle::compare(&expected, &json_rows(full), true).unwrap();
    let wrong_ca = error_of(check(&lines, "psycopg_wrong_ca"));
    assert!(wrong_ca.contains("certificate verify failed"), "{wrong_ca}");
    let clear = error_of(check(&lines, "psycopg_clear_text"));
    assert!(clear.contains("accepts only TLS"), "{clear}");

    let adbc = check(&lines, "adbc_tls");
    oracle::compare(&expected, &json_rows(adbc), true).unwrap_or_else(|e| panic!("{e}: {adbc}"));
    let adbc_wrong = error_of(check(&lines, "adbc_wrong_ca"));
    assert!(
        adbc_wrong.contains("certificate") || adbc_wrong.contains("x509"),
        "{adbc_wrong}"
    );
    // gRPC in clear text to a TLS port does not get through (UNAVAILABLE, 14).
    let adbc_clear = error_of(check(&lines, "adbc_clear_text"));
    assert!(adbc_clear.contains("(Unavailable;"), "{adbc_clear}");
    // With TLS on, a scan the executors run is read from them over TLS
    // (the executors serve direct tickets with the same certificate),
    // never in clear.
    let endpoints = check(&lines, "tls_endpoints");
    let locations: Vec<&str> = endpoints["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(locations.len() >= 2, "{endpoints}");
    assert_eq!(
        locations.len() as u64,
        endpoints["endpoints"].as_u64().unwrap(),
        "{endpoints}"
    );
    let flight_port = format!(":{}", server.flight_port);
    assert!(
        locations
            .iter()
            .all(|l| l.starts_with("grpc+tls://127.0.0.1:") && !l.ends_with(&flight_port)),
        "{endpoints}"
    );
    let lineitem = oracle::run(&ctx, "select count(*) from lineitem").await;
    let Cell::Int(count) = lineitem[0][0] else {
        panic!("{lineitem:?}")
    };
    assert_eq!(endpoints["rows"].as_i64(), Some(count), "{endpoints}");
    let scan = check(&lines, "adbc_tls_scan");
    assert_eq!(scan["rows"].as_i64(), Some(count), "{scan}");
    drop(server);

    // Restarted without --tls-required: clear text is accepted again, TLS
    // still offered, and the CA is the same one (clients keep trusting it).
    let ca_before = std::fs::read(&ca).unwrap();
    let server = start(dir.path(), &[]);
    assert_eq!(std::fs::read(&ca).unwrap(), ca_before);
    let (client, connection) = tokio_postgres::connect(&server.conn_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let clear_rows = client.query(SQL, &[]).await.unwrap();
    oracle::compare(&expected, &oracle::pg_rows(&clear_rows), true).unwrap();
    let out = psql(&verify_full(server.port, &ca, ""), &["\\conninfo"]).unwrap();
    assert!(out.contains("SSL connection"), "{out}");
    // In clear text there is nothing to bind to: libpq refuses to go on.
    let unbound = psql(
        &format!(
            "host=127.0.0.1 port={} user=loch dbname=loch sslmode=disable channel_binding=require",
            server.port
        ),
        &["select 1"],
    )
    .unwrap_err();
    assert!(unbound.contains("channel binding"), "{unbound}");
}

/// Another server's self-signed CA: start one on its own data dir long
/// enough to write it.
fn another_ca(dir: &Path) -> std::path::PathBuf {
    drop(LochServer::start_opts(
        dir,
        0.0,
        &["--tls-self-signed", "--executors", "0"],
        &[],
    ));
    dir.join("tls").join("ca.pem")
}

#[test]
fn off_loopback_needs_tls_and_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(loch_bin())
            .arg("local")
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args(["--sample-scale", "0", "--executors", "0"])
            .args(args)
            .env_remove("LOCH_TLS_CERT")
            .env_remove("LOCH_TLS_KEY")
            .output()
            .unwrap()
    };
    // Refused before anything binds: no TLS, not loopback.
    let out = run(&["--pg-addr", "0.0.0.0:0", "--flight-addr", "off"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    // --tls-required without a certificate.
    let out = run(&["--pg-addr", "127.0.0.1:0", "--tls-required"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-required needs"), "{err}");
    // A certificate file that is not one.
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let bogus = bogus.to_str().unwrap();
    let out = run(&[
        "--pg-addr",
        "127.0.0.1:0",
        "--tls-cert",
        bogus,
        "--tls-key",
        bogus,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS") && err.contains("bogus.pem"), "{err}");
}
