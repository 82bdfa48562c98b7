//! A session's transaction block as PostgreSQL clients use it: savepoints
//! and cursors.
//!
//! Every Loch statement is its own transaction (a write commits when it
//! ends; Delta commits are per statement), so `BEGIN … COMMIT` groups
//! nothing and `ROLLBACK` undoes nothing already done. Clients still open
//! blocks, wrap statements in savepoints (psqlODBC does so around every
//! statement) and read large results through cursors (psqlODBC's
//! `UseDeclareFetch`, Tableau): this module keeps what those need — the
//! savepoint names, so `RELEASE`/`ROLLBACK TO` of an unknown one fails as in
//! PostgreSQL, and each open cursor's running query, read `FETCH` by
//! `FETCH` without holding the whole result.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::error::LochError;
use crate::session::Output;

/// An open cursor: the rest of its query's rows.
struct Cursor {
    schema: SchemaRef,
    /// `None` once `FETCH ALL` took the rest.
    stream: Option<SendableRecordBatchStream>,
    /// Rows read from the stream but not fetched yet.
    pending: Option<RecordBatch>,
    /// `WITH HOLD`: survives the commit of its transaction block.
    hold: bool,
    /// Declared in the open block: a rollback closes it even with `HOLD`.
    in_block: bool,
}

#[derive(Default)]
struct BlockState {
    open: bool,
    savepoints: Vec<String>,
}

/// The transaction block of one session.
#[derive(Default)]
pub struct TransactionBlock {
    state: Mutex<BlockState>,
    cursors: tokio::sync::Mutex<HashMap<String, Cursor>>,
}

/// At most this many open cursors per session (`DECLARE`); pg wire bounds
/// a connection's named portals, the protocol's cursors, by it too.
pub const MAX_CURSORS: usize = 1000;

impl TransactionBlock {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, BlockState>, LochError> {
        self.state
            .lock()
            .map_err(|_| LochError::Internal("transaction block lock poisoned".into()))
    }

    /// `BEGIN`.
    pub fn begin(&self) -> Result<(), LochError> {
        let mut state = self.state()?;
        state.open = true;
        state.savepoints.clear();
        Ok(())
    }

    /// `COMMIT` (`committed`) or `ROLLBACK`: the block's savepoints go, and
    /// so do cursors not declared `WITH HOLD`; a rollback also closes the
    /// held cursors the block declared, as in PostgreSQL.
    pub async fn end(&self, committed: bool) -> Result<(), LochError> {
        {
            let mut state = self.state()?;
            state.open = false;
            state.savepoints.clear();
        }
        self.cursors.lock().await.retain(|_, cursor| {
            let keep = cursor.hold && (committed || !cursor.in_block);
            cursor.in_block = false;
            keep
        });
        Ok(())
    }

    /// `DISCARD ALL`: no block, no cursor.
    pub async fn discard(&self) -> Result<(), LochError> {
        self.end(false).await?;
        self.cursors.lock().await.clear();
        Ok(())
    }

    fn in_block(&self, what: &str) -> Result<std::sync::MutexGuard<'_, BlockState>, LochError> {
        let state = self.state()?;
        if !state.open {
            return Err(LochError::NoActiveTransaction(format!(
                "{what} can only be used in transaction blocks"
            )));
        }
        Ok(state)
    }

    /// `SAVEPOINT name`.
    pub fn savepoint(&self, name: &str) -> Result<(), LochError> {
        self.in_block("SAVEPOINT")?
            .savepoints
            .push(name.to_string());
        Ok(())
    }

    /// `RELEASE [SAVEPOINT] name`: that savepoint and every later one go.
    pub fn release(&self, name: &str) -> Result<(), LochError> {
        let mut state = self.in_block("RELEASE SAVEPOINT")?;
        let at = position(&state.savepoints, name)?;
        state.savepoints.truncate(at);
        Ok(())
    }

    /// `ROLLBACK TO [SAVEPOINT] name`: later savepoints go, this one stays.
    pub fn rollback_to(&self, name: &str) -> Result<(), LochError> {
        let mut state = self.in_block("ROLLBACK TO SAVEPOINT")?;
        let at = position(&state.savepoints, name)?;
        state.savepoints.truncate(at + 1);
        Ok(())
    }

    /// Checks that `DECLARE name [WITH HOLD]` may open a cursor, before its
    /// query runs.
    pub async fn can_declare(&self, name: &str, hold: bool) -> Result<(), LochError> {
        if !hold {
            drop(self.in_block("DECLARE CURSOR")?);
        }
        let cursors = self.cursors.lock().await;
        if cursors.contains_key(name) {
            return Err(LochError::CursorExists(format!(
                "cursor \"{name}\" already exists"
            )));
        }
        if cursors.len() >= MAX_CURSORS {
            return Err(LochError::TooMany(format!(
                "a session may hold at most {MAX_CURSORS} open cursors"
            )));
        }
        Ok(())
    }

    /// Opens cursor `name` over a query's rows.
    pub async fn declare(
        &self,
        name: &str,
        hold: bool,
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    ) -> Result<(), LochError> {
        self.can_declare(name, hold).await?;
        let in_block = self.state()?.open;
        self.cursors.lock().await.insert(
            name.to_string(),
            Cursor {
                schema,
                stream: Some(stream),
                pending: None,
                hold,
                in_block,
            },
        );
        Ok(())
    }

    /// The columns cursor `name` returns.
    pub async fn schema(&self, name: &str) -> Result<SchemaRef, LochError> {
        self.cursors
            .lock()
            .await
            .get(name)
            .map(|c| c.schema.clone())
            .ok_or_else(|| unknown_cursor(name))
    }

    /// `FETCH count FROM name` (`None`: `FETCH ALL`). A count is read here,
    /// at most `count` rows in memory; `ALL` streams the rest.
    pub async fn fetch(&self, name: &str, count: Option<usize>) -> Result<Output, LochError> {
        let mut cursors = self.cursors.lock().await;
        let cursor = cursors.get_mut(name).ok_or_else(|| unknown_cursor(name))?;
        let schema = cursor.schema.clone();
        let pending = cursor.pending.take();
        let Some(count) = count else {
            let rest = cursor.stream.take();
            let head = futures::stream::iter(pending.map(Ok));
            let stream: SendableRecordBatchStream = match rest {
                Some(rest) => Box::pin(RecordBatchStreamAdapter::new(
                    schema.clone(),
                    head.chain(rest),
                )),
                None => Box::pin(RecordBatchStreamAdapter::new(schema.clone(), head)),
            };
            return Ok(Output::Rows { schema, stream });
        };
        let mut batches = Vec::new();
        let mut needed = count;
        let mut next = pending;
        while needed > 0 {
            let batch = match next.take() {
                Some(batch) => batch,
                None => match cursor.stream.as_mut() {
                    Some(stream) => match stream.next().await {
                        Some(batch) => batch?,
                        None => break,
                    },
                    None => break,
                },
            };
            if batch.num_rows() <= needed {
                needed -= batch.num_rows();
                batches.push(batch);
            } else {
                batches.push(batch.slice(0, needed));
                cursor.pending = Some(batch.slice(needed, batch.num_rows() - needed));
                needed = 0;
            }
        }
        let stream = Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ));
        Ok(Output::Rows { schema, stream })
    }

    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    pub async fn close(&self, name: Option<&str>) -> Result<(), LochError> {
        let mut cursors = self.cursors.lock().await;
        match name {
            None => cursors.clear(),
            Some(name) => {
                cursors.remove(name).ok_or_else(|| unknown_cursor(name))?;
            }
        }
        Ok(())
    }
}

fn unknown_cursor(name: &str) -> LochError {
    LochError::UnknownCursor(format!("cursor \"{name}\" does not exist"))
}

/// Where savepoint `name` is (the latest of that name, as in PostgreSQL).
fn position(savepoints: &[String], name: &str) -> Result<usize, LochError> {
    savepoints
        .iter()
        .rposition(|s| s == name)
        .ok_or_else(|| LochError::InvalidSavepoint(format!("savepoint \"{name}\" does not exist")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn numbers(batches: &[std::ops::Range<i64>]) -> (SchemaRef, SendableRecordBatchStream) {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batches: Vec<_> = batches
            .iter()
            .map(|r| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from_iter_values(r.clone()))],
                )
                .map_err(Into::into)
            })
            .collect();
        let stream = Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            futures::stream::iter(batches),
        ));
        (schema, stream)
    }

    async fn values(output: Output) -> Vec<i64> {
        let Output::Rows { mut stream, .. } = output else {
            panic!("rows expected");
        };
        let mut out = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            out.extend(col.values().iter().copied());
        }
        out
    }

    #[tokio::test]
    async fn fetch_reads_across_batches_and_all_takes_the_rest() {
        let block = TransactionBlock::default();
        block.begin().unwrap();
        let (schema, stream) = numbers(&[0..3, 3..10, 10..12]);
        block.declare("c", false, schema, stream).await.unwrap();
        assert_eq!(
            values(block.fetch("c", Some(2)).await.unwrap()).await,
            vec![0, 1]
        );
        assert_eq!(
            values(block.fetch("c", Some(5)).await.unwrap()).await,
            vec![2, 3, 4, 5, 6]
        );
        assert_eq!(
            values(block.fetch("c", None).await.unwrap()).await,
            (7..12).collect::<Vec<_>>()
        );
        assert!(
            values(block.fetch("c", Some(3)).await.unwrap())
                .await
                .is_empty()
        );
        block.end(true).await.unwrap();
        assert_eq!(
            block.fetch("c", Some(1)).await.err().unwrap().sqlstate(),
            "34000"
        );

        // WITH HOLD outlives a commit, not the rollback of its block.
        for (committed, kept) in [(true, true), (false, false)] {
            block.begin().unwrap();
            let (schema, stream) = numbers(&[0..1, 1..3]);
            block.declare("h", true, schema, stream).await.unwrap();
            block.end(committed).await.unwrap();
            assert_eq!(
                block.schema("h").await.is_ok(),
                kept,
                "committed: {committed}"
            );
            block.close(None).await.unwrap();
        }
    }

    #[tokio::test]
    async fn cursors_need_a_block_unless_held() {
        let block = TransactionBlock::default();
        let (schema, stream) = numbers(&[0..1, 1..3]);
        let err = block
            .declare("c", false, schema.clone(), stream)
            .await
            .unwrap_err();
        assert_eq!(err.sqlstate(), "25P01");
        let (_, stream) = numbers(&[0..1, 1..3]);
        block
            .declare("h", true, schema.clone(), stream)
            .await
            .unwrap();
        let (_, stream) = numbers(&[0..1, 1..3]);
        let err = block.declare("h", true, schema, stream).await.unwrap_err();
        assert_eq!(err.sqlstate(), "42P03");
        block.close(Some("h")).await.unwrap();
        assert_eq!(
            block.close(Some("h")).await.unwrap_err().sqlstate(),
            "34000"
        );
    }

    #[test]
    fn savepoints_nest_as_in_postgresql() {
        let block = TransactionBlock::default();
        assert_eq!(block.savepoint("a").unwrap_err().sqlstate(), "25P01");
        block.begin().unwrap();
        for name in ["a", "b", "c"] {
            block.savepoint(name).unwrap();
        }
        block.rollback_to("b").unwrap();
        // `c` went with the rollback; `b` stays.
        assert_eq!(block.release("c").unwrap_err().sqlstate(), "3B001");
        block.release("b").unwrap();
        assert_eq!(block.rollback_to("b").unwrap_err().sqlstate(), "3B001");
        block.rollback_to("a").unwrap();
    }
}
