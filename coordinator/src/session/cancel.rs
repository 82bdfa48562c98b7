//! Stopping a running statement: the cancel flag a cancel request sets,
//! and the stream wrapper that ends a result with SQLSTATE 57014 on cancel
//! or `statement_timeout`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};

use crate::error::LochError;

/// The cancel flag of one session; a cancel request sets it and wakes the
/// running statement's stream.
#[derive(Debug, Default)]
pub struct CancelState {
    requested: AtomicBool,
    waker: AtomicWaker,
}

impl CancelState {
    /// Asks the running statement (if any) to stop.
    pub fn cancel(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Clears the flag before a new statement.
    pub fn reset(&self) {
        self.requested.store(false, Ordering::SeqCst);
    }

    /// Resolves once a cancel is asked for.
    pub async fn requested(&self) {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.is_requested() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// True once a cancel was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// A result stream that ends with 57014 on cancel or timeout. Dropping the
/// inner stream stops DataFusion's work for the statement.
pub(crate) struct Guarded {
    pub(crate) inner: SendableRecordBatchStream,
    pub(crate) cancel: Arc<CancelState>,
    pub(crate) deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(crate) done: bool,
}

impl Stream for Guarded {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.cancel.waker.register(cx.waker());
        let stop = if self.cancel.is_requested() {
            Some(LochError::Canceled)
        } else if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            Some(LochError::StatementTimeout)
        } else {
            None
        };
        if let Some(error) = stop {
            self.done = true;
            // Free the plan's resources now, not when the client goes away.
            self.inner = Box::pin(RecordBatchStreamAdapter::new(
                self.inner.schema(),
                futures::stream::empty(),
            ));
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(error)))));
        }
        let next = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            self.done = true;
        }
        next
    }
}
