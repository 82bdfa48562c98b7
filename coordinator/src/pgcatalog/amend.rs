//! Corrections to `datafusion-pg-catalog`'s tables that clients depend on.
//!
//! The crate builds its tables inside its own providers (and owns the OID
//! cache that ties `pg_class`, `pg_namespace` and `pg_attribute` together),
//! so Loch wraps them instead of replacing them: [`LochPgCatalog`] hands out
//! the crate's tables, and for two of them a provider that reads the crate's
//! rows and amends them:
//!
//! - `pg_namespace` lists only the user's schemas, but `pg_type`, `pg_proc`
//!   and every client's type query join on `pg_catalog` (OID 11) and
//!   `information_schema`: their rows are added (pgjdbc's `getTypeInfo()`
//!   returns nothing without them).
//! - `pg_class` lacks `relacl` and `reloptions`: added, NULL.
//! - `pg_attribute.atttypmod` is always -1 in the crate, so `numeric(15,2)`
//!   columns look like bare `numeric` to psql's `\d`, pgjdbc's
//!   `getColumns()` and psqlODBC's `SQLColumns`; the typmod is filled in from
//!   the table's Arrow type.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::sql::client_catalog::INFORMATION_SCHEMA_COLUMNS;
use crate::types::numeric_typmod;

/// The namespaces every PostgreSQL database has, with PostgreSQL 16's OIDs
/// (the ones the crate's static `pg_type` and `pg_proc` rows refer to).
const BUILTIN_NAMESPACES: &[(i32, &str)] = &[
    (11, "pg_catalog"),
    (99, "pg_toast"),
    (13283, "information_schema"),
];

/// The session's `pg_catalog` schema: the crate's, with amended tables.
#[derive(Debug)]
pub struct LochPgCatalog {
    inner: Arc<dyn SchemaProvider>,
    /// The user's catalogs, as the crate lists them.
    list: Arc<dyn CatalogProviderList>,
}

impl LochPgCatalog {
    pub fn new(inner: Arc<dyn SchemaProvider>, list: Arc<dyn CatalogProviderList>) -> Self {
        LochPgCatalog { inner, list }
    }
}

#[async_trait]
impl SchemaProvider for LochPgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name == INFORMATION_SCHEMA_COLUMNS {
            let columns = InformationSchemaProvider::new(Arc::clone(&self.list))
                .table("columns")
                .await?;
            return Ok(columns.map(|inner| -> Arc<dyn TableProvider> {
                Arc::new(Amended {
                    schema: inner.schema(),
                    inner,
                    amendment: Amendment::PostgresTypeNames,
                })
            }));
        }
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let amendment = match name {
            "pg_namespace" => Amendment::BuiltinNamespaces,
            "pg_attribute" => Amendment::TypeModifiers(Arc::clone(&self.list)),
            "pg_class" => Amendment::NullColumns(vec![
                Field::new("relacl", DataType::Utf8, true),
                Field::new(
                    "reloptions",
                    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                    true,
                ),
            ]),
            _ => return Ok(Some(table)),
        };
        let mut fields: Vec<Field> = table
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Amendment::NullColumns(extra) = &amendment {
            fields.extend(
                extra
                    .iter()
                    .filter(|f| table.schema().field_with_name(f.name()).is_err())
                    .cloned(),
            );
        }
        Ok(Some(Arc::new(Amended {
            schema: Arc::new(Schema::new(fields)),
            inner: table,
            amendment,
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == INFORMATION_SCHEMA_COLUMNS || self.inner.table_exist(name)
    }
}

#[derive(Debug)]
enum Amendment {
    BuiltinNamespaces,
    TypeModifiers(Arc<dyn CatalogProviderList>),
    /// `information_schema.columns.data_type` in PostgreSQL's words
    /// (`bigint`, `numeric`, `text`) instead of Arrow's.
    PostgresTypeNames,
    /// Columns PostgreSQL has and the crate lacks (`pg_class.reloptions`,
    /// which SQLAlchemy's index listing selects): NULL in every row.
    NullColumns(Vec<Field>),
}

/// One of the crate's tables, read whole (they are small and built in
/// memory anyway) and amended before the query sees it.
#[derive(Debug)]
struct Amended {
    inner: Arc<dyn TableProvider>,
    amendment: Amendment,
    /// The inner table's columns, then any added ones.
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for Amended {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, None, &[], None).await?;
        let batches = collect(plan, state.task_ctx()).await?;
        let schema = self.inner.schema();
        let batches = match &self.amendment {
            Amendment::BuiltinNamespaces => add_builtin_namespaces(&schema, batches)?,
            Amendment::TypeModifiers(list) => add_type_modifiers(list, &schema, batches).await?,
            Amendment::PostgresTypeNames => batches
                .into_iter()
                .map(|batch| {
                    let Some(index) = batch.schema().index_of("data_type").ok() else {
                        return Ok(batch);
                    };
                    let Some(names) = string_column(&batch, "data_type") else {
                        return Ok(batch);
                    };
                    let renamed: StringArray =
                        names.iter().map(|t| t.map(postgres_type_name)).collect();
                    let mut columns = batch.columns().to_vec();
                    columns[index] = Arc::new(renamed);
                    RecordBatch::try_new(batch.schema(), columns)
                })
                .collect::<Result<Vec<_>, _>>()?,
            Amendment::NullColumns(_) => batches
                .into_iter()
                .map(|batch| {
                    let mut columns = batch.columns().to_vec();
                    for field in &self.schema.fields()[columns.len()..] {
                        columns.push(datafusion::arrow::array::new_null_array(
                            field.data_type(),
                            batch.num_rows(),
                        ));
                    }
                    RecordBatch::try_new(Arc::clone(&self.schema), columns)
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let schema = Arc::clone(&self.schema);
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            schema,
            projection.cloned(),
        )?)
    }
}

/// PostgreSQL's `information_schema` name for an Arrow type as DataFusion
/// prints it (`Int64`, `Decimal128(15, 2)`, `Timestamp(µs, "UTC")`, …).
fn postgres_type_name(arrow: &str) -> &'static str {
    let base = arrow.split(['(', '<']).next().unwrap_or(arrow).trim();
    match base {
        "Boolean" => "boolean",
        "Int8" | "Int16" | "UInt8" => "smallint",
        "Int32" | "UInt16" => "integer",
        "Int64" | "UInt32" => "bigint",
        "UInt64" | "Decimal32" | "Decimal64" | "Decimal128" | "Decimal256" => "numeric",
        "Float16" | "Float32" => "real",
        "Float64" => "double precision",
        "Utf8" | "LargeUtf8" | "Utf8View" => "text",
        "Binary" | "LargeBinary" | "BinaryView" | "FixedSizeBinary" => "bytea",
        "Date32" | "Date64" => "date",
        // `Timestamp(µs)`, or `Timestamp(µs, "UTC")` with a zone.
        "Timestamp" if arrow.contains(',') => "timestamp with time zone",
        "Timestamp" => "timestamp without time zone",
        "Time32" | "Time64" => "time without time zone",
        "Interval" | "Duration" => "interval",
        "List" | "LargeList" | "FixedSizeList" | "ListView" | "LargeListView" => "ARRAY",
        "Struct" => "record",
        _ => "USER-DEFINED",
    }
}

/// Appends the builtin namespaces the crate leaves out (unless present).
fn add_builtin_namespaces(
    schema: &SchemaRef,
    mut batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let present: Vec<String> = batches
        .iter()
        .filter_map(|b| string_column(b, "nspname"))
        .flat_map(|names| {
            names
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let missing: Vec<&(i32, &str)> = BUILTIN_NAMESPACES
        .iter()
        .filter(|(_, name)| !present.iter().any(|p| p == name))
        .collect();
    if missing.is_empty() {
        return Ok(batches);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| -> Result<ArrayRef> {
            Ok(match field.name().as_str() {
                "oid" => Arc::new(Int32Array::from_iter_values(missing.iter().map(|n| n.0))),
                "nspname" => Arc::new(StringArray::from_iter_values(missing.iter().map(|n| n.1))),
                // Owned by the bootstrap superuser, as in PostgreSQL.
                "nspowner" => Arc::new(Int32Array::from_iter_values(missing.iter().map(|_| 10))),
                _ => datafusion::arrow::array::new_null_array(field.data_type(), missing.len()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    batches.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
    Ok(batches)
}

/// Fills `atttypmod` from the Arrow types of the tables the rows describe.
///
/// The crate lists columns table by table in the order the catalog list
/// gives them; the same walk here yields each table's column names and
/// typmods. A run of rows with one `attrelid` is matched to the next table
/// whose column names are the same, so a table created or dropped between
/// the two walks leaves only its own rows at -1.
async fn add_type_modifiers(
    list: &Arc<dyn CatalogProviderList>,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let tables = table_columns(list).await?;
    let Ok(typmod_index) = schema.index_of("atttypmod") else {
        return Ok(batches);
    };
    let mut next_table = 0;
    let mut amended = Vec::with_capacity(batches.len());
    for batch in batches {
        let (Some(relids), Some(names)) = (
            int_column(&batch, "attrelid"),
            string_column(&batch, "attname"),
        ) else {
            amended.push(batch);
            continue;
        };
        let mut typmods: Vec<i32> = vec![-1; batch.num_rows()];
        let mut start = 0;
        while start < batch.num_rows() {
            let relid = relids.value(start);
            let mut end = start;
            while end < batch.num_rows() && relids.value(end) == relid {
                end += 1;
            }
            let run: Vec<&str> = (start..end).map(|i| names.value(i)).collect();
            if let Some(offset) = tables[next_table.min(tables.len())..]
                .iter()
                .position(|columns| columns.iter().map(|c| c.0.as_str()).eq(run.iter().copied()))
            {
                let found = next_table + offset;
                for (slot, (_, typmod)) in typmods[start..end].iter_mut().zip(&tables[found]) {
                    *slot = *typmod;
                }
                next_table = found + 1;
            }
            start = end;
        }
        let mut columns = batch.columns().to_vec();
        columns[typmod_index] = Arc::new(Int32Array::from(typmods));
        amended.push(RecordBatch::try_new(batch.schema(), columns)?);
    }
    Ok(amended)
}

/// Every table's (column name, typmod) list, in the crate's listing order.
async fn table_columns(list: &Arc<dyn CatalogProviderList>) -> Result<Vec<Vec<(String, i32)>>> {
    let mut tables = Vec::new();
    for catalog_name in list.catalog_names() {
        let Some(catalog) = list.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table_name in schema.table_names() {
                // A table that cannot be opened (a broken external table) is
                // listed by the crate without columns too.
                let Ok(Some(table)) = schema.table(&table_name).await else {
                    continue;
                };
                tables.push(
                    table
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| {
                            (
                                f.name().clone(),
                                numeric_typmod(f.data_type()).unwrap_or(-1),
                            )
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(tables)
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    batch
        .column_by_name(name)?
        .as_any()
        .downcast_ref::<StringArray>()
}

fn int_column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a Int32Array> {
    let column = batch.column_by_name(name)?;
    if column.null_count() > 0 {
        return None;
    }
    column.as_any().downcast_ref::<Int32Array>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    #[test]
    fn arrow_types_read_as_postgresql_names() {
        for (t, name) in [
            (DataType::Int64, "bigint"),
            (DataType::Int32, "integer"),
            (DataType::Decimal128(15, 2), "numeric"),
            (DataType::Utf8View, "text"),
            (DataType::Date32, "date"),
            (DataType::Float64, "double precision"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "timestamp without time zone",
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "timestamp with time zone",
            ),
            (DataType::Boolean, "boolean"),
        ] {
            assert_eq!(postgres_type_name(&t.to_string()), name, "{t}");
        }
    }
}
