//! A client session: its DataFusion context, its PostgreSQL-visible
//! settings, and the cancel/timeout guard around each running statement.
//!
//! This is protocol-neutral on purpose: pg wire (and Flight SQL later) only
//! translate between their messages and [`Session::run`]'s [`Output`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use loch_catalog::DEFAULT_SCHEMA;
use loch_executor::Engine;
use loch_executor::engine::{ExecutorCheck, undistributed};
use loch_executor::results::{CachedResult, ResultCache, ResultKey};

use crate::error::LochError;
use crate::statement::{Command, canonical_name, command_schema};

/// The `server_version` Loch reports: the PostgreSQL release whose protocol
/// and catalog behaviour it follows (drivers parse this number).
pub const SERVER_VERSION: &str = "16.6";

/// What `version()` answers: PostgreSQL's format first, because drivers and
/// ORMs (SQLAlchemy, for one) parse the version number out of it.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (Loch {}) on {}-{}, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// `version()` as PostgreSQL spells it, replacing DataFusion's.
fn version_udf() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use datafusion::scalar::ScalarValue;
    let version = version_string();
    create_udf(
        "version",
        vec![],
        arrow::datatypes::DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    )
}

/// What a statement produced.
pub enum Output {
    /// Rows, streamed as they are computed.
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    },
    /// A command that returns no rows, with its PostgreSQL tag and, for DML,
    /// the affected row count.
    Command { tag: String, rows: Option<usize> },
    /// `BEGIN`.
    Begin,
    /// `COMMIT` or `ROLLBACK`: the tag to answer with.
    End { tag: String },
}

/// One client session. Shared by the connection's handlers through an `Arc`.
pub struct Session {
    ctx: SessionContext,
    engine: Engine,
    user: String,
    /// Shared with the session's `current_setting()` / `set_config()`.
    settings: Arc<Mutex<Settings>>,
    cancel: Arc<CancelState>,
    /// Savepoints and cursors of the open transaction block.
    block: crate::block::TransactionBlock,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("user", &self.user).finish()
    }
}

#[derive(Debug, Clone)]
struct Settings {
    /// PostgreSQL-visible settings by lower-case name.
    values: BTreeMap<String, String>,
    statement_timeout: Option<Duration>,
}

/// The settings clients read or write at connect, with PostgreSQL's defaults.
fn default_settings(user: &str, database: &str) -> BTreeMap<String, String> {
    [
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("client_min_messages", "notice"),
        ("datestyle", "ISO, MDY"),
        ("default_table_access_method", "heap"),
        ("default_transaction_isolation", "read committed"),
        ("default_transaction_read_only", "off"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("is_superuser", "on"),
        ("lc_collate", "C"),
        ("lc_ctype", "C"),
        ("max_identifier_length", "63"),
        ("search_path", DEFAULT_SCHEMA),
        ("server_encoding", "UTF8"),
        ("server_version", SERVER_VERSION),
        ("server_version_num", "160006"),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("timezone", "UTC"),
        ("transaction_isolation", "read committed"),
        ("transaction_read_only", "off"),
        (crate::results::USE_CACHED_RESULT, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([
        ("session_authorization".to_string(), user.to_string()),
        ("current_database".to_string(), database.to_string()),
    ])
    .collect()
}

/// `current_setting(name [, missing_ok])`: the session's value of a
/// setting; an unknown one is an error, or NULL with `missing_ok`.
fn current_setting_udf(settings: Arc<Mutex<Settings>>) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Signature, Volatility};
    #[derive(Debug)]
    struct CurrentSetting {
        settings: Arc<Mutex<Settings>>,
        signature: Signature,
    }
    impl PartialEq for CurrentSetting {
        fn eq(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.settings, &other.settings)
        }
    }
    impl Eq for CurrentSetting {}
    impl std::hash::Hash for CurrentSetting {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            "current_setting".hash(state);
        }
    }
    impl datafusion::logical_expr::ScalarUDFImpl for CurrentSetting {
        fn name(&self) -> &str {
            "current_setting"
        }
        fn signature(&self) -> &Signature {
            &self.signature
        }
        fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
            Ok(DataType::Utf8)
        }
        fn invoke_with_args(
            &self,
            args: datafusion::logical_expr::ScalarFunctionArgs,
        ) -> datafusion::error::Result<ColumnarValue> {
            let arrays = ColumnarValue::values_to_arrays(&args.args)?;
            let names = arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("current_setting: names".into()))?;
            let missing_ok = match arrays.get(1) {
                Some(flag) => {
                    let flag = arrow::compute::cast(flag, &DataType::Boolean)?;
                    flag.as_any()
                        .downcast_ref::<arrow::array::BooleanArray>()
                        .is_some_and(|f| !f.is_empty() && f.value(0))
                }
                None => false,
            };
            let settings = self
                .settings
                .lock()
                .map_err(|_| DataFusionError::Internal("session settings lock poisoned".into()))?;
            let mut out = arrow::array::StringBuilder::new();
            for name in names.iter() {
                match name {
                    None => out.append_null(),
                    Some(name) => match settings.values.get(&canonical_name(name)) {
                        Some(value) => out.append_value(value),
                        None if missing_ok => out.append_null(),
                        None => {
                            return Err(DataFusionError::Plan(format!(
                                "unrecognized configuration parameter \"{name}\""
                            )));
                        }
                    },
                }
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }
    }
    ScalarUDF::new_from_impl(CurrentSetting {
        settings,
        signature: Signature::one_of(
            vec![
                datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Utf8]),
                datafusion::logical_expr::TypeSignature::Exact(vec![
                    DataType::Utf8,
                    DataType::Boolean,
                ]),
            ],
            // As in PostgreSQL: fixed within a statement, so it folds into
            // constants (Grafana passes it to generate_series).
            Volatility::Stable,
        ),
    })
}

/// `set_config(name, value, is_local)`: sets a client-visible setting that
/// has no effect on planning (the way pgAdmin and others set
/// `bytea_output`), answering the value; settings with an effect
/// (`search_path`, `statement_timeout`, `TimeZone`) take `SET`.
fn set_config_udf(settings: Arc<Mutex<Settings>>) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(move |args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (Some(names), Some(values)) = (
                arrays[0].as_any().downcast_ref::<StringArray>(),
                arrays[1].as_any().downcast_ref::<StringArray>(),
            ) else {
                return Err(DataFusionError::Internal("set_config: arguments".into()));
            };
            let mut settings = settings
                .lock()
                .map_err(|_| DataFusionError::Internal("session settings lock poisoned".into()))?;
            for (name, value) in names.iter().zip(values.iter()) {
                let (Some(name), Some(value)) = (name, value) else {
                    continue;
                };
                let name = canonical_name(name);
                if READ_ONLY_SETTINGS.contains(&name.as_str())
                    || matches!(
                        name.as_str(),
                        "search_path" | "statement_timeout" | "timezone"
                    )
                {
                    return Err(DataFusionError::NotImplemented(format!(
                        "set_config of {name}: use SET {name}"
                    )));
                }
                settings.values.insert(name, value.to_string());
            }
            Ok(ColumnarValue::Array(Arc::clone(&arrays[1])))
        }),
    )
}

/// Settings that only a server start can change.
const READ_ONLY_SETTINGS: [&str; 8] = [
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "lc_collate",
    "lc_ctype",
    "max_identifier_length",
    "is_superuser",
];

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
        // Listings show this user only what it may use.
        let visible = Arc::new(crate::security::VisibleCatalog::new(
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
        };
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

    /// Runs one parsed statement; the session's cancel flag (pg wire's
    /// CancelRequest) can stop it.
    pub async fn run(&self, command: Command) -> Result<Output, LochError> {
        self.cancel.reset();
        self.run_with(command, Arc::clone(&self.cancel)).await
    }

    /// Runs one parsed statement that `cancel` can stop.
    pub async fn run_with(
        &self,
        command: Command,
        cancel: Arc<CancelState>,
    ) -> Result<Output, LochError> {
        let tag = command.tag();
        match command {
            Command::Set { name, value } => {
                self.set(&name, value)?;
                Ok(Output::Command {
                    tag: "SET".into(),
                    rows: None,
                })
            }
            Command::Reset { name } => {
                match name {
                    Some(name) => self.set(&name, None)?,
                    None => self.reset_all()?,
                }
                Ok(Output::Command {
                    tag: "RESET".into(),
                    rows: None,
                })
            }
            Command::Show { name } => self.show(&name),
            Command::Begin => {
                self.block.begin()?;
                Ok(Output::Begin)
            }
            Command::Commit | Command::Rollback => {
                self.block.end(matches!(command, Command::Commit)).await?;
                Ok(Output::End { tag })
            }
            Command::Savepoint(name) => {
                self.block.savepoint(&name)?;
                Ok(command_done(tag))
            }
            Command::Release(name) => {
                self.block.release(&name)?;
                Ok(command_done(tag))
            }
            Command::RollbackTo(name) => {
                self.block.rollback_to(&name)?;
                Ok(command_done(tag))
            }
            Command::Declare { name, hold, query } => {
                self.block.can_declare(&name, hold).await?;
                let plan = self.plan(*query).await?;
                if !returns_rows(&plan) {
                    return Err(LochError::InvalidCursorDefinition(
                        "DECLARE CURSOR needs a statement that returns rows".into(),
                    ));
                }
                let Output::Rows { schema, stream } =
                    self.execute_with(plan, "SELECT".into(), cancel).await?
                else {
                    return Err(LochError::InvalidCursorDefinition(
                        "DECLARE CURSOR needs a statement that returns rows".into(),
                    ));
                };
                self.block.declare(&name, hold, schema, stream).await?;
                Ok(command_done(tag))
            }
            Command::Fetch { name, count } => self.block.fetch(&name, count).await,
            Command::Close(name) => {
                self.block.close(name.as_deref()).await?;
                Ok(command_done(tag))
            }
            Command::Noop(tag) => Ok(command_done(tag.to_string())),
            Command::Discard => {
                self.block.discard().await?;
                self.reset_all()?;
                Ok(Output::Command {
                    tag: "DISCARD ALL".into(),
                    rows: None,
                })
            }
            Command::Delta(command) => crate::ddl::run_delta(self, command).await,
            Command::Security(command) => crate::security::run(self, command).await,
            Command::CreatePartitioned {
                statement,
                partition_by,
            } => {
                let plan = self.plan(*statement).await?;
                crate::security::authorize(self, &plan)?;
                let LogicalPlan::Ddl(datafusion::logical_expr::DdlStatement::CreateMemoryTable(
                    create,
                )) = &plan
                else {
                    return Err(LochError::NotSupported(
                        "PARTITIONED BY here: it partitions a new managed table".into(),
                    ));
                };
                crate::ddl::create_managed(self, create, partition_by).await
            }
            Command::Query(statement) => {
                let plan = self.plan(*statement).await?;
                self.execute_with(plan, tag, cancel).await
            }
        }
    }

    /// Parses and plans one statement to run later, maybe many times with
    /// different parameters. `None` for empty SQL.
    pub async fn prepare(&self, sql: &str) -> Result<Option<Prepared>, LochError> {
        let mut commands = crate::statement::parse(sql)?;
        if commands.is_empty() {
            return Ok(None);
        }
        if commands.len() > 1 {
            return Err(LochError::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let command = commands.remove(0);
        let (plan, param_types, rows_schema) = match &command {
            Command::Query(statement) => {
                let plan = self.plan((**statement).clone()).await?;
                // Describing a table reveals its columns: checked now too.
                let grants = crate::security::authorize(self, &plan)?;
                let types = ordered_parameter_types(&plan)?;
                // Policies are applied again at every execution (they may
                // change); this is only what clients are told to expect.
                let protected = crate::policy::apply(self, plan.clone(), &grants)?;
                let schema: SchemaRef = Arc::new(protected.schema().as_arrow().clone());
                (Some(plan), types, Some(schema))
            }
            // A FETCH answers with its cursor's columns (the cursor must be
            // open when the FETCH is prepared, as in PostgreSQL).
            Command::Fetch { name, .. } => (None, Vec::new(), Some(self.block.schema(name).await?)),
            _ => (None, Vec::new(), None),
        };
        Ok(Some(Prepared {
            command,
            plan,
            param_types,
            rows_schema,
        }))
    }

    /// Runs a prepared statement with its parameter values (in `$1..$n`
    /// order, already of the types [`Prepared::param_types`] asks for, or
    /// cast to them by [`bind_values`]); `cancel` can stop it.
    pub async fn run_prepared(
        &self,
        prepared: &Prepared,
        values: Option<ParamValues>,
        cancel: Arc<CancelState>,
    ) -> Result<Output, LochError> {
        match &prepared.plan {
            Some(plan) => {
                let plan = match values {
                    Some(values) => plan.clone().replace_params_with_values(&values)?,
                    None => plan.clone(),
                };
                self.execute_with(plan, prepared.command.tag(), cancel)
                    .await
            }
            None => self.run_with(prepared.command.clone(), cancel).await,
        }
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

    /// Plans a DataFusion statement (parameters stay as placeholders).
    pub async fn plan(&self, statement: DfStatement) -> Result<LogicalPlan, LochError> {
        Ok(self.ctx.state().statement_to_plan(statement).await?)
    }

    /// Runs a planned statement that `cancel` can stop; `tag` is the command
    /// tag for non-queries.
    pub async fn execute_with(
        &self,
        plan: LogicalPlan,
        tag: String,
        cancel: Arc<CancelState>,
    ) -> Result<Output, LochError> {
        let grants = crate::security::authorize(self, &plan)?;
        // Row filters and column masks: inside the plan, before it runs.
        let plan = crate::policy::apply(self, plan, &grants)?;
        if let LogicalPlan::Explain(explain) = &plan
            && !explain.verbose
            && self.engine.is_distributed()
        {
            return self.explain_distributed(&explain.plan).await;
        }
        if let LogicalPlan::Ddl(ddl) = &plan
            && let Some(output) = crate::ddl::run(self, ddl).await
        {
            return output;
        }
        if let LogicalPlan::Dml(dml) = &plan
            && matches!(dml.op, WriteOp::MergeInto(_))
        {
            // delta-rs merges from the logical plan: DataFusion's physical
            // planner would hand the table a physical source.
            let state = self.ctx.state();
            let merge = loch_catalog::merge_plan(dml, &state)?;
            let stream = self.engine.execute_plan(merge, state.task_ctx());
            let mut stream = self.guard(stream, cancel);
            let mut count = 0u64;
            while let Some(batch) = stream.next().await {
                count += loch_catalog::delta_write::counted(&batch?);
            }
            return Ok(Output::Command {
                tag,
                rows: Some(count as usize),
            });
        }
        let returns_rows = returns_rows(&plan);
        let is_dml = matches!(plan, LogicalPlan::Dml(_));
        if returns_rows {
            let state = self.planning_state(&plan);
            let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
            let planned = self.cache_plan(&state, &plan).await;
            let df = DataFrame::new(state, plan);
            let (physical, keep) = match planned {
                Some(Cached::Hit(result)) => {
                    let stream = self.guard(ResultCache::serve(result), cancel);
                    return Ok(Output::Rows { schema, stream });
                }
                Some(Cached::Collect {
                    cache,
                    key,
                    physical,
                }) => (physical, Some((cache, key))),
                Some(Cached::Run(physical)) => (physical, None),
                None => {
                    let stream = self.guard(replanning(&self.engine, df, None), cancel);
                    return Ok(Output::Rows { schema, stream });
                }
            };
            let planned = PlannedRows {
                df,
                schema,
                physical,
                keep,
            };
            return Ok(self.run_planned(planned, cancel));
        }
        let df = if is_dml {
            // A DML statement: distributed unless
            // `planning_state` says it must run on the coordinator.
            DataFrame::new(self.planning_state(&plan), plan)
        } else if self.engine.is_distributed() && !self.distributable(&plan) {
            DataFrame::new(undistributed(self.ctx.state()), plan)
        } else {
            self.ctx.execute_logical_plan(plan).await?
        };
        let mut stream = self.guard(self.engine.execute(df), cancel);
        let mut count = 0u64;
        while let Some(batch) = stream.next().await {
            count += loch_catalog::delta_write::counted(&batch?);
        }
        Ok(Output::Command {
            tag,
            rows: is_dml.then_some(count as usize),
        })
    }

    /// The result cache, when the engine keeps results and this session
    /// uses them (`use_cached_result`).
    fn result_cache(&self) -> Option<&Arc<ResultCache>> {
        let cache = self.engine.result_cache()?;
        is_on(&self.setting(crate::results::USE_CACHED_RESULT)).then_some(cache)
    }

    /// What the result cache does for the query `plan`, planned with
    /// `state`: its kept result, or its physical plan to run (collecting
    /// the result when it may be kept). `None` when the cache is off, the
    /// query is not one whose result may be kept, or planning failed (the
    /// usual path plans it again and reports the error). The lookup counts
    /// as a hit or a miss.
    async fn cache_plan(&self, state: &SessionState, plan: &LogicalPlan) -> Option<Cached> {
        let cache = self.result_cache()?;
        if !crate::results::cacheable(plan) || uses_session_functions(plan) {
            return None;
        }
        let optimized = state.optimize(plan).ok()?;
        let physical = state
            .query_planner()
            .create_physical_plan(&optimized, state)
            .await
            .ok()?;
        let epoch = self.engine.catalog().epoch();
        let Some(key) = crate::results::key(&self.user, epoch, state, &optimized, &physical) else {
            return Some(Cached::Run(physical));
        };
        if let Some(result) = cache.get(&key) {
            return Some(Cached::Hit(result));
        }
        if !cache.admits(&key, crate::results::estimate(&physical)) {
            return Some(Cached::Run(physical));
        }
        Some(Cached::Collect {
            cache: Arc::clone(cache),
            key,
            physical,
        })
    }

    /// Where a Flight SQL client reads the rows of the query `plan`:
    /// authorized, with its row filters and column masks, and planned once.
    ///
    /// - [`FlightRows::Kept`]: the result cache has its result (counted as a
    ///   hit); only for a select, filter or projection (no order to keep,
    ///   so it may be read in parts at once).
    /// - [`FlightRows::Planned`]: with `direct` (the session wants direct
    ///   endpoints), a select, filter or projection over tables that plans
    ///   distributed here and whose result the cache will not keep.
    /// - [`FlightRows::Ready`]: through the coordinator, planned here (and
    ///   its result kept as it streams, when it may be).
    /// - [`FlightRows::Coordinator`]: anything else; the query is
    ///   authorized, planned and run when its ticket is redeemed.
    pub async fn flight_rows(
        &self,
        plan: LogicalPlan,
        direct: bool,
    ) -> Result<FlightRows, LochError> {
        let direct = direct && self.engine.is_distributed();
        if (self.result_cache().is_none() && !direct) || !row_by_row(&plan) {
            return Ok(FlightRows::Coordinator);
        }
        let grants = crate::security::authorize(self, &plan)?;
        let plan = crate::policy::apply(self, plan, &grants)?;
        if !row_by_row(&plan) {
            return Ok(FlightRows::Coordinator);
        }
        let state = self.planning_state(&plan);
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let physical = match self.cache_plan(&state, &plan).await {
            Some(Cached::Hit(result)) => return Ok(FlightRows::Kept(result)),
            // The coordinator keeps this one as it streams it.
            Some(Cached::Collect {
                cache,
                key,
                physical,
            }) => {
                return Ok(FlightRows::Ready(Box::new(PlannedRows {
                    df: DataFrame::new(state, plan),
                    schema,
                    physical,
                    keep: Some((cache, key)),
                })));
            }
            Some(Cached::Run(physical)) => Some(physical),
            None => None,
        };
        if !direct || !self.distributable(&plan) {
            return Ok(match physical {
                Some(physical) => FlightRows::Ready(Box::new(PlannedRows {
                    df: DataFrame::new(state, plan),
                    schema,
                    physical,
                    keep: None,
                })),
                None => FlightRows::Coordinator,
            });
        }
        let physical = match physical {
            Some(physical) => physical,
            None => state.create_physical_plan(&plan).await?,
        };
        Ok(FlightRows::Planned(physical, Box::new(state)))
    }

    /// Runs a query [`Session::flight_rows`] planned.
    pub fn run_planned(&self, planned: PlannedRows, cancel: Arc<CancelState>) -> Output {
        let PlannedRows {
            df,
            schema,
            physical,
            keep,
        } = planned;
        let first = self.engine.execute_plan(physical, Arc::new(df.task_ctx()));
        let stream = replanning(&self.engine, df, Some(first));
        let stream = match keep {
            Some((cache, key)) => cache.capture(key, stream),
            None => stream,
        };
        Output::Rows {
            schema,
            stream: self.guard(stream, cancel),
        }
    }

    /// The session's `statement_timeout`.
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.settings.lock().ok().and_then(|s| s.statement_timeout)
    }

    /// Whether `plan` may run over the executors: not when it reads Delta
    /// tables or changes them other than by appending (delta-rs' own
    /// execution plans cannot be shipped), nor when it calls functions only
    /// this session knows.
    fn distributable(&self, plan: &LogicalPlan) -> bool {
        !loch_catalog::keeps_delta_on_coordinator(plan) && !uses_session_functions(plan)
    }

    /// The state to plan `plan` with: the session's (distributed when there
    /// are executors) when [`Self::distributable`] and its logical
    /// optimization succeeds there (see `undistributed`), else the
    /// single-process one.
    pub(crate) fn planning_state(&self, plan: &LogicalPlan) -> datafusion::execution::SessionState {
        let state = self.ctx.state();
        if self.engine.is_distributed()
            && (!self.distributable(plan) || state.optimize(plan).is_err())
        {
            undistributed(state)
        } else {
            state
        }
    }

    /// `EXPLAIN` with executors: DataFusion's own EXPLAIN plans with its
    /// default physical planner, which never distributes, so Loch plans the
    /// statement the way it would run and shows the stages, their tasks and
    /// where the scan tasks go.
    async fn explain_distributed(&self, plan: &LogicalPlan) -> Result<Output, LochError> {
        let state = self.ctx.state();
        let physical = state.create_physical_plan(plan).await?;
        let mut text = datafusion_distributed::display_plan_ascii(physical.as_ref(), false);
        let urls = datafusion_distributed::DistributedGetterExt::get_distributed_worker_resolver(
            state.config(),
        )
        .and_then(|r| r.get_urls())
        .unwrap_or_default();
        let stages = crate::cluster::placement::describe(&physical, &urls);
        if stages.is_empty() {
            text.push_str("Runs on the coordinator: input too small to distribute\n");
        } else {
            text.push_str(&format!(
                "Placement over {} live executor(s):\n",
                urls.len()
            ));
            for line in stages {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("plan_type", DataType::Utf8, false),
            Field::new("plan", DataType::Utf8, false),
        ]));
        text_rows(schema, vec![vec!["physical_plan"], vec![&text]])
    }

    /// Wraps a result stream so a cancel request or `statement_timeout`
    /// stops it with SQLSTATE 57014.
    fn guard(
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

    fn set(&self, name: &str, value: Option<String>) -> Result<(), LochError> {
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
            None => default_settings(&self.user, "")
                .remove(&name)
                .unwrap_or_default(),
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
            "timezone" => {
                let state_ref = self.ctx.state_ref();
                let mut state = state_ref.write();
                state.config_mut().options_mut().execution.time_zone = Some(value.clone());
            }
            crate::results::USE_CACHED_RESULT => {
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

    fn reset_all(&self) -> Result<(), LochError> {
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

    fn show(&self, name: &str) -> Result<Output, LochError> {
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
}

/// `statement_timeout` values: `0` (off), plain milliseconds, or a number
/// with a unit (`ms`, `s`, `min`, `h`). `None` when it does not parse.
fn parse_timeout(value: &str) -> Option<Option<Duration>> {
    let v = value.trim().to_ascii_lowercase();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => num,
        "s" => num * 1000.0,
        "min" => num * 60_000.0,
        "h" => num * 3_600_000.0,
        "d" => num * 86_400_000.0,
        _ => return None,
    };
    if ms < 0.0 {
        return None;
    }
    Some((ms > 0.0).then(|| Duration::from_micros((ms * 1000.0) as u64)))
}

/// A statement parsed and planned once, to run later with parameters.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What was parsed.
    pub command: Command,
    /// The DataFusion plan, with `$n` placeholders, for planned statements.
    pub plan: Option<LogicalPlan>,
    /// Parameter types in `$1..$n` order (`None` when the plan does not fix
    /// one: such a parameter takes the type of the value bound to it).
    pub param_types: Vec<Option<DataType>>,
    /// The schema of the rows as the user will get them: after row filters
    /// and column masks, which can make a column nullable.
    pub rows_schema: Option<SchemaRef>,
}

impl Prepared {
    /// The schema of the rows it answers with; `None` for statements that
    /// answer with a command tag only.
    pub fn result_schema(&self) -> Option<SchemaRef> {
        if let Some(schema) = command_schema(&self.command) {
            return Some(schema);
        }
        match &self.plan {
            Some(plan) if returns_rows(plan) => self
                .rows_schema
                .clone()
                .or_else(|| Some(Arc::new(plan.schema().as_arrow().clone()))),
            Some(_) => None,
            None => self.rows_schema.clone(),
        }
    }
}

/// Whether `plan` calls a function only the session knows (the client
/// catalog functions, `current_setting`, …): executors could not decode
/// it, so such a plan runs on the coordinator.
fn uses_session_functions(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    static BUILTIN: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            datafusion::execution::session_state::SessionStateBuilder::new()
                .with_default_features()
                .build()
                .scalar_functions()
                .keys()
                .cloned()
                .collect()
        });
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        let _ = node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && !BUILTIN.contains(f.func.name())
                {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Where a Flight SQL client reads a query's rows ([`Session::flight_rows`]).
pub enum FlightRows {
    /// The kept result.
    Kept(Arc<CachedResult>),
    /// The query as it runs over the executors, for direct endpoints.
    Planned(Arc<dyn ExecutionPlan>, Box<SessionState>),
    /// Through the coordinator, planned already.
    Ready(Box<PlannedRows>),
    /// Through the coordinator, planned when the ticket is redeemed.
    Coordinator,
}

/// A query authorized and planned by [`Session::flight_rows`], to run when
/// its ticket is redeemed ([`Session::run_planned`]).
pub struct PlannedRows {
    /// The plan with its policies, and the state it was planned with (to
    /// plan again if an executor is lost).
    df: DataFrame,
    schema: SchemaRef,
    physical: Arc<dyn ExecutionPlan>,
    /// Where its result is kept as it streams, when it may be.
    keep: Option<(Arc<ResultCache>, ResultKey)>,
}

/// What the result cache does for a query ([`Session::cache_plan`]).
enum Cached {
    /// Its result, kept.
    Hit(Arc<CachedResult>),
    /// Run it, collecting its result under `key`.
    Collect {
        cache: Arc<ResultCache>,
        key: ResultKey,
        physical: Arc<dyn ExecutionPlan>,
    },
    /// Run it; its result will not be kept.
    Run(Arc<dyn ExecutionPlan>),
}

/// Whether a boolean setting's value means on (PostgreSQL's spellings).
fn is_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "on" | "true" | "yes" | "1" | "t" | "y"
    )
}

/// The output of a command that returns no rows.
fn command_done(tag: String) -> Output {
    Output::Command { tag, rows: None }
}

/// Values bound to a prepared statement, cast to the types its plan
/// expects (a client may send an int64 for an int32 column, say).
pub fn bind_values(
    param_types: &[Option<DataType>],
    values: Vec<ScalarValue>,
) -> Result<ParamValues, LochError> {
    if values.len() != param_types.len() {
        return Err(LochError::InvalidParameter(format!(
            "the statement takes {} parameters, {} were bound",
            param_types.len(),
            values.len()
        )));
    }
    let values = values
        .into_iter()
        .zip(param_types)
        .enumerate()
        .map(|(i, (value, ty))| match ty {
            Some(ty) if value.data_type() != *ty => value.cast_to(ty).map_err(|e| {
                LochError::InvalidParameter(format!(
                    "parameter ${} cannot be used as {ty}: {}",
                    i + 1,
                    crate::error::LochError::from(e).message()
                ))
            }),
            _ => Ok(value),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParamValues::from(values))
}

/// The most parameters a statement may have (PostgreSQL's limit).
pub const MAX_PARAMETERS: usize = 65_535;

/// `$1..$n` parameter types of a plan, in order.
pub fn ordered_parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, LochError> {
    let types = plan.get_parameter_types()?;
    let mut indexed: Vec<(usize, Option<DataType>)> = Vec::with_capacity(types.len());
    for (name, ty) in types {
        let index = name
            .trim_start_matches('$')
            .parse::<usize>()
            .map_err(|_| LochError::NotSupported(format!("named parameter {name}")))?;
        indexed.push((index, ty));
    }
    indexed.sort_by_key(|(i, _)| *i);
    let count = indexed.last().map(|(i, _)| *i).unwrap_or(0);
    // PostgreSQL's own limit; without it `$4000000000` would allocate
    // gigabytes below.
    if count > MAX_PARAMETERS {
        return Err(LochError::TooMany(format!(
            "a statement may have at most {MAX_PARAMETERS} parameters, not ${count}"
        )));
    }
    let mut ordered = vec![None; count];
    for (i, ty) in indexed {
        if i >= 1 {
            ordered[i - 1] = ty;
        }
    }
    Ok(ordered)
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

/// True for plans that answer with rows (queries, `EXPLAIN`), false for DDL,
/// DML and statements that answer with a command tag.
pub fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Statement(_)
    )
}

/// Whether `plan` only reads tables and filters or computes row by row.
fn row_by_row(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    !plan
        .exists(|node| {
            Ok(!matches!(
                node,
                LogicalPlan::Projection(_)
                    | LogicalPlan::Filter(_)
                    | LogicalPlan::TableScan(_)
                    | LogicalPlan::SubqueryAlias(_)
            ))
        })
        .unwrap_or(true)
}

/// libpq `options`: `-c name=value` pairs (also `--name=value`).
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let pair = if word == "-c" {
            words.next()
        } else if let Some(rest) = word.strip_prefix("-c") {
            Some(rest)
        } else {
            word.strip_prefix("--")
        };
        if let Some((k, v)) = pair.and_then(|p| p.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
    out
}

/// A one-batch result of text columns.
pub(crate) fn text_rows(schema: SchemaRef, columns: Vec<Vec<&str>>) -> Result<Output, LochError> {
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|values| Arc::new(StringArray::from(values)) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| LochError::Internal(e.to_string()))?;
    let stream = RecordBatchStreamAdapter::new(
        schema.clone(),
        futures::stream::iter([Ok::<_, DataFusionError>(batch)]),
    );
    Ok(Output::Rows {
        schema,
        stream: Box::pin(stream),
    })
}

/// The cancel flag of one session; a cancel request sets it and wakes the
/// running statement's stream.
#[derive(Debug, Default)]
pub struct CancelState {
    requested: AtomicBool,
    waker: AtomicWaker,
}

impl CancelState {
    /// Asks the running statement (if any) to stop.
    pub fn cancel(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Clears the flag before a new statement.
    pub fn reset(&self) {
        self.requested.store(false, Ordering::SeqCst);
    }

    /// True once a cancel was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// A result stream that ends with 57014 on cancel or timeout. Dropping the
/// inner stream stops DataFusion's work for the statement.
struct Guarded {
    inner: SendableRecordBatchStream,
    cancel: Arc<CancelState>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl Stream for Guarded {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.cancel.waker.register(cx.waker());
        let stop = if self.cancel.is_requested() {
            Some(LochError::Canceled)
        } else if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            Some(LochError::StatementTimeout)
        } else {
            None
        };
        if let Some(error) = stop {
            self.done = true;
            // Free the plan's resources now, not when the client goes away.
            self.inner = Box::pin(RecordBatchStreamAdapter::new(
                self.inner.schema(),
                futures::stream::empty(),
            ));
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(error)))));
        }
        let next = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            self.done = true;
        }
        next
    }
}

/// `batch`'s columns cast to the types of `schema`'s fields, in order;
/// columns already of the right type are shared, not copied. Both front
/// doors use it to send what they announced.
pub fn cast_columns(
    batch: &arrow::record_batch::RecordBatch,
    schema: &arrow::datatypes::Schema,
) -> Result<Vec<arrow::array::ArrayRef>, arrow::error::ArrowError> {
    batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                arrow::compute::cast(column, field.data_type())
            }
        })
        .collect()
}

/// How many times a query is planned again after losing executors.
const MAX_REPLANS: usize = 2;

/// Runs a query; when it fails calling an executor before it produced a
/// row, and one of the executors it was planned on is gone by then (lost to
/// the heartbeat timeout, or not answering when probed), the query
/// is planned again over the executors left and run from the start (at most
/// [`MAX_REPLANS`] times). Rows once sent are never taken back: a failure
/// after the first row ends the query with the error (58000).
///
/// `first`, when given, is the first attempt already started (from a
/// physical plan made for the result cache).
fn replanning(
    engine: &Engine,
    df: DataFrame,
    first: Option<SendableRecordBatchStream>,
) -> SendableRecordBatchStream {
    let Some(check) = engine.executor_check().cloned() else {
        return first.unwrap_or_else(|| engine.execute(df));
    };
    let planned_on = check.live();
    let first = first.unwrap_or_else(|| engine.execute(df.clone()));
    let schema = first.schema();
    struct Attempt {
        stream: SendableRecordBatchStream,
        /// The live executors when this attempt was planned.
        planned_on: Vec<String>,
        produced: bool,
        replans: usize,
        engine: Engine,
        check: Arc<dyn ExecutorCheck>,
        df: DataFrame,
    }
    /// Whether an executor the attempt may have used is gone now.
    async fn lost_one_of(check: &dyn ExecutorCheck, planned_on: &[String]) -> bool {
        check.drop_unreachable().await;
        let live = check.live();
        let lost = planned_on.iter().any(|id| !live.contains(id));
        if !lost {
            tracing::warn!(
                ?planned_on,
                "an executor call failed, but every executor still answers; not planning again"
            );
        }
        lost
    }
    let attempts = futures::stream::unfold(
        Attempt {
            stream: first,
            planned_on,
            produced: false,
            replans: 0,
            engine: engine.clone(),
            check,
            df,
        },
        |mut at| async move {
            loop {
                match at.stream.next().await {
                    Some(Ok(batch)) => {
                        at.produced |= batch.num_rows() > 0;
                        return Some((Ok(batch), at));
                    }
                    Some(Err(e))
                        if !at.produced
                            && at.replans < MAX_REPLANS
                            && crate::error::classify_datafusion(&e) == "58000"
                            && lost_one_of(at.check.as_ref(), &at.planned_on).await =>
                    {
                        at.replans += 1;
                        tracing::warn!(
                            error = %e,
                            replans = at.replans,
                            "executor lost before the first row; planning the query again"
                        );
                        at.planned_on = at.check.live();
                        at.stream = at.engine.execute(at.df.clone());
                    }
                    other => return other.map(|item| (item, at)),
                }
            }
        },
    );
    Box::pin(RecordBatchStreamAdapter::new(schema, attempts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_like_postgres() {
        assert_eq!(parse_timeout("0"), Some(None));
        assert_eq!(
            parse_timeout("300ms"),
            Some(Some(Duration::from_millis(300)))
        );
        assert_eq!(
            parse_timeout("1500"),
            Some(Some(Duration::from_millis(1500)))
        );
        assert_eq!(parse_timeout("2s"), Some(Some(Duration::from_secs(2))));
        assert_eq!(parse_timeout("1min"), Some(Some(Duration::from_secs(60))));
        assert_eq!(parse_timeout("soon"), None);
    }

    #[test]
    fn libpq_options_are_split() {
        assert_eq!(
            parse_options("-c search_path=tpch -cstatement_timeout=5s --application-name=x"),
            vec![
                ("search_path".to_string(), "tpch".to_string()),
                ("statement_timeout".to_string(), "5s".to_string()),
                ("application_name".to_string(), "x".to_string()),
            ]
        );
    }
}
