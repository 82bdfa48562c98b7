//! What a statement produces, as both front doors consume it, and the
//! small helpers that build or adapt it.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

use crate::error::LochError;

/// What a statement produced.
pub enum Output {
    /// Rows, streamed as they are computed.
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    },
    /// A command that returns no rows, with its PostgreSQL tag and, for DML,
    /// the affected row count.
    Command { tag: String, rows: Option<usize> },
    /// `BEGIN`.
    Begin,
    /// `COMMIT` or `ROLLBACK`: the tag to answer with.
    End { tag: String },
}

/// The output of a command that returns no rows.
pub(crate) fn command_done(tag: String) -> Output {
    Output::Command { tag, rows: None }
}

/// A one-batch result of text columns.
pub(crate) fn text_rows(schema: SchemaRef, columns: Vec<Vec<&str>>) -> Result<Output, LochError> {
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|values| Arc::new(StringArray::from(values)) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| LochError::Internal(e.to_string()))?;
    let stream = RecordBatchStreamAdapter::new(
        schema.clone(),
        futures::stream::iter([Ok::<_, DataFusionError>(batch)]),
    );
    Ok(Output::Rows {
        schema,
        stream: Box::pin(stream),
    })
}

/// `batch`'s columns cast to the types of `schema`'s fields, in order;
/// columns already of the right type are shared, not copied. Both front
/// doors use it to send what they announced.
pub fn cast_columns(
    batch: &arrow::record_batch::RecordBatch,
    schema: &arrow::datatypes::Schema,
) -> Result<Vec<arrow::array::ArrayRef>, arrow::error::ArrowError> {
    batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                arrow::compute::cast(column, field.data_type())
            }
        })
        .collect()
}
