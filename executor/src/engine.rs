//! The query engine: one shared DataFusion runtime and catalog, and a fresh
//! [`SessionContext`] for each client session.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::DataFrame;
use datafusion::prelude::{SessionConfig, SessionContext};
use loch_catalog::{DATABASE_NAME, DEFAULT_SCHEMA, LochCatalog};

use crate::cpu::CpuRuntime;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The data directory (catalog, sample data).
    pub data_dir: PathBuf,
    /// TPC-H sample scale factor; 0 means no sample.
    pub sample_scale: f64,
    /// Partitions per query stage; 0 means one per core.
    pub target_partitions: usize,
}

/// The shared engine: runtime (memory pool, object stores, caches) and
/// catalog. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    runtime: Arc<RuntimeEnv>,
    cpu: Arc<CpuRuntime>,
    catalog: LochCatalog,
    target_partitions: usize,
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
        let runtime = Arc::new(RuntimeEnv::default());
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
            .build();
        let catalog =
            LochCatalog::open(&options.data_dir, options.sample_scale, &bootstrap).await?;
        Ok(Engine {
            runtime,
            cpu,
            catalog,
            target_partitions,
        })
    }

    /// The catalog the engine serves.
    pub fn catalog(&self) -> &LochCatalog {
        &self.catalog
    }

    /// Runs a planned query on the engine's query threads, streaming results.
    pub fn execute(&self, df: DataFrame) -> SendableRecordBatchStream {
        self.cpu.execute(df)
    }

    /// A new session: its own settings (default schema, time zone, …) over
    /// the shared runtime and catalog.
    pub fn new_session(&self) -> Result<SessionContext> {
        let state = SessionStateBuilder::new()
            .with_config(base_config(self.target_partitions))
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_catalog(DATABASE_NAME, self.catalog.provider());
        Ok(ctx)
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
