//! Names as Loch resolves them: table references from Loch's own
//! parsers, schema names possibly qualified with the database, and the
//! one database there is.

use datafusion::common::TableReference;
use loch_catalog::DATABASE_NAME;

use crate::error::LochError;

/// A table name as Loch's own parsers read it (`t`, `s.t`, `db.s.t`).
pub fn reference(parts: &[String]) -> Result<TableReference, LochError> {
    Ok(match parts {
        [table] => TableReference::bare(table.as_str()),
        [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
        [database, schema, table] => {
            TableReference::full(database.as_str(), schema.as_str(), table.as_str())
        }
        _ => return Err(LochError::Syntax("a table name is needed".into())),
    })
}

/// (schema, name) of a table reference, unqualified names in
/// `current_schema`.
pub fn table_name(
    name: &TableReference,
    current_schema: &str,
) -> Result<(String, String), LochError> {
    match name {
        TableReference::Bare { table } => Ok((current_schema.to_string(), table.to_string())),
        TableReference::Partial { schema, table } => Ok((schema.to_string(), table.to_string())),
        TableReference::Full {
            catalog,
            schema,
            table,
        } => {
            check_database(catalog)?;
            Ok((schema.to_string(), table.to_string()))
        }
    }
}

/// A schema name, possibly qualified with the database.
pub fn schema_name(name: &str) -> Result<String, LochError> {
    match name.split_once('.') {
        Some((database, schema)) => {
            check_database(database)?;
            Ok(schema.to_string())
        }
        None => Ok(name.to_string()),
    }
}

fn check_database(name: &str) -> Result<(), LochError> {
    if name == DATABASE_NAME {
        Ok(())
    } else {
        Err(LochError::NotSupported(format!(
            "cross-database references: database \"{name}\" (this one is \"{DATABASE_NAME}\")"
        )))
    }
}
