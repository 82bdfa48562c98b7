//! All 22 TPC-H queries at scale 0.1 through pg wire, in both protocols,
//! compared with in-process DataFusion on the same Parquet files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loch_tests::oracle::{self, Cell};
use loch_tests::{LochServer, tpch_query};
use tokio_postgres::SimpleQueryMessage;

/// Text results of the simple protocol, parsed by the oracle's cell kinds.
fn parse_text(expected: &[Vec<Cell>], messages: &[SimpleQueryMessage]) -> Vec<Vec<Cell>> {
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            (0..row.len())
                .map(|c| {
                    let Some(text) = row.get(c) else {
                        return Cell::Null;
                    };
                    let kind = expected
                        .get(i)
                        .and_then(|r| r.get(c))
                        .unwrap_or(&Cell::Null);
                    match kind {
                        Cell::Int(_) => Cell::Int(text.parse().unwrap()),
                        Cell::Decimal(_) => Cell::Decimal(text.parse().unwrap()),
                        Cell::Float(_) => Cell::Float(text.parse().unwrap()),
                        Cell::Bool(_) => Cell::Bool(text == "t" || text == "true"),
                        _ => Cell::Text(text.to_string()),
                    }
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn tpch_22_queries_match_datafusion() {
    let server = LochServer::start_shared(env!("CARGO_TARGET_TMPDIR"));
    let client = server.connect_with("options='-c search_path=tpch'").await;
    let ctx = oracle::tpch_context(&server.sample_dir()).await;
    let mut failures = Vec::new();
    for n in 1..=22 {
        let sql = tpch_query(n);
        let expected = oracle::run(&ctx, &sql).await;
        assert!(
            !expected.is_empty() || n == 0,
            "q{n}: oracle returned nothing"
        );
        let ordered = oracle::is_ordered(&sql);

        // Extended protocol, binary results.
        match client.query(sql.as_str(), &[]).await {
            Ok(rows) => {
                if let Err(e) = oracle::compare(&expected, &oracle::pg_rows(&rows), ordered) {
                    failures.push(format!("q{n} (extended): {e}"));
                }
            }
            Err(e) => failures.push(format!("q{n} (extended): {e:?}")),
        }
        // Simple protocol, text results.
        match client.simple_query(&sql).await {
            Ok(messages) => {
                let got = parse_text(&expected, &messages);
                if let Err(e) = oracle::compare(&expected, &got, ordered) {
                    failures.push(format!("q{n} (simple): {e}"));
                }
            }
            Err(e) => failures.push(format!("q{n} (simple): {e:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
