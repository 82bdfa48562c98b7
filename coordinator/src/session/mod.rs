//! A client session: its DataFusion context, its PostgreSQL-visible
//! settings, its transaction block, and the cancel/timeout guard around
//! each running statement.
//!
//! This is protocol-neutral on purpose: pg wire and Flight SQL only
//! translate between their messages and what a session runs. What a
//! session runs is in the commands module (statements) and the planning
//! module (queries); this one holds the state they share.

pub mod block;
pub mod cancel;
pub mod output;
pub mod settings;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::Engine;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::TableType;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use loch_catalog::{DEFAULT_SCHEMA, LochCatalog};

use crate::access::Subject;
use crate::error::LochError;
use crate::sql::{Command, canonical_name, command_schema};
pub use cancel::CancelState;
use cancel::Guarded;
pub(crate) use output::command_done;
pub(crate) use output::text_rows;
pub use output::{Output, cast_columns};
use settings::{
    READ_ONLY_SETTINGS, Settings, current_setting_udf, default_settings, parse_options,
    parse_timeout, set_config_udf, version_udf,
};
pub use settings::{SERVER_VERSION, version_string};

/// Most prepared statements one session may hold at once, of each kind:
/// pg wire's named statements (`Parse`), Flight SQL's
/// `CreatePreparedStatement` handles, and SQL `PREPARE`. Past it a new one
/// fails with 53400 (gRPC `RESOURCE_EXHAUSTED`) until one is closed.
pub const MAX_PREPARED_STATEMENTS: usize = 1024;

/// DataFusion's default `sort_spill_reservation_bytes`.
const SORT_SPILL_RESERVATION: usize = 10 << 20;

/// One client session. Shared by the connection's handlers through an `Arc`.
pub struct Session {
    ctx: SessionContext,
    engine: Engine,
    user: String,
    /// Shared with the session's `current_setting()` / `set_config()`.
    settings: Arc<Mutex<Settings>>,
    cancel: Arc<CancelState>,
    /// Savepoints and cursors of the open transaction block.
    block: block::TransactionBlock,
    /// The engine's broadcast-join threshold, which a `memory_limit` lowers.
    broadcast_default: usize,
    /// The names of the statements SQL `PREPARE` keeps (DataFusion holds
    /// the plans), to bound them.
    sql_prepared: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("user", &self.user).finish()
    }
}

impl Session {
    /// A session for `user` on `engine`, with the
    /// startup parameters the client sent applied as `SET`s.
    pub fn new(
        engine: &Engine,
        user: &str,
        database: &str,
        startup: &[(String, String)],
    ) -> Result<Self, LochError> {
        let ctx = engine.new_session()?;
        let broadcast_default = ctx
            .state()
            .config()
            .options()
            .optimizer
            .hash_join_single_partition_threshold;
        // Listings show this user only what it may use.
        let visible = Arc::new(crate::access::VisibleCatalog::new(
            engine.catalog().provider(),
            Arc::clone(engine.catalog().store()),
            user,
        ));
        ctx.register_catalog(loch_catalog::DATABASE_NAME, Arc::clone(&visible) as _);
        crate::pgcatalog::install(&ctx, engine, &visible, user)?;
        ctx.register_udf(version_udf());
        let settings = Arc::new(Mutex::new(Settings {
            values: default_settings(user, database),
            statement_timeout: None,
        }));
        ctx.register_udf(current_setting_udf(Arc::clone(&settings)));
        ctx.register_udf(set_config_udf(Arc::clone(&settings)));
        let session = Session {
            ctx,
            engine: engine.clone(),
            user: user.to_string(),
            settings: Arc::clone(&settings),
            cancel: Arc::new(CancelState::default()),
            block: Default::default(),
            broadcast_default,
            sql_prepared: Mutex::default(),
        };
        // The role's defaults first (`ALTER ROLE … SET`), then what the
        // client asked for at connect.
        for (name, value) in session.engine.catalog().store().role_settings(user)? {
            if settings::is_engine_setting(&name) {
                // A superuser chose it for the role: no check for who may.
                let state_ref = session.ctx.state_ref();
                let mut state = state_ref.write();
                if let Err(e) = state.config_mut().options_mut().set(&name, &value) {
                    tracing::warn!(role = user, %name, "role setting not applied: {e}");
                }
            } else if name != "max_concurrent_queries" {
                session.set(&name, Some(value))?;
            }
        }
        for (name, value) in startup {
            session.set(&name.to_ascii_lowercase(), Some(value.clone()))?;
        }
        Ok(session)
    }

    /// The user this session runs as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The current value of a PostgreSQL setting (empty when unknown).
    pub fn setting(&self, name: &str) -> String {
        self.settings
            .lock()
            .ok()
            .and_then(|s| s.values.get(name).cloned())
            .unwrap_or_default()
    }

    /// The handle a cancel request uses to stop this session's statement.
    pub fn cancel_state(&self) -> Arc<CancelState> {
        Arc::clone(&self.cancel)
    }

    /// The tables every schema of every catalog holds, for catalog listings
    /// (Flight SQL `GetTables`, later filtered by grants), sorted by name.
    pub async fn tables(&self) -> Vec<TableEntry> {
        let mut entries = Vec::new();
        for catalog_name in self.ctx.catalog_names() {
            let Some(catalog) = self.ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    // A table dropped since `table_names` is simply skipped.
                    if let Ok(Some(table)) = schema.table(&table_name).await {
                        entries.push(TableEntry {
                            catalog: catalog_name.clone(),
                            schema: schema_name.clone(),
                            name: table_name,
                            table_type: table.table_type(),
                            arrow_schema: table.schema(),
                        });
                    }
                }
            }
        }
        entries.sort_by(|a, b| {
            (&a.catalog, &a.schema, &a.name).cmp(&(&b.catalog, &b.schema, &b.name))
        });
        entries
    }

    /// The schemas of every catalog, as (catalog, schema), sorted.
    pub fn schemas(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .ctx
            .catalog_names()
            .into_iter()
            .filter_map(|c| self.ctx.catalog(&c).map(|cat| (c, cat.schema_names())))
            .flat_map(|(c, schemas)| schemas.into_iter().map(move |s| (c.clone(), s)))
            .collect();
        out.sort();
        out
    }

    /// The session's DataFusion context.
    pub(crate) fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The engine the session runs on.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How many queries the session's role may run at once (`ALTER ROLE …
    /// SET max_concurrent_queries`), read at each query so a change holds
    /// for sessions already open.
    pub(crate) fn role_concurrency(&self) -> Option<usize> {
        self.role_setting("max_concurrent_queries")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse().ok())
    }

    /// One of the session role's settings (`ALTER ROLE … SET`).
    pub(crate) fn role_setting(&self, name: &str) -> Result<Option<String>, LochError> {
        Ok(self
            .engine
            .catalog()
            .store()
            .role_settings(&self.user)?
            .remove(name))
    }

    /// Holds a place for the statement SQL `PREPARE name` keeps, refusing
    /// a new name past [`MAX_PREPARED_STATEMENTS`]; true when the name is
    /// new.
    pub(crate) fn hold_sql_prepared(&self, name: &str) -> Result<bool, LochError> {
        let mut names = self.sql_prepared_names()?;
        if !names.contains(name) && names.len() >= MAX_PREPARED_STATEMENTS {
            return Err(LochError::TooMany(format!(
                "a session may hold at most {MAX_PREPARED_STATEMENTS} prepared statements; \
                 DEALLOCATE some"
            )));
        }
        Ok(names.insert(name.to_string()))
    }

    /// Gives back the place of a statement SQL `DEALLOCATE` (or a failed
    /// `PREPARE`) let go.
    pub(crate) fn forget_sql_prepared(&self, name: &str) -> Result<(), LochError> {
        self.sql_prepared_names()?.remove(name);
        Ok(())
    }

    fn sql_prepared_names(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, std::collections::HashSet<String>>, LochError> {
        self.sql_prepared
            .lock()
            .map_err(|_| LochError::Internal("prepared statements lock poisoned".into()))
    }

    /// Whether the session's user is a superuser now.
    pub(crate) fn is_superuser(&self) -> Result<bool, LochError> {
        Ok(self
            .engine
            .catalog()
            .store()
            .role(&self.user)?
            .is_some_and(|r| r.superuser))
    }

    /// The session's `statement_timeout`.
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.settings.lock().ok().and_then(|s| s.statement_timeout)
    }

    /// Wraps a result stream so a cancel request or `statement_timeout`
    /// stops it with SQLSTATE 57014.
    pub(crate) fn guard(
        &self,
        stream: SendableRecordBatchStream,
        cancel: Arc<CancelState>,
    ) -> SendableRecordBatchStream {
        let timeout = self.settings.lock().ok().and_then(|s| s.statement_timeout);
        let schema = stream.schema();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            Guarded {
                inner: stream,
                cancel,
                deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
                done: false,
            },
        ))
    }

    pub(crate) fn set(&self, name: &str, value: Option<String>) -> Result<(), LochError> {
        let name = canonical_name(name);
        let mut settings = self
            .settings
            .lock()
            .map_err(|_| LochError::Internal("session settings lock poisoned".into()))?;
        if READ_ONLY_SETTINGS.contains(&name.as_str()) {
            return Err(LochError::InvalidParameterValue {
                name,
                value: "cannot be changed".into(),
            });
        }
        let value = match value {
            Some(v) => v,
            None => match self.role_setting(&name)? {
                Some(v) => v,
                None => default_settings(&self.user, "")
                    .remove(&name)
                    .unwrap_or_default(),
            },
        };
        match name.as_str() {
            "search_path" => self.set_search_path(&value)?,
            "statement_timeout" => {
                settings.statement_timeout =
                    parse_timeout(&value).ok_or_else(|| LochError::InvalidParameterValue {
                        name: name.clone(),
                        value: value.clone(),
                    })?;
            }
            "options" => {
                // libpq's `options=-c name=value …` startup parameter.
                drop(settings);
                for (k, v) in parse_options(&value) {
                    self.set(&k, Some(v))?;
                }
                return Ok(());
            }
            "memory_limit" => {
                let bytes = settings::parse_memory_limit(&value).ok_or_else(|| {
                    LochError::InvalidParameterValue {
                        name: name.clone(),
                        value: value.clone(),
                    }
                })?;
                if let Some(role_limit) = self.role_setting("memory_limit")?
                    && let Some(role_bytes) = settings::parse_memory_limit(&role_limit)
                    && role_bytes > 0
                    && (bytes == 0 || bytes > role_bytes)
                    && !self.is_superuser()?
                {
                    return Err(LochError::PermissionDenied(format!(
                        "memory_limit above your role's {role_limit} (only superusers may raise it)"
                    )));
                }
                let state_ref = self.ctx.state_ref();
                let mut state = state_ref.write();
                let options = state.config_mut().options_mut();
                // A sort keeps this much aside to merge what it spilled:
                // DataFusion's 10 MiB would not leave a small limit room
                // to sort at all.
                options.execution.sort_spill_reservation_bytes = match bytes {
                    0 => SORT_SPILL_RESERVATION,
                    b => SORT_SPILL_RESERVATION.min(b / 8),
                };
                // A build side sent whole to every task must fit the
                // query's limit many times over: partition bigger ones.
                let broadcast = self.broadcast_default;
                options.optimizer.hash_join_single_partition_threshold = match bytes {
                    0 => broadcast,
                    b => broadcast.min(b / crate::cluster::BROADCAST_POOL_SHARE as usize),
                };
                if let Some(query) = options
                    .extensions
                    .get_mut::<loch_executor::memory::QueryOptions>()
                {
                    query.memory_limit = bytes;
                }
            }
            "timezone" => {
                let state_ref = self.ctx.state_ref();
                let mut state = state_ref.write();
                state.config_mut().options_mut().execution.time_zone = Some(value.clone());
            }
            crate::cache::key::USE_CACHED_RESULT => {
                let lower = value.trim().to_ascii_lowercase();
                let known = [
                    "on", "off", "true", "false", "yes", "no", "1", "0", "t", "f", "y", "n",
                ];
                if !known.contains(&lower.as_str()) {
                    return Err(LochError::InvalidParameterValue {
                        name: name.clone(),
                        value: value.clone(),
                    });
                }
            }
            "user" | "database" | "replication" => return Ok(()),
            _ => {}
        }
        settings.values.insert(name, value);
        Ok(())
    }

    pub(crate) fn reset_all(&self) -> Result<(), LochError> {
        let names: Vec<String> = self
            .settings
            .lock()
            .map_err(|_| LochError::Internal("session settings lock poisoned".into()))?
            .values
            .keys()
            .filter(|k| !READ_ONLY_SETTINGS.contains(&k.as_str()))
            .filter(|k| !matches!(k.as_str(), "session_authorization" | "current_database"))
            .cloned()
            .collect();
        for name in names {
            self.set(&name, None)?;
        }
        Ok(())
    }

    /// Points unqualified names at the first schema of the path that exists
    /// (DataFusion resolves against one default schema).
    fn set_search_path(&self, value: &str) -> Result<(), LochError> {
        let entries: Vec<String> = value
            .split(',')
            .map(|s| s.trim().trim_matches('"').trim_matches('\'').to_string())
            .filter(|s| !s.is_empty() && s != "$user" && s != "pg_catalog")
            .collect();
        let state = self.ctx.state();
        let catalog_name = state.config().options().catalog.default_catalog.clone();
        let existing = self
            .ctx
            .catalog(&catalog_name)
            .map(|c| c.schema_names())
            .unwrap_or_default();
        let chosen = entries
            .iter()
            .find(|e| existing.contains(e))
            .or(entries.first())
            .cloned()
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
        let state_ref = self.ctx.state_ref();
        let mut state = state_ref.write();
        state.config_mut().options_mut().catalog.default_schema = chosen;
        Ok(())
    }

    pub(crate) fn show(&self, name: &str) -> Result<Output, LochError> {
        let settings = self
            .settings
            .lock()
            .map_err(|_| LochError::Internal("session settings lock poisoned".into()))?;
        let command = Command::Show {
            name: name.to_string(),
        };
        let schema = command_schema(&command)
            .ok_or_else(|| LochError::Internal("SHOW without a result schema".into()))?;
        let columns: Vec<Vec<&str>> = if name == "all" {
            vec![
                settings.values.keys().map(String::as_str).collect(),
                settings.values.values().map(String::as_str).collect(),
            ]
        } else {
            let value = settings
                .values
                .get(name)
                .ok_or_else(|| LochError::UnknownParameter(name.to_string()))?;
            vec![vec![value.as_str()]]
        };
        text_rows(schema, columns)
    }

    /// The transaction block: savepoints and cursors.
    pub(crate) fn block(&self) -> &block::TransactionBlock {
        &self.block
    }
}

impl Subject for Session {
    fn user(&self) -> &str {
        &self.user
    }

    fn catalog(&self) -> &LochCatalog {
        self.engine.catalog()
    }

    fn context(&self) -> &SessionContext {
        &self.ctx
    }
}

/// One table of a catalog listing.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub catalog: String,
    pub schema: String,
    pub name: String,
    pub table_type: TableType,
    pub arrow_schema: SchemaRef,
}
