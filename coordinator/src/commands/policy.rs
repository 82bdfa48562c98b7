//! `ALTER TABLE t SET|DROP ROW FILTER` and `ALTER TABLE t ALTER COLUMN c
//! SET|DROP MASK`: checked and stored in the catalog; the access module
//! applies them inside every plan.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, TableReference};
use datafusion::logical_expr::ExprSchemable;
use loch_catalog::access_control::SecurityState;
use loch_catalog::{DATABASE_NAME, RelationKind};

use crate::access::policy::{Reader, compile, fit_mask};
use crate::error::LochError;
use crate::session::Session;

/// `ALTER TABLE t SET|DROP ROW FILTER`, `ALTER TABLE t ALTER COLUMN c
/// SET|DROP MASK`: checks the table, the column and the expression (it
/// must plan over the table, for the user setting it) before storing.
pub async fn set(
    session: &Session,
    (schema, name): (String, String),
    column: Option<&str>,
    expression: Option<&str>,
    state: &SecurityState,
) -> Result<(), LochError> {
    let store = session.engine().catalog().store();
    let relation = store.relation(&schema, &name)?.ok_or_else(|| {
        loch_catalog::CatalogError::RelationNotFound {
            schema: schema.clone(),
            name: name.clone(),
        }
    })?;
    if relation.kind == RelationKind::View {
        return Err(LochError::WrongObjectType(format!(
            "{schema}.{name} is a view: row filters and masks go on tables"
        )));
    }
    if let Some(expression) = expression {
        let qualified = TableReference::full(DATABASE_NAME, schema.as_str(), name.as_str());
        let provider = session.context().table_provider(qualified.clone()).await?;
        let df_schema = DFSchema::try_from_qualified_schema(qualified, &provider.schema())?;
        let reader = Reader::of(state, session.user());
        let planned = compile(session, expression, &df_schema, &reader)?;
        match column {
            None => {
                let kind = planned.get_type(&df_schema)?;
                if !matches!(kind, DataType::Boolean | DataType::Null) {
                    return Err(LochError::DatatypeMismatch(format!(
                        "a row filter must be boolean, not {kind}"
                    )));
                }
            }
            Some(column) => {
                let field = provider
                    .schema()
                    .field_with_name(column)
                    .map(|f| f.data_type().clone())
                    .map_err(|_| {
                        LochError::UndefinedColumn(format!(
                            "column \"{column}\" of relation \"{name}\" does not exist"
                        ))
                    })?;
                fit_mask(planned, column, &field, &df_schema)?;
            }
        }
    }
    let existed = store.set_policy(&schema, &name, column.unwrap_or(""), expression)?;
    if expression.is_none() && !existed {
        return Err(LochError::UndefinedObject(match column {
            None => format!("table {schema}.{name} has no row filter"),
            Some(c) => format!("column {c} of {schema}.{name} has no mask"),
        }));
    }
    Ok(())
}
