//! The query engine: one shared DataFusion runtime and catalog, and a fresh
//! [`SessionContext`] for each client session.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::DataFrame;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_distributed::DistributedExt;
use loch_catalog::deltalake::delta_datafusion::planner::DeltaExtensionPlanner;
use loch_catalog::object_stores::StoreRegistry;
use loch_catalog::view::StripViewBoundaries;
use loch_catalog::{DATABASE_NAME, DEFAULT_SCHEMA, LochCatalog};

use loch_executor::cpu::CpuRuntime;
use loch_executor::memory::{Budget, MemoryStats, QueryOptions};

use crate::admission::Admission;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The data directory (catalog, sample data).
    pub data_dir: PathBuf,
    /// TPC-H sample scale factor; 0 means no sample.
    pub sample_scale: f64,
    /// Partitions per query stage; 0 means one per core.
    pub target_partitions: usize,
    /// This process's memory: its query pool's size.
    pub memory: Budget,
    /// Where queries spill (this process's own directory).
    pub spill_dir: PathBuf,
    /// Most bytes of spill files at once.
    pub spill_limit: u64,
}

/// Turns a session's state into one that plans distributed queries (the
/// coordinator supplies it: worker resolver, placement, signed channels).
pub type Distribution = Arc<dyn Fn(SessionStateBuilder) -> SessionStateBuilder + Send + Sync>;

/// What the coordinator does when a query failed calling an executor: find
/// the executors that no longer answer and stop planning on them, so the
/// query can be planned again on the others.
#[async_trait::async_trait]
pub trait ExecutorCheck: Send + Sync {
    /// The ids of the executors planning uses now.
    fn live(&self) -> Vec<String>;
    /// Drops the executors that do not answer; how many it dropped.
    async fn drop_unreachable(&self) -> usize;
    /// Where Flight SQL clients reach the executor at `url` for direct
    /// tickets over TLS, if it serves them so.
    fn direct_tls(&self, _url: &url::Url) -> Option<String> {
        None
    }
}

/// The shared engine: runtime (memory pool, object stores, caches) and
/// catalog. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    runtime: Arc<RuntimeEnv>,
    stores: Arc<StoreRegistry>,
    cpu: Arc<CpuRuntime>,
    catalog: LochCatalog,
    target_partitions: usize,
    distribution: Option<Distribution>,
    executor_check: Option<Arc<dyn ExecutorCheck>>,
    /// Seals direct-endpoint tickets ([`loch_executor::direct`]).
    ticket_secret: Option<loch_executor::cluster::ClusterSecret>,
    /// Direct endpoints only at executors' TLS locations (the Flight SQL
    /// port uses TLS).
    direct_over_tls: bool,
    /// Whole query results, on the coordinator ([`crate::cache::result_cache`]).
    result_cache: Option<Arc<crate::cache::result_cache::ResultCache>>,
    /// How this process's memory is divided.
    memory: Budget,
    /// The line queries wait in; `None` lets every query run at once.
    admission: Option<Arc<Admission>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("catalog", &self.catalog)
            .field("target_partitions", &self.target_partitions)
            .field("distributed", &self.distribution.is_some())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the catalog (generating the sample data on first start).
    pub async fn open(options: &EngineOptions) -> loch_catalog::Result<Self> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let cpu = CpuRuntime::new(threads).map_err(|source| loch_catalog::CatalogError::Io {
            path: "query runtime".into(),
            source,
        })?;
        // Object stores: local files, and cloud stores as tables name them.
        let stores = Arc::new(StoreRegistry::default());
        let mut runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(stores.clone())
            .with_cache_manager(cache_config())
            .with_memory_pool(loch_executor::memory::query_pool(options.memory.pool))
            .build()
            .map_err(loch_catalog::CatalogError::from)?;
        runtime.disk_manager =
            loch_executor::memory::disk_manager(options.spill_dir.clone(), options.spill_limit)
                .map_err(loch_catalog::CatalogError::from)?;
        let runtime = Arc::new(runtime);
        let target_partitions = if options.target_partitions == 0 {
            threads
        } else {
            options.target_partitions
        };
        // A bare state only to read Parquet footers while registering tables.
        let bootstrap = SessionStateBuilder::new()
            .with_config(base_config(target_partitions))
            .with_runtime_env(runtime.clone())
            .with_default_features()
            .with_analyzer_rule(Arc::new(StripViewBoundaries))
            .build();
        let catalog = LochCatalog::open(
            &options.data_dir,
            options.sample_scale,
            &bootstrap,
            stores.clone(),
        )
        .await?;
        // The state the catalog plans views and infers schemas with.
        let planner = SessionContext::new_with_state(bootstrap);
        planner.register_catalog(DATABASE_NAME, catalog.provider());
        catalog.set_planner(planner.state());
        Ok(Engine {
            runtime,
            stores,
            cpu,
            catalog,
            target_partitions,
            distribution: None,
            executor_check: None,
            ticket_secret: None,
            direct_over_tls: false,
            result_cache: None,
            memory: options.memory,
            admission: None,
        })
    }

    /// Makes queries wait in `admission`'s line.
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// The line queries wait in, when there is one.
    pub fn admission(&self) -> Option<&Arc<Admission>> {
        self.admission.as_ref()
    }

    /// What reads this process's memory now: limit, pool, spill files
    /// (holding the runtime, not the engine).
    pub fn memory_now(&self) -> Arc<dyn Fn() -> MemoryStats + Send + Sync> {
        let runtime = Arc::clone(&self.runtime);
        let budget = self.memory;
        Arc::new(move || {
            MemoryStats::of(&budget, runtime.memory_pool.as_ref(), &runtime.disk_manager)
        })
    }

    /// True when sessions plan distributed queries.
    pub fn is_distributed(&self) -> bool {
        self.distribution.is_some()
    }

    /// Plans every new session's queries for distributed execution;
    /// `check` finds lost executors when a query fails calling one.
    pub fn with_distribution(
        mut self,
        distribution: Distribution,
        check: Arc<dyn ExecutorCheck>,
    ) -> Self {
        self.distribution = Some(distribution);
        self.executor_check = Some(check);
        self
    }

    /// Lets Flight SQL hand out direct tickets to the executors, sealed with
    /// the cluster `secret`; when `over_tls`, only for executors that serve
    /// them over TLS ([`ExecutorCheck::direct_tls`]).
    pub fn with_ticket_secret(
        mut self,
        secret: loch_executor::cluster::ClusterSecret,
        over_tls: bool,
    ) -> Self {
        self.ticket_secret = Some(secret);
        self.direct_over_tls = over_tls;
        self
    }

    /// Keeps query results of up to `capacity` bytes in all (0: none).
    pub fn with_result_cache(mut self, capacity: u64) -> Self {
        self.result_cache =
            (capacity > 0).then(|| crate::cache::result_cache::ResultCache::new(capacity));
        self
    }

    /// The result cache, when this engine keeps results.
    pub fn result_cache(&self) -> Option<&Arc<crate::cache::result_cache::ResultCache>> {
        self.result_cache.as_ref()
    }

    /// Whether direct endpoints must be TLS locations.
    pub fn direct_over_tls(&self) -> bool {
        self.direct_over_tls
    }

    /// What direct tickets are sealed with (distributed engines only).
    pub fn ticket_secret(&self) -> Option<&loch_executor::cluster::ClusterSecret> {
        self.ticket_secret.as_ref()
    }

    /// The shared runtime: memory pool, object stores and caches.
    pub fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.runtime
    }

    /// How lost executors are found (distributed engines only).
    pub fn executor_check(&self) -> Option<&Arc<dyn ExecutorCheck>> {
        self.executor_check.as_ref()
    }

    /// The object stores tables have configured (what executors ask the
    /// coordinator for).
    pub fn stores(&self) -> &Arc<StoreRegistry> {
        &self.stores
    }

    /// The catalog the engine serves.
    pub fn catalog(&self) -> &LochCatalog {
        &self.catalog
    }

    /// Runs a planned query on the engine's query threads, streaming results.
    pub fn execute(&self, df: DataFrame) -> SendableRecordBatchStream {
        self.cpu.execute(df)
    }

    /// Runs a physical plan on the engine's query threads.
    pub fn execute_plan(
        &self,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> SendableRecordBatchStream {
        self.cpu.execute_plan(plan, context)
    }

    /// A new session: its own settings (default schema, time zone, …) over
    /// the shared runtime and catalog.
    pub fn new_session(&self) -> Result<SessionContext> {
        let mut builder = SessionStateBuilder::new()
            .with_config(base_config(self.target_partitions))
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_analyzer_rule(Arc::new(StripViewBoundaries))
            .with_query_planner(Arc::new(LocalPlanner));
        if let Some(distribution) = &self.distribution {
            builder = distribution(builder);
        }
        // The session's `memory_limit`, sent with its stages to executors.
        builder = builder.with_distributed_option_extension(QueryOptions::default());
        let ctx = SessionContext::new_with_state(builder.build());
        ctx.register_catalog(DATABASE_NAME, self.catalog.provider());
        Ok(ctx)
    }
}

/// The runtime caches: DataFusion's defaults without its list-files
/// cache, which keeps a table's listing forever (files another process
/// adds would never be seen): listing tables list their files at every
/// statement, and the result cache's keys rely on it.
pub fn cache_config() -> datafusion::execution::cache::cache_manager::CacheManagerConfig {
    datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
        .with_list_files_cache_limit(0)
}

/// `state` made to plan and run on the coordinator alone, with DataFusion's
/// physical scalar subqueries.
///
/// datafusion-distributed turns DataFusion's physical uncorrelated scalar
/// subqueries off (their expressions cannot be shipped to executors), so
/// such subqueries are rewritten into joins by DataFusion's logical
/// optimizer instead — and that rewrite fails on a few queries (e.g. the
/// same aggregate inside and outside the subquery: "ambiguous field
/// name"). Sessions fall back to this state for those queries, so whatever
/// single-process DataFusion runs, Loch runs.
pub fn undistributed(state: SessionState) -> SessionState {
    let mut config = state.config().clone();
    config
        .options_mut()
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery = true;
    SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .with_query_planner(Arc::new(LocalPlanner))
        .build()
}

/// DataFusion's default physical planning, nothing distributed, plus
/// delta-rs' planner for the logical nodes its writes (metrics, data
/// validation) put into plans.
#[derive(Debug)]
struct LocalPlanner;

#[async_trait::async_trait]
impl QueryPlanner for LocalPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![DeltaExtensionPlanner::new()])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

fn base_config(target_partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE_NAME, DEFAULT_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_target_partitions(target_partitions);
    config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    config
}
