//! Parameters of prepared statements over Flight SQL: the schema a client
//! binds to, and the rows of a `DoPut` bind, bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// Most bytes one `DoPut` bind may carry: counted twice, as the Arrow
/// messages arrive (so reading stops early) and as the values kept from
/// them (a column of nulls is nothing on the wire, yet each value kept is a
/// `ScalarValue`). Each message is at most
/// [`super::MAX_DECODING_MESSAGE_SIZE`] on its own.
pub(super) const MAX_PARAMETER_BYTES: usize = 64 * 1024 * 1024;

/// The parameter rows of a `DoPut` bind and what they take in memory.
pub(super) struct BoundRows {
    /// One `Vec` of values per row.
    pub rows: Vec<Vec<ScalarValue>>,
    pub bytes: usize,
}

fn too_many_bytes() -> Status {
    status(&LochError::TooMany(format!(
        "at most {} MiB of parameters may be bound at once",
        MAX_PARAMETER_BYTES >> 20
    )))
}

/// Parameter rows from a `DoPut` bind. Reading stops once the stream holds
/// more rows, or more bytes, than a bind may.
pub(super) async fn parameter_rows(
    request: Request<PeekableFlightDataStream>,
) -> Result<BoundRows, Status> {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let messages = request.into_inner().map(move |message| {
        let message = message?;
        let size = message.data_header.len() + message.data_body.len() + message.app_metadata.len();
        if counter.fetch_add(size, Ordering::Relaxed) + size > MAX_PARAMETER_BYTES {
            return Err(too_many_bytes());
        }
        Ok(message)
    });
    let stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        messages.map_err(FlightError::from),
    );
    let mut stream = std::pin::pin!(stream);
    let mut bound = BoundRows {
        rows: Vec::new(),
        bytes: 0,
    };
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| {
            if received.load(Ordering::Relaxed) > MAX_PARAMETER_BYTES {
                return too_many_bytes();
            }
            status(&LochError::InvalidParameter(format!(
                "cannot read the bound parameters: {e}"
            )))
        })?;
        if bound.rows.len() + batch.num_rows() > MAX_PARAMETER_ROWS {
            return Err(status(&LochError::TooMany(format!(
                "at most {MAX_PARAMETER_ROWS} parameter rows may be bound at once"
            ))));
        }
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| status(&LochError::from(e)))?;
            bound.bytes += std::mem::size_of::<Vec<ScalarValue>>()
                + values.iter().map(ScalarValue::size).sum::<usize>();
            if bound.bytes > MAX_PARAMETER_BYTES {
                return Err(too_many_bytes());
            }
            bound.rows.push(values);
        }
    }
    Ok(bound)
}
