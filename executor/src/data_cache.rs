//! The data cache: Parquet files kept decoded, in memory, on the executor
//! that reads them.
//!
//! Decoding Parquet (decompression, RLE and dictionary decoding, building
//! Arrow arrays) is most of what a scan costs once the file's bytes are in
//! memory. File scans are placed on executors by a stable hash of the file,
//! so the same file goes to the same executor query after query: each
//! executor keeps what it decoded, per file (or byte range of one), as the
//! very record batches the scan produced, and the next scan of that file
//! with the same columns takes them instead of decoding again.
//!
//! It is not stale: the key is a digest of the file's identity as the plan
//! lists it (store, path, size, modification time, byte range, partition
//! values; ETag and version where the plan has them, which plans decoded
//! from datafusion-proto do not) and of everything that shapes the scan's
//! output (table schema, projection, Parquet options). Listing tables list
//! their files at every statement, so a file rewritten in place has another
//! size or time, so another key. Old entries are only left to age out.
//! Only scans whose projection is columns, casts of columns and constants
//! use the cache: anything computed in the scan is computed at every run.
//!
//! What a scan takes from the cache and what it gives to it:
//! - a scan without a predicate, limit or reordering fills the cache with
//!   each file it reads to the end;
//! - a scan whose predicate is only used to skip row groups and pages (the
//!   default: `datafusion.execution.parquet.pushdown_filters` off, so the
//!   filter above the scan still applies) or that has a limit is served
//!   from those entries, and reads files that are not kept as usual
//!   without keeping them (what it reads may be only part of a file);
//! - a scan that filters rows inside the Parquet reader, a file with an
//!   access plan, and a table with its own schema adapter are neither
//!   served nor kept.
//!
//! Entries are weighed by the memory their batches hold (each allocation
//! once) against a byte capacity; one file may take a quarter of it, and a
//! file found bigger while it is read stops being collected. All files
//! being recorded at once hold at most the capacity too.

use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use datafusion::arrow::array::{Array, ArrayData};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::object_store::ObjectStore;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalExpr};
use datafusion::physical_expr_common::sort_expr::PhysicalSortExpr;
use datafusion::physical_plan::filter_pushdown::FilterPushdownPropagation;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan, SortOrderPushdownResult};
use datafusion_datasource::morsel::{Morsel, MorselPlan, MorselPlanner, Morselizer};
use futures::stream::{BoxStream, Stream, StreamExt};
use ring::digest;

use crate::accounting::{Budget, CacheStats, Counters};

/// What identifies a kept file: a SHA-256 digest.
type FileKey = [u8; 32];

/// A kept file: the batches its scan produced, in order.
#[derive(Debug)]
struct KeptFile {
    batches: Vec<RecordBatch>,
    bytes: usize,
}

/// The data cache of one executor (see the module documentation).
pub struct DataCache {
    entries: moka::sync::Cache<FileKey, Arc<KeptFile>>,
    capacity: u64,
    max_entry: usize,
    /// Bytes held by files being recorded, all scans together; at most
    /// the capacity.
    collecting: Budget,
    counters: Counters,
}

impl fmt::Debug for DataCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataCache")
            .field("capacity", &self.capacity)
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl DataCache {
    /// A cache of at most `capacity` bytes, or none for 0.
    pub fn new(capacity: u64) -> Option<Arc<Self>> {
        if capacity == 0 {
            return None;
        }
        // moka weighs in u32: entries are weighed in KiB.
        let entries = moka::sync::Cache::builder()
            .max_capacity((capacity / 1024).max(1))
            .weigher(|_: &FileKey, kept: &Arc<KeptFile>| {
                u32::try_from(kept.bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
            })
            .build();
        Some(Arc::new(DataCache {
            entries,
            capacity,
            max_entry: usize::try_from(capacity / 4).unwrap_or(usize::MAX),
            collecting: Budget::new(capacity),
            counters: Counters::default(),
        }))
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        let bytes = self.entries.iter().map(|(_, kept)| kept.bytes as u64).sum();
        self.counters
            .stats(self.entries.entry_count(), bytes, self.capacity)
    }

    /// `plan` with every Parquet scan in it reading through this cache.
    pub fn wrap(self: &Arc<Self>, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            if !config.file_source.is::<ParquetSource>() {
                return Ok(Transformed::no(node));
            }
            let mut config = config.clone();
            config.file_source = Arc::new(CachedSource {
                inner: Arc::clone(&config.file_source),
                cache: Arc::clone(self),
            });
            let wrapped: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
            Ok(Transformed::yes(wrapped))
        })
        .map(|t| t.data)
    }

    fn get(&self, key: &FileKey) -> Option<Arc<KeptFile>> {
        let found = self.entries.get(key);
        self.counters.lookup(found.is_some());
        found
    }

    fn insert(&self, key: FileKey, batches: Vec<RecordBatch>, bytes: usize) {
        self.counters.inserted();
        self.entries
            .insert(key, Arc::new(KeptFile { batches, bytes }));
    }
}

/// A Parquet source whose files are read through the data cache. Plans
/// and EXPLAIN see the Parquet source it wraps; it serializes as that
/// source, too.
struct CachedSource {
    inner: Arc<dyn FileSource>,
    cache: Arc<DataCache>,
}

impl CachedSource {
    fn rewrap(&self, inner: Arc<dyn FileSource>) -> Arc<dyn FileSource> {
        Arc::new(CachedSource {
            inner,
            cache: Arc::clone(&self.cache),
        })
    }
}

/// How a scan uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Served from kept files, and keeps the files it reads to the end.
    ServeAndKeep,
    /// Served from kept files; what it reads is not kept.
    Serve,
}

/// How the scan `config` of `source` uses the cache, and the digest of
/// what shapes its output; `None` when it must not use it.
fn scan_use(source: &dyn FileSource, config: &FileScanConfig) -> Option<(Use, digest::Context)> {
    let parquet = source.downcast_ref::<ParquetSource>()?;
    let options = &parquet.table_parquet_options().global;
    if options.pushdown_filters || config.expr_adapter_factory.is_some() {
        return None;
    }
    let projection = source.projection()?;
    if !projection.iter().all(|p| plain(&p.expr)) {
        return None;
    }
    // Reordering row groups, or a predicate: the scan may skip parts of a
    // file, but what it reads is still a correct answer from whole files.
    let complete = parquet.filter().is_none() && config.limit.is_none() && {
        let mut extra = String::new();
        let _ = fmt::write(&mut extra, format_args!("{}", Extra(source)));
        extra.is_empty()
    };
    let mut shape = digest::Context::new(&digest::SHA256);
    let mut add = |part: &str| {
        shape.update(&(part.len() as u64).to_le_bytes());
        shape.update(part.as_bytes());
    };
    add("loch data cache 1");
    add(config.object_store_url.as_str());
    add(source.file_type());
    add(&schema_shape(source.table_schema().table_schema()));
    add(&format!("{projection}"));
    add(&schema_shape(config.projected_schema().ok()?.as_ref()));
    add(&format!("{options:?}"));
    let mode = if complete {
        Use::ServeAndKeep
    } else {
        Use::Serve
    };
    Some((mode, shape))
}

/// Whether a scan's projection expression is a column, a cast of one or a
/// constant: what depends on the file alone. Anything else (`random()`, a
/// function of the session's time zone, arithmetic) is computed by the
/// scan at every run and kept nowhere.
fn plain(expr: &Arc<dyn PhysicalExpr>) -> bool {
    use datafusion::physical_expr::expressions::{CastExpr, Column, Literal, TryCastExpr};
    if expr.downcast_ref::<Column>().is_some() || expr.downcast_ref::<Literal>().is_some() {
        return true;
    }
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        return plain(cast.expr());
    }
    if let Some(cast) = expr.downcast_ref::<TryCastExpr>() {
        return plain(cast.expr());
    }
    false
}

/// The source's extra display (predicate, row-group reordering): empty for
/// a scan that reads whole files in order.
struct Extra<'a>(&'a dyn FileSource);

impl fmt::Display for Extra<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt_extra(DisplayFormatType::Default, f)
    }
}

/// A schema's fields (names, types, nullability, metadata in key order)
/// as text: `Schema`'s own `Debug` lists metadata in hash order.
fn schema_shape(schema: &Schema) -> String {
    let mut out = String::new();
    for field in schema.fields() {
        let mut metadata: Vec<_> = field.metadata().iter().collect();
        metadata.sort();
        out.push_str(&format!(
            "{:?}:{}:{}:{metadata:?};",
            field.name(),
            field.data_type(),
            field.is_nullable()
        ));
    }
    out
}

/// The key of `file` in a scan whose shape digest is `shape`; `None` for a
/// file with an access plan or other extensions.
fn file_key(shape: &digest::Context, file: &PartitionedFile) -> Option<FileKey> {
    if !file.extensions.is_empty() {
        return None;
    }
    let mut context = shape.clone();
    let meta = &file.object_meta;
    let mut add = |part: &str| {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part.as_bytes());
    };
    add(meta.location.as_ref());
    add(&meta.size.to_string());
    add(&meta
        .last_modified
        .timestamp_nanos_opt()
        .unwrap_or(i64::MIN)
        .to_string());
    add(meta.e_tag.as_deref().unwrap_or("-"));
    add(meta.version.as_deref().unwrap_or("-"));
    add(&format!("{:?}", file.range));
    add(&format!("{:?}", file.partition_values));
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    Some(key)
}

impl FileSource for CachedSource {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn datafusion::datasource::physical_plan::FileOpener>> {
        self.inner
            .create_file_opener(object_store, base_config, partition)
    }

    fn create_morselizer(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        partition: usize,
    ) -> Result<Box<dyn Morselizer>> {
        let inner = self
            .inner
            .create_morselizer(object_store, base_config, partition)?;
        Ok(match scan_use(self.inner.as_ref(), base_config) {
            Some((mode, shape)) => Box::new(CachedMorselizer {
                inner,
                cache: Arc::clone(&self.cache),
                shape,
                mode,
            }),
            None => inner,
        })
    }

    fn table_schema(&self) -> &TableSchema {
        self.inner.table_schema()
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        self.rewrap(self.inner.with_batch_size(batch_size))
    }

    fn filter(&self) -> Option<Arc<dyn PhysicalExpr>> {
        self.inner.filter()
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        self.inner.projection()
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        self.inner.metrics()
    }

    fn file_type(&self) -> &str {
        self.inner.file_type()
    }

    fn fmt_extra(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_extra(t, f)
    }

    fn supports_repartitioning(&self) -> bool {
        self.inner.supports_repartitioning()
    }

    fn repartitioned(
        &self,
        target_partitions: usize,
        repartition_file_min_size: usize,
        output_ordering: Option<LexOrdering>,
        config: &FileScanConfig,
    ) -> Result<Option<FileScanConfig>> {
        self.inner.repartitioned(
            target_partitions,
            repartition_file_min_size,
            output_ordering,
            config,
        )
    }

    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn FileSource>>> {
        let propagation = self.inner.try_pushdown_filters(filters, config)?;
        Ok(FilterPushdownPropagation {
            filters: propagation.filters,
            updated_node: propagation.updated_node.map(|inner| self.rewrap(inner)),
        })
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
        eq_properties: &EquivalenceProperties,
    ) -> Result<SortOrderPushdownResult<Arc<dyn FileSource>>> {
        Ok(match self.inner.try_pushdown_sort(order, eq_properties)? {
            SortOrderPushdownResult::Exact { inner } => SortOrderPushdownResult::Exact {
                inner: self.rewrap(inner),
            },
            SortOrderPushdownResult::Inexact { inner } => SortOrderPushdownResult::Inexact {
                inner: self.rewrap(inner),
            },
            SortOrderPushdownResult::Unsupported => SortOrderPushdownResult::Unsupported,
        })
    }

    fn reorder_files(&self, files: Vec<PartitionedFile>) -> Vec<PartitionedFile> {
        self.inner.reorder_files(files)
    }

    fn try_pushdown_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn FileSource>>> {
        Ok(self
            .inner
            .try_pushdown_projection(projection)?
            .map(|inner| self.rewrap(inner)))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }

    fn try_to_proto(
        &self,
        base: &FileScanConfig,
        ctx: &datafusion::physical_plan::proto::ExecutionPlanEncodeCtx<'_>,
    ) -> Result<Option<datafusion_proto::protobuf::PhysicalPlanNode>> {
        self.inner.try_to_proto(base, ctx)
    }
}

/// Plans each file of a scan: from the cache when it is kept, else by the
/// Parquet reader, recording what it produces when the scan keeps files.
struct CachedMorselizer {
    inner: Box<dyn Morselizer>,
    cache: Arc<DataCache>,
    shape: digest::Context,
    mode: Use,
}

impl fmt::Debug for CachedMorselizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedMorselizer")
            .field("inner", &self.inner)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Morselizer for CachedMorselizer {
    fn plan_file(&self, file: PartitionedFile) -> Result<Box<dyn MorselPlanner>> {
        let Some(key) = file_key(&self.shape, &file) else {
            return self.inner.plan_file(file);
        };
        if let Some(kept) = self.cache.get(&key) {
            return Ok(Box::new(KeptPlanner(kept)));
        }
        let planner = self.inner.plan_file(file)?;
        if self.mode != Use::ServeAndKeep {
            return Ok(planner);
        }
        let recording = Arc::new(Recording {
            key,
            cache: Arc::clone(&self.cache),
            state: Mutex::new(RecordingState {
                batches: Vec::new(),
                bytes: 0,
                seen: HashSet::new(),
                outstanding: 0,
                abandoned: false,
            }),
        });
        Ok(Box::new(RecordingPlanner {
            inner: planner,
            part: Part::new(&recording),
        }))
    }
}

/// A kept file as one morsel.
#[derive(Debug)]
struct KeptPlanner(Arc<KeptFile>);

impl MorselPlanner for KeptPlanner {
    fn plan(self: Box<Self>) -> Result<Option<MorselPlan>> {
        let morsel: Box<dyn Morsel> = Box::new(KeptMorsel(self.0));
        Ok(Some(MorselPlan::new().with_morsels(vec![morsel])))
    }
}

#[derive(Debug)]
struct KeptMorsel(Arc<KeptFile>);

impl Morsel for KeptMorsel {
    fn into_stream(self: Box<Self>) -> BoxStream<'static, Result<RecordBatch>> {
        futures::stream::iter(self.0.batches.clone().into_iter().map(Ok)).boxed()
    }
}

/// The batches one file's scan has produced so far. The file's planners,
/// pending reads and morsels each hold a [`Part`]; when the last part has
/// finished and none was dropped unfinished or failed, the file was read to
/// its end and is kept.
struct Recording {
    key: FileKey,
    cache: Arc<DataCache>,
    state: Mutex<RecordingState>,
}

struct RecordingState {
    batches: Vec<RecordBatch>,
    bytes: usize,
    /// Allocations already weighed.
    seen: HashSet<usize>,
    outstanding: usize,
    abandoned: bool,
}

impl Recording {
    fn state(&self) -> MutexGuard<'_, RecordingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, batch: &RecordBatch) {
        let mut state = self.state();
        if state.abandoned {
            return;
        }
        let added = {
            let RecordingState { seen, .. } = &mut *state;
            batch_bytes(batch, seen)
        };
        if state.bytes + added > self.cache.max_entry {
            self.cache.counters.too_big();
            self.abandon(&mut state);
            return;
        }
        // Past what all recordings may hold together, this file is simply
        // not kept (nor counted as too big).
        if !self.cache.collecting.reserve(added) {
            self.abandon(&mut state);
            return;
        }
        state.bytes += added;
        state.batches.push(batch.clone());
    }

    /// Stops recording, giving back what the recording reserved.
    fn abandon(&self, state: &mut RecordingState) {
        if !state.abandoned {
            self.cache.collecting.release(state.bytes);
        }
        state.abandoned = true;
        state.batches = Vec::new();
        state.seen = HashSet::new();
    }

    /// One part ended: `finished` when it did all its work.
    fn end(&self, finished: bool) {
        let mut state = self.state();
        state.outstanding = state.outstanding.saturating_sub(1);
        if !finished {
            self.abandon(&mut state);
        }
        if state.outstanding == 0 && !state.abandoned {
            let batches = std::mem::take(&mut state.batches);
            let bytes = state.bytes;
            self.abandon(&mut state);
            drop(state);
            self.cache.insert(self.key, batches, bytes);
        }
    }
}

/// One outstanding piece of a file's scan; dropped without
/// [`Part::finish`], the file is not kept.
struct Part {
    recording: Arc<Recording>,
    finished: bool,
}

impl Part {
    fn new(recording: &Arc<Recording>) -> Part {
        recording.state().outstanding += 1;
        Part {
            recording: Arc::clone(recording),
            finished: false,
        }
    }

    fn child(&self) -> Part {
        Part::new(&self.recording)
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.recording.end(self.finished);
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct RecordingPlanner {
    inner: Box<dyn MorselPlanner>,
    part: Part,
}

impl MorselPlanner for RecordingPlanner {
    fn plan(self: Box<Self>) -> Result<Option<MorselPlan>> {
        let RecordingPlanner { inner, part } = *self;
        let Some(mut plan) = inner.plan()? else {
            part.finish();
            return Ok(None);
        };
        let morsels = plan
            .take_morsels()
            .into_iter()
            .map(|inner| {
                Box::new(RecordingMorsel {
                    inner,
                    part: part.child(),
                }) as Box<dyn Morsel>
            })
            .collect();
        let planners = plan
            .take_ready_planners()
            .into_iter()
            .map(|inner| {
                Box::new(RecordingPlanner {
                    inner,
                    part: part.child(),
                }) as Box<dyn MorselPlanner>
            })
            .collect();
        let mut recorded = MorselPlan::new()
            .with_morsels(morsels)
            .with_planners(planners);
        if let Some(pending) = plan.take_pending_planner() {
            let child = part.child();
            recorded.set_pending_planner(async move {
                let inner = pending.await?;
                Ok(Box::new(RecordingPlanner { inner, part: child }) as Box<dyn MorselPlanner>)
            });
        }
        part.finish();
        Ok(Some(recorded))
    }
}

#[derive(Debug)]
struct RecordingMorsel {
    inner: Box<dyn Morsel>,
    part: Part,
}

impl Morsel for RecordingMorsel {
    fn into_stream(self: Box<Self>) -> BoxStream<'static, Result<RecordBatch>> {
        let RecordingMorsel { inner, part } = *self;
        RecordingStream {
            inner: inner.into_stream(),
            part: Some(part),
        }
        .boxed()
    }
}

/// A morsel's batches, each recorded as it passes.
struct RecordingStream {
    inner: BoxStream<'static, Result<RecordBatch>>,
    part: Option<Part>,
}

impl Stream for RecordingStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => {
                if let Some(part) = &self.part {
                    part.recording.push(batch);
                }
            }
            // An error: dropped unfinished, the file is not kept.
            Poll::Ready(Some(Err(_))) => self.part = None,
            Poll::Ready(None) => {
                if let Some(part) = self.part.take() {
                    part.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }
}

/// The bytes of `batch`'s allocations not already in `seen`.
fn batch_bytes(batch: &RecordBatch, seen: &mut HashSet<usize>) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| data_bytes(&column.to_data(), seen))
        .sum()
}

fn data_bytes(data: &ArrayData, seen: &mut HashSet<usize>) -> usize {
    let mut bytes = 0;
    let mut count = |ptr: usize, capacity: usize| {
        if seen.insert(ptr) {
            bytes += capacity;
        }
    };
    for buffer in data.buffers() {
        count(buffer.data_ptr().as_ptr() as usize, buffer.capacity());
    }
    if let Some(nulls) = data.nulls() {
        let buffer = nulls.buffer();
        count(buffer.data_ptr().as_ptr() as usize, buffer.capacity());
    }
    bytes
        + data
            .child_data()
            .iter()
            .map(|child| data_bytes(child, seen))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::path::Path;

    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::{collect, execute_stream};
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    use super::*;

    /// Writes `rows` rows of (a, b, s) into `path`, in row groups of 1000.
    async fn write_file(path: &Path, rows: usize, seed: usize) {
        let ctx = SessionContext::new();
        ctx.sql("SET datafusion.execution.parquet.max_row_group_size = 1000")
            .await
            .unwrap();
        let sql = format!(
            "COPY (SELECT value AS a, (value * 7 + {seed}) % 1000 AS b, \
             concat('row ', value) AS s FROM range({rows})) TO '{}' STORED AS PARQUET",
            path.display()
        );
        ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    }

    /// A fresh context (listing the files now) with `dir` as table `t`,
    /// in batches of 500 rows.
    async fn context(dir: &Path) -> SessionContext {
        let config = SessionConfig::new().with_batch_size(500);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_parquet("t", dir.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        ctx
    }

    /// The rows of `sql`, sorted, read through `cache` (or not at all).
    async fn run(dir: &Path, sql: &str, cache: Option<&Arc<DataCache>>) -> Vec<String> {
        let ctx = context(dir).await;
        let mut plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        if let Some(cache) = cache {
            plan = cache.wrap(plan).unwrap();
        }
        let batches = collect(plan, ctx.task_ctx()).await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    async fn check(dir: &Path, sql: &str, cache: &Arc<DataCache>) -> Vec<String> {
        let expected = run(dir, sql, None).await;
        let got = run(dir, sql, Some(cache)).await;
        assert_eq!(got, expected, "{sql}");
        got
    }

    #[tokio::test]
    async fn scans_keep_their_files_and_later_scans_take_them() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("one.parquet"), 5000, 1).await;
        write_file(&dir.path().join("two.parquet"), 3000, 2).await;
        let cache = DataCache::new(64 << 20).unwrap();

        let all = check(dir.path(), "SELECT * FROM t", &cache).await;
        let first = cache.stats();
        assert!(first.inserts >= 2, "{first:?}");
        assert_eq!(first.inserts, first.misses, "{first:?}");
        assert_eq!(first.hits, 0, "{first:?}");
        assert!(
            first.bytes > 0 && first.entries == first.inserts,
            "{first:?}"
        );

        // The same scan again: every file from the cache, nothing read.
        assert_eq!(check(dir.path(), "SELECT * FROM t", &cache).await, all);
        let second = cache.stats();
        assert_eq!(second.hits, first.misses, "{second:?}");
        assert_eq!(second.inserts, first.inserts, "{second:?}");

        // A predicate only prunes: the kept files serve it, the filter
        // above the scan still applies.
        check(dir.path(), "SELECT * FROM t WHERE b > 900", &cache).await;
        check(dir.path(), "SELECT * FROM t WHERE a < 10", &cache).await;
        let filtered = cache.stats();
        assert_eq!(
            filtered.hits,
            second.hits + 2 * first.misses,
            "{filtered:?}"
        );
        let limited = run(dir.path(), "SELECT * FROM t LIMIT 7", Some(&cache)).await;
        // Seven rows, the header and the three frame lines.
        assert_eq!(limited.len(), 7 + 4, "{limited:?}");

        // Other columns are another scan: read, then kept on their own.
        check(dir.path(), "SELECT s, a FROM t", &cache).await;
        check(dir.path(), "SELECT s, a FROM t", &cache).await;
        let other = cache.stats();
        assert_eq!(other.inserts, 2 * first.inserts, "{other:?}");
    }

    #[tokio::test]
    async fn computed_columns_are_computed_at_every_run() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("one.parquet"), 20_000, 1).await;
        let cache = DataCache::new(256 << 20).unwrap();
        let sql = "SELECT a, random() AS r FROM t";
        let mut runs = Vec::new();
        for _ in 0..3 {
            // The file split into byte ranges: the projection then sits
            // right on the scan, and DataFusion moves it into the scan.
            let config = SessionConfig::new()
                .with_target_partitions(2)
                .with_repartition_file_min_size(0);
            let ctx = SessionContext::new_with_config(config);
            ctx.register_parquet("t", dir.path().to_str().unwrap(), Default::default())
                .await
                .unwrap();
            let plan = ctx
                .sql(sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            let shown = datafusion::physical_plan::displayable(plan.as_ref())
                .indent(true)
                .to_string();
            assert!(
                shown
                    .lines()
                    .any(|l| l.contains("DataSourceExec") && l.contains("random()")),
                "the scan should compute random(): {shown}"
            );
            let batches = collect(cache.wrap(plan).unwrap(), ctx.task_ctx())
                .await
                .unwrap();
            let text = pretty_format_batches(&batches).unwrap().to_string();
            let mut lines: Vec<&str> = text.lines().collect();
            lines.sort();
            runs.push(lines.join("\n"));
        }
        assert_ne!(runs[1], runs[2], "random() must not come from the cache");
        assert_eq!(cache.stats().inserts, 0, "{:?}", cache.stats());
    }

    #[test]
    fn recordings_together_hold_at_most_the_capacity() {
        let cache = DataCache::new(4096).unwrap();
        let budget = &cache.collecting;
        assert!(budget.reserve(3000));
        assert!(!budget.reserve(2000));
        budget.release(3000);
        assert!(budget.reserve(2048));
        assert!(budget.reserve(2048));
        assert!(!budget.reserve(1));
    }

    #[tokio::test]
    async fn a_rewritten_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("one.parquet");
        write_file(&file, 4000, 1).await;
        let cache = DataCache::new(64 << 20).unwrap();
        let before = check(dir.path(), "SELECT * FROM t", &cache).await;
        assert_eq!(check(dir.path(), "SELECT * FROM t", &cache).await, before);
        let hits = cache.stats().hits;
        assert!(hits > 0);

        write_file(&file, 4100, 3).await;
        let after = check(dir.path(), "SELECT * FROM t", &cache).await;
        assert_ne!(after, before);
        assert_eq!(cache.stats().hits, hits, "a changed file must not hit");
    }

    #[tokio::test]
    async fn files_past_the_entry_limit_and_unfinished_scans_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("one.parquet"), 20_000, 1).await;

        // A quarter of 256 KiB is less than the file's columns.
        let small = DataCache::new(256 << 10).unwrap();
        check(dir.path(), "SELECT * FROM t", &small).await;
        let stats = small.stats();
        assert!(stats.too_big >= 1, "{stats:?}");
        assert_eq!(stats.entries, 0, "{stats:?}");

        // A scan dropped after its first batch read part of the file.
        let cache = DataCache::new(64 << 20).unwrap();
        let ctx = context(dir.path()).await;
        let plan = ctx
            .sql("SELECT * FROM t")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let mut stream = execute_stream(cache.wrap(plan).unwrap(), ctx.task_ctx()).unwrap();
        assert!(stream.next().await.unwrap().unwrap().num_rows() > 0);
        drop(stream);
        let stats = cache.stats();
        assert_eq!((stats.inserts, stats.entries), (0, 0), "{stats:?}");
    }

    #[tokio::test]
    async fn scans_filtering_rows_in_the_reader_do_not_use_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("one.parquet"), 3000, 1).await;
        let cache = DataCache::new(64 << 20).unwrap();
        check(dir.path(), "SELECT * FROM t", &cache).await;
        let kept = cache.stats();
        let ctx = context(dir.path()).await;
        ctx.sql("SET datafusion.execution.parquet.pushdown_filters = true")
            .await
            .unwrap();
        let sql = "SELECT * FROM t WHERE b > 900";
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let got = collect(cache.wrap(plan).unwrap(), ctx.task_ctx())
            .await
            .unwrap();
        let rows: usize = got.iter().map(RecordBatch::num_rows).sum();
        let expected = run(dir.path(), sql, None).await.len() - 4;
        assert_eq!(rows, expected);
        let after = cache.stats();
        assert_eq!(
            (after.hits, after.misses),
            (kept.hits, kept.misses),
            "{after:?}"
        );
    }
}
