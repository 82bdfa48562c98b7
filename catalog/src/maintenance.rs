//! Delta table utilities as Databricks spells them: `DESCRIBE HISTORY`,
//! `OPTIMIZE [ZORDER BY]`, `VACUUM [RETAIN n HOURS] [DRY RUN]` and
//! `RESTORE TABLE … TO VERSION|TIMESTAMP AS OF`. Each is one delta-rs
//! operation; each answers a small result set.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::execution::SessionState;
use deltalake::DeltaTable;
use deltalake::kernel::CommitInfo;
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;

use crate::delta::TimeTravel;
use crate::error::{CatalogError, Result};

/// What `VACUUM` was asked to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VacuumOptions {
    /// `RETAIN n HOURS`; the table's `delta.deletedFileRetentionDuration`
    /// (7 days by default) otherwise.
    pub retain: Option<Duration>,
    /// `DRY RUN`: list what would go, delete nothing.
    pub dry_run: bool,
    /// `LITE`: only files the log removed; the default (`FULL`) also
    /// deletes files no commit ever referenced (a killed writer's).
    pub lite: bool,
    /// Allow a retention shorter than the table's (unsafe while other
    /// queries may still read the old files).
    pub unsafe_retention: bool,
}

/// `DESCRIBE HISTORY`: one row per commit, newest first, at most `limit`.
/// Column names are Databricks'.
pub async fn history(table: &DeltaTable, limit: Option<usize>) -> Result<RecordBatch> {
    let latest = table.version().unwrap_or(0);
    let oldest = match limit {
        Some(n) => (latest + 1).saturating_sub(n as u64),
        None => 0,
    };
    let log_store = table.log_store();
    let mut rows: Vec<(u64, Option<i64>, CommitInfo)> = Vec::new();
    for version in (oldest..=latest).rev() {
        // Commits older than the log retention are gone: history ends there.
        let Some(bytes) = log_store.read_commit_entry(version).await? else {
            break;
        };
        let info = deltalake::logstore::get_actions(version, &bytes)?
            .into_iter()
            .find_map(|action| match action {
                deltalake::kernel::Action::CommitInfo(info) => Some(info),
                _ => None,
            })
            .unwrap_or_default();
        rows.push((version, commit_time(table, version).await, info));
    }
    let metrics = |info: &CommitInfo| {
        info.info
            .get("operationMetrics")
            .map(|m| m.to_string())
            .or_else(|| Some("{}".into()))
    };
    let columns: Vec<(Field, ArrayRef)> = vec![
        (
            Field::new("version", DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(v, _, _)| *v as i64),
            )),
        ),
        (
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Arc::new(
                TimestampMillisecondArray::from_iter(
                    rows.iter()
                        .map(|(_, at, i)| at.or(i.in_commit_timestamp).or(i.timestamp)),
                )
                .with_timezone("UTC"),
            ),
        ),
        (
            Field::new("userName", DataType::Utf8, true),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|(_, _, i)| i.user_name.clone()),
            )),
        ),
        (
            Field::new("operation", DataType::Utf8, true),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|(_, _, i)| i.operation.clone()),
            )),
        ),
        (
            Field::new("operationParameters", DataType::Utf8, true),
            Arc::new(StringArray::from_iter(rows.iter().map(|(_, _, i)| {
                i.operation_parameters
                    .as_ref()
                    .and_then(|p| serde_json::to_string(p).ok())
            }))),
        ),
        (
            Field::new("readVersion", DataType::Int64, true),
            Arc::new(Int64Array::from_iter(
                rows.iter()
                    .map(|(_, _, i)| i.read_version.map(|v| v as i64)),
            )),
        ),
        (
            Field::new("isBlindAppend", DataType::Boolean, true),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|(_, _, i)| i.is_blind_append),
            )),
        ),
        (
            Field::new("operationMetrics", DataType::Utf8, true),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|(_, _, i)| metrics(i)),
            )),
        ),
        (
            Field::new("engineInfo", DataType::Utf8, true),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|(_, _, i)| i.engine_info.clone()),
            )),
        ),
    ];
    batch(columns)
}

/// When a commit happened, as time travel reads it: the commit file's
/// modification time (what `TIMESTAMP AS OF` resolves against in delta-rs,
/// and what Databricks' own history shows), not the writer's clock in
/// `commitInfo`, which runs a little ahead of the file landing.
async fn commit_time(table: &DeltaTable, version: u64) -> Option<i64> {
    use datafusion::object_store::ObjectStoreExt;
    if let Some(at) = table
        .snapshot()
        .ok()
        .and_then(|s| s.version_timestamp(version))
    {
        return Some(at);
    }
    let path = deltalake::logstore::commit_uri_from_version(Some(version));
    let meta = table
        .log_store()
        .object_store(None)
        .head(&path)
        .await
        .ok()?;
    Some(meta.last_modified.timestamp_millis())
}

/// `OPTIMIZE t [ZORDER BY (c, …)]`: compacts small files (or rewrites them
/// in Z-order) in one commit.
pub async fn optimize(
    table: DeltaTable,
    zorder: Vec<String>,
    state: SessionState,
) -> Result<RecordBatch> {
    let path = table.table_url().to_string();
    let optimize_type = if zorder.is_empty() {
        OptimizeType::Compact
    } else {
        OptimizeType::ZOrder(zorder)
    };
    let (_, metrics) = table
        .optimize()
        .with_type(optimize_type)
        .with_session_state(Arc::new(state))
        .await?;
    let int = |v: u64| Arc::new(Int64Array::from(vec![v as i64])) as ArrayRef;
    batch(vec![
        (
            Field::new("path", DataType::Utf8, false),
            Arc::new(StringArray::from(vec![path])),
        ),
        (
            Field::new("numFilesAdded", DataType::Int64, false),
            int(metrics.num_files_added),
        ),
        (
            Field::new("numFilesRemoved", DataType::Int64, false),
            int(metrics.num_files_removed),
        ),
        (
            Field::new("partitionsOptimized", DataType::Int64, false),
            int(metrics.partitions_optimized),
        ),
        (
            Field::new("totalConsideredFiles", DataType::Int64, false),
            int(metrics.total_considered_files as u64),
        ),
        (
            Field::new("totalFilesSkipped", DataType::Int64, false),
            int(metrics.total_files_skipped as u64),
        ),
    ])
}

/// `VACUUM`: deletes data files no version within the retention period
/// needs; answers the files deleted (or, for `DRY RUN`, that would be).
pub async fn vacuum(table: DeltaTable, options: VacuumOptions) -> Result<RecordBatch> {
    let url = table.table_url().clone();
    let staged = match (options.lite, url.to_file_path()) {
        (false, Ok(dir)) if url.scheme() == "file" => Some(dir),
        _ => None,
    };
    let mut vacuum = table
        .vacuum()
        .with_dry_run(options.dry_run)
        .with_mode(if options.lite {
            VacuumMode::Lite
        } else {
            VacuumMode::Full
        })
        .with_enforce_retention_duration(!options.unsafe_retention);
    if let Some(retain) = options.retain {
        vacuum = vacuum.with_retention_period(
            chrono::Duration::from_std(retain)
                .map_err(|e| CatalogError::Invalid(format!("retention period: {e}")))?,
        );
    }
    let retain = options.retain.unwrap_or(DEFAULT_RETENTION);
    let (_, metrics) = vacuum.await?;
    let mut deleted = metrics.files_deleted;
    if let Some(dir) = staged {
        deleted.extend(unfinished_uploads(&dir, retain, options.dry_run)?);
    }
    batch(vec![(
        Field::new("path", DataType::Utf8, false),
        Arc::new(StringArray::from(deleted)),
    )])
}

/// Delta's default `deletedFileRetentionDuration`.
const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A writer killed while writing a data file to a local table leaves
/// object_store's staging file (`<file>#<n>`), which object_store's listing
/// (and so delta-rs' `VACUUM`) never shows. `VACUUM` (FULL) removes those
/// older than the retention too; their paths relative to `dir`.
fn unfinished_uploads(dir: &Path, retain: Duration, dry_run: bool) -> Result<Vec<String>> {
    fn is_staging(name: &str) -> bool {
        name.rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
    let now = std::time::SystemTime::now();
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(|e| CatalogError::Store(e.to_string()))? {
            let entry = entry.map_err(|e| CatalogError::Store(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let path = entry.path();
            if meta.is_dir() {
                pending.push(path);
            } else if is_staging(&name)
                && meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age >= retain)
            {
                if !dry_run {
                    std::fs::remove_file(&path).map_err(|e| CatalogError::Store(e.to_string()))?;
                }
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    Ok(found)
}

/// `RESTORE TABLE t TO VERSION AS OF n | TIMESTAMP AS OF '…'`: a new
/// commit whose contents equal that version's.
pub async fn restore(table: DeltaTable, to: TimeTravel) -> Result<RecordBatch> {
    let restore = table.restore();
    let restore = match to {
        TimeTravel::Version(v) => restore.with_version_to_restore(v),
        TimeTravel::Timestamp(t) => restore.with_datetime_to_restore(t),
    };
    let (table, metrics) = restore.await?;
    batch(vec![
        (
            Field::new("version", DataType::Int64, true),
            Arc::new(Int64Array::from(vec![table.version().map(|v| v as i64)])),
        ),
        (
            Field::new("numRemovedFiles", DataType::Int64, false),
            Arc::new(Int64Array::from(vec![metrics.num_removed_file as i64])),
        ),
        (
            Field::new("numRestoredFiles", DataType::Int64, false),
            Arc::new(Int64Array::from(vec![metrics.num_restored_file as i64])),
        ),
    ])
}

fn batch(columns: Vec<(Field, ArrayRef)>) -> Result<RecordBatch> {
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}
