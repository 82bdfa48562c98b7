//! DataFusion's view of the catalog: a [`CatalogProvider`] whose schemas and
//! tables come from the [`CatalogStore`], plus builtin schemas that live in
//! memory (the TPC-H sample, `system`).
//!
//! Definitions are turned into table providers when a query names them:
//! Parquet/CSV/JSON through DataFusion's own `ListingTableFactory` (cached:
//! a listing table lists its files at every scan anyway), Delta through
//! delta-rs, opened at its latest version for every statement so a commit by
//! any writer is seen by the next query, and views by planning their SQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use async_trait::async_trait;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider, TableProviderFactory};
use datafusion::common::{DFSchema, TableReference};
use datafusion::datasource::listing_table_factory::ListingTableFactory;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{CreateExternalTable, DdlStatement, LogicalPlan};
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use crate::delta::TimeTravel;
use crate::error::{CatalogError, Result};
use crate::object_stores::{self, StoreRegistry};
use crate::store::{CatalogStore, Relation, RelationKind};
use crate::{DATABASE_NAME, delta};

/// Views nested deeper than this are refused (a cycle of views would
/// otherwise recurse forever).
const MAX_VIEW_DEPTH: usize = 32;

tokio::task_local! {
    /// How many views are being expanded around the current planning call.
    static VIEW_DEPTH: usize;
}

/// Turns stored definitions into table providers.
#[derive(Debug)]
pub(crate) struct Resolver {
    pub(crate) store: Arc<dyn CatalogStore>,
    /// The runtime's object stores: cloud tables set theirs up here.
    stores: Arc<StoreRegistry>,
    /// A session state over this catalog, for inferring schemas and planning
    /// views; set once the engine has built it.
    planner: OnceLock<SessionState>,
    /// Listing tables by (schema, name); dropped on every DDL of that name.
    listing: Mutex<HashMap<(String, String), Arc<dyn TableProvider>>>,
    /// Counts DDL: part of the result cache's keys, so that a result is
    /// never reused across a change of definitions.
    pub(crate) epoch: std::sync::atomic::AtomicU64,
}

impl Resolver {
    pub(crate) fn new(store: Arc<dyn CatalogStore>, stores: Arc<StoreRegistry>) -> Self {
        Resolver {
            store,
            stores,
            planner: OnceLock::new(),
            epoch: Default::default(),
            listing: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn set_planner(&self, state: SessionState) {
        // Set once at start; a second call keeps the first state.
        let _ = self.planner.set(state);
    }

    pub(crate) fn planner(&self) -> Result<&SessionState> {
        self.planner
            .get()
            .ok_or_else(|| CatalogError::Store("catalog used before its planner was set".into()))
    }

    pub(crate) fn forget(&self, schema: &str, name: &str) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut listing) = self.listing.lock() {
            listing.remove(&(schema.to_string(), name.to_string()));
        }
    }

    fn forget_schema(&self, schema: &str) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut listing) = self.listing.lock() {
            listing.retain(|(s, _), _| s != schema);
        }
    }

    /// Points the store of a cloud table's location at the storage
    /// settings in its OPTIONS (over the environment's). `relation` has its
    /// credential resolved ([`CatalogStore::with_credential`]).
    pub(crate) fn configure_store(&self, relation: &Relation) -> Result<()> {
        let Some(url) = relation.location.as_deref().and_then(delta::as_url) else {
            return Ok(());
        };
        let (storage, _) = object_stores::split_options(&relation.options);
        self.stores.configure(&url, &storage)
    }

    /// The table provider of a stored relation.
    pub(crate) async fn provider(&self, relation: &Relation) -> Result<Arc<dyn TableProvider>> {
        let relation = &self.store.with_credential(relation)?;
        self.configure_store(relation)?;
        match relation.kind {
            RelationKind::View => self.view(relation).await,
            RelationKind::Managed => delta::open(relation, self.planner()?, None).await,
            RelationKind::External if is_delta(relation.format.as_deref()) => {
                delta::open(relation, self.planner()?, None).await
            }
            RelationKind::External => {
                let key = (relation.schema.clone(), relation.name.clone());
                if let Some(hit) = self.listing.lock().ok().and_then(|l| l.get(&key).cloned()) {
                    return Ok(hit);
                }
                let table = listing_table(relation, self.planner()?).await?;
                if let Ok(mut listing) = self.listing.lock() {
                    listing.insert(key, Arc::clone(&table));
                }
                Ok(table)
            }
        }
    }

    /// Plans a view's SQL in its schema. Planning resolves the tables it
    /// names through this same catalog, so nested views expand too.
    async fn view(&self, relation: &Relation) -> Result<Arc<dyn TableProvider>> {
        let depth = VIEW_DEPTH.try_with(|d| *d).unwrap_or(0);
        if depth >= MAX_VIEW_DEPTH {
            return Err(CatalogError::Invalid(format!(
                "view \"{}.{}\" nests more than {MAX_VIEW_DEPTH} views deep (does it refer to itself?)",
                relation.schema, relation.name
            )));
        }
        let definition = relation.definition.clone().ok_or_else(|| {
            CatalogError::Store(format!(
                "view {}.{} has no definition",
                relation.schema, relation.name
            ))
        })?;
        let mut state = self.planner()?.clone();
        if let Some(schema) = &relation.default_schema {
            state.config_mut().options_mut().catalog.default_schema = schema.clone();
        }
        let statement = parse_one(&definition)?;
        let plan = VIEW_DEPTH
            .scope(depth + 1, state.statement_to_plan(statement))
            .await?;
        let LogicalPlan::Ddl(DdlStatement::CreateView(view)) = plan else {
            return Err(CatalogError::Store(format!(
                "view {}.{}: stored definition is not CREATE VIEW",
                relation.schema, relation.name
            )));
        };
        let input = crate::view::ViewBoundary::wrap(
            &relation.schema,
            &relation.name,
            Arc::unwrap_or_clone(view.input),
        );
        Ok(Arc::new(ViewTable::new(input, Some(definition))))
    }
}

/// True for the Delta format names.
pub(crate) fn is_delta(format: Option<&str>) -> bool {
    format.is_some_and(|f| f.eq_ignore_ascii_case("delta"))
}

/// True for managed tables and external Delta tables: what time travel
/// and the Delta utilities work on.
pub(crate) fn is_delta_table(relation: &Relation) -> bool {
    relation.kind == RelationKind::Managed
        || relation.kind == RelationKind::External && is_delta(relation.format.as_deref())
}

/// Parses exactly one statement.
pub(crate) fn parse_one(sql: &str) -> Result<DfStatement> {
    let dialect = PostgreSqlDialect {};
    let mut parser = DFParserBuilder::new(sql).with_dialect(&dialect).build()?;
    let mut statements = parser.parse_statements()?;
    match (statements.pop_front(), statements.is_empty()) {
        (Some(statement), true) => Ok(statement),
        _ => Err(CatalogError::Store(format!(
            "stored definition is not one statement: {sql}"
        ))),
    }
}

/// A listing table (Parquet, CSV, JSON, …) built by DataFusion's factory
/// from the stored definition: declared columns (or inference), partition
/// columns and format options.
pub(crate) async fn listing_table(
    relation: &Relation,
    state: &SessionState,
) -> Result<Arc<dyn TableProvider>> {
    let cmd = external_command(relation)?;
    Ok(ListingTableFactory::new().create(state, &cmd).await?)
}

/// The `CREATE EXTERNAL TABLE` command a stored external table stands for.
fn external_command(relation: &Relation) -> Result<CreateExternalTable> {
    let location = relation.location.clone().ok_or_else(|| {
        CatalogError::Store(format!(
            "{}.{} has no location",
            relation.schema, relation.name
        ))
    })?;
    let format = relation.format.clone().unwrap_or_else(|| "PARQUET".into());
    let declared = match &relation.columns {
        Some(bytes) => DFSchema::try_from(crate::store::decode_schema(bytes)?)?,
        None => DFSchema::empty(),
    };
    Ok(CreateExternalTable::builder(
        TableReference::full(
            DATABASE_NAME,
            relation.schema.as_str(),
            relation.name.as_str(),
        ),
        location,
        format,
        Arc::new(declared),
    )
    .with_partition_cols(relation.partition_cols.clone())
    // Storage settings configure the store, not the format.
    .with_options(
        object_stores::split_options(&relation.options)
            .1
            .into_iter()
            .collect(),
    )
    .build())
}

/// The catalog `loch`: stored schemas plus builtin in-memory ones.
#[derive(Debug)]
pub struct LochCatalogProvider {
    resolver: Arc<Resolver>,
    builtin: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl LochCatalogProvider {
    pub(crate) fn new(resolver: Arc<Resolver>) -> Self {
        LochCatalogProvider {
            resolver,
            builtin: RwLock::new(BTreeMap::new()),
        }
    }

    /// True for schemas held in memory (sample data, `system`): DDL cannot
    /// change them.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.read().is_ok_and(|b| b.contains_key(name))
    }

    pub(crate) fn forget_schema(&self, name: &str) {
        self.resolver.forget_schema(name);
    }
}

impl CatalogProvider for LochCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .builtin
            .read()
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default();
        match self.resolver.store.schemas() {
            Ok(stored) => names.extend(stored),
            Err(e) => tracing::error!("listing schemas: {e}"),
        }
        names.sort();
        names.dedup();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(builtin) = self.builtin.read().ok().and_then(|b| b.get(name).cloned()) {
            return Some(builtin);
        }
        match self.resolver.store.schema_exists(name) {
            Ok(true) => Some(Arc::new(StoredSchema {
                name: name.to_string(),
                resolver: Arc::clone(&self.resolver),
            })),
            Ok(false) => None,
            Err(e) => {
                tracing::error!("looking up schema {name}: {e}");
                None
            }
        }
    }

    /// Registers a builtin, in-memory schema (not persisted). Schemas users
    /// create go through [`crate::LochCatalog::create_schema`].
    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        let mut builtin = self
            .builtin
            .write()
            .map_err(|_| DataFusionError::Internal("catalog lock poisoned".into()))?;
        Ok(builtin.insert(name.to_string(), schema))
    }
}

/// A schema whose relations are in the store.
#[derive(Debug)]
struct StoredSchema {
    name: String,
    resolver: Arc<Resolver>,
}

#[async_trait]
impl SchemaProvider for StoredSchema {
    fn table_names(&self) -> Vec<String> {
        self.resolver
            .store
            .relation_names(&self.name)
            .unwrap_or_else(|e| {
                tracing::error!("listing tables of {}: {e}", self.name);
                Vec::new()
            })
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let store_error = |e: CatalogError| DataFusionError::External(Box::new(e));
        let to_df = |e: CatalogError| match e {
            CatalogError::DataFusion(df) => df,
            other => DataFusionError::External(Box::new(other)),
        };
        if let Some(relation) = self
            .resolver
            .store
            .relation(&self.name, name)
            .map_err(store_error)?
        {
            return self
                .resolver
                .provider(&relation)
                .await
                .map(Some)
                .map_err(to_df);
        }
        // `t@v3`, `t@<timestamp>`: an earlier version of a Delta table.
        let Some((base, at)) = TimeTravel::split(name) else {
            return Ok(None);
        };
        let Some(relation) = self
            .resolver
            .store
            .relation(&self.name, base)
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let at = at.map_err(|e| store_error(CatalogError::Invalid(e)))?;
        if !is_delta_table(&relation) {
            return Err(store_error(CatalogError::WrongKind {
                schema: self.name.clone(),
                name: base.to_string(),
                expected: "Delta table (only Delta tables have earlier versions)",
            }));
        }
        let planner = self.resolver.planner().map_err(to_df)?;
        let relation = self
            .resolver
            .store
            .with_credential(&relation)
            .map_err(to_df)?;
        self.resolver.configure_store(&relation).map_err(to_df)?;
        delta::open(&relation, planner, Some(at))
            .await
            .map(Some)
            .map_err(to_df)
    }

    fn table_exist(&self, name: &str) -> bool {
        let exists = |n: &str| {
            self.resolver
                .store
                .relation(&self.name, n)
                .is_ok_and(|r| r.is_some())
        };
        exists(name) || TimeTravel::split(name).is_some_and(|(base, _)| exists(base))
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::NotImplemented(format!(
            "registering table {name} directly; use CREATE TABLE or CREATE EXTERNAL TABLE"
        )))
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::NotImplemented(format!(
            "deregistering table {name} directly; use DROP TABLE"
        )))
    }
}
