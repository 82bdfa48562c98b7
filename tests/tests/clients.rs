//! Real client programs against the real binary: psql (libpq) and psycopg 3.
//! `dev/test` installs both; a missing client fails the test, never skips it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use loch_tests::oracle::{self, Cell};
use loch_tests::{LochServer, json_rows, run_python_script, tpch_query};

fn server() -> LochServer {
    LochServer::start_shared(env!("CARGO_TARGET_TMPDIR"))
}

/// psql connected to `server` as user loch, ignoring any ~/.psqlrc.
fn psql_command(server: &LochServer) -> Command {
    let mut command = Command::new("psql");
    command
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-U", "loch", "-d", "loch", "-X"])
        .env("PGPASSWORD", server.password());
    command
}

fn psql(server: &LochServer, args: &[&str]) -> String {
    let out = psql_command(server)
        .args(["-v", "ON_ERROR_STOP=1"])
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
    let out = psql_command(&server)
        .args(["-A", "-t", "-v", "VERBOSITY=verbose", "-f"])
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains('1') && stdout.contains('2'), "{stdout}");
    assert!(stderr.contains("42P01"), "{stderr}");
}

/// Runs tests/python/`script` with the server's port and `args`.
fn run_python(
    server: &LochServer,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> Vec<serde_json::Value> {
    let port = server.port.to_string();
    let mut all: Vec<&std::ffi::OsStr> = vec![port.as_ref()];
    all.extend_from_slice(args);
    run_python_script(server, script, &all, "psycopg")
}

#[tokio::test]
async fn psycopg_runs_the_22_tpch_queries() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benchmarks/queries/tpch");
    let lines = run_python(&server, "tpch_psycopg.py", &[queries.as_os_str()]);
    assert_eq!(lines.len(), 22);
    for v in lines {
        let n = v["q"].as_u64().unwrap() as usize;
        let sql = tpch_query(n);
        let expected = oracle::run(&ctx, &sql).await;
        oracle::compare(&expected, &json_rows(&v), oracle::is_ordered(&sql))
            .unwrap_or_else(|e| panic!("q{n} through psycopg: {e}"));
    }
}

#[tokio::test]
async fn psycopg_parameters_in_text_and_results_in_binary() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let mut modes = Vec::new();
    for v in run_python(&server, "params_psycopg.py", &[]) {
        let sql = v["oracle_sql"].as_str().unwrap();
        let expected = oracle::run(&ctx, sql).await;
        assert!(!expected.is_empty(), "{sql}");
        oracle::compare(&expected, &json_rows(&v), true)
            .unwrap_or_else(|e| panic!("{}: {e}", v["mode"]));
        modes.push(v["mode"].as_str().unwrap().to_string());
    }
    assert_eq!(modes, ["text", "binary"]);
}

fn loch(args: &[&str]) -> String {
    let out = Command::new(loch_tests::loch_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn command_line_describes_itself() {
    assert!(loch(&["--version"]).starts_with("loch "));
    let help = loch(&["local", "--help"]);
    for flag in [
        "--data-dir",
        "--pg-addr",
        "--sample-scale",
        "LOCH_DATA_DIR",
        "LOCH_PG_ADDR",
        "LOCH_SAMPLE_SCALE",
    ] {
        assert!(
            help.contains(flag),
            "`loch local --help` does not mention {flag}:\n{help}"
        );
    }
    assert!(loch(&["--help"]).contains("local"));
    // Without authentication, Loch refuses to listen beyond loopback.
    let out = Command::new(loch_tests::loch_bin())
        .args(["local", "--pg-addr", "0.0.0.0:0", "--sample-scale", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[tokio::test]
async fn restart_reuses_the_sample_and_ctrl_c_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = LochServer::start_with(dir.path(), 0.01);
    let marker = dir
        .path()
        .join("sample/tpch-sf0.01/lineitem/part-001.parquet");
    let generated = std::fs::metadata(&marker).unwrap().modified().unwrap();
    let client = first.connect().await;
    let count = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i64>(0);
    let before = count(
        client
            .query("select count(*) from tpch.orders", &[])
            .await
            .unwrap(),
    );
    assert!(before > 0);

    // Ctrl-C (SIGINT): the process exits by itself, successfully.
    let status = Command::new("kill")
        .args(["-INT", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = first
        .wait_exit(std::time::Duration::from_secs(30))
        .expect("loch exits after SIGINT");
    assert!(exit.success(), "{exit:?}\n{}", first.log_tail());

    let second = LochServer::start_with(dir.path(), 0.01);
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        generated
    );
    let client = second.connect().await;
    let after = count(
        client
            .query("select count(*) from tpch.orders", &[])
            .await
            .unwrap(),
    );
    assert_eq!(before, after);

    // --sample-scale 0: no sample schema at all.
    let empty = tempfile::tempdir().unwrap();
    let bare = LochServer::start_with(empty.path(), 0.0);
    let client = bare.connect().await;
    assert!(
        client
            .query("select count(*) from tpch.orders", &[])
            .await
            .is_err()
    );
    assert!(!empty.path().join("sample").exists());
}

#[tokio::test]
async fn psycopg_reads_numeric_precision_and_scale() {
    use datafusion::arrow::datatypes::DataType;
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let schema = oracle::table_schema(&ctx, "lineitem").await;
    let sql = std::ffi::OsString::from("SELECT * FROM tpch.lineitem LIMIT 0");
    let lines = run_python(&server, "describe_psycopg.py", &[sql.as_os_str()]);
    assert_eq!(lines.len(), 2 * schema.fields().len());
    let mut decimals = 0;
    for (line, field) in lines.iter().zip(schema.fields().iter().cycle()) {
        assert_eq!(line["name"], field.name().as_str(), "{line}");
        match field.data_type() {
            DataType::Decimal128(p, s) => {
                decimals += 1;
                assert_eq!(line["type_code"], 1700, "numeric: {line}");
                assert_eq!(line["precision"], u64::from(*p), "{line}");
                assert_eq!(line["scale"], i64::from(*s), "{line}");
            }
            _ => assert!(line["precision"].is_null(), "{line}"),
        }
    }
    assert!(decimals > 0, "lineitem has numeric columns");
}

/// The JSON line a client script printed for `name`.
fn check_line(lines: &[serde_json::Value], name: &str) -> serde_json::Value {
    lines
        .iter()
        .find(|v| v["check"] == name)
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
        .clone()
}

/// The sample's table names (one directory each), sorted.
fn sample_tables(server: &LochServer) -> Vec<String> {
    let mut sample: Vec<String> = std::fs::read_dir(server.sample_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    sample.sort();
    sample
}

#[tokio::test]
async fn psqlodbc_queries_and_lists_the_catalog_through_pyodbc() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let port = server.port.to_string();
    let lines = run_python_script(
        &server,
        "odbc_pyodbc.py",
        &[port],
        "pyodbc and odbc-postgresql",
    );
    let check = |name: &str| check_line(&lines, name);
    let expected = oracle::run(
        &ctx,
        "select n_regionkey, count(*) from nation group by 1 order by 1",
    )
    .await;
    oracle::compare(&expected, &json_rows(&check("query")), true).unwrap();
    let expected = oracle::run(&ctx, "select n_name from nation where n_nationkey = 3").await;
    oracle::compare(&expected, &json_rows(&check("parameter")), true).unwrap();
    assert_eq!(check("error")["sqlstate"], "22012");
    let expected = oracle::run(&ctx, "select 40 + 2").await;
    oracle::compare(&expected, &json_rows(&check("after_error")), true).unwrap();

    let sample = sample_tables(&server);
    let tables: Vec<String> = serde_json::from_value(check("tables")["names"].clone()).unwrap();
    assert_eq!(tables, sample);
    let schema = oracle::table_schema(&ctx, "lineitem").await;
    assert_columns(&schema, &check("columns")["columns"]);

    // Manual commit: the savepoint psqlODBC wraps around each statement
    // keeps the transaction usable after an error.
    assert_eq!(check("manual_error")["sqlstate"], "42P01");
    let expected = oracle::run(&ctx, "select count(*) from region").await;
    oracle::compare(&expected, &json_rows(&check("manual_after_error")), true).unwrap();

    // UseDeclareFetch=1: DECLARE … CURSOR WITH HOLD / FETCH 1000 / CLOSE.
    let orders = oracle::run(
        &ctx,
        "select o_orderkey, o_totalprice from orders order by 1",
    )
    .await;
    let nation = oracle::run(&ctx, "select n_name from nation where n_nationkey = 3").await;
    for mode in ["autocommit", "manual"] {
        oracle::compare(
            &orders,
            &json_rows(&check(&format!("declare_fetch_{mode}"))),
            true,
        )
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(
            check(&format!("declare_fetch_error_{mode}"))["sqlstate"],
            "22012"
        );
        oracle::compare(
            &nation,
            &json_rows(&check(&format!("declare_fetch_after_{mode}"))),
            true,
        )
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
}

/// A driver's column listing (name, type name, size, decimal digits) against
/// the table's Arrow schema: every column in order, with PostgreSQL's type
/// name and, for decimals, their precision and scale.
fn assert_columns(schema: &arrow::datatypes::Schema, listed: &serde_json::Value) {
    use arrow::datatypes::DataType;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), schema.fields().len(), "{listed:?}");
    for (field, column) in schema.fields().iter().zip(listed) {
        assert_eq!(column[0], field.name().as_str(), "{column}");
        let type_name = match field.data_type() {
            DataType::Int32 => "int4",
            DataType::Int64 => "int8",
            DataType::Decimal128(..) => "numeric",
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "text",
            DataType::Date32 => "date",
            other => panic!("no PostgreSQL type for {other} in this test"),
        };
        assert_eq!(column[1], type_name, "{column}");
        if let DataType::Decimal128(precision, scale) = field.data_type() {
            assert_eq!(column[2], i64::from(*precision), "{column}");
            assert_eq!(column[3], i64::from(*scale), "{column}");
        }
    }
}

/// Runs tests/java/JdbcClient.java with pgjdbc against `server`; one JSON
/// value per line it prints.
fn run_jdbc(server: &LochServer) -> Vec<serde_json::Value> {
    let jar =
        std::env::var("LOCH_PGJDBC").unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    assert!(
        Path::new(&jar).exists(),
        "pgjdbc not found at {jar}: install libpostgresql-jdbc-java (dev/test does)"
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("java/JdbcClient.java");
    let out = Command::new("java")
        .args(["-cp", &jar])
        .arg(&source)
        .arg(server.port.to_string())
        .env("PGPASSWORD", server.password())
        .output()
        .unwrap_or_else(|e| panic!("running java (is a JDK installed?): {e}"));
    assert!(
        out.status.success(),
        "JdbcClient failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test]
async fn pgjdbc_metadata_prepared_statements_cursor_reads_and_savepoints() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let lines = run_jdbc(&server);
    let check = |name: &str| check_line(&lines, name);
    assert_eq!(check("product")["name"], "PostgreSQL");

    let names = |name: &str| -> Vec<String> {
        serde_json::from_value(check(name)["names"].clone()).unwrap()
    };
    let schemas = names("schemas");
    for schema in ["information_schema", "pg_catalog", "public", "tpch"] {
        assert!(
            schemas.iter().any(|s| s == schema),
            "{schema} in {schemas:?}"
        );
    }
    let sample = sample_tables(&server);
    assert_eq!(names("tables"), sample);
    let lineitem = oracle::table_schema(&ctx, "lineitem").await;
    assert_columns(&lineitem, &check("columns")["columns"]);
    // getTypeInfo(): the builtin types a tool maps columns with.
    let types = names("type_info");
    for t in [
        "bool",
        "int2",
        "int4",
        "int8",
        "float8",
        "numeric",
        "text",
        "varchar",
        "date",
        "timestamp",
        "timestamptz",
        "bytea",
    ] {
        assert!(types.iter().any(|n| n == t), "{t} in {types:?}");
    }

    for region in [1, 2] {
        let expected = oracle::run(
            &ctx,
            &format!(
                "select n_nationkey, n_name from nation where n_regionkey = {region} \
                 and n_nationkey > 5 order by 1"
            ),
        )
        .await;
        oracle::compare(
            &expected,
            &json_rows(&check(&format!("prepared_{region}"))),
            true,
        )
        .unwrap_or_else(|e| panic!("region {region}: {e}"));
    }
    let metadata = check("result_metadata");
    let arrow::datatypes::DataType::Decimal128(precision, scale) = lineitem
        .field_with_name("l_extendedprice")
        .unwrap()
        .data_type()
        .clone()
    else {
        panic!("l_extendedprice is a decimal in the sample");
    };
    assert_eq!(metadata["type"], "numeric");
    assert_eq!(metadata["precision"], i64::from(precision));
    assert_eq!(metadata["scale"], i64::from(scale));

    assert_eq!(check("error")["sqlstate"], "22012");
    let expected = oracle::run(&ctx, "select 40 + 2").await;
    oracle::compare(&expected, &json_rows(&check("after_error")), true).unwrap();

    // setFetchSize outside autocommit: the rows arrive a portal at a time.
    let expected = oracle::run(
        &ctx,
        "select o_orderkey, o_totalprice from orders order by 1",
    )
    .await;
    assert!(expected.len() >= 100_000, "the cursor read spans 100k rows");
    oracle::compare(&expected, &json_rows(&check("fetch_size")), true).unwrap();

    assert_eq!(check("savepoint_error")["sqlstate"], "42P01");
    let expected = oracle::run(&ctx, "select count(*) from region").await;
    oracle::compare(&expected, &json_rows(&check("after_savepoint")), true).unwrap();
}

#[tokio::test]
async fn sqlalchemy_inspector_and_pandas() {
    let server = server();
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let port = server.port.to_string();
    let lines = run_python_script(
        &server,
        "sqlalchemy_inspect.py",
        &[port],
        "sqlalchemy, pandas and psycopg",
    );
    let check = |name: &str| check_line(&lines, name);
    // The dialect parsed a PostgreSQL version out of version().
    assert!(check("server_version")["version"][0].as_i64().unwrap() >= 12);
    let names = |name: &str| -> Vec<String> {
        serde_json::from_value(check(name)["names"].clone()).unwrap()
    };
    let schemas = names("schemas");
    assert!(schemas.iter().any(|s| s == "tpch"), "{schemas:?}");
    // SQLAlchemy leaves out pg_* schemas itself (a LIKE … ESCAPE '/').
    assert!(!schemas.iter().any(|s| s.starts_with("pg_")), "{schemas:?}");
    let sample = sample_tables(&server);
    assert_eq!(names("tables"), sample);

    let schema = oracle::table_schema(&ctx, "lineitem").await;
    let columns = check("columns")["columns"].as_array().unwrap().clone();
    assert_eq!(columns.len(), schema.fields().len());
    for (field, column) in schema.fields().iter().zip(&columns) {
        use arrow::datatypes::DataType;
        let expected = match field.data_type() {
            DataType::Int32 => "INTEGER".to_string(),
            DataType::Int64 => "BIGINT".to_string(),
            DataType::Decimal128(p, s) => format!("NUMERIC({p}, {s})"),
            DataType::Utf8 | DataType::Utf8View => "TEXT".to_string(),
            DataType::Date32 => "DATE".to_string(),
            other => panic!("no SQLAlchemy type for {other} in this test"),
        };
        assert_eq!(column[0], field.name().as_str(), "{column}");
        assert_eq!(column[1], expected.as_str(), "{column}");
        assert_eq!(column[2], field.is_nullable(), "{column}");
    }
    // Loch tables have no keys or indexes: empty answers, not errors.
    assert_eq!(check("pk")["constrained"], serde_json::json!([]));
    assert_eq!(check("foreign_keys")["count"], 0);
    assert_eq!(check("indexes")["count"], 0);
    assert_eq!(check("has_table")["found"], true);

    let expected = oracle::run(
        &ctx,
        "select n_regionkey, count(*) as nations from nation group by 1 order by 1",
    )
    .await;
    oracle::compare(&expected, &json_rows(&check("read_sql")), true).unwrap();
    let nation = oracle::table_schema(&ctx, "nation").await;
    let read = check("read_sql_table");
    let columns: Vec<String> = serde_json::from_value(read["columns"].clone()).unwrap();
    let expected_columns: Vec<String> = nation.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(columns, expected_columns);
    let expected = oracle::run(&ctx, "select * from nation").await;
    oracle::compare(&expected, &json_rows(&read), false).unwrap();
}
