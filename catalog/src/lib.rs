//! Loch's catalog: where tables live and how DataFusion finds them.
//!
//! It owns the data directory layout: the metadata store
//! ([`store::CatalogStore`], kept in SQLite by [`store::SqliteStore`]),
//! managed Delta tables under `warehouse/`, and the bundled TPC-H sample.
//! [`provider`] exposes all of it to DataFusion as the catalog `loch`;
//! [`LochCatalog`], here, opens it, and its DDL methods change it. Nothing
//! here knows about the network.
//!
//! The modules depend one way. From the bottom: [`error`];
//! [`object_stores`] (clients, table OPTIONS); [`storage_credentials`]
//! (over object_stores); [`access_control`] (types only); [`store`] (over
//! those three); [`view`]; [`delta_write`], then [`delta_table`] (over
//! delta_write), then [`delta`] (over both and store's `Relation`), then
//! [`delta_plans`] and [`maintenance`]; [`provider`] over store, delta,
//! object_stores and view; [`sample`] alone; and this file over them all.

pub mod access_control;
pub mod delta;
pub mod delta_plans;
pub mod delta_table;
pub mod delta_write;
pub mod error;
pub mod maintenance;
pub mod object_stores;
pub mod provider;
pub mod sample;
pub mod storage_credentials;
pub mod store;
pub mod view;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::catalog::{CatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{CreateExternalTable, LogicalPlan};

pub use delta_plans::{delta_versions, keeps_delta_on_coordinator, merge_plan};
pub use deltalake;
pub use error::{CatalogError, Result};
pub use provider::LochCatalogProvider;
pub use store::{CatalogStore, Relation, RelationKind};

use object_stores::StoreRegistry;
use provider::{Resolver, is_delta};
use store::SqliteStore;

/// The database (DataFusion catalog) name clients connect to.
pub const DATABASE_NAME: &str = "loch";
/// The schema unqualified names resolve in by default.
pub const DEFAULT_SCHEMA: &str = "public";
/// The schema that holds the bundled TPC-H sample.
pub const SAMPLE_SCHEMA: &str = "tpch";
/// Where managed tables live, under the data directory.
pub const WAREHOUSE_DIR: &str = "warehouse";

/// Schema names the catalog never stores: DataFusion and PostgreSQL answer
/// for them.
const RESERVED_SCHEMAS: &[&str] = &["information_schema", "pg_catalog"];

/// The file formats `CREATE EXTERNAL TABLE … STORED AS` accepts.
const FORMATS: &[&str] = &["PARQUET", "CSV", "JSON", "ARROW", "DELTA"];

/// Which kind of relation a `DROP` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    Table,
    View,
}

/// Loch's catalog over one data directory.
#[derive(Debug, Clone)]
pub struct LochCatalog {
    data_dir: PathBuf,
    store: Arc<dyn CatalogStore>,
    resolver: Arc<Resolver>,
    provider: Arc<LochCatalogProvider>,
}

impl LochCatalog {
    /// Opens the catalog in `data_dir`, creating the directory and the
    /// metadata store when missing.
    ///
    /// With `sample_scale > 0` the TPC-H sample at that scale is generated on
    /// first use (later starts reuse it) and registered as schema `tpch`.
    /// `state` supplies the object store and configuration used to read the
    /// Parquet footers when the tables are registered.
    ///
    /// `stores` is the runtime's object store registry: tables on cloud
    /// stores configure their store there when they are resolved.
    pub async fn open(
        data_dir: &Path,
        sample_scale: f64,
        state: &SessionState,
        stores: Arc<StoreRegistry>,
    ) -> Result<Self> {
        object_stores::register_delta_factories();
        std::fs::create_dir_all(data_dir).map_err(|source| CatalogError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let store: Arc<dyn CatalogStore> = Arc::new(SqliteStore::open(data_dir)?);
        let resolver = Arc::new(Resolver::new(Arc::clone(&store), stores));
        let provider = Arc::new(LochCatalogProvider::new(Arc::clone(&resolver)));
        let catalog = LochCatalog {
            data_dir: data_dir.to_path_buf(),
            store,
            resolver,
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

    /// The directory managed tables are written under.
    pub fn warehouse_dir(&self) -> PathBuf {
        self.data_dir.join(WAREHOUSE_DIR)
    }

    /// A number that grows with every change of definitions (tables,
    /// views, schemas).
    pub fn epoch(&self) -> u64 {
        self.resolver
            .epoch
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The metadata store.
    pub fn store(&self) -> &Arc<dyn CatalogStore> {
        &self.store
    }

    /// The DataFusion catalog provider to register under [`DATABASE_NAME`].
    pub fn provider(&self) -> Arc<dyn CatalogProvider> {
        self.provider.clone()
    }

    /// Gives the catalog the session state it plans views and infers
    /// schemas with: one that has this catalog registered.
    pub fn set_planner(&self, state: SessionState) {
        self.resolver.set_planner(state);
    }

    /// Adds an in-memory schema that DDL cannot change (`system`).
    pub fn register_builtin_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<()> {
        self.provider.register_schema(name, schema)?;
        Ok(())
    }

    /// True for the in-memory schemas (the TPC-H sample, `system`).
    pub fn is_builtin_schema(&self, name: &str) -> bool {
        self.provider.is_builtin(name)
    }

    /// True for a table of an in-memory schema.
    pub fn is_builtin_table(&self, schema: &str, name: &str) -> bool {
        self.provider.is_builtin(schema)
            && self
                .provider
                .schema(schema)
                .is_some_and(|s| s.table_exist(name))
    }

    fn check_writable_schema(&self, schema: &str) -> Result<()> {
        if self.provider.is_builtin(schema) || RESERVED_SCHEMAS.contains(&schema) {
            return Err(CatalogError::ReadOnly(schema.to_string()));
        }
        Ok(())
    }

    /// `CREATE SCHEMA [IF NOT EXISTS] name`.
    pub fn create_schema(&self, name: &str, if_not_exists: bool) -> Result<()> {
        if self.provider.is_builtin(name) || RESERVED_SCHEMAS.contains(&name) {
            return if if_not_exists {
                Ok(())
            } else {
                Err(CatalogError::SchemaExists(name.to_string()))
            };
        }
        if !self.store.create_schema(name)? && !if_not_exists {
            return Err(CatalogError::SchemaExists(name.to_string()));
        }
        Ok(())
    }

    /// `DROP SCHEMA [IF EXISTS] name [CASCADE]`: with `CASCADE` its managed
    /// tables' data goes too (after the metadata commit).
    pub fn drop_schema(&self, name: &str, if_exists: bool, cascade: bool) -> Result<()> {
        self.check_writable_schema(name)?;
        match self.store.drop_schema(name, cascade)? {
            Some(dropped) => {
                self.provider.forget_schema(name);
                for relation in dropped {
                    self.remove_managed_data(&relation);
                }
                Ok(())
            }
            None if if_exists => Ok(()),
            None => Err(CatalogError::SchemaNotFound(name.to_string())),
        }
    }

    /// `CREATE EXTERNAL TABLE` (and `CREATE TABLE … USING DELTA LOCATION`):
    /// checks the data can be read (schema inference, Delta log), then
    /// records the definition. False when it existed and `IF NOT EXISTS`
    /// was given.
    pub async fn create_external_table(
        &self,
        schema: &str,
        name: &str,
        cmd: &CreateExternalTable,
    ) -> Result<bool> {
        self.check_writable_schema(schema)?;
        if !self.store.schema_exists(schema)? {
            return Err(CatalogError::SchemaNotFound(schema.to_string()));
        }
        if self.store.relation(schema, name)?.is_some() {
            if cmd.if_not_exists {
                return Ok(false);
            }
            if !cmd.or_replace {
                return Err(CatalogError::RelationExists {
                    schema: schema.to_string(),
                    name: name.to_string(),
                });
            }
        }
        let format = cmd.file_type.to_ascii_uppercase();
        if !FORMATS.contains(&format.as_str()) {
            return Err(CatalogError::Invalid(format!(
                "unknown table format {format}: use one of {}",
                FORMATS.join(", ")
            )));
        }
        let [location] = cmd.locations.as_slice() else {
            return Err(CatalogError::Invalid(
                "an external table takes exactly one LOCATION".into(),
            ));
        };
        let declared = cmd.schema.as_arrow();
        let relation = Relation {
            schema: schema.to_string(),
            name: name.to_string(),
            kind: RelationKind::External,
            location: Some(absolute_location(location)?),
            options: cmd.options.clone().into_iter().collect(),
            partition_cols: if is_delta(Some(&format)) {
                Vec::new()
            } else {
                cmd.table_partition_cols.clone()
            },
            columns: if declared.fields().is_empty() || is_delta(Some(&format)) {
                None
            } else {
                Some(store::encode_schema(declared)?)
            },
            format: Some(format),
            definition: None,
            default_schema: None,
        };
        // Read it once now, so a wrong location or format fails the DDL
        // instead of every later query.
        let planner = self.resolver.planner()?;
        let resolved = self.store.with_credential(&relation)?;
        self.resolver.configure_store(&resolved)?;
        if is_delta(resolved.format.as_deref()) {
            delta::open(&resolved, planner, None).await?;
        } else {
            provider::listing_table(&resolved, planner).await?;
        }
        self.store.create_relation(&relation, cmd.or_replace)?;
        self.resolver.forget(schema, name);
        Ok(true)
    }

    /// `CREATE TABLE t (…)` and `CREATE TABLE t AS SELECT …`: a managed
    /// Delta table under the warehouse directory (partitioned by the
    /// `partition_by` columns), written in one commit, then recorded.
    /// Returns the rows written, `None` when it existed and
    /// `IF NOT EXISTS` was given.
    pub async fn create_managed_table(
        &self,
        schema: &str,
        name: &str,
        input: LogicalPlan,
        partition_by: Vec<String>,
        (if_not_exists, or_replace): (bool, bool),
        state: SessionState,
    ) -> Result<Option<u64>> {
        self.check_writable_schema(schema)?;
        if !self.store.schema_exists(schema)? {
            return Err(CatalogError::SchemaNotFound(schema.to_string()));
        }
        if self.store.relation(schema, name)?.is_some() {
            if if_not_exists {
                return Ok(None);
            }
            if !or_replace {
                return Err(CatalogError::RelationExists {
                    schema: schema.to_string(),
                    name: name.to_string(),
                });
            }
        }
        if let Some(missing) = partition_by
            .iter()
            .find(|c| !input.schema().has_column_with_unqualified_name(c))
        {
            return Err(CatalogError::UnknownColumn(format!(
                "column \"{missing}\" named in PARTITIONED BY is not a column of {schema}.{name}"
            )));
        }
        // A fresh directory per table: a crash before the metadata commit
        // leaves an orphan directory no table points to, never a table
        // that shares files with an older one of the same name.
        let dir = self
            .warehouse_dir()
            .join(schema)
            .join(format!("{name}-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).map_err(|source| CatalogError::Io {
            path: dir.clone(),
            source,
        })?;
        let url = delta::directory_url(&std::fs::canonicalize(&dir).map_err(|source| {
            CatalogError::Io {
                path: dir.clone(),
                source,
            }
        })?)?;
        let relation = Relation {
            schema: schema.to_string(),
            name: name.to_string(),
            kind: RelationKind::Managed,
            format: Some("DELTA".into()),
            location: Some(url.to_string()),
            options: Default::default(),
            partition_cols: partition_by.clone(),
            columns: None,
            definition: None,
            default_schema: None,
        };
        let written = async {
            let rows = delta::create(url, name, input, partition_by, state).await?;
            let old = self.store.create_relation(&relation, or_replace)?;
            Ok::<_, CatalogError>((rows, old))
        }
        .await;
        match written {
            Ok((rows, old)) => {
                self.resolver.forget(schema, name);
                if let Some(old) = old {
                    self.remove_managed_data(&old);
                }
                Ok(Some(rows))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// `CREATE [OR REPLACE] VIEW`: `definition` is the statement's text,
    /// planned again (in `default_schema`) whenever the view is used.
    pub fn create_view(
        &self,
        schema: &str,
        name: &str,
        definition: String,
        or_replace: bool,
        default_schema: &str,
    ) -> Result<()> {
        self.check_writable_schema(schema)?;
        if let Some(old) = self.store.relation(schema, name)?
            && old.kind != RelationKind::View
        {
            return Err(CatalogError::RelationExists {
                schema: schema.to_string(),
                name: name.to_string(),
            });
        }
        let relation = Relation {
            schema: schema.to_string(),
            name: name.to_string(),
            kind: RelationKind::View,
            format: None,
            location: None,
            options: Default::default(),
            partition_cols: Vec::new(),
            columns: None,
            definition: Some(definition),
            default_schema: Some(default_schema.to_string()),
        };
        self.store.create_relation(&relation, or_replace)?;
        self.resolver.forget(schema, name);
        Ok(())
    }

    /// `DROP TABLE` / `DROP VIEW`. A managed table's data is removed after
    /// the metadata commit; an external table's data is never touched.
    pub fn drop_relation(
        &self,
        schema: &str,
        name: &str,
        kind: DropKind,
        if_exists: bool,
    ) -> Result<()> {
        self.check_writable_schema(schema)?;
        match self.store.relation(schema, name)? {
            None if if_exists => return Ok(()),
            None => {
                return Err(CatalogError::RelationNotFound {
                    schema: schema.to_string(),
                    name: name.to_string(),
                });
            }
            Some(relation) => {
                let is_view = relation.kind == RelationKind::View;
                if is_view != (kind == DropKind::View) {
                    return Err(CatalogError::WrongKind {
                        schema: schema.to_string(),
                        name: name.to_string(),
                        expected: if kind == DropKind::View {
                            "view"
                        } else {
                            "table"
                        },
                    });
                }
            }
        }
        if let Some(old) = self.store.drop_relation(schema, name)? {
            self.resolver.forget(schema, name);
            self.remove_managed_data(&old);
        }
        Ok(())
    }

    /// The Delta table `schema.name` at its latest version, for the Delta
    /// utilities ([`maintenance`]); an error naming the table when it does
    /// not exist or is not Delta.
    pub async fn delta_table(&self, schema: &str, name: &str) -> Result<deltalake::DeltaTable> {
        let relation =
            self.store
                .relation(schema, name)?
                .ok_or_else(|| CatalogError::RelationNotFound {
                    schema: schema.to_string(),
                    name: name.to_string(),
                })?;
        if !provider::is_delta_table(&relation) {
            return Err(CatalogError::WrongKind {
                schema: schema.to_string(),
                name: name.to_string(),
                expected: "Delta table",
            });
        }
        let relation = self.store.with_credential(&relation)?;
        self.resolver.configure_store(&relation)?;
        delta::load(&relation).await
    }

    /// Removes the files of a dropped managed table, only ever inside the
    /// warehouse directory.
    fn remove_managed_data(&self, relation: &Relation) {
        if relation.kind != RelationKind::Managed {
            return;
        }
        let Some(path) = relation
            .location
            .as_deref()
            .and_then(|l| url::Url::parse(l).ok())
            .and_then(|u| u.to_file_path().ok())
        else {
            return;
        };
        let inside = std::fs::canonicalize(self.warehouse_dir())
            .is_ok_and(|warehouse| path.starts_with(warehouse));
        if inside && let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!("removing data of dropped table at {}: {e}", path.display());
        }
    }

    /// Registers every sub-directory of `dir` as a Parquet table of the
    /// builtin schema `schema_name`, named after the directory.
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
        self.register_builtin_schema(schema_name, schema)
    }
}

/// A location as stored: URLs as given, local paths made absolute (a
/// directory keeps a trailing slash, which is how DataFusion tells a
/// directory from a file prefix).
fn absolute_location(location: &str) -> Result<String> {
    if delta::as_url(location).is_some() {
        return Ok(location.to_string());
    }
    let path = std::path::absolute(location).map_err(|source| CatalogError::Io {
        path: location.into(),
        source,
    })?;
    let mut text = path.to_string_lossy().into_owned();
    if (location.ends_with('/') || path.is_dir()) && !text.ends_with('/') {
        text.push('/');
    }
    Ok(text)
}

/// A suffix no other table directory of this warehouse has.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{n:x}", nanos, std::process::id())
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
