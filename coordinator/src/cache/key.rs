//! Keys of the result cache ([`crate::cache::result_cache`]).
//!
//! A result may be reused only if running the query again would give the
//! same rows. The key is a SHA-256 digest of everything those rows depend
//! on:
//!
//! - the user (a result holds what this user's grants, row filters and
//!   column masks let through; grants are checked before any lookup);
//! - the catalog's DDL epoch (a table dropped and created again over the
//!   same files with other options);
//! - the session's DataFusion settings (time zone, schema search path, …);
//! - the optimized logical plan with its schemas (literals, `now()` already
//!   folded to its value);
//! - every file the physical plan reads: store, path, size, modification
//!   time, ETag and byte range (listing tables list their files at every
//!   statement, so a file added, removed or rewritten changes the key);
//! - the version of every Delta table read (a new version can change rows
//!   without changing files, through deletion vectors).
//!
//! Queries that could answer differently with all of those equal are not
//! cached: volatile or stable functions (`random()`, `now()`), Loch's
//! session functions (`current_user`, `set_config`), and anything reading
//! other than files (system tables, `pg_catalog`, `VALUES` lists).

use std::sync::Arc;

use crate::cache::result_cache::ResultKey;
use datafusion::catalog::memory::DataSourceExec;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion_distributed::{DistributedLeafExec, NetworkBoundaryExt};

/// The session setting that turns the result cache off for a session
/// (Databricks SQL's name).
pub const USE_CACHED_RESULT: &str = "use_cached_result";

/// Whether `plan` (as planned, before optimization) is a query whose
/// result may be kept: it reads and computes, nothing that changes from
/// one run to the next.
pub fn cacheable(plan: &LogicalPlan) -> bool {
    if matches!(
        plan,
        LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
    ) {
        return false;
    }
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|node| {
        if matches!(
            node,
            LogicalPlan::Extension(_) | LogicalPlan::RecursiveQuery(_)
        ) {
            ok = false;
        }
        let _ = node.apply_expressions(|expr| {
            expr.apply(|e| {
                let varies = match e {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility != Volatility::Immutable
                    }
                    Expr::Placeholder(_) => true,
                    _ => false,
                };
                if varies {
                    ok = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    ok
}

/// The key of `plan`'s result (see the module documentation); `None` when
/// the plan reads something other than files.
pub fn key(
    user: &str,
    epoch: u64,
    state: &SessionState,
    optimized: &LogicalPlan,
    physical: &Arc<dyn ExecutionPlan>,
) -> Option<ResultKey> {
    let mut files = Vec::new();
    if !inputs(physical, &mut files) {
        return None;
    }
    let deltas = loch_catalog::delta_versions(optimized)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut part = |bytes: &[u8]| {
        digest.update(&(bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    };
    part(b"loch result v1");
    part(user.as_bytes());
    part(&epoch.to_le_bytes());
    for entry in state.config_options().entries() {
        part(entry.key.as_bytes());
        part(entry.value.as_deref().unwrap_or("\0").as_bytes());
    }
    part(optimized.display_indent_schema().to_string().as_bytes());
    for file in files.iter().chain(&deltas) {
        part(file.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.finish().as_ref());
    Some(key)
}

/// About how many bytes `plan`'s result takes, when its statistics know.
pub fn estimate(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    use datafusion::physical_plan::{StatisticsArgs, StatisticsContext};
    let stats = StatisticsContext::new()
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .ok()?;
    stats.total_byte_size.get_value().copied()
}

/// Adds every file `plan` reads to `files`; false when it reads anything
/// else. Stages below datafusion-distributed's network boundaries are read
/// through their plans; a scan split over tasks through its unsplit scan.
fn inputs(plan: &Arc<dyn ExecutionPlan>, files: &mut Vec<String>) -> bool {
    if let Some(boundary) = plan.as_network_boundary() {
        return match boundary.input_stage().local_plan() {
            Some(stage) => inputs(stage, files),
            None => false,
        };
    }
    if let Some(leaf) = plan.downcast_ref::<DistributedLeafExec>() {
        return inputs(leaf.original(), files);
    }
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let Some(scan) = source.data_source().downcast_ref::<FileScanConfig>() else {
            return false;
        };
        for file in scan.file_groups.iter().flat_map(|group| group.iter()) {
            let meta = &file.object_meta;
            files.push(format!(
                "{}|{}|{}|{:?}|{:?}|{:?}",
                scan.object_store_url.as_str(),
                meta.location,
                meta.size,
                meta.last_modified,
                meta.e_tag,
                file.range.as_ref().map(|r| (r.start, r.end)),
            ));
        }
        return true;
    }
    let children = plan.children();
    if children.is_empty() {
        return plan.is::<EmptyExec>() || plan.is::<PlaceholderRowExec>();
    }
    children.into_iter().all(|child| inputs(child, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn planned(ctx: &SessionContext, sql: &str) -> (LogicalPlan, Option<ResultKey>) {
        let state = ctx.state();
        let plan = state.create_logical_plan(sql).await.unwrap();
        let optimized = state.optimize(&plan).unwrap();
        let physical = state.create_physical_plan(&plan).await.unwrap();
        let key = key("u", 0, &state, &optimized, &physical);
        (plan, key)
    }

    fn write_parquet(dir: &std::path::Path, name: &str, values: &[i64]) {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::arrow::record_batch::RecordBatch;
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap();
        let file = std::fs::File::create(dir.join(name)).unwrap();
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[tokio::test]
    async fn keys_follow_the_files_and_the_query() {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(dir.path(), "a.parquet", &[1, 2, 3]);
        // Loch's runtime: listings are not cached.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_cache_manager(crate::engine::cache_config())
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(Default::default(), runtime);
        ctx.register_parquet("t", dir.path().to_str().unwrap(), Default::default())
            .await
            .unwrap();
        let (_, first) = planned(&ctx, "SELECT sum(n) FROM t").await;
        let (_, again) = planned(&ctx, "SELECT sum(n) FROM t").await;
        assert!(first.is_some());
        assert_eq!(first, again);
        let (_, other) = planned(&ctx, "SELECT sum(n) + 1 FROM t").await;
        assert_ne!(first, other);
        // Another user, another key.
        let state = ctx.state();
        let plan = state
            .create_logical_plan("SELECT sum(n) FROM t")
            .await
            .unwrap();
        let physical = state.create_physical_plan(&plan).await.unwrap();
        let optimized = state.optimize(&plan).unwrap();
        assert_ne!(first, key("v", 0, &state, &optimized, &physical));
        assert_ne!(first, key("u", 1, &state, &optimized, &physical));
        // A new file changes the key.
        write_parquet(dir.path(), "b.parquet", &[4]);
        let (_, grown) = planned(&ctx, "SELECT sum(n) FROM t").await;
        assert!(grown.is_some());
        assert_ne!(first, grown);
    }

    #[tokio::test]
    async fn queries_that_vary_or_read_no_files_are_not_kept() {
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_information_schema(true),
        );
        for sql in ["SELECT random()", "SELECT now()", "EXPLAIN SELECT 1"] {
            let plan = ctx.state().create_logical_plan(sql).await.unwrap();
            assert!(!cacheable(&plan), "{sql}");
        }
        let plan = ctx
            .state()
            .create_logical_plan("SELECT 1 + 1")
            .await
            .unwrap();
        assert!(cacheable(&plan));
        let (_, values) = planned(&ctx, "SELECT * FROM (VALUES (1), (2)) v(x)").await;
        assert_eq!(values, None);
        let (_, constant) = planned(&ctx, "SELECT 1 + 1").await;
        assert!(constant.is_some());
        let (_, listing) = planned(&ctx, "SELECT * FROM information_schema.tables").await;
        assert_eq!(listing, None);
    }
}
