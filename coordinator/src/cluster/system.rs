//! The `system` schema, read fresh at every scan: `executors` (the
//! registry), `caches` (the result cache's counters and each live
//! executor's data cache, as of its last heartbeat), `memory` (each
//! process's limit, pool and spill files) and `admission` (the queue).

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::admission::Admission;
use crate::cache::result_cache::ResultCache;
use loch_executor::accounting::CacheStats;
use loch_executor::memory::MemoryStats;

use super::registry::Registry;

/// The coordinator's own memory now.
pub type MemoryNow = Arc<dyn Fn() -> MemoryStats + Send + Sync>;

/// The `system` schema, with `executors`, `caches`, `memory` and
/// `admission`.
pub fn system_schema(
    registry: Option<Arc<Registry>>,
    results: Option<Arc<ResultCache>>,
    memory: MemoryNow,
    admission: Option<Arc<Admission>>,
) -> Result<Arc<dyn SchemaProvider>> {
    let schema = MemorySchemaProvider::new();
    let table = SystemTable("system.memory", MemoryTable::new(memory, registry.clone()));
    schema.register_table("memory".into(), Arc::new(table))?;
    if let Some(admission) = admission {
        let table = SystemTable("system.admission", AdmissionTable::new(admission));
        schema.register_table("admission".into(), Arc::new(table))?;
    }
    let executors = SystemTable("system.executors", ExecutorsTable::new(registry.clone()));
    schema.register_table("executors".into(), Arc::new(executors))?;
    let caches = SystemTable("system.caches", CachesTable::new(results, registry));
    schema.register_table("caches".into(), Arc::new(caches))?;
    Ok(Arc::new(schema))
}

/// What a system table shows: its rows, made at every scan.
trait SystemRows: Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;
    fn batch(&self) -> Result<RecordBatch>;
}

/// A system table: its name and its rows.
struct SystemTable<T>(&'static str, T);

impl<T> fmt::Debug for SystemTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[async_trait]
impl<T: SystemRows> TableProvider for SystemTable<T> {
    fn schema(&self) -> SchemaRef {
        self.1.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.1.batch()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.1.schema(),
            projection.cloned(),
        )?)
    }
}

/// `system.caches`: one row per cache the coordinator keeps.
struct CachesTable {
    results: Option<Arc<ResultCache>>,
    registry: Option<Arc<Registry>>,
    schema: SchemaRef,
}

impl CachesTable {
    fn new(results: Option<Arc<ResultCache>>, registry: Option<Arc<Registry>>) -> Self {
        let count = |name: &str| Field::new(name, DataType::Int64, false);
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            count("entries"),
            count("bytes"),
            count("capacity_bytes"),
            count("hits"),
            count("misses"),
            count("inserts"),
            count("too_big"),
            Field::new("executor", DataType::Utf8, true),
        ]));
        CachesTable {
            results,
            registry,
            schema,
        }
    }
}

/// One row of `system.caches`.
struct CacheRow {
    name: &'static str,
    executor: Option<String>,
    stats: CacheStats,
}

impl SystemRows for CachesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn batch(&self) -> Result<RecordBatch> {
        let mut rows: Vec<CacheRow> = Vec::new();
        if let Some(cache) = &self.results {
            rows.push(CacheRow {
                name: "result",
                executor: None,
                stats: cache.stats(),
            });
        }
        // Each live executor's data cache, as of its last heartbeat.
        let executors = self.registry.as_ref().map(|r| r.snapshot());
        for executor in executors.into_iter().flatten().filter(|e| e.alive) {
            if let Some(stats) = executor.data_cache {
                rows.push(CacheRow {
                    name: "data",
                    executor: Some(executor.id),
                    stats,
                });
            }
        }
        let column = |f: fn(&CacheStats) -> u64| counts(&rows, |r| f(&r.stats));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.name))),
            column(|s| s.entries),
            column(|s| s.bytes),
            column(|s| s.capacity),
            column(|s| s.hits),
            column(|s| s.misses),
            column(|s| s.inserts),
            column(|s| s.too_big),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.executor.as_deref()),
            )),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// A column of counts, one per row (`i64::MAX` past it: SQL has no
/// unsigned 64-bit integers).
fn counts<T>(rows: &[T], count: impl Fn(&T) -> u64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        rows.iter()
            .map(|r| i64::try_from(count(r)).unwrap_or(i64::MAX)),
    ))
}

/// `system.memory`: one row per process, the coordinator first.
struct MemoryTable {
    coordinator: MemoryNow,
    registry: Option<Arc<Registry>>,
    schema: SchemaRef,
}

impl MemoryTable {
    fn new(coordinator: MemoryNow, registry: Option<Arc<Registry>>) -> Self {
        let bytes = |name: &str| Field::new(name, DataType::Int64, false);
        let schema = Arc::new(Schema::new(vec![
            Field::new("process", DataType::Utf8, false),
            Field::new("pid", DataType::Int64, false),
            bytes("limit_bytes"),
            bytes("cache_bytes"),
            bytes("pool_bytes"),
            bytes("reserved_bytes"),
            bytes("spill_files"),
            bytes("spill_bytes"),
            bytes("rss_bytes"),
        ]));
        MemoryTable {
            coordinator,
            registry,
            schema,
        }
    }
}

impl SystemRows for MemoryTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn batch(&self) -> Result<RecordBatch> {
        let mut rows = vec![(
            "coordinator".to_string(),
            std::process::id(),
            (self.coordinator)(),
        )];
        let executors = self.registry.as_ref().map(|r| r.snapshot());
        for executor in executors.into_iter().flatten().filter(|e| e.alive) {
            if let Some(memory) = executor.memory {
                rows.push((executor.id, executor.pid, memory));
            }
        }
        let column = |f: fn(&MemoryStats) -> u64| counts(&rows, |r| f(&r.2));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| i64::from(r.1)),
            )),
            column(|m| m.limit),
            column(|m| m.cache),
            column(|m| m.pool),
            column(|m| m.reserved),
            column(|m| m.spill_files),
            column(|m| m.spill_bytes),
            column(|m| m.rss),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// `system.admission`: the admission queue now (one row).
struct AdmissionTable {
    admission: Arc<Admission>,
    schema: SchemaRef,
}

impl AdmissionTable {
    fn new(admission: Arc<Admission>) -> Self {
        let count = |name: &str| Field::new(name, DataType::Int64, false);
        let schema = Arc::new(Schema::new(vec![
            count("max_running"),
            count("max_queued"),
            count("running"),
            count("queued"),
            count("admitted"),
            count("refused"),
            count("fast_admitted"),
        ]));
        AdmissionTable { admission, schema }
    }
}

impl SystemRows for AdmissionTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn batch(&self) -> Result<RecordBatch> {
        let stats = self.admission.stats();
        let one = |n: u64| counts(&[n], |&n| n);
        let columns: Vec<ArrayRef> = vec![
            one(stats.max_running as u64),
            one(stats.max_queued as u64),
            one(stats.running as u64),
            one(stats.queued as u64),
            one(stats.admitted),
            one(stats.refused),
            one(stats.fast_admitted),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

struct ExecutorsTable {
    registry: Option<Arc<Registry>>,
    schema: SchemaRef,
}

impl ExecutorsTable {
    fn new(registry: Option<Arc<Registry>>) -> Self {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("last_heartbeat", ts.clone(), false),
            Field::new("running_tasks", DataType::Int64, false),
            Field::new("registered_at", ts, false),
            Field::new("version", DataType::Utf8, false),
            Field::new("pid", DataType::Int64, false),
        ]));
        ExecutorsTable { registry, schema }
    }
}

impl SystemRows for ExecutorsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn batch(&self) -> Result<RecordBatch> {
        let rows = self
            .registry
            .as_ref()
            .map(|r| r.snapshot())
            .unwrap_or_default();
        let micros = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0)
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.id))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.url.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| if r.alive { "alive" } else { "lost" }),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| micros(r.last_heartbeat)),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.running_tasks as i64),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| micros(r.registered_at)),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.version),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| i64::from(r.pid)),
            )),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
