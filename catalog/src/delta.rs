//! Delta Lake tables through delta-rs (`deltalake`): opening a table at its
//! latest version, and creating a managed table from a query (one commit).
//!
//! Loch does not touch the Delta log itself; every read and every commit is
//! delta-rs', so tables stay readable and writable by any other Delta writer.

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use url::Url;

use crate::error::{CatalogError, Result};
use crate::store::Relation;

/// The URL of a table location: a URL as given, or a local path (which
/// must exist) made absolute.
pub(crate) fn location_url(location: &str) -> Result<Url> {
    if let Some(url) = as_url(location) {
        return Ok(url);
    }
    let path = std::fs::canonicalize(location).map_err(|source| CatalogError::Io {
        path: location.into(),
        source,
    })?;
    directory_url(&path)
}

/// `location` as a URL when it is one (`s3://…`, `file:///…`); `None` for
/// a local path (a one-letter "scheme" is a Windows drive).
pub(crate) fn as_url(location: &str) -> Option<Url> {
    Url::parse(location)
        .ok()
        .filter(|url| url.scheme().len() > 1)
}

/// `file://` URL of a local directory (with the trailing slash delta-rs and
/// DataFusion expect of directories).
pub(crate) fn directory_url(path: &Path) -> Result<Url> {
    Url::from_directory_path(path)
        .map_err(|()| CatalogError::Invalid(format!("not an absolute path: {}", path.display())))
}

/// A provider over the latest version of the Delta table of `relation`.
pub(crate) async fn open(
    relation: &Relation,
    state: &SessionState,
) -> Result<Arc<dyn TableProvider>> {
    let table = load(relation).await?;
    Ok(table
        .table_provider()
        .with_session(Arc::new(state.clone()))
        .await?)
}

/// The Delta table of `relation` at its latest version.
pub(crate) async fn load(relation: &Relation) -> Result<DeltaTable> {
    let location = relation.location.as_deref().ok_or_else(|| {
        CatalogError::Store(format!(
            "{}.{} has no location",
            relation.schema, relation.name
        ))
    })?;
    let url = location_url(location)?;
    let options = relation
        .options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(deltalake::open_table_with_storage_options(url, options).await?)
}

/// Writes a new Delta table at `url` holding the rows of `input` (none for
/// `CREATE TABLE t (…)`), in one commit: version 0 has schema and data.
/// Returns the rows written.
pub(crate) async fn create(
    url: Url,
    name: &str,
    input: LogicalPlan,
    state: SessionState,
) -> Result<u64> {
    let table = DeltaTable::try_from_url(url).await?;
    let table = table
        .write(Vec::new())
        .with_input_plan(input)
        .with_session_state(Arc::new(state))
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_table_name(name)
        .await?;
    Ok(rows_in_last_commit(&table).await)
}

/// Rows added by the latest commit (what a `CREATE TABLE AS` or an
/// `INSERT` reports), from its commit info; 0 when the commit does not say.
pub(crate) async fn rows_in_last_commit(table: &DeltaTable) -> u64 {
    use futures::StreamExt;
    let Some(Ok(commit)) = table.history(Some(1)).next().await else {
        return 0;
    };
    commit
        .info
        .get("operationMetrics")
        .and_then(|m| m.get("num_added_rows").or_else(|| m.get("numOutputRows")))
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(0)
}
