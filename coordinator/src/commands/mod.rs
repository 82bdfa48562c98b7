//! Running what a client sent: each parsed statement goes to what owns it
//! (the session's settings and transaction block, the catalog's DDL, Delta
//! maintenance, roles and grants, storage credentials, or the query
//! planner), and prepared statements are planned once to run many times.

pub mod credentials;
pub mod ddl;
pub mod policy;
pub mod security;

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;

use crate::access;
use crate::error::LochError;
use crate::planning::params::ordered_parameter_types;
use crate::planning::returns_rows;
use crate::session::{CancelState, Output, Session, command_done};
use crate::sql::{Command, command_schema};

impl Session {
    /// Runs a planned statement that `cancel` can stop; `tag` is the command
    /// tag for statements that return no rows. Every plan passes the
    /// access check here and gets its row filters and column masks before
    /// anything runs; DDL goes to the catalog, the rest to the planner.
    pub async fn execute_with(
        &self,
        plan: LogicalPlan,
        tag: String,
        cancel: Arc<CancelState>,
    ) -> Result<Output, LochError> {
        use datafusion::logical_expr::Statement;
        self.may_set(&plan)?;
        // SQL PREPARE and DEALLOCATE: DataFusion keeps the plans, Loch
        // bounds how many.
        let (new_name, deallocate) = match &plan {
            LogicalPlan::Statement(Statement::Prepare(p)) => (
                self.hold_sql_prepared(&p.name)?.then(|| p.name.clone()),
                None,
            ),
            LogicalPlan::Statement(Statement::Deallocate(d)) => (None, Some(d.name.clone())),
            _ => (None, None),
        };
        let output = self.protected(plan, tag, cancel).await;
        match (&output, new_name, deallocate) {
            // A PREPARE of a new name that failed keeps nothing.
            (Err(_), Some(name), _) | (Ok(_), _, Some(name)) => self.forget_sql_prepared(&name)?,
            _ => {}
        }
        output
    }

    /// Runs a plan after the access check: DDL to the catalog, the rest to
    /// the planner.
    async fn protected(
        &self,
        plan: LogicalPlan,
        tag: String,
        cancel: Arc<CancelState>,
    ) -> Result<Output, LochError> {
        let plan = access::protect(self, plan)?;
        if let LogicalPlan::Ddl(ddl) = plan.plan()
            && let Some(output) = ddl::run(self, ddl).await
        {
            return output;
        }
        self.run_plan(plan, tag, cancel).await
    }

    /// Refuses `SET`/`RESET` of a DataFusion or datafusion-distributed
    /// setting that changes memory, spill or parallelism to all but
    /// superusers ([`crate::session::settings::restricted`]).
    fn may_set(&self, plan: &LogicalPlan) -> Result<(), LochError> {
        use datafusion::logical_expr::Statement;
        let variable = match plan {
            LogicalPlan::Statement(Statement::SetVariable(set)) => &set.variable,
            LogicalPlan::Statement(Statement::ResetVariable(reset)) => &reset.variable,
            _ => return Ok(()),
        };
        if crate::session::settings::restricted(variable) && !self.is_superuser()? {
            return Err(LochError::PermissionDenied(format!(
                "setting {variable}: only superusers may change settings of memory, \
                 spill and parallelism"
            )));
        }
        Ok(())
    }

    /// Runs one parsed statement; the session's cancel flag (pg wire's
    /// CancelRequest) can stop it.
    pub async fn run(&self, command: Command) -> Result<Output, LochError> {
        self.cancel_state().reset();
        self.run_with(command, self.cancel_state()).await
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
                self.block().begin()?;
                Ok(Output::Begin)
            }
            Command::Commit | Command::Rollback => {
                self.block().end(matches!(command, Command::Commit)).await?;
                Ok(Output::End { tag })
            }
            Command::Savepoint(name) => {
                self.block().savepoint(&name)?;
                Ok(command_done(tag))
            }
            Command::Release(name) => {
                self.block().release(&name)?;
                Ok(command_done(tag))
            }
            Command::RollbackTo(name) => {
                self.block().rollback_to(&name)?;
                Ok(command_done(tag))
            }
            Command::Declare { name, hold, query } => {
                self.block().can_declare(&name, hold).await?;
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
                self.block().declare(&name, hold, schema, stream).await?;
                Ok(command_done(tag))
            }
            Command::Fetch { name, count } => self.block().fetch(&name, count).await,
            Command::Close(name) => {
                self.block().close(name.as_deref()).await?;
                Ok(command_done(tag))
            }
            Command::Noop(tag) => Ok(command_done(tag.to_string())),
            Command::Discard => {
                self.block().discard().await?;
                self.reset_all()?;
                Ok(Output::Command {
                    tag: "DISCARD ALL".into(),
                    rows: None,
                })
            }
            Command::Delta(command) => ddl::run_delta(self, command).await,
            Command::Security(command) => security::run(self, command).await,
            Command::CreatePartitioned {
                statement,
                partition_by,
            } => {
                let plan = self.plan(*statement).await?;
                // The same check and policies as any statement: the rows a
                // CREATE TABLE … AS copies are the rows its user may see.
                let plan = access::protect(self, plan)?;
                let LogicalPlan::Ddl(datafusion::logical_expr::DdlStatement::CreateMemoryTable(
                    create,
                )) = plan.plan()
                else {
                    return Err(LochError::NotSupported(
                        "PARTITIONED BY here: it partitions a new managed table".into(),
                    ));
                };
                ddl::create_managed(self, create, partition_by).await
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
        let mut commands = crate::sql::parse(sql)?;
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
                // Grants and policies are applied again at every execution
                // (they may change); this is only what clients are told to
                // expect.
                let protected = access::protect(self, plan.clone())?;
                let types = ordered_parameter_types(&plan)?;
                let schema: SchemaRef = Arc::new(protected.plan().schema().as_arrow().clone());
                (Some(plan), types, Some(schema))
            }
            // A FETCH answers with its cursor's columns (the cursor must be
            // open when the FETCH is prepared, as in PostgreSQL).
            Command::Fetch { name, .. } => {
                (None, Vec::new(), Some(self.block().schema(name).await?))
            }
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
