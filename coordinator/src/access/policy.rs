//! Row filters and column masks: fine-grained access control inside the
//! plan, as Databricks and Trino have it.
//!
//! `ALTER TABLE t SET ROW FILTER <boolean expression>` and `ALTER TABLE t
//! ALTER COLUMN c SET MASK <expression>` store SQL expressions over the
//! table's columns (catalog `policies`). Every statement, on both protocols,
//! has every scan of such a table replaced — after [`crate::access::authorize`]
//! and before anything runs or is cached — by
//!
//! ```text
//! Projection(masked columns, same names and types)
//!   Filter(row filter)
//!     TableScan
//! ```
//!
//! so the rest of the plan (joins, views, subqueries, `CTAS`, time travel)
//! sees only filtered rows and masked values. `current_user` and
//! `is_member('role')` / `is_account_group_member('role')` in an
//! expression are replaced by the session user's values before planning,
//! so executors evaluate plain SQL.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, TableReference};
use datafusion::logical_expr::{
    Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, TableScan, TableScanBuilder, WriteOp,
    cast,
};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, Value, visit_expressions_mut,
};
use loch_catalog::access_control::{SecurityState, TablePolicy};

use super::Subject;
use crate::error::LochError;

/// Who the expressions are evaluated for.
pub(crate) struct Reader {
    user: String,
    roles: BTreeSet<String>,
}

impl Reader {
    pub(crate) fn of(state: &SecurityState, user: &str) -> Self {
        Reader {
            user: user.to_string(),
            roles: state.roles_of(user),
        }
    }
}

fn string_literal(s: &str) -> SqlExpr {
    SqlExpr::Value(Value::SingleQuotedString(s.to_string()).with_empty_span())
}

/// The lone string-literal argument of `is_member('r')`.
fn role_argument(args: &FunctionArguments) -> Option<String> {
    let FunctionArguments::List(list) = args else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))] = list.args.as_slice()
    else {
        return None;
    };
    match &v.value {
        Value::SingleQuotedString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Plans a stored expression over `schema` for `reader`.
pub(crate) fn compile(
    session: &dyn Subject,
    text: &str,
    schema: &DFSchema,
    reader: &Reader,
) -> Result<Expr, LochError> {
    let state = session.context().state();
    let dialect = state.config().options().sql_parser.dialect;
    let mut expr = state.sql_to_expr(text, &dialect)?;
    let substituted = visit_expressions_mut(&mut expr, |e| {
        let SqlExpr::Function(f) = e else {
            return ControlFlow::Continue(());
        };
        let name = f.name.to_string().to_ascii_lowercase();
        match name.as_str() {
            "current_user" | "session_user" | "user" => {
                *e = string_literal(&reader.user);
            }
            "is_member" | "is_account_group_member" => {
                let Some(role) = role_argument(&f.args) else {
                    return ControlFlow::Break(LochError::Syntax(format!(
                        "{name} takes one role name as a string literal"
                    )));
                };
                let member = reader.roles.contains(&role);
                *e = SqlExpr::Value(Value::Boolean(member).with_empty_span());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    if let ControlFlow::Break(e) = substituted {
        return Err(e);
    }
    let sql = datafusion::sql::sqlparser::ast::ExprWithAlias { expr, alias: None };
    Ok(state.create_logical_expr_from_sql_expr(sql, schema)?)
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// A mask's value in the column's own type: the same type, or one of the
/// same family (numbers, strings) cast to it, or NULL.
pub(crate) fn fit_mask(
    expr: Expr,
    column: &str,
    to: &DataType,
    schema: &DFSchema,
) -> Result<Expr, LochError> {
    let from = expr.get_type(schema)?;
    if &from == to {
        return Ok(expr);
    }
    let fits = from == DataType::Null
        || (from.is_numeric() && to.is_numeric())
        || (is_string(&from) && is_string(to));
    if fits {
        Ok(cast(expr, to.clone()))
    } else {
        Err(LochError::DatatypeMismatch(format!(
            "the mask of column {column} is of type {from}, the column of type {to}"
        )))
    }
}

/// The scan of a protected table as its reader may see it.
fn protected_scan(
    session: &dyn Subject,
    scan: TableScan,
    policy: &TablePolicy,
    reader: &Reader,
) -> Result<LogicalPlan, LochError> {
    // A scan the planner already narrowed is rebuilt whole; its narrowing
    // goes on top, so pushed-down filters see masked values too.
    let projection = scan.projection.clone();
    let fetch = scan.fetch;
    let pushed = scan.filters.clone();
    let whole = TableScanBuilder::new(scan.table_name.clone(), Arc::clone(&scan.source)).build()?;
    let schema = Arc::clone(&whole.projected_schema);
    let mut plan = LogicalPlanBuilder::from(LogicalPlan::TableScan(whole));
    if let Some(filter) = &policy.row_filter {
        let predicate = compile(session, filter, &schema, reader)?;
        let kind = predicate.get_type(&schema)?;
        if !matches!(kind, DataType::Boolean | DataType::Null) {
            return Err(LochError::DatatypeMismatch(format!(
                "a row filter must be boolean, not {kind}"
            )));
        }
        plan = plan.filter(predicate)?;
    }
    if !policy.masks.is_empty() {
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (qualifier, field) in schema.iter() {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            columns.push(match policy.masks.get(field.name()) {
                Some(mask) => {
                    let masked = compile(session, mask, &schema, reader)?;
                    fit_mask(masked, field.name(), field.data_type(), &schema)?
                        .alias_qualified(qualifier.cloned(), field.name())
                }
                None => column,
            });
        }
        plan = plan.project(columns)?;
    }
    if let Some(predicate) = pushed.into_iter().reduce(Expr::and) {
        plan = plan.filter(predicate)?;
    }
    if let Some(indices) = projection {
        let columns = indices
            .iter()
            .map(|&i| Expr::Column(Column::from(schema.qualified_field(i))))
            .collect::<Vec<_>>();
        plan = plan.project(columns)?;
    }
    if let Some(fetch) = fetch {
        plan = plan.limit(0, Some(fetch))?;
    }
    Ok(plan.build()?)
}

/// `plan` with every scan of a table that has a row filter or masks
/// replaced by what the session's user may see. Changes that cannot honour
/// them are refused: `UPDATE`/`DELETE` of a masked table (they would read
/// or write the real values) and `TRUNCATE` of a filtered one.
pub fn apply(
    session: &dyn Subject,
    plan: LogicalPlan,
    state: &SecurityState,
) -> Result<LogicalPlan, LochError> {
    if state.policies.is_empty() {
        return Ok(plan);
    }
    let default_schema = session.current_schema();
    let policy_of = |name: &TableReference| {
        super::authz::resolve_table(name, &default_schema)
            .and_then(|key| state.policies.get(&key).map(|p| (key, p)))
    };
    let mut refused = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Dml(dml) = node
            && let Some(((schema, name), policy)) = policy_of(&dml.table_name)
        {
            let masked = !policy.masks.is_empty();
            let filtered = policy.row_filter.is_some();
            let why = match dml.op {
                WriteOp::Update | WriteOp::Delete if masked => Some("it has column masks"),
                WriteOp::Truncate | WriteOp::MergeInto(_) if masked || filtered => {
                    Some("it has a row filter or masks")
                }
                _ => None,
            };
            if let Some(why) = why {
                refused = Some(LochError::NotSupported(format!(
                    "{} on {schema}.{name}: {why}",
                    dml.op
                )));
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(e) = refused {
        return Err(e);
    }
    let reader = Reader::of(state, session.user());
    let mut failed = None;
    let rewritten = plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::TableScan(scan) = &node else {
            return Ok(Transformed::no(node));
        };
        let Some((_, policy)) = policy_of(&scan.table_name) else {
            return Ok(Transformed::no(node));
        };
        let LogicalPlan::TableScan(scan) = node else {
            return Ok(Transformed::no(node));
        };
        match protected_scan(session, scan, policy, &reader) {
            Ok(plan) => Ok(Transformed::new(plan, true, TreeNodeRecursion::Jump)),
            Err(e) => {
                failed = Some(e);
                Ok(Transformed::new(
                    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                        produce_one_row: false,
                        schema: Arc::new(DFSchema::empty()),
                    }),
                    false,
                    TreeNodeRecursion::Stop,
                ))
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if !rewritten.transformed {
        return Ok(rewritten.data);
    }
    // Masks may make a non-null column nullable: the nodes above learn it.
    Ok(rewritten
        .data
        .transform_up_with_subqueries(|node| node.recompute_schema().map(Transformed::yes))?
        .data)
}
