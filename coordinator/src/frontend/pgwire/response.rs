//! Turning a session's [`Output`] and errors into pgwire responses.

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;

use crate::error::LochError;
use crate::session::Output;
use crate::types::numeric_typmod;

/// The pg wire error for a Loch error: severity ERROR, its SQLSTATE.
pub fn pg_error(e: &LochError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

/// The `ErrorResponse` fields for a Loch error.
/// A session whose role was dropped ends (FATAL closes the connection),
/// as `DROP ROLE` promises.
pub fn error_info(e: &LochError) -> ErrorInfo {
    let severity = match e {
        LochError::SessionRoleGone(_) => "FATAL",
        _ => "ERROR",
    };
    ErrorInfo::new(severity.to_owned(), e.sqlstate().to_owned(), e.message())
}

/// Column descriptions for a result schema in the requested formats, with
/// the type modifier of `numeric(p, s)` columns: JDBC's and ODBC's column
/// precision and scale, and psycopg's `description`, come from it.
pub fn fields(
    schema: &arrow::datatypes::Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    let cleaned = without_stray_oid_aliases(schema);
    let fields = arrow_schema_to_pg_fields(cleaned.as_ref().unwrap_or(schema), format, options)?;
    Ok(fields
        .into_iter()
        .zip(schema.fields())
        .map(|(info, field)| match numeric_typmod(field.data_type()) {
            Some(typmod) => info.with_type_modifier(typmod),
            None => info,
        })
        .collect())
}

/// A batch with the column types its statement announced. DataFusion's
/// physical plan can widen a column its logical plan types narrower (a
/// `CASE` mixing an `Int32` OID column with the literal 0 runs as `Int64`,
/// Npgsql's type query has one); the RowDescription already went out, so
/// the values follow it, or binary clients read 8 bytes for an `int4`.
fn conform(
    batch: arrow::record_batch::RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> datafusion::error::Result<arrow::record_batch::RecordBatch> {
    let same = batch.num_columns() == schema.fields().len()
        && batch
            .columns()
            .iter()
            .zip(schema.fields())
            .all(|(c, f)| c.data_type() == f.data_type());
    if same {
        return Ok(batch);
    }
    let columns = crate::session::cast_columns(&batch, schema)?;
    // Nullable: the values decide, not a declaration they may contradict.
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(arrow::record_batch::RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The schema without `pg.oid_alias` markers on columns that are not
/// `Int32`: the marker names a 4-byte OID type, and a column that carries
/// it through an expression of another width (`CASE … THEN typelem ELSE 0`
/// is `Int64`) would be described as 4 bytes and sent as 8, which binary
/// clients reject. `None` when nothing changes.
fn without_stray_oid_aliases(
    schema: &arrow::datatypes::Schema,
) -> Option<arrow::datatypes::Schema> {
    use arrow::datatypes::DataType;
    let key = arrow_pg::datatypes::PG_OID_ALIAS_KEY;
    let stray = |f: &arrow::datatypes::Field| {
        f.metadata().contains_key(key) && f.data_type() != &DataType::Int32
    };
    if !schema.fields().iter().any(|f| stray(f)) {
        return None;
    }
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut field = f.as_ref().clone();
            if stray(&field) {
                let mut metadata = field.metadata().clone();
                metadata.remove(key);
                field = field.with_metadata(metadata);
            }
            field
        })
        .collect();
    Some(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// The response for one statement's output.
pub fn to_response(
    output: Output,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<Response> {
    Ok(match output {
        Output::Rows { schema, stream } => {
            let fields = Arc::new(fields(&schema, format, Some(options))?);
            let schema = Arc::clone(&schema);
            let encode_fields = Arc::clone(&fields);
            let rows = stream
                .map(
                    move |batch| -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send> {
                        match batch.and_then(|b| conform(b, &schema)) {
                            Ok(batch) => encode_recordbatch(Arc::clone(&encode_fields), batch),
                            Err(e) => Box::new(std::iter::once(Err(pg_error(&LochError::from(e))))),
                        }
                    },
                )
                .flat_map(futures::stream::iter);
            Response::Query(QueryResponse::new(fields, rows))
        }
        Output::Command { tag, rows } => {
            let mut t = Tag::new(&tag);
            if tag == "INSERT" {
                t = t.with_oid(0);
            }
            if let Some(rows) = rows {
                t = t.with_rows(rows);
            }
            Response::Execution(t)
        }
        Output::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Output::End { tag } => Response::TransactionEnd(Tag::new(&tag)),
    })
}
