//! Client SQL replayed byte for byte: what Npgsql 4.0 (Power BI's
//! PostgreSQL connector; .NET cannot be installed here) sends at connect and
//! when a pooled connection is reset, and the catalog queries DBeaver,
//! Metabase, pgAdmin, psql, pgcli and Grafana send, as recorded in
//! datafusion-postgres' tests. The texts and where they come from are in
//! tests/replay/*.json. No statement may fail with XX000 (internal error)
//! or cost the connection; the tools this project promises (Npgsql,
//! DBeaver, Metabase, psql, pgAdmin) must get answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use loch_tests::LochServer;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

fn server() -> LochServer {
    LochServer::start_shared(env!("CARGO_TARGET_TMPDIR"))
}

fn replay_file(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("replay")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Runs one statement the way its client does: several statements in one
/// text by the simple protocol, one by the extended protocol (pgjdbc,
/// Npgsql). `Err` holds the SQLSTATE and message.
async fn run(client: &Client, sql: &str) -> Result<usize, (String, String)> {
    let several = sql.trim().trim_end_matches(';').contains(';');
    let result = if several {
        client.simple_query(sql).await.map(|messages| {
            messages
                .iter()
                .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                .count()
        })
    } else {
        client.query(sql, &[]).await.map(|rows| rows.len())
    };
    result.map_err(|e| {
        let code = e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| "no SQLSTATE".into());
        (code, e.to_string())
    })
}

async fn alive(client: &Client) -> bool {
    client.simple_query("select 1").await.is_ok()
}

#[tokio::test]
async fn npgsql_4_type_loading_and_pool_reset() {
    let server = server();
    let client = server.connect().await;
    let file = replay_file("npgsql40");
    let statements = strings(&file["type_loading"]);
    assert_eq!(statements.len(), 3, "types, composite fields, enum labels");
    let types = client.query(statements[0].as_str(), &[]).await.unwrap();
    for sql in &statements[1..] {
        client.query(sql.as_str(), &[]).await.unwrap();
    }
    // (nspname, typname, oid, type, elemoid) of every row.
    let rows: Vec<(String, String, u32, String, u32)> = types
        .iter()
        .map(|r| {
            // An OID column, whichever integer type it is sent as; NULL is 0.
            let oid = |i: usize| -> u32 {
                if let Ok(v) = r.try_get::<_, Option<i32>>(i) {
                    return v.map_or(0, |v| v as u32);
                }
                if let Ok(v) = r.try_get::<_, Option<i64>>(i) {
                    return v.map_or(0, |v| v as u32);
                }
                r.try_get::<_, Option<u32>>(i).unwrap().unwrap_or(0)
            };
            (r.get(0), r.get(1), oid(2), r.get(5), oid(6))
        })
        .collect();
    // Npgsql maps every builtin type by the OID it reads here; the OIDs
    // come from rust-postgres' own table of PostgreSQL's types.
    for ty in [
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::TEXT,
        Type::VARCHAR,
        Type::BYTEA,
        Type::DATE,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::UUID,
    ] {
        assert!(
            rows.iter()
                .any(|(ns, name, oid, kind, _)| ns == "pg_catalog"
                    && name == ty.name()
                    && *oid == ty.oid()
                    && kind == "b"),
            "{} (oid {}) as a base type in {rows:?}",
            ty.name(),
            ty.oid()
        );
    }
    for (array, element) in [
        (Type::INT4_ARRAY, Type::INT4),
        (Type::TEXT_ARRAY, Type::TEXT),
        (Type::NUMERIC_ARRAY, Type::NUMERIC),
    ] {
        assert!(
            rows.iter()
                .any(|(_, name, oid, kind, elem)| name == array.name()
                    && *oid == array.oid()
                    && kind == "a"
                    && *elem == element.oid()),
            "{} as an array of {} in {rows:?}",
            array.name(),
            element.name()
        );
    }

    // A pooled connection's reset, then the connection is used again.
    for reset in strings(&file["pool_reset"]) {
        client
            .simple_query(&reset)
            .await
            .unwrap_or_else(|e| panic!("{reset}: {e}"));
        assert!(alive(&client).await, "{reset}");
    }
}

#[tokio::test]
async fn recorded_client_catalog_queries_never_fail_internally() {
    let server = server();
    // Clients whose every recorded statement must answer; the others may
    // get a clear error for a few (listed in docs/clients.md).
    let must_answer = ["dbeaver", "metabase", "pgadmin", "psql"];
    let mut failures = Vec::new();
    for name in ["dbeaver", "metabase", "pgadmin", "psql", "pgcli", "grafana"] {
        let client = server.connect().await;
        let file = replay_file(name);
        for sql in strings(&file["statements"]) {
            match run(&client, &sql).await {
                Ok(_) => {}
                Err((code, message)) => {
                    assert_ne!(code, "XX000", "{name}: internal error for {sql}: {message}");
                    assert_ne!(code, "no SQLSTATE", "{name}: {sql}: {message}");
                    if must_answer.contains(&name) {
                        failures.push(format!("{name}: {code} {message}\n  {sql}"));
                    }
                }
            }
            assert!(alive(&client).await, "{name}: connection lost after {sql}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
