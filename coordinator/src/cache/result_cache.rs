//! The result cache: whole query results, kept in memory on the coordinator
//! so that a repeated query (a dashboard's refresh, a notebook cell run
//! again) is answered without running it.
//!
//! The cache only stores and serves. What makes an answer reusable is the
//! key the coordinator computes (the key module beside this one): a digest of
//! the user, the session's settings, the catalog's DDL epoch, the optimized
//! plan and every file the physical plan reads with its size, modification
//! time and ETag. A table that changed reads other files (or the same
//! files changed), so its key changes: an entry is never served stale, it
//! is only left to age out.
//!
//! A result is kept as the Arrow IPC messages Flight sends it in, encoded
//! once while the query first streams: a Flight client's repeated query is
//! answered with those very messages, with no encoding at all, and other
//! readers (pg wire) get batches decoded from them without copying.
//! Entries are weighed by the memory their messages hold and bounded by a
//! byte capacity; an entry may take at most half of it. A result found too
//! big while it streams stops being collected (the client still gets every
//! row) and its key is remembered, so the coordinator does not try to
//! collect it again. All results being collected at once hold at most the
//! capacity too: past it, a query's result is simply not kept.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::{FlightData, SchemaAsIpc};
use datafusion::arrow::array::{ArrayRef, RecordBatchOptions};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::ipc::{reader::read_record_batch, root_as_message};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::RecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt};

use loch_executor::accounting::{Budget, CacheStats, Counters};
use loch_executor::wire::{WireEncoder, has_dictionary, wire_pieces};

/// What identifies a result: a SHA-256 digest.
pub type ResultKey = [u8; 32];

/// Keys remembered as too big to keep.
const TOO_BIG_KEYS: u64 = 10_000;

/// A kept result: its rows as record batch messages.
#[derive(Debug)]
pub struct CachedResult {
    /// The schema the query declared.
    pub schema: SchemaRef,
    /// The schema of the messages: `schema` with dictionary columns as
    /// their values, as Flight sends them.
    pub wire_schema: SchemaRef,
    /// The messages in order, each with its rows.
    messages: Vec<(FlightData, usize)>,
    /// The memory the messages hold.
    pub bytes: usize,
    pub rows: usize,
}

impl CachedResult {
    /// The result as at most `parts` runs of Flight messages with about
    /// equal rows, in order, each a whole stream (the schema message
    /// first); at least one.
    pub fn flight_parts(&self, parts: usize) -> Vec<Vec<FlightData>> {
        let head: FlightData =
            SchemaAsIpc::new(&self.wire_schema, &IpcWriteOptions::default()).into();
        self.ranges(parts)
            .into_iter()
            .map(|range| {
                std::iter::once(head.clone())
                    .chain(self.messages[range].iter().map(|(m, _)| m.clone()))
                    .collect()
            })
            .collect()
    }

    /// At most `parts` ranges of whole messages with about equal rows.
    fn ranges(&self, parts: usize) -> Vec<Range<usize>> {
        let share = self.rows.div_ceil(parts.max(1)).max(1);
        let mut ranges = Vec::new();
        let (mut start, mut rows) = (0, 0);
        for (i, (_, n)) in self.messages.iter().enumerate() {
            rows += n;
            if rows >= share {
                ranges.push(start..i + 1);
                (start, rows) = (i + 1, 0);
            }
        }
        if start < self.messages.len() || ranges.is_empty() {
            ranges.push(start..self.messages.len());
        }
        ranges
    }

    /// One message as a batch of [`Self::schema`]: its buffers are slices
    /// of the message (dictionary columns are rebuilt from their values).
    fn decode(&self, message: &FlightData) -> Result<RecordBatch, ArrowError> {
        let ipc = root_as_message(&message.data_header)
            .map_err(|e| ArrowError::IpcError(format!("a kept message: {e}")))?;
        let header = ipc
            .header_as_record_batch()
            .ok_or_else(|| ArrowError::IpcError("a kept message is not a batch".into()))?;
        let batch = read_record_batch(
            &Buffer::from(message.data_body.clone()),
            header,
            Arc::clone(&self.wire_schema),
            &HashMap::new(),
            None,
            &ipc.version(),
        )?;
        if self.wire_schema == self.schema {
            return Ok(batch);
        }
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(
                |(column, field)| match column.data_type() == field.data_type() {
                    true => Ok(Arc::clone(column)),
                    false => datafusion::arrow::compute::cast(column, field.data_type()),
                },
            )
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)
    }
}

/// `schema` with its dictionary columns as their values (how Flight sends
/// them); `None` when a dictionary is nested in another type.
fn without_dictionaries(schema: &Schema) -> Option<SchemaRef> {
    let fields = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Dictionary(_, values) if !has_dictionary(values) => Some(
                field
                    .as_ref()
                    .clone()
                    .with_data_type(values.as_ref().clone()),
            ),
            other if has_dictionary(other) => None,
            _ => Some(field.as_ref().clone()),
        })
        .collect::<Option<Vec<Field>>>()?;
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

/// The result cache (see the module documentation).
pub struct ResultCache {
    entries: moka::sync::Cache<ResultKey, Arc<CachedResult>>,
    too_big: moka::sync::Cache<ResultKey, ()>,
    capacity: u64,
    max_entry: usize,
    /// Bytes held by results being collected, all queries together.
    collecting: Budget,
    counters: Counters,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("capacity", &self.capacity)
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl ResultCache {
    /// A cache of at most `capacity` bytes.
    pub fn new(capacity: u64) -> Arc<Self> {
        // moka weighs in u32: entries are weighed in KiB.
        let entries = moka::sync::Cache::builder()
            .max_capacity((capacity / 1024).max(1))
            .weigher(|_: &ResultKey, result: &Arc<CachedResult>| {
                u32::try_from(result.bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
            })
            .build();
        Arc::new(ResultCache {
            entries,
            too_big: moka::sync::Cache::new(TOO_BIG_KEYS),
            capacity,
            max_entry: usize::try_from(capacity / 2).unwrap_or(usize::MAX),
            collecting: Budget::new(capacity),
            counters: Counters::default(),
        })
    }

    /// The largest result kept, in bytes.
    pub fn max_entry(&self) -> usize {
        self.max_entry
    }

    /// The result kept under `key`, counted as a hit or a miss.
    pub fn get(&self, key: &ResultKey) -> Option<Arc<CachedResult>> {
        let found = self.entries.get(key);
        self.counters.lookup(found.is_some());
        found
    }

    /// Whether a result under `key`, of about `estimate` bytes when known,
    /// is worth collecting.
    pub fn admits(&self, key: &ResultKey, estimate: Option<usize>) -> bool {
        !self.too_big.contains_key(key) && estimate.is_none_or(|bytes| bytes <= self.max_entry)
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        let bytes = self.entries.iter().map(|(_, r)| r.bytes as u64).sum();
        self.counters
            .stats(self.entries.entry_count(), bytes, self.capacity)
    }

    /// A kept result as a stream of batches.
    pub fn serve(result: Arc<CachedResult>) -> SendableRecordBatchStream {
        let all = 0..result.messages.len();
        Self::serve_range(result, all)
    }

    /// A kept result as at most `parts` streams of batches with about equal
    /// rows, in order (at least one).
    pub fn split(result: Arc<CachedResult>, parts: usize) -> Vec<SendableRecordBatchStream> {
        result
            .ranges(parts)
            .into_iter()
            .map(|range| Self::serve_range(Arc::clone(&result), range))
            .collect()
    }

    fn serve_range(result: Arc<CachedResult>, range: Range<usize>) -> SendableRecordBatchStream {
        let schema = Arc::clone(&result.schema);
        let batches = range.map(move |i| Ok(result.decode(&result.messages[i].0)?));
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches),
        ))
    }

    /// `stream`, passed through unchanged, with its batches collected and
    /// kept under `key` when it ends without error and within the entry
    /// limit.
    pub fn capture(
        self: &Arc<Self>,
        key: ResultKey,
        stream: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        let schema = stream.schema();
        // A dictionary nested in another type is not kept (Flight would
        // send its values, and only top-level ones are rebuilt).
        let collected = without_dictionaries(&schema).and_then(|wire| {
            Some(Collected {
                encoder: WireEncoder::try_new(&wire).ok()?,
                wire,
                messages: Vec::new(),
                bytes: 0,
                rows: 0,
            })
        });
        Box::pin(Capturing {
            cache: Arc::clone(self),
            key,
            schema,
            inner: stream,
            collected,
        })
    }

    fn insert(&self, key: ResultKey, schema: SchemaRef, collected: Collected) {
        let result = CachedResult {
            schema,
            wire_schema: collected.wire,
            messages: collected.messages,
            bytes: collected.bytes,
            rows: collected.rows,
        };
        self.entries.insert(key, Arc::new(result));
        self.counters.inserted();
    }

    fn refuse(&self, key: ResultKey) {
        self.too_big.insert(key, ());
        self.counters.too_big();
    }
}

/// A result being collected.
struct Collected {
    wire: SchemaRef,
    encoder: WireEncoder,
    messages: Vec<(FlightData, usize)>,
    /// The memory the messages hold, counted in the cache's `collecting`.
    bytes: usize,
    rows: usize,
}

impl Collected {
    /// Encodes `batch` (dictionary columns as their values).
    fn add(&mut self, batch: &RecordBatch) -> Result<usize, ArrowError> {
        let batch = if self.wire.fields().len() == batch.num_columns()
            && batch
                .columns()
                .iter()
                .zip(self.wire.fields())
                .all(|(c, f)| c.data_type() == f.data_type())
        {
            batch.clone()
        } else {
            let columns = batch
                .columns()
                .iter()
                .zip(self.wire.fields())
                .map(|(column, field)| datafusion::arrow::compute::cast(column, field.data_type()))
                .collect::<Result<Vec<ArrayRef>, _>>()?;
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            RecordBatch::try_new_with_options(Arc::clone(&self.wire), columns, &options)?
        };
        self.rows += batch.num_rows();
        let mut added = 0;
        for piece in wire_pieces(batch) {
            let (message, held) = self.encoder.encode(&piece)?;
            self.messages.push((message, piece.num_rows()));
            added += held;
        }
        Ok(added)
    }
}

struct Capturing {
    cache: Arc<ResultCache>,
    key: ResultKey,
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    /// `None` once the result was found too big, failed, or was kept.
    collected: Option<Collected>,
}

impl Capturing {
    /// Stops collecting, giving back what was counted.
    fn stop(&mut self) -> Option<Collected> {
        let collected = self.collected.take()?;
        self.cache.collecting.release(collected.bytes);
        Some(collected)
    }

    fn add(&mut self, batch: &RecordBatch) {
        let Some(collected) = self.collected.as_mut() else {
            return;
        };
        let added = match collected.add(batch) {
            Ok(added) => added,
            Err(_) => {
                self.stop();
                return;
            }
        };
        if collected.bytes + added > self.cache.max_entry {
            self.stop();
            self.cache.refuse(self.key);
        } else if self.cache.collecting.reserve(added) {
            collected.bytes += added;
        } else {
            // Other queries' results being collected hold the capacity:
            // this one is not kept (it is not too big, so not remembered).
            self.stop();
        }
    }
}

impl Drop for Capturing {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Stream for Capturing {
    type Item = Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let next = self.inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(batch))) => self.add(batch),
            Poll::Ready(Some(Err(_))) => {
                self.stop();
            }
            Poll::Ready(None) => {
                if let Some(collected) = self.stop() {
                    let schema = Arc::clone(&self.schema);
                    self.cache.insert(self.key, schema, collected);
                }
            }
            Poll::Pending => {}
        }
        next
    }
}

impl RecordBatchStream for Capturing {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    use datafusion::error::DataFusionError;
    use futures::TryStreamExt;

    fn batch(from: i64, rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + rows)),
                Arc::new(StringArray::from_iter_values(
                    (from..from + rows).map(|n| format!("row {n}")),
                )),
            ],
        )
        .unwrap()
    }

    fn stream(items: Vec<Result<RecordBatch>>) -> SendableRecordBatchStream {
        let schema = batch(0, 1).schema();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(items),
        ))
    }

    async fn keep(cache: &Arc<ResultCache>, key: ResultKey, sent: &[RecordBatch]) {
        let got: Vec<RecordBatch> = cache
            .capture(key, stream(sent.iter().cloned().map(Ok).collect()))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn a_finished_result_is_kept_and_served_as_it_was() {
        let cache = ResultCache::new(1 << 20);
        let key = [1; 32];
        let sent = vec![batch(0, 100), batch(100, 50)];
        keep(&cache, key, &sent).await;
        let kept = cache.get(&key).expect("kept");
        assert_eq!(kept.rows, 150);
        let served: Vec<RecordBatch> = ResultCache::serve(kept).try_collect().await.unwrap();
        assert_eq!(served, sent);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.inserts), (1, 0, 1));
        assert!(stats.bytes > 0 && stats.entries == 1);
    }

    #[tokio::test]
    async fn a_kept_result_splits_into_parts_of_whole_batches() {
        let cache = ResultCache::new(1 << 20);
        let sent: Vec<RecordBatch> = (0..5).map(|i| batch(i * 10, 10)).collect();
        keep(&cache, [6; 32], &sent).await;
        let result = cache.get(&[6; 32]).expect("kept");
        let mut got = Vec::new();
        let parts = ResultCache::split(Arc::clone(&result), 2);
        assert_eq!(parts.len(), 2);
        for part in parts {
            let batches: Vec<RecordBatch> = part.try_collect().await.unwrap();
            assert!(!batches.is_empty());
            got.extend(batches);
        }
        assert_eq!(got, sent);
        assert_eq!(ResultCache::split(Arc::clone(&result), 9).len(), 5);
        // As Flight messages: each part a whole stream, the schema first.
        let parts = result.flight_parts(2);
        assert_eq!(parts.len(), 2);
        let mut decoded = Vec::new();
        for part in parts {
            let batches = arrow_flight::utils::flight_data_to_batches(&part).unwrap();
            decoded.extend(batches);
        }
        assert_eq!(decoded, sent);
        keep(&cache, [7; 32], &[]).await;
        let empty = cache.get(&[7; 32]).expect("kept");
        assert_eq!(ResultCache::split(Arc::clone(&empty), 2).len(), 1);
        assert_eq!(
            empty.flight_parts(2),
            vec![vec![result.flight_parts(1)[0][0].clone()]]
        );
    }

    #[tokio::test]
    async fn dictionary_columns_come_back_as_dictionaries_and_go_to_flight_as_values() {
        use datafusion::arrow::array::DictionaryArray;
        use datafusion::arrow::datatypes::UInt16Type;
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new(
                "part",
                DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8)),
                false,
            ),
        ]));
        let sent: Vec<RecordBatch> = ["2024", "2025"]
            .into_iter()
            .map(|part| {
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(Int64Array::from_iter_values(0..100)),
                        Arc::new(
                            std::iter::repeat_n(part, 100).collect::<DictionaryArray<UInt16Type>>(),
                        ),
                    ],
                )
                .unwrap()
            })
            .collect();
        let cache = ResultCache::new(1 << 20);
        let streamed = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&schema),
            futures::stream::iter(sent.clone().into_iter().map(Ok)),
        ));
        let _: Vec<RecordBatch> = cache
            .capture([8; 32], streamed)
            .try_collect()
            .await
            .unwrap();
        let kept = cache.get(&[8; 32]).expect("kept");
        let served: Vec<RecordBatch> = ResultCache::serve(Arc::clone(&kept))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(served, sent);
        let flight = arrow_flight::utils::flight_data_to_batches(&kept.flight_parts(1)[0]).unwrap();
        assert_eq!(flight[0].schema().field(1).data_type(), &DataType::Utf8);
        assert_eq!(
            flight[1].column(1).as_ref(),
            &StringArray::from_iter_values(std::iter::repeat_n("2025", 100)) as &dyn Array
        );
    }

    #[tokio::test]
    async fn results_collected_at_once_hold_at_most_the_capacity() {
        let sent: Vec<RecordBatch> = (0..2).map(|i| batch(i * 5000, 5000)).collect();
        let whole = {
            let probe = ResultCache::new(1 << 30);
            keep(&probe, [0; 32], &sent).await;
            probe.stats().bytes
        };
        // Each result within the entry limit; three being collected at
        // once past the capacity.
        let cache = ResultCache::new(whole * 5 / 2);
        let capture = |key| cache.capture(key, stream(sent.iter().cloned().map(Ok).collect()));
        let (mut first, mut second, mut third) =
            (capture([9; 32]), capture([10; 32]), capture([11; 32]));
        for part in [&mut first, &mut second, &mut third] {
            part.next().await.unwrap().unwrap();
        }
        for part in [&mut first, &mut second, &mut third] {
            part.next().await.unwrap().unwrap();
        }
        for part in [&mut first, &mut second, &mut third] {
            assert!(part.next().await.is_none());
        }
        assert!(cache.get(&[9; 32]).is_some());
        assert!(cache.get(&[10; 32]).is_some());
        assert!(cache.get(&[11; 32]).is_none());
        assert!(cache.admits(&[11; 32], None), "not remembered as too big");
        assert_eq!(cache.stats().too_big, 0);
        // What collections hold is given back when they end, kept or not.
        assert_eq!(cache.collecting.held(), 0);
        let mut dropped = capture([12; 32]);
        dropped.next().await.unwrap().unwrap();
        assert!(cache.collecting.held() > 0);
        drop(dropped);
        assert_eq!(cache.collecting.held(), 0);
    }

    #[tokio::test]
    async fn failed_or_unfinished_results_are_not_kept() {
        let cache = ResultCache::new(1 << 20);
        let failed = stream(vec![
            Ok(batch(0, 10)),
            Err(DataFusionError::Execution("boom".into())),
        ]);
        let _ = cache.capture([2; 32], failed).collect::<Vec<_>>().await;
        assert!(cache.get(&[2; 32]).is_none());
        let mut unfinished =
            cache.capture([3; 32], stream(vec![Ok(batch(0, 10)), Ok(batch(10, 10))]));
        let _ = unfinished.next().await;
        drop(unfinished);
        assert!(cache.get(&[3; 32]).is_none());
    }

    #[tokio::test]
    async fn a_result_past_half_the_capacity_streams_whole_but_is_not_kept() {
        let cache = ResultCache::new(64 * 1024);
        let sent: Vec<RecordBatch> = (0..10).map(|i| batch(i * 1000, 1000)).collect();
        let got: Vec<RecordBatch> = cache
            .capture([4; 32], stream(sent.iter().cloned().map(Ok).collect()))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got, sent);
        assert!(cache.get(&[4; 32]).is_none());
        assert!(!cache.admits(&[4; 32], None));
        assert!(cache.admits(&[5; 32], Some(1000)));
        assert!(!cache.admits(&[5; 32], Some(cache.max_entry() + 1)));
        assert_eq!(cache.stats().too_big, 1);
    }

    #[tokio::test]
    async fn a_small_slice_of_a_big_batch_is_kept_at_its_own_size() {
        let cache = ResultCache::new(1 << 30);
        let big = batch(0, 100_000);
        keep(&cache, [13; 32], &[big.slice(10, 5)]).await;
        assert!(cache.stats().bytes < 8192, "{} bytes", cache.stats().bytes);
        keep(&cache, [14; 32], &[big]).await;
        assert!(cache.stats().bytes > 1_000_000);
    }
}
