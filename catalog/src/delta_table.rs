//! Loch's table provider for Delta tables: delta-rs' scan and `INSERT`, plus
//! the row changes DataFusion plans but leaves to the provider (`UPDATE`,
//! `DELETE`, `TRUNCATE`), carried out by delta-rs' own operations, one
//! commit each. A provider for an older version of a table
//! (time travel) reads that version and refuses changes.
//!
//! `MERGE INTO` is delta-rs' merge too, driven from DataFusion's logical
//! plan of the statement: the `USING` relation stays a logical plan (delta-rs
//! may read it more than once), and the `ON` and `WHEN` expressions are
//! DataFusion's, requalified to the aliases delta-rs joins under.
//!
//! The change runs when its plan executes, not when it is planned, so
//! `EXPLAIN UPDATE …` changes nothing.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::UInt64Array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, Statistics, TableReference};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::dml::{MergeIntoAction, MergeIntoClauseKind, MergeIntoOp};
use datafusion::logical_expr::{Expr, LogicalPlan, MergeIntoClause, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::DataFrame;
use deltalake::DeltaTable;

use crate::delta_write::{
    CommitTarget, DeltaCommitExec, DeltaWriteExec, WriteSpec, count_schema, one_child,
};

/// A Delta table as DataFusion sees it in Loch.
#[derive(Debug)]
pub struct LochDeltaTable {
    /// delta-rs' provider: scans and `INSERT`.
    scan: Arc<dyn TableProvider>,
    /// The table at the version `scan` reads, for the operations.
    table: DeltaTable,
    /// `schema.name`, for messages.
    name: String,
    /// Set when this is an older version (time travel): read-only.
    version: Option<String>,
}

impl LochDeltaTable {
    pub(crate) fn new(
        scan: Arc<dyn TableProvider>,
        table: DeltaTable,
        name: String,
        version: Option<String>,
    ) -> Self {
        LochDeltaTable {
            scan,
            table,
            name,
            version,
        }
    }

    /// The table's location and the version this provider reads.
    pub fn read_version(&self) -> Option<String> {
        let version = self.table.version()?;
        Some(format!("{}@{version}", self.table.table_url()))
    }

    fn writable(&self) -> DfResult<()> {
        match &self.version {
            None => Ok(()),
            Some(version) => Err(DataFusionError::External(Box::new(
                crate::error::CatalogError::PastVersion(format!("{} at {version}", self.name)),
            ))),
        }
    }

    fn change(&self, state: &dyn Session, change: Change) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.writable()?;
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .cloned()
            .ok_or_else(|| {
                DataFusionError::Internal("Delta changes need DataFusion's SessionState".into())
            })?;
        Ok(Arc::new(DeltaChangeExec::new(
            self.table.clone(),
            self.name.clone(),
            change,
            state,
        )))
    }

    /// The plan of a `MERGE INTO` this table: `target` is how the statement
    /// named the table (DataFusion qualifies target columns with it),
    /// `source` the `USING` relation.
    pub fn merge_plan(
        &self,
        state: &SessionState,
        target: &TableReference,
        source: LogicalPlan,
        op: &MergeIntoOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let requalify = |expr: &Expr| requalify(expr.clone(), target);
        let on = requalify(&op.on)?;
        let columns: Vec<String> = self
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut clauses = Vec::with_capacity(op.clauses.len());
        for clause in &op.clauses {
            let predicate = clause.predicate.as_ref().map(requalify).transpose()?;
            let action = match &clause.action {
                MergeIntoAction::Update(assignments) => MergeAction::Update(
                    assignments
                        .iter()
                        .map(|(column, value)| Ok((column.clone(), requalify(value)?)))
                        .collect::<DfResult<_>>()?,
                ),
                MergeIntoAction::Insert {
                    columns: named,
                    values,
                } => {
                    let named = if named.is_empty() { &columns } else { named };
                    MergeAction::Insert(
                        named
                            .iter()
                            .zip(values)
                            .map(|(column, value)| Ok((column.clone(), requalify(value)?)))
                            .collect::<DfResult<_>>()?,
                    )
                }
                MergeIntoAction::Delete => MergeAction::Delete,
            };
            clauses.push(MergeClause {
                kind: clause.kind,
                predicate,
                action,
            });
        }
        self.change(
            state,
            Change::Merge {
                source: Box::new(source),
                on,
                clauses,
            },
        )
    }
}

/// The qualifier delta-rs gives the `USING` relation's columns.
const MERGE_SOURCE: &str = "source";
/// The qualifier delta-rs gives the target table's columns.
const MERGE_TARGET: &str = "target";

/// `expr` with the target table's columns qualified as [`MERGE_TARGET`] and
/// every other qualified column as [`MERGE_SOURCE`] (the `USING` relation is
/// one table or one aliased subquery, so all its columns share a qualifier).
fn requalify(expr: Expr, target: &TableReference) -> DfResult<Expr> {
    expr.transform(|e| match e {
        Expr::Column(Column {
            relation: Some(relation),
            name,
            spans,
        }) => {
            let alias = if relation == *target {
                MERGE_TARGET
            } else {
                MERGE_SOURCE
            };
            Ok(Transformed::yes(Expr::Column(Column {
                relation: Some(TableReference::bare(alias)),
                name,
                spans,
            })))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

#[async_trait]
impl TableProvider for LochDeltaTable {
    fn schema(&self) -> SchemaRef {
        self.scan.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.scan.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // delta-rs 1.1 claims a filter without columns (`NULL > 10`, which
        // DataFusion makes when it pushes `s > 10` through `NULL AS s`)
        // exactly but does not apply it: every row came back. DataFusion
        // keeps such filters above the scan instead.
        let mut answers = self.scan.supports_filters_pushdown(filters)?;
        for (answer, filter) in answers.iter_mut().zip(filters) {
            if filter.column_refs().is_empty() {
                *answer = TableProviderFilterPushDown::Unsupported;
            }
        }
        Ok(answers)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.scan.statistics()
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.writable()?;
        let lock = append_lock(self.table.table_url().as_str());
        if insert_op == InsertOp::Append
            && let Some(spec) = WriteSpec::of(&self.table)
        {
            // Loch's writer: files written where the rows are (executors
            // when the input is distributed), one commit on the coordinator.
            let partition_by = spec.partition_columns.clone();
            let write = Arc::new(DeltaWriteExec::new(input, Arc::new(spec)));
            let target = CommitTarget::Append {
                table: self.table.clone(),
                partition_columns: partition_by,
                lock,
            };
            return Ok(Arc::new(DeltaCommitExec::new(write, Arc::new(target))));
        }
        let sink = self.scan.insert_into(state, input, insert_op).await?;
        Ok(Arc::new(AppendInTurn {
            lock,
            inner: sink,
            table: self.table.clone(),
        }))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.change(state, Change::Delete { filters })
    }

    async fn truncate(&self, state: &dyn Session) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.change(
            state,
            Change::Delete {
                filters: Vec::new(),
            },
        )
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.change(
            state,
            Change::Update {
                assignments,
                filters,
            },
        )
    }

    async fn merge_into(
        &self,
        _state: &dyn Session,
        _source: Arc<dyn ExecutionPlan>,
        _merge_schema: DFSchemaRef,
        _on: Expr,
        _clauses: Vec<MergeIntoClause>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Loch runs MERGE from the logical plan (`merge_plan`): delta-rs
        // needs the source as a DataFrame, not a physical plan. Only
        // `EXPLAIN MERGE …` gets here.
        Err(DataFusionError::NotImplemented(format!(
            "EXPLAIN of MERGE INTO {}: the merge is planned by delta-rs when it runs",
            self.name
        )))
    }
}

/// One row change, as DataFusion planned it.
#[derive(Debug)]
enum Change {
    Delete {
        filters: Vec<Expr>,
    },
    Update {
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    },
    /// `MERGE INTO`, expressions already requalified for delta-rs.
    Merge {
        source: Box<LogicalPlan>,
        on: Expr,
        clauses: Vec<MergeClause>,
    },
}

/// One `WHEN` clause of a `MERGE`.
#[derive(Debug)]
struct MergeClause {
    kind: MergeIntoClauseKind,
    predicate: Option<Expr>,
    action: MergeAction,
}

/// What a `WHEN` clause does: (column, value) pairs for updates and inserts.
#[derive(Debug)]
enum MergeAction {
    Update(Vec<(String, Expr)>),
    Insert(Vec<(String, Expr)>),
    Delete,
}

/// Carries out a [`Change`] when executed; answers one row, `count`.
struct DeltaChangeExec {
    table: DeltaTable,
    name: String,
    change: Arc<Change>,
    state: SessionState,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for DeltaChangeExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeltaChangeExec")
            .field("table", &self.name)
            .field("change", &self.change)
            .finish()
    }
}

impl DeltaChangeExec {
    fn new(table: DeltaTable, name: String, change: Change, state: SessionState) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        DeltaChangeExec {
            table,
            name,
            change: Arc::new(change),
            state,
            properties: Arc::new(properties),
        }
    }

    fn kind(&self) -> &'static str {
        match self.change.as_ref() {
            Change::Delete { .. } => "DELETE",
            Change::Update { .. } => "UPDATE",
            Change::Merge { .. } => "MERGE",
        }
    }
}

impl DisplayAs for DeltaChangeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DeltaChangeExec: {} {}", self.kind(), self.name)
    }
}

impl ExecutionPlan for DeltaChangeExec {
    fn name(&self) -> &str {
        "DeltaChangeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "DeltaChangeExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DeltaChangeExec has one partition, not {partition}"
            )));
        }
        let table = self.table.clone();
        let change = Arc::clone(&self.change);
        let state = self.state.clone();
        let schema = count_schema();
        let out = Arc::clone(&schema);
        let batch = async move {
            let rows = apply(table, &change, state)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(RecordBatch::try_new(
                out,
                vec![Arc::new(UInt64Array::from(vec![rows]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(batch),
        )))
    }
}

/// ANDs `filters`; `None` when there are none (the whole table).
fn conjunction(filters: &[Expr]) -> Option<Expr> {
    filters.iter().cloned().reduce(Expr::and)
}

/// Runs `change` through delta-rs; the rows it touched.
async fn apply(
    table: DeltaTable,
    change: &Change,
    state: SessionState,
) -> Result<u64, deltalake::DeltaTableError> {
    let session = Arc::new(state);
    match change {
        Change::Delete { filters } => {
            let mut delete = table.delete().with_session_state(session);
            if let Some(predicate) = conjunction(filters) {
                delete = delete.with_predicate(predicate);
            }
            let (_, metrics) = delete.await?;
            Ok(metrics.num_deleted_rows.unwrap_or(0) as u64)
        }
        Change::Update {
            assignments,
            filters,
        } => {
            let mut update = table.update().with_session_state(session);
            if let Some(predicate) = conjunction(filters) {
                update = update.with_predicate(predicate);
            }
            for (column, value) in assignments {
                update = update.with_update(column.as_str(), value.clone());
            }
            let (_, metrics) = update.await?;
            Ok(metrics.num_updated_rows as u64)
        }
        Change::Merge {
            source,
            on,
            clauses,
        } => {
            let source = DataFrame::new(session.as_ref().clone(), source.as_ref().clone());
            let mut merge = table
                .merge(source, on.clone())
                .with_source_alias(MERGE_SOURCE)
                .with_target_alias(MERGE_TARGET)
                .with_session_state(session);
            for clause in clauses {
                merge = add_clause(merge, clause)?;
            }
            let (_, metrics) = merge.await?;
            Ok((metrics.num_target_rows_inserted
                + metrics.num_target_rows_updated
                + metrics.num_target_rows_deleted) as u64)
        }
    }
}

/// An update clause of delta-rs' merge with its condition and assignments.
fn set_all(
    mut update: deltalake::operations::merge::UpdateBuilder,
    predicate: Option<Expr>,
    assignments: &[(String, Expr)],
) -> deltalake::operations::merge::UpdateBuilder {
    if let Some(p) = predicate {
        update = update.predicate(p);
    }
    for (c, v) in assignments {
        update = update.update(Column::new_unqualified(c.clone()), v.clone());
    }
    update
}

/// Adds one `WHEN` clause to delta-rs' merge, in statement order (delta-rs
/// applies the first clause of a kind whose predicate holds, as SQL does).
fn add_clause(
    merge: deltalake::operations::merge::MergeBuilder,
    clause: &MergeClause,
) -> Result<deltalake::operations::merge::MergeBuilder, deltalake::DeltaTableError> {
    let column = |name: &String| Column::new_unqualified(name.clone());
    let predicate = clause.predicate.clone();
    let not_matched = clause.kind.is_not_matched_by_target();
    match (&clause.action, clause.kind) {
        (MergeAction::Update(assignments), MergeIntoClauseKind::Matched) => {
            merge.when_matched_update(|update| set_all(update, predicate, assignments))
        }
        (MergeAction::Delete, MergeIntoClauseKind::Matched) => {
            merge.when_matched_delete(|delete| match predicate {
                Some(p) => delete.predicate(p),
                None => delete,
            })
        }
        (MergeAction::Insert(values), _) if not_matched => {
            merge.when_not_matched_insert(|mut insert| {
                if let Some(p) = predicate {
                    insert = insert.predicate(p);
                }
                for (c, v) in values {
                    insert = insert.set(column(c), v.clone());
                }
                insert
            })
        }
        (MergeAction::Update(assignments), MergeIntoClauseKind::NotMatchedBySource) => merge
            .when_not_matched_by_source_update(|update| set_all(update, predicate, assignments)),
        (MergeAction::Delete, MergeIntoClauseKind::NotMatchedBySource) => merge
            .when_not_matched_by_source_delete(|delete| match predicate {
                Some(p) => delete.predicate(p),
                None => delete,
            }),
        (action, kind) => Err(deltalake::DeltaTableError::Generic(format!(
            "MERGE: WHEN {kind:?} cannot {}",
            match action {
                MergeAction::Update(_) => "UPDATE",
                MergeAction::Insert(_) => "INSERT",
                MergeAction::Delete => "DELETE",
            }
        ))),
    }
}

/// The lock `INSERT`s into the Delta table at `location` take in turn.
fn append_lock(location: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: std::sync::OnceLock<Locks> = std::sync::OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    match locks.lock() {
        Ok(mut map) => Arc::clone(map.entry(location.to_string()).or_default()),
        // A panic while holding the map: a fresh lock is still correct
        // (delta-rs' commit retries are the fallback).
        Err(_) => Arc::new(tokio::sync::Mutex::new(())),
    }
}

/// delta-rs' `INSERT` plan, run while holding its table's append lock,
/// then a checkpoint when one is due.
///
/// delta-rs commits an append by trying the next version and, when another
/// writer took it, checking for conflicts and trying again, at most 15
/// times. Eight sessions appending to one table at once make a writer lose
/// that race 16 times in a row (RELIABILITY.md's E1 saw it), and its
/// statement fails with 40001 although appends never conflict. Writers in
/// this process therefore append to one table in turn; writers elsewhere
/// (other engines) still meet delta-rs' retries.
///
/// delta-rs' `INSERT` sink commits without its post-commit hook, so it
/// never writes a checkpoint: every later read replays the whole log, and
/// an `INSERT` took 24 ms at version 50 and 170 ms at version 450. The
/// checkpoint is written here instead, every `delta.checkpointInterval`
/// versions as delta-rs' other operations do.
#[derive(Debug)]
struct AppendInTurn {
    inner: Arc<dyn ExecutionPlan>,
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The table as planned; brought up to the new version afterwards.
    table: DeltaTable,
}

/// Writes a checkpoint of `table` when the versions committed since it was
/// read cross a multiple of its checkpoint interval.
async fn checkpoint_if_due(mut table: DeltaTable) -> Result<(), deltalake::DeltaTableError> {
    use deltalake::table::config::TablePropertiesExt;
    let before = table.version().unwrap_or(0);
    table.update_incremental(None).await?;
    let Some(after) = table.version() else {
        return Ok(());
    };
    let interval = table.snapshot()?.table_config().checkpoint_interval().get();
    if (after + 1) / interval > (before + 1) / interval {
        deltalake::checkpoints::create_checkpoint(&table, None).await?;
    }
    Ok(())
}

impl DisplayAs for AppendInTurn {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "AppendInTurn")
    }
}

impl ExecutionPlan for AppendInTurn {
    fn name(&self) -> &str {
        "AppendInTurn"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.inner]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(AppendInTurn {
            inner: one_child("AppendInTurn", children)?,
            lock: Arc::clone(&self.lock),
            table: self.table.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        use futures::TryStreamExt;
        let inner = Arc::clone(&self.inner);
        let lock = Arc::clone(&self.lock);
        let table = self.table.clone();
        let schema = inner.schema();
        let stream = futures::stream::once(async move {
            let turn = lock.lock_owned().await;
            // The sink answers one row (the count) once it has committed.
            let answer: Vec<RecordBatch> = inner.execute(partition, context)?.try_collect().await?;
            // The rows are committed whatever happens to the checkpoint,
            // which the next INSERT tries again.
            if let Err(e) = checkpoint_if_due(table).await {
                tracing::warn!(error = %e, "writing a Delta checkpoint after INSERT failed");
            }
            drop(turn);
            Ok::<_, DataFusionError>(futures::stream::iter(answer.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
