//! Planning a query again when it lost an executor before its first row.

use std::sync::Arc;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::DataFrame;
use futures::StreamExt;

use crate::engine::Engine;
use crate::engine::ExecutorCheck;
use crate::error::executor_lost;

/// How many times a query is planned again after losing executors.
const MAX_REPLANS: usize = 2;

/// Runs a query; when it fails calling an executor before it produced a
/// row, and one of the executors it was planned on is gone by then (lost to
/// the heartbeat timeout, or not answering when probed), the query
/// is planned again over the executors left and run from the start (at most
/// [`MAX_REPLANS`] times). Rows once sent are never taken back: a failure
/// after the first row ends the query with the error (58000).
///
/// `first`, when given, is the first attempt already started (from a
/// physical plan made for the result cache).
pub(crate) fn replanning(
    engine: &Engine,
    df: DataFrame,
    first: Option<SendableRecordBatchStream>,
) -> SendableRecordBatchStream {
    let Some(check) = engine.executor_check().cloned() else {
        return first.unwrap_or_else(|| engine.execute(df));
    };
    let planned_on = check.live();
    let first = first.unwrap_or_else(|| engine.execute(df.clone()));
    let schema = first.schema();
    struct Attempt {
        stream: SendableRecordBatchStream,
        /// The live executors when this attempt was planned.
        planned_on: Vec<String>,
        produced: bool,
        replans: usize,
        engine: Engine,
        check: Arc<dyn ExecutorCheck>,
        df: DataFrame,
    }
    /// Whether an executor the attempt may have used is gone now.
    async fn lost_one_of(check: &dyn ExecutorCheck, planned_on: &[String]) -> bool {
        check.drop_unreachable().await;
        let live = check.live();
        let lost = planned_on.iter().any(|id| !live.contains(id));
        if !lost {
            tracing::warn!(
                ?planned_on,
                "an executor call failed, but every executor still answers; not planning again"
            );
        }
        lost
    }
    let attempts = futures::stream::unfold(
        Attempt {
            stream: first,
            planned_on,
            produced: false,
            replans: 0,
            engine: engine.clone(),
            check,
            df,
        },
        |mut at| async move {
            loop {
                match at.stream.next().await {
                    Some(Ok(batch)) => {
                        at.produced |= batch.num_rows() > 0;
                        return Some((Ok(batch), at));
                    }
                    Some(Err(e))
                        if !at.produced
                            && at.replans < MAX_REPLANS
                            && executor_lost(&e)
                            && lost_one_of(at.check.as_ref(), &at.planned_on).await =>
                    {
                        at.replans += 1;
                        tracing::warn!(
                            error = %e,
                            replans = at.replans,
                            "executor lost before the first row; planning the query again"
                        );
                        at.planned_on = at.check.live();
                        at.stream = at.engine.execute(at.df.clone());
                    }
                    other => return other.map(|item| (item, at)),
                }
            }
        },
    );
    Box::pin(RecordBatchStreamAdapter::new(schema, attempts))
}
