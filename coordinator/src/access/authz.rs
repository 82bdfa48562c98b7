//! Authorization: may this user do this?
//!
//! [`authorize`] is the one check every planned statement passes, from pg
//! wire and Flight SQL alike (and prepared statements, at prepare and at
//! every execution): it walks the logical plan, resolves each table it
//! reads or writes the way DataFusion did, and asks the catalog's grants.
//! Views run with their owner's rights, as in PostgreSQL: the user needs
//! `SELECT` on the view, the view's owner on what the view reads.
//! Ownership decides who may replace, drop or alter an object, here only.

use std::collections::BTreeSet;

use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::dml::MergeIntoAction;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, WriteOp};
use loch_catalog::access_control::{Privilege, Securable, SecurityState};
use loch_catalog::view::ViewBoundary;
use loch_catalog::{CatalogStore, DATABASE_NAME};

use super::Subject;
use super::authn::ADMIN_USER;
use crate::error::LochError;
use crate::sql::names::schema_name;

/// Schemas every user may read: the catalog's own descriptions (filtered
/// by what the user may see) and the cluster's state.
pub(crate) const OPEN_SCHEMAS: &[&str] = &["information_schema", "pg_catalog", "system"];
// ---------------------------------------------------------------- principals

/// A user (or a view's owner) with the roles it acts as.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) name: String,
    pub(crate) roles: BTreeSet<String>,
    pub(crate) superuser: bool,
}

impl Principal {
    pub(crate) fn of(state: &SecurityState, name: &str) -> Self {
        Principal {
            name: name.to_string(),
            roles: state.roles_of(name),
            superuser: state.roles.get(name).is_some_and(|r| r.superuser),
        }
    }

    /// A view without a recorded owner (made before roles existed) runs
    /// with the rights of the admin who made it.
    pub(crate) fn system() -> Self {
        Principal {
            name: ADMIN_USER.to_string(),
            roles: BTreeSet::new(),
            superuser: true,
        }
    }
}

/// Privilege checks over one snapshot of the grants.
pub(crate) struct Checker<'a> {
    pub(crate) state: &'a SecurityState,
    pub(crate) store: &'a dyn CatalogStore,
}

impl Checker<'_> {
    pub(crate) fn owns(&self, who: &Principal, schema: &str, name: &str) -> bool {
        self.state
            .owner(schema, name)
            .is_some_and(|owner| who.roles.contains(owner))
    }

    /// True when a grant to one of `who`'s roles matches `privilege`
    /// (any privilege when `None`) and `on`.
    pub(crate) fn granted(
        &self,
        who: &Principal,
        privilege: Option<Privilege>,
        on: impl Fn(&Securable) -> bool,
    ) -> bool {
        self.state.grants.iter().any(|g| {
            privilege.is_none_or(|p| g.privilege == p)
                && who.roles.contains(&g.grantee)
                && on(&g.securable)
        })
    }

    pub(crate) fn may_use_schema(&self, who: &Principal, schema: &str) -> bool {
        who.superuser
            || OPEN_SCHEMAS.contains(&schema)
            || self.owns(who, schema, "")
            || self.granted(who, Some(Privilege::Usage), |s| s.is_schema(schema))
    }

    pub(crate) fn may_create_in(&self, who: &Principal, schema: &str) -> bool {
        who.superuser
            || self.owns(who, schema, "")
            || self.granted(who, Some(Privilege::Create), |s| s.is_schema(schema))
    }

    pub(crate) fn check_create_in(&self, who: &Principal, schema: &str) -> Result<(), LochError> {
        if self.may_create_in(who, schema) {
            Ok(())
        } else {
            Err(LochError::PermissionDenied(format!("schema {schema}")))
        }
    }

    /// `privilege` on table or view `schema.name`.
    pub(crate) fn check_table(
        &self,
        who: &Principal,
        privilege: Privilege,
        schema: &str,
        name: &str,
    ) -> Result<(), LochError> {
        if who.superuser || OPEN_SCHEMAS.contains(&schema) || self.owns(who, schema, name) {
            return Ok(());
        }
        if !self.may_use_schema(who, schema) {
            return Err(LochError::PermissionDenied(format!("schema {schema}")));
        }
        if self.granted(who, Some(privilege), |s| s.covers_table(schema, name)) {
            Ok(())
        } else {
            Err(LochError::PermissionDenied(format!(
                "table {schema}.{name}"
            )))
        }
    }

    /// Owner-only actions (DROP, ALTER, OPTIMIZE, VACUUM, RESTORE, GRANT):
    /// the object's owner, the owner of its schema, or a superuser.
    pub(crate) fn check_owner(
        &self,
        who: &Principal,
        schema: &str,
        name: &str,
    ) -> Result<(), LochError> {
        if who.superuser || self.owns(who, schema, name) || self.owns(who, schema, "") {
            return Ok(());
        }
        Err(LochError::PermissionDenied(if name.is_empty() {
            format!("schema {schema} (only its owner may do this)")
        } else {
            format!("table {schema}.{name} (only its owner may do this)")
        }))
    }

    /// Every table `plan` reads needs `SELECT`, every table it changes the
    /// privilege of the change; views are checked with their owner's
    /// rights.
    pub(crate) fn check_plan(
        &self,
        who: &Principal,
        plan: &LogicalPlan,
        default_schema: &str,
    ) -> Result<(), LochError> {
        let mut outcome = Ok(());
        plan.apply_with_subqueries(|node| {
            let checked = self.check_node(who, node, default_schema);
            match checked {
                Ok(descend) => Ok(descend),
                Err(e) => {
                    outcome = Err(e);
                    Ok(TreeNodeRecursion::Stop)
                }
            }
        })?;
        outcome
    }

    pub(crate) fn check_node(
        &self,
        who: &Principal,
        node: &LogicalPlan,
        default_schema: &str,
    ) -> Result<TreeNodeRecursion, LochError> {
        let superuser_only = |what: &str| {
            if who.superuser {
                Ok(TreeNodeRecursion::Continue)
            } else {
                Err(LochError::PermissionDenied(format!(
                    "{what} (only superusers may)"
                )))
            }
        };
        match node {
            LogicalPlan::TableScan(scan) => {
                let Some((schema, name)) = resolve_table(&scan.table_name, default_schema) else {
                    return superuser_only(&format!("table {}", scan.table_name));
                };
                self.check_table(who, Privilege::Select, &schema, &name)?;
                Ok(TreeNodeRecursion::Continue)
            }
            LogicalPlan::Extension(_) if ViewBoundary::of(node).is_some() => {
                let Some(view) = ViewBoundary::of(node) else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                self.check_table(who, Privilege::Select, &view.schema, &view.name)?;
                // A view's own plan runs with its owner's rights, in the
                // schema it was created in.
                let owner = match self.state.owner(&view.schema, &view.name) {
                    Some(owner) => Principal::of(self.state, owner),
                    None => Principal::system(),
                };
                let relation = self.store.relation(&view.schema, &view.name)?;
                let view_schema = relation
                    .and_then(|r| r.default_schema)
                    .unwrap_or_else(|| view.schema.clone());
                self.check_plan(&owner, &view.input, &view_schema)?;
                Ok(TreeNodeRecursion::Jump)
            }
            LogicalPlan::Dml(dml) => {
                let Some((schema, name)) = resolve_table(&dml.table_name, default_schema) else {
                    return superuser_only(&format!("table {}", dml.table_name));
                };
                match dml.op {
                    WriteOp::Insert(_) => {
                        self.check_table(who, Privilege::Insert, &schema, &name)?
                    }
                    WriteOp::Update => self.check_table(who, Privilege::Update, &schema, &name)?,
                    WriteOp::Delete | WriteOp::Truncate => {
                        self.check_table(who, Privilege::Delete, &schema, &name)?
                    }
                    WriteOp::Ctas => self.check_create_in(who, &schema)?,
                    WriteOp::MergeInto(ref op) => {
                        // `ON` reads the target; each action needs its own
                        // privilege (Databricks asks MODIFY and SELECT).
                        self.check_table(who, Privilege::Select, &schema, &name)?;
                        for clause in &op.clauses {
                            let privilege = match clause.action {
                                MergeIntoAction::Update(_) => Privilege::Update,
                                MergeIntoAction::Insert { .. } => Privilege::Insert,
                                MergeIntoAction::Delete => Privilege::Delete,
                            };
                            self.check_table(who, privilege, &schema, &name)?;
                        }
                    }
                    _ => {
                        return Err(LochError::PermissionDenied(format!(
                            "table {schema}.{name} ({} is not checked: refused)",
                            dml.op
                        )));
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            }
            LogicalPlan::Copy(_) => superuser_only("COPY (it writes files on the server)"),
            LogicalPlan::Ddl(ddl) => self.check_ddl(who, ddl, default_schema),
            LogicalPlan::Statement(datafusion::logical_expr::Statement::Execute(_)) => {
                superuser_only("EXECUTE of an SQL-level prepared statement")
            }
            _ => Ok(TreeNodeRecursion::Continue),
        }
    }

    pub(crate) fn check_ddl(
        &self,
        who: &Principal,
        ddl: &DdlStatement,
        default_schema: &str,
    ) -> Result<TreeNodeRecursion, LochError> {
        let table = |name: &TableReference| {
            resolve_table(name, default_schema)
                .ok_or_else(|| LochError::PermissionDenied(format!("table {name}")))
        };
        match ddl {
            DdlStatement::CreateMemoryTable(create) => {
                let (schema, _) = table(&create.name)?;
                self.check_create_in(who, &schema)?;
                // The input (CTAS) is read with the creator's rights.
                Ok(TreeNodeRecursion::Continue)
            }
            DdlStatement::CreateView(create) => {
                let (schema, _) = table(&create.name)?;
                self.check_create_in(who, &schema)?;
                // Checked when the view is used, with its owner's rights.
                Ok(TreeNodeRecursion::Jump)
            }
            DdlStatement::DropTable(drop) => {
                let (schema, name) = table(&drop.name)?;
                self.check_owner(who, &schema, &name)?;
                Ok(TreeNodeRecursion::Continue)
            }
            DdlStatement::DropView(drop) => {
                let (schema, name) = table(&drop.name)?;
                self.check_owner(who, &schema, &name)?;
                Ok(TreeNodeRecursion::Continue)
            }
            DdlStatement::DropCatalogSchema(drop) => {
                let schema = schema_name(&drop.name.to_string())?;
                self.check_owner(who, &schema, "")?;
                Ok(TreeNodeRecursion::Continue)
            }
            DdlStatement::CreateExternalTable(_) if !who.superuser => {
                Err(LochError::PermissionDenied(
                    "creating external tables (only superusers may: an external table reads \
                     any location the server can reach)"
                        .into(),
                ))
            }
            DdlStatement::CreateCatalogSchema(_) if !who.superuser => Err(
                LochError::PermissionDenied("creating schemas (only superusers may)".into()),
            ),
            _ if who.superuser => Ok(TreeNodeRecursion::Continue),
            other => Err(LochError::PermissionDenied(format!(
                "{} (only superusers may)",
                other.name()
            ))),
        }
    }
}

/// (schema, table) of a name in a plan, resolved as DataFusion did;
/// `None` for tables outside Loch's catalog (DataFusion's own
/// `information_schema` and the like). Time travel (`t@v3`, an earlier
/// version of t) is under t's grants and policies.
pub(crate) fn resolve_table(
    name: &TableReference,
    default_schema: &str,
) -> Option<(String, String)> {
    let resolved = name.clone().resolve(DATABASE_NAME, default_schema);
    if resolved.catalog.as_ref() != DATABASE_NAME {
        return None;
    }
    let table = resolved.table.as_ref();
    let base = loch_catalog::delta::TimeTravel::split(table)
        .map(|(base, _)| base)
        .unwrap_or(table);
    Some((resolved.schema.to_string(), base.to_string()))
}

/// The grants of the session's user, refreshed for every statement: a
/// `REVOKE` or `DROP ROLE` holds from the next statement of every session.
pub(crate) fn snapshot(session: &dyn Subject) -> Result<SecurityState, LochError> {
    let state = session.catalog().store().security_state()?;
    match state.roles.get(session.user()) {
        Some(role) if role.login => Ok(state),
        _ => Err(LochError::SessionRoleGone(session.user().to_string())),
    }
}

/// The check every planned statement passes before it runs; the grants it
/// was decided on (row filters and masks are applied with the same).
pub fn authorize(session: &dyn Subject, plan: &LogicalPlan) -> Result<SecurityState, LochError> {
    let state = snapshot(session)?;
    let me = Principal::of(&state, session.user());
    if !me.superuser {
        let checker = Checker {
            state: &state,
            store: session.catalog().store().as_ref(),
        };
        checker.check_plan(&me, plan, &session.current_schema())?;
    }
    Ok(state)
}

/// The check of a Delta utility on `schema.name`: reading its history needs
/// `SELECT`, changing its files (`OPTIMIZE`, `VACUUM`, `RESTORE`) ownership.
pub fn authorize_delta(
    session: &dyn Subject,
    schema: &str,
    name: &str,
    reads_only: bool,
) -> Result<(), LochError> {
    let state = snapshot(session)?;
    let me = Principal::of(&state, session.user());
    let checker = Checker {
        state: &state,
        store: session.catalog().store().as_ref(),
    };
    if reads_only {
        checker.check_table(&me, Privilege::Select, schema, name)
    } else {
        checker.check_owner(&me, schema, name)
    }
}
