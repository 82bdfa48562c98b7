//! What a logical plan does with Delta tables, for the coordinator's
//! choices: whether it must run on the coordinator
//! ([`keeps_delta_on_coordinator`]), which table versions it reads (part of
//! the result cache's keys, [`delta_versions`]), and the plan that carries
//! out a `MERGE INTO` ([`merge_plan`]).

use std::sync::Arc;

use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;

use crate::delta_table::LochDeltaTable;

/// The plan that carries out a `MERGE INTO` statement (`dml`'s op is
/// `MergeInto`); only Delta tables can be merged into.
pub fn merge_plan(
    dml: &datafusion::logical_expr::DmlStatement,
    state: &SessionState,
) -> std::result::Result<
    Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    datafusion::error::DataFusionError,
> {
    use datafusion::error::DataFusionError;
    let datafusion::logical_expr::WriteOp::MergeInto(op) = &dml.op else {
        return Err(DataFusionError::Internal(format!(
            "{} is not a MERGE",
            dml.op
        )));
    };
    let provider = datafusion::datasource::source_as_provider(&dml.target)?;
    let Some(delta) = provider.downcast_ref::<LochDeltaTable>() else {
        return Err(DataFusionError::NotImplemented(format!(
            "MERGE INTO {}: only Delta tables can be merged into",
            dml.table_name
        )));
    };
    delta.merge_plan(state, &dml.table_name, dml.input.as_ref().clone(), op)
}

/// True when `plan` has to run the single-process way, on the coordinator:
/// it reads a Delta table (delta-rs' scan cannot be sent to executors), or
/// changes one other than by appending (`UPDATE`, `DELETE`, `MERGE`,
/// `INSERT OVERWRITE` are delta-rs operations). Anywhere, subqueries
/// included. An append whose input reads no Delta table may distribute:
/// its files are written by [`crate::delta_write::DeltaWriteExec`] tasks.
pub fn keeps_delta_on_coordinator(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::WriteOp;
    use datafusion::logical_expr::dml::InsertOp;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        found = match node {
            LogicalPlan::TableScan(scan) => is_delta_source(&scan.source),
            LogicalPlan::Dml(dml) => {
                is_delta_source(&dml.target) && !matches!(dml.op, WriteOp::Insert(InsertOp::Append))
            }
            _ => false,
        };
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// The Delta tables `plan` reads, each as its location and the version
/// this statement reads (part of the result cache's keys: a new version
/// may change rows without changing which files are read, with deletion
/// vectors). `None` when one has no version.
pub fn delta_versions(plan: &LogicalPlan) -> Option<Vec<String>> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut versions = Some(Vec::new());
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
            && let Some(delta) = provider.downcast_ref::<LochDeltaTable>()
        {
            match (delta.read_version(), versions.as_mut()) {
                (Some(version), Some(list)) => list.push(version),
                _ => {
                    versions = None;
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    versions
}

fn is_delta_source(source: &Arc<dyn datafusion::logical_expr::TableSource>) -> bool {
    datafusion::datasource::source_as_provider(source)
        .is_ok_and(|provider| provider.is::<LochDeltaTable>())
}
