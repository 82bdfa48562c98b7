//! A dedicated tokio runtime for query execution.
//!
//! DataFusion operators can run for a long time between `.await` points (a
//! cross join, a large sort). On the runtime that also serves client
//! connections, that would starve the network side: cancel requests, other
//! sessions' messages, new connections. So plans run here, on their own
//! worker threads, and results cross to the caller through a small bounded
//! channel (back-pressure: a slow client slows the query, it does not make
//! the server buffer the result). Dropping the returned stream aborts the
//! query's task; a panic inside it becomes a query error, never a truncated
//! result.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::DataFrame;
use futures::StreamExt;
use tokio::task::JoinHandle;

/// Batches in flight between the query task and its consumer.
const CHANNEL_BATCHES: usize = 2;

/// The execution runtime; shut down in the background when the last handle
/// goes (a runtime may not be dropped inside async code).
#[derive(Debug)]
pub struct CpuRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl CpuRuntime {
    /// A runtime with `threads` worker threads.
    pub fn new(threads: usize) -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("loch-query")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Arc::new(CpuRuntime {
            runtime: Some(runtime),
            handle,
        }))
    }

    /// Runs `df` on this runtime and returns its result stream.
    pub fn execute(&self, df: DataFrame) -> SendableRecordBatchStream {
        let schema = Arc::new(df.schema().as_arrow().clone());
        self.run(schema, async move { df.execute_stream().await })
    }

    /// Runs a physical plan (all its partitions, merged) on this runtime.
    pub fn execute_plan(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
    ) -> SendableRecordBatchStream {
        let schema = plan.schema();
        self.run(schema, async move { execute_stream(plan, context) })
    }

    /// Starts the stream `start` makes on this runtime; its batches cross
    /// to the caller through the bounded channel.
    fn run<F>(&self, schema: SchemaRef, start: F) -> SendableRecordBatchStream
    where
        F: Future<Output = Result<SendableRecordBatchStream>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(CHANNEL_BATCHES);
        let task = self.handle.spawn(async move {
            let mut stream = match start.await {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        let state = Receiving {
            rx,
            task: Some(AbortOnDrop(task)),
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            if let Some(item) = state.rx.recv().await {
                return Some((item, state));
            }
            // The channel closed: the task ended. Normal end, or a panic?
            let task = state.task.take()?;
            match task.join().await {
                Ok(()) => None,
                Err(e) => Some((
                    Err(DataFusionError::Execution(format!(
                        "query task failed: {e}"
                    ))),
                    state,
                )),
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

impl Drop for CpuRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct Receiving {
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
    task: Option<AbortOnDrop>,
}

/// Aborts a task when dropped: the query task when its consumer goes away,
/// a background server when its owner stops.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl AbortOnDrop {
    async fn join(mut self) -> std::result::Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
