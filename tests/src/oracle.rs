//! The oracle (plain in-process DataFusion over the sample's Parquet files)
//! and [`Cell`], a canonical form of one result value that every client's
//! answer is converted to before comparing.

use std::path::Path;
use std::str::FromStr;

use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use rust_decimal::Decimal;
use tokio_postgres::types::Type;

/// The TPC-H table names.
pub const TABLES: [&str; 8] = [
    "lineitem", "orders", "partsupp", "part", "customer", "supplier", "nation", "region",
];

/// A plain DataFusion context with the eight TPC-H tables registered
/// unqualified, read straight from the Parquet files.
pub async fn tpch_context(sample_dir: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    for table in TABLES {
        register_dir(&ctx, table, &sample_dir.join(table)).await;
    }
    ctx
}

/// Registers the Parquet files in `dir` as `table` of `ctx`.
async fn register_dir(ctx: &SessionContext, table: &str, dir: &Path) {
    ctx.register_parquet(
        table,
        format!("{}/", dir.display()),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("register {table}: {e}"));
}

/// The Arrow schema of `table` as the oracle reads it from the Parquet files.
pub async fn table_schema(
    ctx: &SessionContext,
    table: &str,
) -> datafusion::arrow::datatypes::Schema {
    ctx.table(table)
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
        .schema()
        .as_arrow()
        .clone()
}

/// Runs `sql` on the oracle and returns canonical rows.
pub async fn run(ctx: &SessionContext, sql: &str) -> Vec<Vec<Cell>> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("oracle plan: {e}\n{sql}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("oracle run: {e}\n{sql}"));
    arrow_rows(&batches)
}

/// One result value in a form that compares across clients: decimals
/// normalized exactly, floats with a relative tolerance, the rest as text.
#[derive(Debug, Clone)]
pub enum Cell {
    Null,
    Int(i64),
    Decimal(Decimal),
    Float(f64),
    Text(String),
    Bool(bool),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Decimal(a), Cell::Decimal(b)) => a.normalize() == b.normalize(),
            (Cell::Float(a), Cell::Float(b)) => {
                a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
            }
            (Cell::Text(a), Cell::Text(b)) => a == b,
            (Cell::Bool(a), Cell::Bool(b)) => a == b,
            _ => false,
        }
    }
}

impl Cell {
    /// A key for order-insensitive comparison.
    pub fn sort_key(&self) -> String {
        match self {
            Cell::Null => "\0".into(),
            Cell::Int(v) => format!("{v:020}"),
            Cell::Decimal(d) => d.normalize().to_string(),
            Cell::Float(f) => format!("{f:.6e}"),
            Cell::Text(s) => s.clone(),
            Cell::Bool(b) => b.to_string(),
        }
    }

    /// Parses the `[tag, value]` JSON a client script prints (see
    /// tests/python): `i` int, `d` decimal text, `f` float, `s` text, `b` bool.
    pub fn from_json(v: &serde_json::Value) -> Cell {
        if v.is_null() {
            return Cell::Null;
        }
        let tag = v[0].as_str().unwrap_or_default();
        let value = &v[1];
        match tag {
            "i" => Cell::Int(value.as_i64().expect("int")),
            "d" => Cell::Decimal(
                Decimal::from_str(value.as_str().expect("decimal text")).expect("decimal"),
            ),
            "f" => Cell::Float(value.as_f64().expect("float")),
            "b" => Cell::Bool(value.as_bool().expect("bool")),
            _ => Cell::Text(value.as_str().expect("text").to_string()),
        }
    }
}

/// Canonical rows of Arrow batches.
pub fn arrow_rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    let options = FormatOptions::default();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(col, fmt)| {
                    if col.is_null(row) {
                        return Cell::Null;
                    }
                    let text = fmt.value(row).to_string();
                    match col.data_type() {
                        DataType::Int8
                        | DataType::Int16
                        | DataType::Int32
                        | DataType::Int64
                        | DataType::UInt8
                        | DataType::UInt16
                        | DataType::UInt32
                        | DataType::UInt64 => Cell::Int(text.parse().expect("int")),
                        DataType::Decimal128(..) | DataType::Decimal256(..) => {
                            Cell::Decimal(Decimal::from_str(&text).expect("decimal"))
                        }
                        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                            Cell::Float(text.parse().expect("float"))
                        }
                        DataType::Boolean => Cell::Bool(text == "true"),
                        _ => Cell::Text(text),
                    }
                })
                .collect();
            rows.push(cells);
        }
    }
    rows
}

/// Canonical rows of `sql` run by `client` (panics on an error).
pub async fn pg_query(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Cell>> {
    let rows = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pg_rows(&rows)
}

/// Runs `sql` on a fresh oracle with the Parquet files in `dir` as
/// `table`, listed now (a context of its own: DataFusion's listing cache
/// would not see files added since).
pub async fn run_over_dir(dir: &Path, table: &str, sql: &str) -> Vec<Vec<Cell>> {
    let ctx = SessionContext::new();
    register_dir(&ctx, table, dir).await;
    run(&ctx, sql).await
}

/// Canonical rows of a tokio-postgres result (binary or text format).
pub fn pg_rows(rows: &[tokio_postgres::Row]) -> Vec<Vec<Cell>> {
    rows.iter()
        .map(|row| {
            row.columns()
                .iter()
                .enumerate()
                .map(|(i, col)| pg_cell(row, i, col.type_()))
                .collect()
        })
        .collect()
}

fn pg_cell(row: &tokio_postgres::Row, i: usize, ty: &Type) -> Cell {
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<_, Option<$t>>(i)
                .unwrap_or_else(|e| panic!("column {i} as {}: {e}", stringify!($t)))
        };
    }
    let cell = match *ty {
        Type::INT2 => get!(i16).map(|v| Cell::Int(v.into())),
        Type::INT4 => get!(i32).map(|v| Cell::Int(v.into())),
        Type::INT8 => get!(i64).map(Cell::Int),
        Type::NUMERIC => get!(Decimal).map(Cell::Decimal),
        Type::FLOAT4 => get!(f32).map(|v| Cell::Float(v.into())),
        Type::FLOAT8 => get!(f64).map(Cell::Float),
        Type::BOOL => get!(bool).map(Cell::Bool),
        Type::DATE => get!(chrono::NaiveDate).map(|d| Cell::Text(d.to_string())),
        Type::TIMESTAMP => get!(chrono::NaiveDateTime).map(|d| Cell::Text(d.to_string())),
        _ => get!(String).map(Cell::Text),
    };
    cell.unwrap_or(Cell::Null)
}

/// Compares two results: in order, or as multisets when `ordered` is false.
/// Returns a description of the first difference.
pub fn compare(expected: &[Vec<Cell>], actual: &[Vec<Cell>], ordered: bool) -> Result<(), String> {
    if expected.len() != actual.len() {
        return Err(format!(
            "row count differs: expected {}, got {}",
            expected.len(),
            actual.len()
        ));
    }
    let sorted = |rows: &[Vec<Cell>]| {
        let mut rows = rows.to_vec();
        rows.sort_by_key(|r| r.iter().map(Cell::sort_key).collect::<Vec<_>>());
        rows
    };
    let (e, a) = if ordered {
        (expected.to_vec(), actual.to_vec())
    } else {
        (sorted(expected), sorted(actual))
    };
    for (i, (er, ar)) in e.iter().zip(&a).enumerate() {
        if er != ar {
            return Err(format!(
                "row {i} differs:\n expected {er:?}\n      got {ar:?}"
            ));
        }
    }
    Ok(())
}

/// True when the query's outermost statement has an ORDER BY.
pub fn is_ordered(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("order by")
}
