//! psql's backslash commands against `pg_catalog` (the BI tools issue's
//! first client): `\l`, `\dn`, `\dt`, `\dt tpch.*`, `\dt+`,
//! `\d tpch.lineitem`, `\dv`, `\df`, `\du`, `\x` and `\timing`, each
//! asserting the names, columns and types it lists — taken from the
//! sample's Parquet files for `\d` — and that a user sees only what it is
//! granted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use datafusion::arrow::datatypes::DataType;
use loch_tests::LochServer;

const PASSWORD: &str = "psql-test-pw";

/// psql's unaligned output of `commands` as `user`; panics with stderr on
/// failure.
fn psql(server: &LochServer, user: &str, password: &str, commands: &[&str]) -> String {
    let mut cmd = Command::new("psql");
    cmd.arg(server.conn_str_as(user, password)).args([
        "-X",
        "-A",
        "-F",
        "|",
        "-v",
        "ON_ERROR_STOP=1",
    ]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.output().expect("psql (postgresql-client) is installed");
    assert!(
        out.status.success(),
        "psql {commands:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows of a `List of …` table: its lines with the separator, header
/// excluded, split into cells.
fn listed(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| l.contains('|'))
        .skip(1)
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// The PostgreSQL name psql shows for a column of this Arrow type.
/// psql's name for a column of Arrow type `t`; decimals with their
/// precision and scale, as `\d` prints `numeric(p,s)`.
fn pg_type(t: &DataType) -> String {
    if let DataType::Decimal128(p, s) = t {
        return format!("numeric({p},{s})");
    }
    let name = match t {
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        DataType::Int64 => "bigint",
        DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Date32 => "date",
        DataType::Boolean => "boolean",
        other => panic!("no PostgreSQL name for {other} in this test"),
    };
    name.to_string()
}

#[tokio::test]
async fn psql_describes_the_catalog_each_user_may_see() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start_opts(
        dir.path(),
        loch_tests::TEST_SCALE,
        &[],
        &[("LOCH_ADMIN_PASSWORD", PASSWORD)],
    );
    let admin = server.connect().await;
    admin
        .batch_execute(
            "CREATE SCHEMA sales;
             CREATE TABLE sales.orders AS SELECT o_orderkey, o_totalprice FROM tpch.orders LIMIT 10;
             CREATE TABLE sales.secret AS SELECT 1 AS x;
             CREATE VIEW sales.big AS SELECT * FROM sales.orders WHERE o_totalprice > 1000;
             CREATE USER ann PASSWORD 'ann-pw';
             GRANT USAGE ON SCHEMA sales TO ann;
             GRANT SELECT ON sales.orders, sales.big TO ann",
        )
        .await
        .unwrap();

    let out = psql(&server, "loch", PASSWORD, &["\\l"]);
    assert!(listed(&out).iter().any(|r| r[0] == "loch"), "{out}");

    let out = psql(&server, "loch", PASSWORD, &["\\dn"]);
    let schemas: Vec<String> = listed(&out).into_iter().map(|r| r[0].clone()).collect();
    for s in ["public", "sales", "tpch"] {
        assert!(schemas.contains(&s.to_string()), "{s} in {out}");
    }

    let out = psql(&server, "loch", PASSWORD, &["\\dt tpch.*"]);
    let mut tables: Vec<String> = listed(&out)
        .into_iter()
        .map(|r| {
            assert_eq!((r[0].as_str(), r[2].as_str()), ("tpch", "table"), "{r:?}");
            r[1].clone()
        })
        .collect();
    tables.sort();
    let mut expected: Vec<String> = std::fs::read_dir(server.sample_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(tables, expected);

    // \d: the columns and types of the Parquet files, in order.
    let ctx = loch_tests::oracle::tpch_context(&server.sample_dir()).await;
    let schema = loch_tests::oracle::table_schema(&ctx, "lineitem").await;
    let out = psql(&server, "loch", PASSWORD, &["\\d tpch.lineitem"]);
    let columns: Vec<(String, String)> = listed(&out)
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let expected: Vec<(String, String)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), pg_type(f.data_type())))
        .collect();
    assert_eq!(columns, expected, "{out}");

    // \dt+ (sizes) and \df (no SQL functions to list yet) run.
    let out = psql(&server, "loch", PASSWORD, &["\\dt+ tpch.n*"]);
    assert_eq!(listed(&out)[0][1], "nation", "{out}");
    psql(&server, "loch", PASSWORD, &["\\df"]);

    let out = psql(&server, "loch", PASSWORD, &["\\dv sales.*"]);
    assert_eq!(
        listed(&out)
            .into_iter()
            .map(|r| (r[1].clone(), r[2].clone()))
            .collect::<Vec<_>>(),
        vec![("big".to_string(), "view".to_string())],
        "{out}"
    );

    // \x and \timing on a query: expanded rows, and a timing line.
    let out = psql(
        &server,
        "loch",
        PASSWORD,
        &[
            "\\x on",
            "\\timing on",
            "select count(*) as n from tpch.nation",
        ],
    );
    let nation = ctx
        .sql("select count(*) from nation")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n =
        datafusion::arrow::util::display::array_value_to_string(nation[0].column(0), 0).unwrap();
    assert!(out.lines().any(|l| l == format!("n|{n}")), "{out}");
    assert!(out.contains("Time:"), "{out}");

    // \du: the roles of the catalog store, with their attributes.
    let out = psql(&server, "loch", PASSWORD, &["\\du"]);
    let roles = listed(&out);
    let attributes = |name: &str| {
        roles
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} in {out}"))[1]
            .clone()
    };
    assert!(attributes("loch").contains("Superuser"), "{out}");
    assert!(!attributes("ann").contains("Superuser"), "{out}");

    // ann: only what she is granted.
    let out = psql(&server, "ann", "ann-pw", &["\\dt sales.*"]);
    let names: Vec<String> = listed(&out).into_iter().map(|r| r[1].clone()).collect();
    assert_eq!(names, vec!["orders".to_string()], "{out}");
    let out = psql(&server, "loch", PASSWORD, &["\\dt sales.*"]);
    let names: Vec<String> = listed(&out).into_iter().map(|r| r[1].clone()).collect();
    assert_eq!(
        names,
        vec!["orders".to_string(), "secret".to_string()],
        "{out}"
    );
}
