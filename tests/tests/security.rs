//! Users, passwords and grants with real clients: tokio-postgres and psql
//! (SCRAM-SHA-256 over pg wire) and the ADBC Flight SQL driver. Every
//! denial is asserted by its exact SQLSTATE (and gRPC code on Flight).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use loch_tests::oracle::Cell;
use loch_tests::{LochServer, json_rows, run_python_script};
use serde_json::Value;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The SQLSTATE and message of a failed call.
fn state_of(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// Runs `sql` and returns its SQLSTATE and message, asserting it failed.
async fn denied(client: &Client, sql: &str) -> (String, String) {
    match client.simple_query(sql).await {
        Ok(_) => panic!("{sql}: expected an error, it ran"),
        Err(e) => state_of(&e),
    }
}

/// The rows of `sql` as text cells.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

async fn exec(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

#[tokio::test]
async fn users_log_in_with_scram_and_passwords_stay_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = LochServer::start(dir.path());
    let admin = server.connect().await;
    exec(
        &admin,
        "CREATE USER ann WITH PASSWORD 'Ann-Clear-Text-7';
         CREATE USER lim PASSWORD 'Lim-Clear-Text-8' CONNECTION LIMIT 1;
         CREATE ROLE nologin PASSWORD 'NoLogin-Clear-Text-9'",
    )
    .await;

    // A good login, a wrong password, an unknown user, a role without LOGIN.
    let ann = server.connect_as("ann", "Ann-Clear-Text-7").await.unwrap();
    assert_eq!(rows(&ann, "select 1").await, vec![vec![Some("1".into())]]);
    let wrong = state_of(&server.connect_as("ann", "nope").await.err().unwrap());
    let unknown = state_of(&server.connect_as("ghost", "nope").await.err().unwrap());
    let no_login = state_of(
        &server
            .connect_as("nologin", "NoLogin-Clear-Text-9")
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(wrong.0, "28P01", "{wrong:?}");
    assert_eq!(unknown.0, "28000", "{unknown:?}");
    assert_eq!(no_login.0, "28000", "{no_login:?}");
    // The same words for both: the message does not tell them apart.
    assert_eq!(wrong.1.replace("\"ann\"", "\"ghost\""), unknown.1);

    // libpq (psql) logs in with SCRAM too.
    let out = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args([
            "-U",
            "ann",
            "-d",
            "loch",
            "-X",
            "-A",
            "-t",
            "-c",
            "select 40 + 2",
        ])
        .env("PGPASSWORD", "Ann-Clear-Text-7")
        .output()
        .expect("psql (postgresql-client) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    // CONNECTION LIMIT 1: a second connection is refused while one is open.
    let first = server.connect_as("lim", "Lim-Clear-Text-8").await.unwrap();
    let second = state_of(
        &server
            .connect_as("lim", "Lim-Clear-Text-8")
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(second.0, "53300", "{second:?}");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match server.connect_as("lim", "Lim-Clear-Text-8").await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(state_of(&e).0, "53300");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the slot was never freed: {e:?}"),
        }
    }

    // Only superusers manage roles; anyone may change their own password.
    assert_eq!(denied(&ann, "CREATE ROLE x").await.0, "42501");
    assert_eq!(denied(&ann, "ALTER ROLE ann SUPERUSER").await.0, "42501");
    assert_eq!(denied(&ann, "DROP ROLE lim").await.0, "42501");
    assert_eq!(denied(&admin, "CREATE ROLE ann").await.0, "42710");
    assert_eq!(denied(&admin, "DROP ROLE ghost").await.0, "42704");
    assert_eq!(denied(&admin, "CREATE ROLE public").await.0, "42939");
    exec(&ann, "ALTER ROLE ann PASSWORD 'Ann-New-Text-10'").await;
    let old = state_of(
        &server
            .connect_as("ann", "Ann-Clear-Text-7")
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(old.0, "28P01");

    // Nothing on disk or in the log holds a password in clear; the store
    // holds SCRAM verifiers.
    let admin_password = server.password();
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("catalog.sqlite") {
            on_disk.extend(std::fs::read(&path).unwrap());
        }
    }
    let on_disk = String::from_utf8_lossy(&on_disk).to_string();
    assert!(on_disk.contains("SCRAM-SHA-256$4096:"));
    let log = server.log();
    for secret in [
        "Ann-Clear-Text-7",
        "Ann-New-Text-10",
        "Lim-Clear-Text-8",
        "NoLogin-Clear-Text-9",
        admin_password.as_str(),
    ] {
        assert!(
            !on_disk.contains(secret),
            "{secret} is in the catalog store"
        );
        assert!(!log.contains(secret), "{secret} is in the server log");
    }

    // Roles and passwords survive a restart.
    drop((ann, admin));
    assert!(server.is_alive());
    drop(server);
    let server = LochServer::start(dir.path());
    let ann = server.connect_as("ann", "Ann-New-Text-10").await.unwrap();
    assert_eq!(rows(&ann, "select 2").await, vec![vec![Some("2".into())]]);
    server.connect().await;
}

#[tokio::test]
async fn grants_decide_what_each_user_reads_on_pg_wire() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start(dir.path());
    let admin = server.connect().await;
    exec(
        &admin,
        "CREATE USER ann PASSWORD 'ann-pw';
         CREATE ROLE analysts;
         CREATE SCHEMA sales;
         CREATE TABLE sales.t AS SELECT n_nationkey, n_name, n_regionkey FROM tpch.nation;
         CREATE VIEW sales.europe AS SELECT n_name FROM sales.t WHERE n_regionkey = 3;
         GRANT USAGE ON SCHEMA sales TO ann;
         GRANT CREATE ON SCHEMA public TO ann",
    )
    .await;
    let ann = server.connect_as("ann", "ann-pw").await.unwrap();

    // Without SELECT on sales.t, every path to its rows is refused.
    for sql in [
        "select * from sales.t",
        "select count(*) from sales.europe",
        "with x as (select * from sales.t) select count(*) from x",
        "select 1 where exists (select 1 from sales.t)",
        "select * from tpch.nation where n_name in (select n_name from sales.t)",
        "select * from (select * from sales.t) as europe",
        "select count(*) from sales.t VERSION AS OF 0",
        "create table public.copy as select * from sales.t",
        "explain select * from sales.t",
    ] {
        let (code, message) = denied(&ann, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(
            message.contains("sales.t") || message.contains("sales.europe"),
            "{sql}: {message}"
        );
    }
    // A view ann owns runs with ann's rights: no way around the grant.
    exec(
        &ann,
        "CREATE VIEW public.mine AS SELECT * FROM sales.t; CREATE TABLE public.own (a bigint)",
    )
    .await;
    assert_eq!(denied(&ann, "select * from public.mine").await.0, "42501");
    assert_eq!(
        denied(
            &ann,
            "insert into public.own select n_nationkey from sales.t"
        )
        .await
        .0,
        "42501"
    );
    // A prepared statement is refused at prepare (describing it would show
    // the columns).
    let e = ann
        .prepare("select * from sales.t where n_nationkey = $1")
        .await
        .err()
        .unwrap();
    assert_eq!(state_of(&e).0, "42501");
    // Listings leave it out; the session is still fine.
    let listed = "select table_schema || '.' || table_name from information_schema.tables \
                  where table_schema in ('sales', 'public') order by 1";
    assert_eq!(
        rows(&ann, listed).await,
        vec![
            vec![Some("public.mine".into())],
            vec![Some("public.own".into())]
        ]
    );
    assert_eq!(rows(&ann, "select 1").await.len(), 1);
    // Writes and owner-only statements too.
    assert_eq!(
        denied(&ann, "insert into sales.t values (99, 'X', 1)")
            .await
            .0,
        "42501"
    );
    assert_eq!(denied(&ann, "drop table sales.t").await.0, "42501");
    assert_eq!(denied(&ann, "create schema mine").await.0, "42501");
    assert_eq!(
        denied(&ann, "create table sales.x (a int)").await.0,
        "42501"
    );
    assert_eq!(
        denied(&ann, "GRANT SELECT ON sales.t TO ann").await.0,
        "42501"
    );
    assert_eq!(
        denied(
            &ann,
            "create external table e stored as parquet location '/etc'"
        )
        .await
        .0,
        "42501"
    );

    // SELECT on the view (owned by the admin) reads through it, with the
    // admin's answer; the table itself stays closed.
    exec(&admin, "GRANT SELECT ON sales.europe TO ann").await;
    let view_sql = "select n_name from sales.europe order by n_name";
    let expected = rows(&admin, view_sql).await;
    assert!(!expected.is_empty());
    assert_eq!(rows(&ann, view_sql).await, expected);
    assert_eq!(denied(&ann, "select * from sales.t").await.0, "42501");

    // A grant to a role reaches its members, from the next statement on.
    exec(
        &admin,
        "GRANT SELECT ON TABLE sales.t TO analysts; GRANT analysts TO ann",
    )
    .await;
    let count_sql = "select count(*) from sales.t";
    let count = rows(&admin, count_sql).await;
    assert_eq!(rows(&ann, count_sql).await, count);
    assert_eq!(rows(&ann, "select count(*) from public.mine").await, count);
    assert_eq!(
        rows(&ann, listed).await.len(),
        4,
        "t and the view are listed now"
    );
    let grants = rows(&admin, "SHOW GRANTS ON TABLE sales.t").await;
    assert!(
        grants
            .iter()
            .any(|r| r[0].as_deref() == Some("analysts") && r[1].as_deref() == Some("SELECT")),
        "{grants:?}"
    );
    // Revoked mid-session: the very next statement is refused.
    exec(&admin, "REVOKE analysts FROM ann").await;
    assert_eq!(denied(&ann, count_sql).await.0, "42501");
    // A schema-wide grant covers the schema's tables.
    exec(&admin, "GRANT SELECT ON ALL TABLES IN SCHEMA sales TO ann").await;
    assert_eq!(rows(&ann, count_sql).await, count);
    exec(
        &admin,
        "REVOKE SELECT ON ALL TABLES IN SCHEMA sales FROM ann",
    )
    .await;
    assert_eq!(denied(&ann, count_sql).await.0, "42501");

    // INSERT needs its own grant.
    exec(&admin, "GRANT INSERT, SELECT ON sales.t TO ann").await;
    exec(&ann, "insert into sales.t values (99, 'X', 1)").await;
    let after = rows(&admin, count_sql).await;
    assert_ne!(after, count);
    assert_eq!(rows(&ann, count_sql).await, after);
    assert_eq!(denied(&ann, "delete from sales.t").await.0, "42501");

    // A role that owns objects cannot be dropped; once they are gone it
    // can, and its open session ends.
    assert_eq!(denied(&admin, "DROP ROLE ann").await.0, "2BP01");
    exec(
        &admin,
        "DROP VIEW public.mine; ALTER TABLE public.own OWNER TO loch; DROP ROLE ann",
    )
    .await;
    let gone = ann.simple_query("select 1").await.err().unwrap();
    assert_eq!(state_of(&gone).0, "28000");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ann.is_closed() {
        assert!(Instant::now() < deadline, "the session was not closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.connect_as("ann", "ann-pw").await.is_err(),
        "a dropped role cannot log in"
    );
}

fn flight_as(server: &LochServer, user: &str, password: &str, statements: &[&str]) -> Vec<Value> {
    let uri = server.flight_uri();
    let statements = serde_json::to_string(statements).unwrap();
    run_python_script(
        server,
        "security_adbc.py",
        &[uri.as_str(), user, password, statements.as_str()],
        "adbc-driver-flightsql",
    )
}

fn listed(lines: &[Value]) -> Vec<String> {
    let objects = lines.iter().find(|v| v["check"] == "get_objects").unwrap();
    objects["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn statements(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["check"] == "statement").collect()
}

#[tokio::test]
async fn grants_hold_on_flight_sql() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start(dir.path());
    let admin = server.connect().await;
    exec(
        &admin,
        "CREATE USER ann PASSWORD 'ann-flight-pw';
         CREATE SCHEMA sales;
         CREATE TABLE sales.t AS SELECT n_nationkey, n_name FROM tpch.nation;
         GRANT USAGE ON SCHEMA sales TO ann",
    )
    .await;
    let queries = [
        "select count(*) from sales.t",
        "select n_name from sales.t where n_nationkey = $1",
        "select count(*) from tpch.nation",
    ];
    let lines = flight_as(&server, "ann", "ann-flight-pw", &queries);
    let wrong = lines
        .iter()
        .find(|v| v["check"] == "wrong_password")
        .unwrap();
    let wrong = wrong["error"].as_str().unwrap();
    assert!(
        wrong.contains("Unauthenticated") || wrong.contains("UNAUTHENTICATED"),
        "{wrong}"
    );
    let results = statements(&lines);
    for denied in &results[..2] {
        let e = denied["error"]
            .as_str()
            .unwrap_or_else(|| panic!("expected a denial: {denied}"));
        assert!(e.contains("42501"), "{e}");
        assert!(
            e.contains("PermissionDenied") || e.contains("PERMISSION_DENIED"),
            "{e}"
        );
    }
    let nation = rows(&admin, "select count(*) from tpch.nation").await;
    assert_eq!(
        json_rows(results[2]),
        vec![vec![Cell::Int(
            nation[0][0].as_ref().unwrap().parse().unwrap()
        )]]
    );
    let before = listed(&lines);
    assert!(before.contains(&"tpch.nation".to_string()), "{before:?}");
    assert!(!before.contains(&"sales.t".to_string()), "{before:?}");

    exec(&admin, "GRANT SELECT ON sales.t TO ann").await;
    let lines = flight_as(&server, "ann", "ann-flight-pw", &queries);
    let results = statements(&lines);
    let count = rows(&admin, "select count(*) from sales.t").await;
    assert_eq!(
        json_rows(results[0]),
        vec![vec![Cell::Int(
            count[0][0].as_ref().unwrap().parse().unwrap()
        )]]
    );
    let name = rows(&admin, "select n_name from sales.t where n_nationkey = 1").await;
    assert_eq!(
        json_rows(results[1]),
        vec![vec![Cell::Text(name[0][0].clone().unwrap())]]
    );
    assert!(listed(&lines).contains(&"sales.t".to_string()));
}

/// The European nations of TPC-H (FRANCE, GERMANY, ROMANIA, RUSSIA, UNITED
/// KINGDOM): what members of `europe` see of `crm.customer`.
const EUROPE: &str = "(6, 7, 19, 22, 23)";

/// `sql`'s rows from the in-process DataFusion oracle.
async fn oracle_rows(server: &LochServer, sql: &str) -> Vec<Vec<Cell>> {
    let ctx = loch_tests::oracle::tpch_context(&server.sample_dir()).await;
    loch_tests::oracle::run(&ctx, sql).await
}

async fn pg_rows(client: &Client, sql: &str) -> Vec<Vec<Cell>> {
    let rows = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    loch_tests::oracle::pg_rows(&rows)
}

#[tokio::test]
async fn row_filters_and_column_masks_on_both_protocols() {
    use loch_tests::oracle::compare;
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start(dir.path());
    let admin = server.connect().await;
    exec(
        &admin,
        &format!(
            "CREATE SCHEMA crm;
             CREATE TABLE crm.customer AS
                 SELECT c_custkey, c_name, c_nationkey, c_phone, c_acctbal FROM tpch.customer;
             CREATE TABLE crm.accounts AS SELECT c_custkey, c_nationkey FROM tpch.customer;
             CREATE VIEW crm.v AS SELECT * FROM crm.customer;
             CREATE ROLE europe;
             CREATE USER ann PASSWORD 'ann-pw';
             CREATE USER bob PASSWORD 'bob-pw';
             GRANT europe TO ann;
             GRANT USAGE ON SCHEMA crm TO ann, bob;
             GRANT SELECT ON crm.customer, crm.v TO ann, bob;
             GRANT SELECT, DELETE ON crm.customer, crm.accounts TO ann;
             ALTER TABLE crm.customer SET ROW FILTER
                 is_member('europe') AND c_nationkey IN {EUROPE}
                 OR current_user = 'bob' AND c_nationkey = 24;
             ALTER TABLE crm.customer ALTER COLUMN c_phone SET MASK
                 CASE WHEN is_member('support') THEN c_phone ELSE '***-' || right(c_phone, 4) END;
             ALTER TABLE crm.customer ALTER COLUMN c_acctbal SET MASK NULL;
             ALTER TABLE crm.accounts SET ROW FILTER is_member('europe') AND c_nationkey IN {EUROPE}"
        ),
    )
    .await;

    // What ann may see, from the oracle: European customers, masked.
    let visible = |nations: &str| {
        format!(
            "SELECT c_custkey, c_name, c_nationkey, '***-' || right(c_phone, 4) AS c_phone,
                    CAST(NULL AS DECIMAL(15, 2)) AS c_acctbal
             FROM customer WHERE c_nationkey IN {nations}"
        )
    };
    let ann_sees = visible(EUROPE);
    let ann = server.connect_as("ann", "ann-pw").await.unwrap();
    let checks = [
        (
            "SELECT * FROM crm.customer ORDER BY c_custkey".to_string(),
            format!("SELECT * FROM ({ann_sees}) ORDER BY c_custkey"),
        ),
        (
            "SELECT c_nationkey, count(*) FROM crm.customer GROUP BY 1 ORDER BY 1".into(),
            format!("SELECT c_nationkey, count(*) FROM ({ann_sees}) GROUP BY 1 ORDER BY 1"),
        ),
        // A predicate on a masked column sees the masked value.
        (
            "SELECT count(*) FROM crm.customer WHERE c_acctbal > 0 OR c_phone LIKE '1%'".into(),
            format!("SELECT count(*) FROM ({ann_sees}) WHERE c_acctbal > 0 OR c_phone LIKE '1%'"),
        ),
        // Through a view the admin owns: still the reader's filter.
        (
            "SELECT count(*), max(c_phone) FROM crm.v".into(),
            format!("SELECT count(*), max(c_phone) FROM ({ann_sees})"),
        ),
        // In a subquery, and in time travel.
        (
            "SELECT count(*) FROM tpch.orders WHERE o_custkey IN (SELECT c_custkey FROM crm.customer)"
                .into(),
            format!(
                "SELECT count(*) FROM orders WHERE o_custkey IN (SELECT c_custkey FROM ({ann_sees}))"
            ),
        ),
        (
            "SELECT count(*) FROM crm.customer VERSION AS OF 0".into(),
            format!("SELECT count(*) FROM ({ann_sees})"),
        ),
    ];
    for (sql, oracle_sql) in &checks {
        let expected = oracle_rows(&server, oracle_sql).await;
        let got = pg_rows(&ann, sql).await;
        compare(&expected, &got, sql.contains("ORDER BY")).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // A prepared statement binds parameters into the protected plan.
    let statement = ann
        .prepare("SELECT count(*) FROM crm.customer WHERE c_nationkey = $1")
        .await
        .unwrap();
    for nation in [7i64, 24] {
        let got = loch_tests::oracle::pg_rows(&ann.query(&statement, &[&nation]).await.unwrap());
        let expected = oracle_rows(
            &server,
            &format!("SELECT count(*) FROM ({ann_sees}) WHERE c_nationkey = {nation}"),
        )
        .await;
        compare(&expected, &got, false).unwrap();
    }

    // psql (libpq) as ann: the same rows.
    let out = std::process::Command::new("psql")
        .arg(server.conn_str_as("ann", "ann-pw"))
        .args(["-X", "-A", "-t", "-F", ","])
        .args([
            "-c",
            "SELECT c_nationkey, count(*), min(c_phone) FROM crm.customer GROUP BY 1 ORDER BY 1",
        ])
        .output()
        .expect("psql (postgresql-client) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = oracle_rows(
        &server,
        &format!(
            "SELECT c_nationkey, count(*), min(c_phone) FROM ({ann_sees}) GROUP BY 1 ORDER BY 1"
        ),
    )
    .await;
    let got: Vec<Vec<Cell>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            vec![
                Cell::Int(cells[0].parse().unwrap()),
                Cell::Int(cells[1].parse().unwrap()),
                Cell::Text(cells[2].to_string()),
            ]
        })
        .collect();
    compare(&expected, &got, true).unwrap();

    // bob: not in europe, his own clause.
    let bob = server.connect_as("bob", "bob-pw").await.unwrap();
    let expected = oracle_rows(
        &server,
        &format!("SELECT * FROM ({}) ORDER BY c_custkey", visible("(24)")),
    )
    .await;
    assert!(!expected.is_empty());
    compare(
        &expected,
        &pg_rows(&bob, "SELECT * FROM crm.customer ORDER BY c_custkey").await,
        true,
    )
    .unwrap();

    // A table ann creates from a protected one holds what she sees, with
    // or without PARTITIONED BY (both paths pass the same check).
    exec(
        &admin,
        "CREATE SCHEMA scratch; GRANT USAGE, CREATE ON SCHEMA scratch TO ann",
    )
    .await;
    for (name, clause) in [("plain", ""), ("split", "PARTITIONED BY (c_nationkey)")] {
        ann.batch_execute(&format!(
            "CREATE TABLE scratch.{name} {clause} AS SELECT * FROM crm.customer"
        ))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let copied = pg_rows(
            &admin,
            &format!(
                "SELECT c_custkey, c_name, c_nationkey, c_phone, c_acctbal
                 FROM scratch.{name} ORDER BY c_custkey"
            ),
        )
        .await;
        let expected = oracle_rows(
            &server,
            &format!("SELECT * FROM ({ann_sees}) ORDER BY c_custkey"),
        )
        .await;
        compare(&expected, &copied, true).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // Changes: a DELETE removes only the rows its user sees; changes that
    // would read or write hidden values are refused.
    let deleted = ann.execute("DELETE FROM crm.accounts", &[]).await.unwrap();
    let european = oracle_rows(
        &server,
        &format!("SELECT count(*) FROM customer WHERE c_nationkey IN {EUROPE}"),
    )
    .await;
    assert_eq!(vec![vec![Cell::Int(deleted as i64)]], european);
    exec(&admin, "ALTER TABLE crm.accounts DROP ROW FILTER").await;
    let rest = oracle_rows(
        &server,
        &format!("SELECT count(*) FROM customer WHERE c_nationkey NOT IN {EUROPE}"),
    )
    .await;
    compare(
        &rest,
        &pg_rows(&admin, "SELECT count(*) FROM crm.accounts").await,
        false,
    )
    .unwrap();
    for sql in [
        "DELETE FROM crm.customer WHERE c_custkey = 1",
        "TRUNCATE crm.customer",
    ] {
        assert_eq!(denied(&ann, sql).await.0, "0A000", "{sql}");
    }

    // Setting them: the owner only, and expressions that fit.
    for (sql, state) in [
        ("ALTER TABLE crm.customer SET ROW FILTER true", "42501"),
        ("ALTER TABLE crm.customer DROP ROW FILTER", "42501"),
    ] {
        assert_eq!(denied(&ann, sql).await.0, state, "{sql}");
    }
    for (sql, state) in [
        (
            "ALTER TABLE crm.customer SET ROW FILTER c_nationkey + 1",
            "42804",
        ),
        (
            "ALTER TABLE crm.customer ALTER COLUMN c_acctbal SET MASK 'hidden'",
            "42804",
        ),
        (
            "ALTER TABLE crm.customer ALTER COLUMN nope SET MASK NULL",
            "42703",
        ),
        ("ALTER TABLE crm.customer SET ROW FILTER nope = 1", "42703"),
        (
            "ALTER TABLE crm.customer SET ROW FILTER is_member(c_name)",
            "42601",
        ),
        ("ALTER TABLE crm.v SET ROW FILTER true", "42809"),
        ("ALTER TABLE crm.accounts DROP ROW FILTER", "42704"),
        ("ALTER TABLE crm.nope SET ROW FILTER true", "42P01"),
    ] {
        assert_eq!(denied(&admin, sql).await.0, state, "{sql}");
    }
    // The session goes on after the errors.
    assert_eq!(rows(&ann, "select 1").await, vec![vec![Some("1".into())]]);

    // Flight SQL: the same plan rewrite.
    let sql = "select * from crm.customer order by c_custkey";
    let lines = flight_as(&server, "ann", "ann-pw", &[sql]);
    let result = statements(&lines)[0];
    assert!(result.get("rows").is_some(), "{result}");
    let expected = oracle_rows(
        &server,
        &format!("SELECT * FROM ({ann_sees}) ORDER BY c_custkey"),
    )
    .await;
    compare(&expected, &json_rows(result), true).unwrap_or_else(|e| panic!("{e}: {result}"));

    // Dropped with the table: a new table of the same name starts clean.
    exec(
        &admin,
        "DROP VIEW crm.v; DROP TABLE crm.customer;
         CREATE TABLE crm.customer AS SELECT c_custkey FROM tpch.customer",
    )
    .await;
    compare(
        &oracle_rows(&server, "SELECT count(*) FROM customer").await,
        &pg_rows(&admin, "SELECT count(*) FROM crm.customer").await,
        false,
    )
    .unwrap();
}
