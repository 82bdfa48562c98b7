//! What Flight SQL's metadata commands answer: `GetSqlInfo` and
//! `GetXdbcTypeInfo` (fixed for the server), and the Arrow types Loch sends.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, XdbcDataType,
};

use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast};

use crate::error::LochError;

/// The server's answers to `GetSqlInfo`.
pub fn sql_info() -> Result<SqlInfoData, LochError> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Loch");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, true);
    b.append(SqlInfo::SqlDdlTable, true);
    // Unquoted identifiers fold to lower case, as in PostgreSQL.
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        // Quoted identifiers keep their case; the enum has no "as written"
        // value, so say unknown rather than something false.
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "database");
    b.append(SqlInfo::SqlProcedureTerm, "function");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build()
        .map_err(|e| LochError::Internal(format!("building SqlInfo: {e}")))
}

/// One `GetXdbcTypeInfo` row.
fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    quoted: bool,
    create_params: Option<&[&str]>,
    scale: Option<(i32, i32)>,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size,
        literal_prefix: quoted.then(|| "'".to_string()),
        literal_suffix: quoted.then(|| "'".to_string()),
        create_params: create_params.map(|p| p.iter().map(|s| s.to_string()).collect()),
        nullable: Nullable::NullabilityNullable,
        case_sensitive: quoted,
        searchable: Searchable::Full,
        unsigned_attribute: (!quoted).then_some(false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.to_string()),
        minimum_scale: scale.map(|s| s.0),
        maximum_scale: scale.map(|s| s.1),
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: (!quoted).then_some(10),
        interval_precision: None,
    }
}

/// The SQL types Loch accepts in DDL and casts, with PostgreSQL's names.
pub fn xdbc_type_info() -> Result<XdbcTypeInfoData, LochError> {
    use XdbcDataType as X;
    let mut b = XdbcTypeInfoDataBuilder::new();
    for info in [
        xdbc("boolean", X::XdbcBit, Some(1), false, None, None),
        xdbc("smallint", X::XdbcSmallint, Some(5), false, None, None),
        xdbc("integer", X::XdbcInteger, Some(10), false, None, None),
        xdbc("bigint", X::XdbcBigint, Some(19), false, None, None),
        xdbc("real", X::XdbcReal, Some(24), false, None, None),
        xdbc(
            "double precision",
            X::XdbcDouble,
            Some(53),
            false,
            None,
            None,
        ),
        xdbc(
            "numeric",
            X::XdbcDecimal,
            Some(38),
            false,
            Some(&["precision", "scale"]),
            Some((0, 38)),
        ),
        xdbc("text", X::XdbcLongvarchar, None, true, None, None),
        xdbc(
            "varchar",
            X::XdbcVarchar,
            None,
            true,
            Some(&["length"]),
            None,
        ),
        xdbc("bytea", X::XdbcLongvarbinary, None, true, None, None),
        xdbc("date", X::XdbcDate, Some(10), true, None, None),
        xdbc("time", X::XdbcTime, Some(15), true, None, Some((0, 6))),
        xdbc(
            "timestamp",
            X::XdbcTimestamp,
            Some(26),
            true,
            None,
            Some((0, 6)),
        ),
    ] {
        b.append(info);
    }
    b.build()
        .map_err(|e| LochError::Internal(format!("building XdbcTypeInfo: {e}")))
}

/// The type Loch sends over Flight for an engine type: DataFusion's view
/// types (`Utf8View`, `BinaryView`) become plain `Utf8`/`Binary`, which every
/// Arrow client reads (the JDBC Flight SQL driver and older pyarrow do not
/// know view types).
fn wire_type(data_type: &DataType) -> DataType {
    let field =
        |f: &Arc<Field>| Arc::new(f.as_ref().clone().with_data_type(wire_type(f.data_type())));
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        other => other.clone(),
    }
}

/// The schema of a result as Loch sends it over Flight.
pub fn wire_schema(schema: &Schema) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| wire_type(f.data_type()) != *f.data_type())
    {
        return Arc::new(schema.clone());
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(wire_type(f.data_type())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `plan` with its view-typed columns cast to their wire types on top, so
/// that the conversion runs inside the query, on every partition at once,
/// instead of on the one stream that sends the rows (it is about a tenth of
/// the server's work on a wide scan). Plans that are not plain queries, and
/// any the projection cannot be built on, are left as they are: their rows
/// are converted as they are sent ([`to_wire`]).
pub fn wire_plan(plan: LogicalPlan) -> LogicalPlan {
    let converts = plan
        .schema()
        .fields()
        .iter()
        .any(|f| wire_type(f.data_type()) != *f.data_type());
    let query = !matches!(
        plan,
        LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Extension(_)
    );
    if !converts || !query {
        return plan;
    }
    let columns: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            let wire = wire_type(field.data_type());
            if wire == *field.data_type() {
                column
            } else {
                cast(column, wire).alias_qualified(qualifier.cloned(), field.name())
            }
        })
        .collect();
    LogicalPlanBuilder::from(plan.clone())
        .project(columns)
        .and_then(|builder| builder.build())
        .unwrap_or(plan)
}

/// A result batch converted to `schema` (from [`wire_schema`]).
pub fn to_wire(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, LochError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = crate::session::cast_columns(&batch, schema)
        .map_err(|e| LochError::Internal(format!("converting a result batch: {e}")))?;
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| LochError::Internal(format!("converting a result batch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_metadata_builds() {
        assert!(sql_info().is_ok());
        let types = xdbc_type_info().unwrap();
        assert_eq!(types.record_batch(None).unwrap().num_rows(), 13);
    }

    #[test]
    fn view_types_become_plain() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Utf8View, true),
            Field::new("b", DataType::Int32, false),
        ]);
        let wire = wire_schema(&schema);
        assert_eq!(wire.field(0).data_type(), &DataType::Utf8);
        assert_eq!(wire.field(1).data_type(), &DataType::Int32);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(arrow::array::StringViewArray::from(vec![
                    "x",
                    "a longer string value",
                ])),
                Arc::new(arrow::array::Int32Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let out = to_wire(batch, &wire).unwrap();
        assert_eq!(out.schema(), wire);
        assert_eq!(out.num_rows(), 2);
    }

    #[tokio::test]
    async fn queries_convert_views_inside_the_plan() {
        let ctx = datafusion::prelude::SessionContext::new();
        let same_names = "SELECT a.column1, b.column1, a.column2 \
                          FROM (VALUES (arrow_cast('x', 'Utf8View'), 1)) a \
                          JOIN (VALUES (arrow_cast('x', 'Utf8View'), 2)) b ON a.column1 = b.column1";
        let plan = ctx.state().create_logical_plan(same_names).await.unwrap();
        let wire = wire_plan(plan.clone());
        assert_eq!(
            wire.schema().as_arrow(),
            wire_schema(plan.schema().as_arrow()).as_ref(),
            "same names, same order, wire types"
        );
        let batches = ctx
            .execute_logical_plan(wire)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(batches[0].column(0).data_type(), &DataType::Utf8);
        // Not a query: unchanged.
        let explain = ctx
            .state()
            .create_logical_plan(&format!("EXPLAIN {same_names}"))
            .await
            .unwrap();
        assert_eq!(wire_plan(explain.clone()), explain);
    }
}
