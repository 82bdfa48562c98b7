//! The catalog as one user sees it in listings (`information_schema`,
//! `SHOW TABLES`, `pg_catalog`, Flight SQL `GetDbSchemas`/`GetTables`):
//! schemas and tables the user may not use are left out.
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, SchemaProvider};
use loch_catalog::CatalogStore;
use loch_catalog::access_control::SecurityState;

use super::authz::{Checker, OPEN_SCHEMAS, Principal};

/// Whether `user` may see `schema.name` (a schema when `name` is "") in
/// catalog listings: it owns it, or may use the schema and holds some
/// privilege on the table. Reads the grants once per listing.
fn visibility(store: Arc<dyn CatalogStore>, user: &str) -> impl Fn(&str, &str) -> bool + use<> {
    let state = store.security_state().unwrap_or_else(|e| {
        tracing::error!(error = %e, "reading grants for a catalog listing");
        SecurityState::default()
    });
    let me = Principal::of(&state, user);
    move |schema: &str, name: &str| {
        let checker = Checker {
            state: &state,
            store: store.as_ref(),
        };
        OPEN_SCHEMAS.contains(&schema)
            || checker.check_owner(&me, schema, name).is_ok()
            || checker.may_use_schema(&me, schema)
                && (name.is_empty() || checker.granted(&me, None, |s| s.covers_table(schema, name)))
    }
}

/// The catalog as one user sees it in listings (`information_schema`,
/// `SHOW TABLES`, Flight SQL `GetDbSchemas`/`GetTables`): schemas and
/// tables it may not use are left out. Naming one still resolves, so a
/// query of a hidden table is refused with 42501, not 42P01.
#[derive(Debug)]
pub struct VisibleCatalog {
    inner: Arc<dyn CatalogProvider>,
    store: Arc<dyn CatalogStore>,
    user: String,
    /// Schemas of this session only (its `pg_catalog`), ahead of the
    /// shared catalog's.
    session_schemas: std::sync::RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl VisibleCatalog {
    pub fn new(inner: Arc<dyn CatalogProvider>, store: Arc<dyn CatalogStore>, user: &str) -> Self {
        VisibleCatalog {
            inner,
            store,
            user: user.to_string(),
            session_schemas: Default::default(),
        }
    }

    /// Adds a schema only this session sees (not the shared catalog).
    pub fn add_session_schema(&self, name: &str, schema: Arc<dyn SchemaProvider>) {
        if let Ok(mut schemas) = self.session_schemas.write() {
            schemas.insert(name.to_string(), schema);
        }
    }

    fn session_schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.session_schemas
            .read()
            .ok()
            .and_then(|s| s.get(name).cloned())
    }
}

impl CatalogProvider for VisibleCatalog {
    fn schema_names(&self) -> Vec<String> {
        let visible = visibility(Arc::clone(&self.store), &self.user);
        let mut names: Vec<String> = self
            .inner
            .schema_names()
            .into_iter()
            .filter(|s| visible(s, ""))
            .collect();
        if let Ok(own) = self.session_schemas.read() {
            names.extend(
                own.keys()
                    .filter(|k| !names.contains(k))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(own) = self.session_schema(name) {
            return Some(own);
        }
        let inner = self.inner.schema(name)?;
        Some(Arc::new(VisibleSchema {
            inner,
            name: name.to_string(),
            store: Arc::clone(&self.store),
            user: self.user.clone(),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> datafusion::error::Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.deregister_schema(name, cascade)
    }
}

/// One schema of a [`VisibleCatalog`].
#[derive(Debug)]
struct VisibleSchema {
    inner: Arc<dyn SchemaProvider>,
    name: String,
    store: Arc<dyn CatalogStore>,
    user: String,
}

#[async_trait::async_trait]
impl SchemaProvider for VisibleSchema {
    fn table_names(&self) -> Vec<String> {
        let visible = visibility(Arc::clone(&self.store), &self.user);
        self.inner
            .table_names()
            .into_iter()
            .filter(|t| visible(&self.name, t))
            .collect()
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        self.inner.table(name).await
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn datafusion::catalog::TableProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(
        &self,
        name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        self.inner.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}
