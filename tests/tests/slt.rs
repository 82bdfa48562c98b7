//! The sqllogictest files in tests/slt, run twice against the real binary:
//! once over pg wire (tokio-postgres) and once over Flight SQL (arrow-flight's
//! Flight SQL client). Both protocols must give the answers the files hold,
//! so they give the same answers. Values are compared as PostgreSQL's text
//! output, with booleans, timestamps and floats put in one canonical form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_flight::sql::client::FlightSqlServiceClient;
use async_trait::async_trait;
use futures::TryStreamExt;
use loch_tests::LochServer;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::types::Type;

/// An error either protocol returned, with its SQLSTATE in the text so one
/// `statement error` pattern fits both.
#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

/// The SQLSTATE in an error's text, `(SQLSTATE xxxxx)`.
fn sqlstate_of(err: &SltError) -> Option<String> {
    let at = err.0.find("SQLSTATE ")? + "SQLSTATE ".len();
    err.0.get(at..at + 5).map(str::to_string)
}

/// Canonical text of one value, whatever the protocol. Floats are left as
/// printed: both protocols print the shortest text that round-trips.
fn canonical(text: String, ty: &DefaultColumnType) -> String {
    let text = match text.as_str() {
        "t" => "true".to_string(),
        "f" => "false".to_string(),
        _ => text,
    };
    if text.is_empty() {
        return "(empty)".to_string();
    }
    // A timestamp's date and time are separated by a space in PostgreSQL's
    // output and by `T` in Arrow's.
    let b = text.as_bytes();
    if matches!(ty, DefaultColumnType::Text)
        && b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
    {
        return format!("{} {}", &text[..10], &text[11..]);
    }
    text
}

// ------------------------------------------------------------------ pg wire

struct PgDb {
    client: tokio_postgres::Client,
}

fn pg_type(ty: &Type) -> DefaultColumnType {
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => DefaultColumnType::Integer,
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

#[async_trait]
impl AsyncDB for PgDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let err = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(db) => SltError(format!("{} (SQLSTATE {})", db.message(), db.code().code())),
            None => SltError(e.to_string()),
        };
        // Describe for the column types, then the simple protocol for
        // PostgreSQL's text output of every value.
        let statement = self.client.prepare(sql).await.map_err(err)?;
        let types: Vec<DefaultColumnType> = statement
            .columns()
            .iter()
            .map(|c| pg_type(c.type_()))
            .collect();
        let messages = self.client.simple_query(sql).await.map_err(err)?;
        let mut rows = Vec::new();
        let mut count = 0;
        for message in messages {
            match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                Some(v) => canonical(v.to_string(), &types[i]),
                                None => "NULL".to_string(),
                            })
                            .collect(),
                    );
                }
                tokio_postgres::SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        if types.is_empty() {
            return Ok(DBOutput::StatementComplete(count));
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "loch-pgwire"
    }

    fn error_sql_state(err: &SltError) -> Option<String> {
        sqlstate_of(err)
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

// --------------------------------------------------------------- Flight SQL

struct FlightDb {
    client: FlightSqlServiceClient<tonic::transport::Channel>,
}

fn arrow_type(ty: &DataType) -> DefaultColumnType {
    if ty.is_integer() {
        DefaultColumnType::Integer
    } else if ty.is_floating() || matches!(ty, DataType::Decimal128(..) | DataType::Decimal256(..))
    {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

/// The server's message already carries "(SQLSTATE xxxxx)".
fn flight_err(e: impl std::fmt::Display) -> SltError {
    SltError(e.to_string())
}

#[async_trait]
impl AsyncDB for FlightDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let info = self
            .client
            .execute(sql.to_string(), None)
            .await
            .map_err(flight_err)?;
        if info.endpoint.is_empty() {
            // DDL and other statements without rows run at GetFlightInfo.
            return Ok(DBOutput::StatementComplete(0));
        }
        let schema = info.clone().try_decode_schema().map_err(flight_err)?;
        let types: Vec<DefaultColumnType> = schema
            .fields()
            .iter()
            .map(|f| arrow_type(f.data_type()))
            .collect();
        let mut batches: Vec<RecordBatch> = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint
                .ticket
                .ok_or_else(|| SltError("no ticket".into()))?;
            let stream = self.client.do_get(ticket).await.map_err(flight_err)?;
            let mut got: Vec<RecordBatch> = stream
                .try_collect()
                .await
                .map_err(|e| SltError(e.to_string()))?;
            batches.append(&mut got);
        }
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters: Vec<ArrayFormatter> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            if batch.column(i).is_null(row) {
                                "NULL".to_string()
                            } else {
                                canonical(f.value(row).to_string(), &types[i])
                            }
                        })
                        .collect(),
                );
            }
        }
        if types.is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "loch-flight-sql"
    }

    fn error_sql_state(err: &SltError) -> Option<String> {
        sqlstate_of(err)
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

/// The runner's validator signature takes `&Vec`.
#[allow(clippy::ptr_arg)]
fn column_types_match(actual: &Vec<DefaultColumnType>, expected: &Vec<DefaultColumnType>) -> bool {
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| matches!(e, DefaultColumnType::Any) || a == e)
}

#[tokio::test]
async fn slt_files_over_pg_wire() {
    // Own data directory: the files create and drop tables.
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start_with(dir.path(), 0.01);
    for file in slt_files() {
        let conn_str = server.conn_str();
        let mut runner = sqllogictest::Runner::new(move || {
            let conn_str = conn_str.clone();
            async move {
                let (client, connection) =
                    tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
                        .await
                        .map_err(|e| SltError(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(PgDb { client })
            }
        });
        runner.with_column_validator(column_types_match);
        runner.run_file_async(&file).await.unwrap_or_else(|e| {
            panic!(
                "{} over pg wire:\n{e}\n{}",
                file.display(),
                server.log_tail()
            )
        });
    }
}

#[tokio::test]
async fn slt_files_over_flight_sql() {
    let dir = tempfile::tempdir().unwrap();
    let server = LochServer::start_with(dir.path(), 0.01);
    for file in slt_files() {
        let uri = server.flight_uri();
        let password = server.password();
        let mut runner = sqllogictest::Runner::new(move || {
            let uri = uri.clone();
            let password = password.clone();
            async move {
                let channel =
                    tonic::transport::Channel::from_shared(uri.replace("grpc://", "http://"))
                        .map_err(|e| SltError(e.to_string()))?
                        .connect()
                        .await
                        .map_err(|e| SltError(e.to_string()))?;
                let mut client = FlightSqlServiceClient::new(channel);
                client
                    .handshake("loch", &password)
                    .await
                    .map_err(|e| SltError(e.to_string()))?;
                Ok(FlightDb { client })
            }
        });
        runner.with_column_validator(column_types_match);
        runner.run_file_async(&file).await.unwrap_or_else(|e| {
            panic!(
                "{} over Flight SQL:\n{e}\n{}",
                file.display(),
                server.log_tail()
            )
        });
    }
}
