//! Running a query that passed the access check (an `Authorized` plan; a
//! Flight SQL query is checked in [`Session::flight_rows`]): the result
//! cache, whether it runs over the executors or on the coordinator,
//! `EXPLAIN` with stages and placement, and where a Flight SQL client reads
//! its rows.

pub mod params;
pub mod replan;

use std::sync::Arc;

use crate::cache::result_cache::{CachedResult, ResultCache, ResultKey};
use crate::engine::undistributed;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::DataFrame;
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;

use crate::access::Authorized;
use crate::admission::{Permit, needs_admission};
use crate::error::LochError;
use crate::session::settings::is_on;
use crate::session::{CancelState, Output, Session, text_rows};
use loch_executor::memory::QueryOptions;
use replan::replanning;

impl Session {
    /// Plans a DataFusion statement (parameters stay as placeholders).
    pub async fn plan(&self, statement: DfStatement) -> Result<LogicalPlan, LochError> {
        Ok(self.context().state().statement_to_plan(statement).await?)
    }

    /// Runs a query or a change of table data (`INSERT`, `UPDATE`,
    /// `DELETE`, `MERGE`) that passed the access check, with its row
    /// filters and column masks in it; `cancel` can stop it, `tag` is the
    /// command tag for statements that return no rows.
    pub(crate) async fn run_plan(
        &self,
        plan: Authorized,
        tag: String,
        cancel: Arc<CancelState>,
    ) -> Result<Output, LochError> {
        let plan = plan.into_plan();
        if let LogicalPlan::Explain(explain) = &plan
            && !explain.verbose
            && self.engine().is_distributed()
        {
            return self.explain_distributed(&explain.plan).await;
        }
        // Its turn in the admission queue, held until its rows are read.
        let permit = self.admit(&plan, &cancel).await?;
        if let LogicalPlan::Dml(dml) = &plan
            && matches!(dml.op, WriteOp::MergeInto(_))
        {
            // delta-rs merges from the logical plan: DataFusion's physical
            // planner would hand the table a physical source.
            let state = self.query_state();
            let merge = loch_catalog::merge_plan(dml, &state)?;
            let stream = self.engine().execute_plan(merge, state.task_ctx());
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
                // Kept results are read from memory: no turn needed.
                Some(Cached::Collect {
                    cache,
                    key,
                    physical,
                }) => (physical, Some((cache, key))),
                Some(Cached::Run(physical)) => (physical, None),
                None => {
                    let stream = self.guard(replanning(self.engine(), df, None), cancel);
                    let stream = holding(stream, permit);
                    return Ok(Output::Rows { schema, stream });
                }
            };
            let planned = PlannedRows {
                df,
                schema,
                physical,
                keep,
            };
            return Ok(self.start_planned(planned, cancel, permit));
        }
        let df = if is_dml {
            // A DML statement: distributed unless
            // `planning_state` says it must run on the coordinator.
            DataFrame::new(self.planning_state(&plan), plan)
        } else if self.engine().is_distributed() && !self.distributable(&plan) {
            DataFrame::new(undistributed(self.query_state()), plan)
        } else {
            // Statements DataFusion applies to the session itself.
            self.context().execute_logical_plan(plan).await?
        };
        let mut stream = self.guard(self.engine().execute(df), cancel);
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
        let cache = self.engine().result_cache()?;
        is_on(&self.setting(crate::cache::key::USE_CACHED_RESULT)).then_some(cache)
    }

    /// What the result cache does for the query `plan`, planned with
    /// `state`: its kept result, or its physical plan to run (collecting
    /// the result when it may be kept). `None` when the cache is off, the
    /// query is not one whose result may be kept, or planning failed (the
    /// usual path plans it again and reports the error). The lookup counts
    /// as a hit or a miss.
    async fn cache_plan(&self, state: &SessionState, plan: &LogicalPlan) -> Option<Cached> {
        let cache = self.result_cache()?;
        if !crate::cache::key::cacheable(plan) || uses_session_functions(plan) {
            return None;
        }
        let optimized = state.optimize(plan).ok()?;
        let physical = state
            .query_planner()
            .create_physical_plan(&optimized, state)
            .await
            .ok()?;
        let epoch = self.engine().catalog().epoch();
        let Some(key) = crate::cache::key::key(self.user(), epoch, state, &optimized, &physical)
        else {
            return Some(Cached::Run(physical));
        };
        if let Some(result) = cache.get(&key) {
            return Some(Cached::Hit(result));
        }
        if !cache.admits(&key, crate::cache::key::estimate(&physical)) {
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
        let direct = direct && self.engine().is_distributed();
        if (self.result_cache().is_none() && !direct) || !row_by_row(&plan) {
            return Ok(FlightRows::Coordinator);
        }
        let plan = crate::access::protect(self, plan)?.into_plan();
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

    /// Runs a query [`Session::flight_rows`] planned, when its turn in the
    /// admission queue comes.
    pub async fn run_planned(
        &self,
        planned: PlannedRows,
        cancel: Arc<CancelState>,
    ) -> Result<Output, LochError> {
        let permit = self.admit(planned.df.logical_plan(), &cancel).await?;
        Ok(self.start_planned(planned, cancel, permit))
    }

    /// Starts a planned query that has its turn (`permit`, held until its
    /// rows are read).
    fn start_planned(
        &self,
        planned: PlannedRows,
        cancel: Arc<CancelState>,
        permit: Option<Permit>,
    ) -> Output {
        let PlannedRows {
            df,
            schema,
            physical,
            keep,
        } = planned;
        let first = self
            .engine()
            .execute_plan(physical, Arc::new(df.task_ctx()));
        let stream = replanning(self.engine(), df, Some(first));
        let stream = match keep {
            Some((cache, key)) => cache.capture(key, stream),
            None => stream,
        };
        Output::Rows {
            schema,
            stream: holding(self.guard(stream, cancel), permit),
        }
    }

    /// The session's state to run a query with: with the session's
    /// `memory_limit`, its own pool over the engine's
    /// ([`loch_executor::memory::QueryPool`]); executors get the limit with
    /// the query's stages.
    pub(crate) fn query_state(&self) -> SessionState {
        let state = self.context().state();
        let limit = state
            .config()
            .options()
            .extensions
            .get::<QueryOptions>()
            .map_or(0, |o| o.memory_limit);
        if limit == 0 {
            return state;
        }
        let runtime = loch_executor::memory::with_query_limit(state.runtime_env(), limit);
        datafusion::execution::SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime)
            .build()
    }

    /// Waits for `plan`'s turn in the admission queue, unless it only reads
    /// the catalog ([`needs_admission`]) or there is no queue; cancel and
    /// `statement_timeout` stop the wait.
    pub(crate) async fn admit(
        &self,
        plan: &LogicalPlan,
        cancel: &CancelState,
    ) -> Result<Option<Permit>, LochError> {
        let Some(line) = self.engine().admission() else {
            return Ok(None);
        };
        if !needs_admission(plan) {
            return Ok(None);
        }
        let deadline = self
            .statement_timeout()
            .map(|t| tokio::time::Instant::now() + t);
        let role_limit = self.role_concurrency();
        let shape = crate::admission::fingerprint(plan);
        line.admit(
            self.user(),
            role_limit,
            Some(shape),
            cancel.requested(),
            deadline,
        )
        .await
        .map(Some)
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
        let state = self.query_state();
        if self.engine().is_distributed()
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
        let state = self.context().state();
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

/// `stream`, keeping `permit` (a turn in the admission queue) until the
/// stream ends or is dropped.
fn holding(
    stream: datafusion::execution::SendableRecordBatchStream,
    permit: Option<Permit>,
) -> datafusion::execution::SendableRecordBatchStream {
    let Some(permit) = permit else {
        return stream;
    };
    let schema = stream.schema();
    Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            stream.map(move |batch| {
                let _turn = &permit;
                batch
            }),
        ),
    )
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
