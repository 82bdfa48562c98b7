//! The result cache: whole query results, kept in memory on the coordinator
//! so that a repeated query (a dashboard's refresh, a notebook cell run
//! again) is answered without running it.
//!
//! The cache only stores and serves. What makes an answer reusable is the
//! key the coordinator computes (`loch_coordinator::results`): a digest of
//! the user, the session's settings, the catalog's DDL epoch, the optimized
//! plan and every file the physical plan reads with its size, modification
//! time and ETag. A table that changed reads other files (or the same
//! files changed), so its key changes: an entry is never served stale, it
//! is only left to age out.
//!
//! Entries are weighed by the memory their batches hold (each distinct
//! allocation counted once) and bounded by a byte capacity; an entry may
//! take at most half of it. A result found too big while it streams stops
//! being collected (the client still gets every row) and its key is
//! remembered, so the coordinator does not try to collect it again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use datafusion::arrow::array::{Array, ArrayRef, make_array};
use datafusion::arrow::array::{ArrayData, MutableArrayData};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::RecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt};

/// What identifies a result: a SHA-256 digest.
pub type ResultKey = [u8; 32];

/// Keys remembered as too big to keep.
const TOO_BIG_KEYS: u64 = 10_000;

/// A kept result.
#[derive(Debug)]
pub struct CachedResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The memory its batches hold.
    pub bytes: usize,
    pub rows: usize,
}

/// What `system.caches` shows of a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    /// Results that streamed past the entry limit and were not kept.
    pub too_big: u64,
}

/// The result cache (see the module documentation).
pub struct ResultCache {
    entries: moka::sync::Cache<ResultKey, Arc<CachedResult>>,
    too_big: moka::sync::Cache<ResultKey, ()>,
    capacity: u64,
    max_entry: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    too_big_count: AtomicU64,
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
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            too_big_count: AtomicU64::new(0),
        })
    }

    /// The largest result kept, in bytes.
    pub fn max_entry(&self) -> usize {
        self.max_entry
    }

    /// The result kept under `key`, counted as a hit or a miss.
    pub fn get(&self, key: &ResultKey) -> Option<Arc<CachedResult>> {
        let found = self.entries.get(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The result kept under `key`, not counted (for deciding where a
    /// result will be read from).
    pub fn peek(&self, key: &ResultKey) -> Option<Arc<CachedResult>> {
        self.entries.get(key)
    }

    /// Whether a result under `key`, of about `estimate` bytes when known,
    /// is worth collecting.
    pub fn admits(&self, key: &ResultKey, estimate: Option<usize>) -> bool {
        !self.too_big.contains_key(key) && estimate.is_none_or(|bytes| bytes <= self.max_entry)
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        CacheStats {
            entries: self.entries.entry_count(),
            bytes: self
                .entries
                .iter()
                .map(|(_, result)| result.bytes as u64)
                .sum(),
            capacity: self.capacity,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            too_big: self.too_big_count.load(Ordering::Relaxed),
        }
    }

    /// Counts a hit found by [`Self::peek`].
    pub fn record_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A kept result as a stream.
    pub fn serve(result: Arc<CachedResult>) -> SendableRecordBatchStream {
        let len = result.batches.len();
        Self::serve_range(result, 0..len)
    }

    /// A kept result as at most `parts` streams of whole batches and about
    /// equal rows, in order (at least one).
    pub fn split(result: Arc<CachedResult>, parts: usize) -> Vec<SendableRecordBatchStream> {
        let share = result.rows.div_ceil(parts.max(1)).max(1);
        let mut ranges = Vec::new();
        let (mut start, mut rows) = (0, 0);
        for (i, batch) in result.batches.iter().enumerate() {
            rows += batch.num_rows();
            if rows >= share {
                ranges.push(start..i + 1);
                (start, rows) = (i + 1, 0);
            }
        }
        if start < result.batches.len() || ranges.is_empty() {
            ranges.push(start..result.batches.len());
        }
        ranges
            .into_iter()
            .map(|range| Self::serve_range(Arc::clone(&result), range))
            .collect()
    }

    fn serve_range(
        result: Arc<CachedResult>,
        range: std::ops::Range<usize>,
    ) -> SendableRecordBatchStream {
        let schema = Arc::clone(&result.schema);
        let batches = range.map(move |i| Ok(result.batches[i].clone()));
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
        Box::pin(Capturing {
            cache: Arc::clone(self),
            key,
            schema: stream.schema(),
            inner: stream,
            collected: Some(Collected::default()),
        })
    }

    fn insert(&self, key: ResultKey, schema: SchemaRef, collected: Collected) {
        let result = CachedResult {
            schema,
            batches: collected.batches,
            bytes: collected.bytes,
            rows: collected.rows,
        };
        self.entries.insert(key, Arc::new(result));
        self.inserts.fetch_add(1, Ordering::Relaxed);
    }

    fn refuse(&self, key: ResultKey) {
        self.too_big.insert(key, ());
        self.too_big_count.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Collected {
    batches: Vec<RecordBatch>,
    /// Allocations already counted, by address.
    seen: HashSet<usize>,
    bytes: usize,
    rows: usize,
}

impl Collected {
    /// Adds `batch`; a batch holding far more memory than its rows need (a
    /// few rows sliced out of a big decoded batch) is copied first, so a
    /// small result does not keep big buffers alive.
    fn add(&mut self, batch: &RecordBatch) {
        let batch = match compacted(batch) {
            Some(copy) => copy,
            None => batch.clone(),
        };
        for column in batch.columns() {
            count_data(&column.to_data(), &mut self.seen, &mut self.bytes);
        }
        self.rows += batch.num_rows();
        self.batches.push(batch);
    }
}

/// Sums the capacity of each allocation `data` holds that `seen` has not
/// counted yet.
fn count_data(data: &ArrayData, seen: &mut HashSet<usize>, bytes: &mut usize) {
    let buffers = data
        .buffers()
        .iter()
        .chain(data.nulls().map(|n| n.buffer()));
    for buffer in buffers {
        if seen.insert(buffer.data_ptr().as_ptr() as usize) {
            *bytes += buffer.capacity().max(buffer.len());
        }
    }
    for child in data.child_data() {
        count_data(child, seen, bytes);
    }
}

/// A copy of `batch` into buffers of its own, when it holds more than
/// twice (plus 64 KiB) the memory its rows need.
///
/// What it holds is counted by distinct allocation, as the cache weighs
/// it: a batch decoded from a Flight message has every column slice one
/// allocation, which `get_array_memory_size` would count once per buffer
/// and so copy every batch received from the executors.
fn compacted(batch: &RecordBatch) -> Option<RecordBatch> {
    let needed: usize = batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum();
    let mut held = 0;
    let mut seen = HashSet::new();
    for column in batch.columns() {
        count_data(&column.to_data(), &mut seen, &mut held);
    }
    if held <= needed * 2 + 64 * 1024 {
        return None;
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| {
            let data = column.to_data();
            let mut copy = MutableArrayData::new(vec![&data], false, data.len());
            copy.try_extend(0, 0, data.len())?;
            Ok(make_array(copy.freeze()))
        })
        .collect::<std::result::Result<_, datafusion::arrow::error::ArrowError>>()
        .ok()?;
    RecordBatch::try_new(batch.schema(), columns).ok()
}

struct Capturing {
    cache: Arc<ResultCache>,
    key: ResultKey,
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    /// `None` once the result was found too big, failed, or was kept.
    collected: Option<Collected>,
}

impl Stream for Capturing {
    type Item = Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let next = self.inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(batch))) => {
                let max = self.cache.max_entry;
                if let Some(collected) = self.collected.as_mut() {
                    collected.add(batch);
                    if collected.bytes > max {
                        self.collected = None;
                        self.cache.refuse(self.key);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => self.collected = None,
            Poll::Ready(None) => {
                if let Some(collected) = self.collected.take() {
                    self.cache
                        .insert(self.key, Arc::clone(&self.schema), collected);
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
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
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

    #[tokio::test]
    async fn a_finished_result_is_kept_and_served_as_it_was() {
        let cache = ResultCache::new(1 << 20);
        let key = [1; 32];
        let sent = vec![batch(0, 100), batch(100, 50)];
        let got: Vec<RecordBatch> = cache
            .capture(key, stream(sent.iter().cloned().map(Ok).collect()))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got, sent);
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
        let sent: Vec<RecordBatch> = (0..5).map(|i| batch(i * 10, 10)).collect();
        let result = Arc::new(CachedResult {
            schema: sent[0].schema(),
            batches: sent.clone(),
            bytes: 0,
            rows: 50,
        });
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
        let empty = Arc::new(CachedResult {
            schema: sent[0].schema(),
            batches: vec![],
            bytes: 0,
            rows: 0,
        });
        assert_eq!(ResultCache::split(empty, 2).len(), 1);
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

    #[test]
    fn columns_sharing_one_allocation_are_not_copied() {
        // As arrow-flight decodes a message: every column slices one body.
        let (columns, rows) = (16usize, 8192usize);
        let body = datafusion::arrow::buffer::Buffer::from_vec(
            (0..(columns * rows) as i64).collect::<Vec<_>>(),
        );
        let fields: Vec<Field> = (0..columns)
            .map(|i| Field::new(format!("c{i}"), DataType::Int64, false))
            .collect();
        let arrays: Vec<ArrayRef> = (0..columns)
            .map(|i| {
                let values = body.slice_with_length(i * rows * 8, rows * 8);
                Arc::new(Int64Array::new(values.into(), None)) as ArrayRef
            })
            .collect();
        let shared = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
        assert!(compacted(&shared).is_none());
    }

    #[test]
    fn a_small_slice_of_a_big_batch_is_copied() {
        let big = batch(0, 100_000);
        let slice = big.slice(10, 5);
        let mut collected = Collected::default();
        collected.add(&slice);
        assert_eq!(collected.batches[0], slice);
        assert!(collected.bytes < 4096, "{} bytes", collected.bytes);
        let mut whole = Collected::default();
        whole.add(&big);
        assert!(whole.bytes > 1_000_000);
    }
}
