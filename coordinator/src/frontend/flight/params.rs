//! Parameters of prepared statements over Flight SQL: the schema a client
//! binds to, and the rows of a `DoPut` bind, bounded.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use datafusion::common::ScalarValue;
use futures::{StreamExt, TryStreamExt};
use tonic::{Request, Status};

use super::metadata::wire_schema;
use super::status::status;
use crate::commands::Prepared;
use crate::error::LochError;
use crate::planning::params::bind_values;

/// A prepared statement with one bound parameter row applied (queries take
/// one row: several would be several result sets).
pub(super) fn bind_one(
    prepared: Prepared,
    params: Vec<Vec<ScalarValue>>,
) -> Result<Prepared, LochError> {
    let mut rows = params.into_iter();
    let (Some(row), None) = (rows.next(), rows.next()) else {
        if prepared.param_types.is_empty() {
            return Ok(prepared);
        }
        return Err(LochError::InvalidParameter(format!(
            "the statement takes {} parameters: bind exactly one row of them",
            prepared.param_types.len()
        )));
    };
    let values = bind_values(&prepared.param_types, row)?;
    let plan = match prepared.plan {
        Some(plan) => Some(plan.replace_params_with_values(&values)?),
        None => None,
    };
    Ok(Prepared {
        command: prepared.command,
        plan,
        param_types: Vec::new(),
        rows_schema: prepared.rows_schema,
    })
}

/// The parameter schema of a prepared statement: `$1..$n`, of the types the
/// plan fixes; a parameter whose type is open takes any value (declared as
/// text, like PostgreSQL's unknown parameters).
pub(super) fn parameter_schema(prepared: &Prepared) -> SchemaRef {
    wire_schema(&Schema::new(
        prepared
            .param_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Field::new(
                    format!("${}", i + 1),
                    t.clone().unwrap_or(DataType::Utf8),
                    true,
                )
            })
            .collect::<Vec<_>>(),
    ))
}

/// Most parameter rows one `DoPut` may bind (each row runs the statement).
pub(super) const MAX_PARAMETER_ROWS: usize = 100_000;

/// Parameter rows from a `DoPut` bind: one `Vec` of values per row. Reading
/// stops once the stream holds more rows than a bind may.
pub(super) async fn parameter_rows(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<Vec<ScalarValue>>, Status> {
    let stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        request.into_inner().map_err(FlightError::from),
    );
    let mut stream = std::pin::pin!(stream);
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut total = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| {
            status(&LochError::InvalidParameter(format!(
                "cannot read the bound parameters: {e}"
            )))
        })?;
        total += batch.num_rows();
        if total > MAX_PARAMETER_ROWS {
            return Err(status(&LochError::TooMany(format!(
                "at most {MAX_PARAMETER_ROWS} parameter rows may be bound at once"
            ))));
        }
        batches.push(batch);
    }
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| status(&LochError::from(e)))?;
            rows.push(values);
        }
    }
    Ok(rows)
}
