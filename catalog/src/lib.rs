//! Loch's catalog: where tables live and how DataFusion finds them.
//!
//! Today it owns the data directory layout, the bundled TPC-H sample data set
//! and the DataFusion [`CatalogProvider`](datafusion::catalog::CatalogProvider)
//! that exposes schema `tpch` (and an empty `public`). The persistent metadata
//! store, external and managed Delta tables arrive with the lake-catalog issue;
//! nothing here knows about the network.

pub mod error;
pub mod sample;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionState;

pub use error::{CatalogError, Result};

/// The database (DataFusion catalog) name clients connect to.
pub const DATABASE_NAME: &str = "loch";
/// The schema unqualified names resolve in by default.
pub const DEFAULT_SCHEMA: &str = "public";
/// The schema that holds the bundled TPC-H sample.
pub const SAMPLE_SCHEMA: &str = "tpch";

/// Loch's catalog over one data directory.
#[derive(Debug, Clone)]
pub struct LochCatalog {
    data_dir: PathBuf,
    provider: Arc<MemoryCatalogProvider>,
}

impl LochCatalog {
    /// Opens the catalog in `data_dir`, creating the directory when missing.
    ///
    /// With `sample_scale > 0` the TPC-H sample at that scale is generated on
    /// first use (later starts reuse it) and registered as schema `tpch`.
    /// `state` supplies the object store and configuration used to read the
    /// Parquet footers when the tables are registered.
    pub async fn open(data_dir: &Path, sample_scale: f64, state: &SessionState) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| CatalogError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let provider = Arc::new(MemoryCatalogProvider::new());
        provider.register_schema(DEFAULT_SCHEMA, Arc::new(MemorySchemaProvider::new()))?;
        let catalog = LochCatalog {
            data_dir: data_dir.to_path_buf(),
            provider,
        };
        if sample_scale > 0.0 {
            let dir = sample::ensure_tpch(data_dir, sample_scale)?;
            catalog
                .register_parquet_schema(SAMPLE_SCHEMA, &dir, state)
                .await?;
        }
        Ok(catalog)
    }

    /// The data directory this catalog lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The DataFusion catalog provider to register under [`DATABASE_NAME`].
    pub fn provider(&self) -> Arc<dyn CatalogProvider> {
        self.provider.clone()
    }

    /// Registers every sub-directory of `dir` as a Parquet table of schema
    /// `schema_name`, named after the directory.
    async fn register_parquet_schema(
        &self,
        schema_name: &str,
        dir: &Path,
        state: &SessionState,
    ) -> Result<()> {
        let schema = Arc::new(MemorySchemaProvider::new());
        let io = |source| CatalogError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut entries = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if !entry.file_type().map_err(io)?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let table = parquet_table(&entry.path(), state).await?;
            schema.register_table(name, table)?;
        }
        self.provider.register_schema(schema_name, schema)?;
        Ok(())
    }
}

/// A listing table over all `.parquet` files in `dir`, schema read from them.
async fn parquet_table(
    dir: &Path,
    state: &SessionState,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .infer_schema(state)
        .await?;
    Ok(Arc::new(ListingTable::try_new(config)?))
}
