//! DDL that changes the persistent catalog.
//!
//! DataFusion would run `CREATE TABLE`, `CREATE VIEW`, `CREATE SCHEMA` and
//! their `DROP`s against in-memory providers; Loch takes these plans first
//! and carries them out through [`loch_catalog::LochCatalog`], which records
//! them in the metadata store (and writes managed tables as Delta). The
//! names are resolved here, against the session's current schema.

use std::sync::Arc;

use crate::engine::undistributed;
use datafusion::common::TableReference;
use datafusion::logical_expr::{CreateMemoryTable, DdlStatement, LogicalPlan};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use loch_catalog::{DropKind, maintenance};

use crate::access::Subject;
use crate::error::LochError;
use crate::session::{Output, Session};
use crate::sql::databricks::DeltaCommand;
use crate::sql::names::{reference, schema_name, table_name};

/// Runs `ddl` when it is one the catalog owns; `None` leaves it to
/// DataFusion (functions, indexes: refused there with a clear error).
pub(crate) async fn run(
    session: &Session,
    ddl: &DdlStatement,
) -> Option<Result<Output, LochError>> {
    let result = match ddl {
        DdlStatement::CreateCatalogSchema(create) => {
            let done = schema_name(&create.schema_name).and_then(|name| {
                catalog(session).create_schema(&name, create.if_not_exists)?;
                claim(session, &name, "")
            });
            done.map(|()| command("CREATE SCHEMA", None))
        }
        DdlStatement::DropCatalogSchema(drop) => {
            let done = schema_name(&drop.name.to_string()).and_then(|name| {
                catalog(session)
                    .drop_schema(&name, drop.if_exists, drop.cascade)
                    .map_err(LochError::from)
            });
            done.map(|()| command("DROP SCHEMA", None))
        }
        DdlStatement::CreateExternalTable(create) => {
            match table_name(&create.name, &session.current_schema()) {
                Ok((schema, name)) => {
                    match catalog(session)
                        .create_external_table(&schema, &name, create)
                        .await
                    {
                        Ok(_) => {
                            claim(session, &schema, &name).map(|()| command("CREATE TABLE", None))
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                Err(e) => Err(e),
            }
        }
        DdlStatement::CreateMemoryTable(create) => {
            create_managed(session, create, Vec::new()).await
        }
        DdlStatement::CreateView(create) => {
            if create.temporary {
                return Some(Err(LochError::NotSupported("temporary views".into())));
            }
            let Some(definition) = create.definition.clone() else {
                return Some(Err(LochError::NotSupported(
                    "a view without its SQL text".into(),
                )));
            };
            table_name(&create.name, &session.current_schema()).and_then(|(schema, name)| {
                catalog(session).create_view(
                    &schema,
                    &name,
                    definition,
                    create.or_replace,
                    &session.current_schema(),
                )?;
                claim(session, &schema, &name).map(|()| command("CREATE VIEW", None))
            })
        }
        DdlStatement::DropTable(drop) => {
            drop_relation(session, &drop.name, DropKind::Table, drop.if_exists)
        }
        DdlStatement::DropView(drop) => {
            drop_relation(session, &drop.name, DropKind::View, drop.if_exists)
        }
        _ => return None,
    };
    Some(result)
}

/// `CREATE TABLE [AS]`: a managed Delta table, partitioned by
/// `partition_by` (none: not partitioned).
pub(crate) async fn create_managed(
    session: &Session,
    create: &CreateMemoryTable,
    partition_by: Vec<String>,
) -> Result<Output, LochError> {
    if create.temporary {
        return Err(LochError::NotSupported("temporary tables".into()));
    }
    let is_ctas = !matches!(
        create.input.as_ref(),
        LogicalPlan::EmptyRelation(empty) if !empty.produce_one_row
    );
    let (schema, name) = table_name(&create.name, &session.current_schema())?;
    let rows = catalog(session)
        .create_managed_table(
            &schema,
            &name,
            create.input.as_ref().clone(),
            partition_by,
            (create.if_not_exists, create.or_replace),
            // The rows are written where the input is read: over the
            // executors when it can be distributed.
            session.planning_state(&create.input),
        )
        .await?;
    claim(session, &schema, &name)?;
    Ok(match (is_ctas, rows) {
        // PostgreSQL answers CREATE TABLE AS with the row count.
        (true, Some(rows)) => command("SELECT", Some(rows as usize)),
        _ => command("CREATE TABLE", None),
    })
}

/// Runs a Delta utility (`DESCRIBE HISTORY`, `OPTIMIZE`, `VACUUM`,
/// `RESTORE`) on the table it names; each answers a small result set.
pub(crate) async fn run_delta(
    session: &Session,
    command: DeltaCommand,
) -> Result<Output, LochError> {
    let (schema, name) = table_name(&reference(command.table())?, &session.current_schema())?;
    let reads_only = matches!(command, DeltaCommand::History { .. });
    crate::access::authorize_delta(session, &schema, &name, reads_only)?;
    let table = catalog(session).delta_table(&schema, &name).await?;
    let batch = match command {
        DeltaCommand::History { limit, .. } => maintenance::history(&table, limit).await?,
        DeltaCommand::Optimize { zorder, .. } => {
            let state = undistributed(session.context().state());
            maintenance::optimize(table, zorder, state).await?
        }
        DeltaCommand::Vacuum { mut options, .. } => {
            options.unsafe_retention = !retention_check(session);
            maintenance::vacuum(table, options).await?
        }
        DeltaCommand::Restore { to, .. } => maintenance::restore(table, to).await?,
    };
    let schema = batch.schema();
    let stream =
        RecordBatchStreamAdapter::new(Arc::clone(&schema), futures::stream::iter([Ok(batch)]));
    Ok(Output::Rows {
        schema,
        stream: Box::pin(stream),
    })
}

/// Whether `VACUUM` refuses a retention shorter than the table's: on unless
/// the session turned it off (Databricks' setting name is accepted too).
fn retention_check(session: &Session) -> bool {
    let off = |v: String| matches!(v.to_ascii_lowercase().as_str(), "off" | "false" | "0");
    !(off(session.setting("delta.retention_duration_check"))
        || off(session.setting("spark.databricks.delta.retentiondurationcheck.enabled")))
}

/// `DROP TABLE` / `DROP VIEW`.
fn drop_relation(
    session: &Session,
    name: &TableReference,
    kind: DropKind,
    if_exists: bool,
) -> Result<Output, LochError> {
    let (schema, name) = table_name(name, &session.current_schema())?;
    catalog(session).drop_relation(&schema, &name, kind, if_exists)?;
    Ok(command(
        match kind {
            DropKind::Table => "DROP TABLE",
            DropKind::View => "DROP VIEW",
        },
        None,
    ))
}

/// Makes the session's user the owner of what it just created (an object
/// that had an owner keeps it).
fn claim(session: &Session, schema: &str, name: &str) -> Result<(), LochError> {
    catalog(session)
        .store()
        .claim_owner(schema, name, session.user())?;
    Ok(())
}

fn command(tag: &str, rows: Option<usize>) -> Output {
    Output::Command {
        tag: tag.to_string(),
        rows,
    }
}

fn catalog(session: &Session) -> &loch_catalog::LochCatalog {
    session.engine().catalog()
}
