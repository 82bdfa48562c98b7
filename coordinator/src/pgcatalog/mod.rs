//! `pg_catalog` for PostgreSQL clients (psql's `\d` family, JDBC/ODBC
//! metadata, BI tools), from `datafusion-pg-catalog`.
//!
//! Each session gets its own `pg_catalog` schema, built over a catalog list
//! that holds only that user's [`VisibleCatalog`]: `pg_class`,
//! `pg_namespace`, `pg_attribute`, `pg_tables`, … list exactly what the user
//! may use, like `information_schema` and `SHOW TABLES`. The crate's static
//! tables (`pg_type`, `pg_proc`, …) are decoded once per process. The
//! client functions (`format_type`, `pg_get_userbyid`, `current_schema`, …)
//! are the crate's too, except the ones that must know the session:
//! `current_user`/`session_user` answer the logged-in user, and `version()`
//! stays Loch's.
//!
//! Client catalog queries go through the crate's SQL rewrites (regclass
//! casts, `OPERATOR(pg_catalog.~)`, psql's fixed queries); other statements
//! do not, because one of those rewrites replaces correlated subqueries in
//! a select list by NULL, which would change the answers of real queries.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use crate::engine::Engine;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf, format_type,
    has_privilege_udf, oid_type_planner, pg_get_expr_udf,
};
use loch_catalog::{CatalogStore, DATABASE_NAME};

mod amend;

use crate::access::VisibleCatalog;
use crate::error::LochError;

/// The static tables, decoded on first use.
fn static_tables() -> Result<Arc<PgCatalogStaticTables>, LochError> {
    static TABLES: OnceLock<Result<Arc<PgCatalogStaticTables>, String>> = OnceLock::new();
    TABLES
        .get_or_init(|| {
            PgCatalogStaticTables::try_new()
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| LochError::Internal(format!("pg_catalog static tables: {e}")))
}

/// Roles for `pg_roles`/`pg_user`, from the catalog store.
#[derive(Debug, Clone)]
struct StoreRoles {
    store: Arc<dyn CatalogStore>,
}

#[async_trait]
impl PgCatalogContextProvider for StoreRoles {
    async fn roles(&self) -> Vec<String> {
        match self.store.security_state() {
            Ok(state) => state.roles.into_keys().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "pg_roles: reading roles");
                Vec::new()
            }
        }
    }

    async fn role(&self, name: &str) -> Option<Role> {
        let state = self.store.security_state().ok()?;
        let role = state.roles.get(name)?;
        let inherited_roles = state
            .roles_of(name)
            .into_iter()
            .filter(|r| r != name && r != loch_catalog::access_control::PUBLIC)
            .collect();
        Some(Role {
            name: role.name.clone(),
            is_superuser: role.superuser,
            can_login: role.login,
            can_create_db: false,
            can_create_role: role.superuser,
            can_create_user: role.superuser,
            can_replication: false,
            grants: Vec::new(),
            inherited_roles,
        })
    }
}

/// A function of no arguments answering one string for this session.
fn constant_udf(name: &str, value: &str) -> ScalarUDF {
    let value = value.to_string();
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                value.clone(),
            ))))
        }),
    )
}

/// `pg_*_is_visible(oid)`: everything in `pg_catalog` is on the search
/// path as psql means it.
fn visible_udf(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    )
}

/// PostgreSQL's reserved key words: `quote_ident` quotes them.
const RESERVED_WORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// `quote_ident(text)` over any column (the crate's takes literals only;
/// Grafana's column listing passes `column_name`): double quotes unless the
/// name is a lower-case identifier that is not a reserved word.
fn quote_ident_udf() -> ScalarUDF {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::compute::cast;
    fn quote(name: &str) -> String {
        let plain = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !RESERVED_WORDS.contains(&name);
        if plain {
            name.to_string()
        } else {
            format!("\"{}\"", name.replace('"', "\"\""))
        }
    }
    create_udf(
        "quote_ident",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args| match &args[0] {
            ColumnarValue::Scalar(value) => {
                let text = match value {
                    ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                        v.as_deref().map(quote)
                    }
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(text)))
            }
            ColumnarValue::Array(array) => {
                let names = cast(array, &DataType::Utf8)?;
                let quoted: StringArray = names
                    .as_string::<i32>()
                    .iter()
                    .map(|n| n.map(quote))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(quoted)))
            }
        }),
    )
}

/// A function of any arguments that answers NULL text: for catalog
/// functions about objects Loch has none of, whatever form clients call.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullText {
    name: String,
    signature: datafusion::logical_expr::Signature,
}

impl NullText {
    fn new(name: &str) -> Self {
        NullText {
            name: name.to_string(),
            signature: datafusion::logical_expr::Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Nullary,
                    datafusion::logical_expr::TypeSignature::VariadicAny,
                ],
                Volatility::Stable,
            ),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for NullText {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        _: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))
    }
}

/// `json_build_object(key, value, …)` as JSON text: SQLAlchemy's column
/// listing builds identity and collation details with it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        use datafusion::arrow::array::{Array, AsArray, StringBuilder};
        use datafusion::arrow::compute::cast;
        if !args.args.len().is_multiple_of(2) {
            return Err(datafusion::error::DataFusionError::External(Box::new(
                LochError::InvalidParameter(
                    "json_build_object: argument list must have even number of elements".into(),
                ),
            )));
        }
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let texts = arrays
            .iter()
            .map(|a| cast(a, &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = StringBuilder::new();
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in 0..arrays.len() / 2 {
                let (key, value) = (&texts[2 * pair], &arrays[2 * pair + 1]);
                let text = texts[2 * pair + 1].as_string::<i32>();
                let key = key.as_string::<i32>();
                if key.is_null(row) {
                    continue;
                }
                let json = if value.is_null(row) {
                    serde_json::Value::Null
                } else if value.data_type().is_numeric() || value.data_type() == &DataType::Boolean
                {
                    serde_json::from_str(text.value(row))
                        .unwrap_or_else(|_| serde_json::Value::String(text.value(row).into()))
                } else {
                    serde_json::Value::String(text.value(row).into())
                };
                object.insert(key.value(row).to_string(), json);
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The SQL spellings of builtin types that are not their `typname`.
const TYPE_ALIASES: &[(&str, &str)] = &[
    ("integer", "int4"),
    ("int", "int4"),
    ("smallint", "int2"),
    ("bigint", "int8"),
    ("real", "float4"),
    ("double precision", "float8"),
    ("boolean", "bool"),
    ("decimal", "numeric"),
    ("character varying", "varchar"),
    ("character", "bpchar"),
    ("char", "bpchar"),
    ("timestamp without time zone", "timestamp"),
    ("timestamp with time zone", "timestamptz"),
    ("time without time zone", "time"),
    ("time with time zone", "timetz"),
];

/// `to_regtype(text)`: the OID of the named builtin type (a `pg_catalog.`
/// prefix, SQL spellings and `[]` for arrays allowed), or NULL — psycopg
/// and SQLAlchemy look types up so (`hstore` at connect).
fn to_regtype_udf() -> Result<ScalarUDF, LochError> {
    use datafusion::arrow::array::{Array, AsArray, Int32Array, StringArray};
    use datafusion::arrow::compute::cast;
    use std::collections::HashMap;
    let mut oids: HashMap<String, i32> = HashMap::new();
    for batch in static_tables()?.pg_type.data() {
        let (Some(oid), Some(name)) =
            (batch.column_by_name("oid"), batch.column_by_name("typname"))
        else {
            continue;
        };
        let (Ok(oid), Ok(name)) = (cast(oid, &DataType::Int32), cast(name, &DataType::Utf8)) else {
            continue;
        };
        let (oid, name) = (
            oid.as_primitive::<datafusion::arrow::datatypes::Int32Type>(),
            name.as_string::<i32>(),
        );
        for i in 0..batch.num_rows() {
            if !oid.is_null(i) && !name.is_null(i) {
                oids.entry(name.value(i).to_string())
                    .or_insert(oid.value(i));
            }
        }
    }
    let lookup = move |text: &str| -> Option<i32> {
        let text = text.trim().to_ascii_lowercase();
        let text = text
            .strip_prefix("pg_catalog.")
            .unwrap_or(&text)
            .trim_matches('"');
        let (base, array) = match text.strip_suffix("[]") {
            Some(base) => (base.trim(), true),
            None => (text, false),
        };
        let base = TYPE_ALIASES
            .iter()
            .find(|(alias, _)| *alias == base)
            .map_or(base, |(_, name)| *name);
        let name = if array {
            format!("_{base}")
        } else {
            base.to_string()
        };
        oids.get(&name).copied()
    };
    Ok(create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |args| {
            let names = match &args[0] {
                ColumnarValue::Scalar(value) => {
                    let name = match value {
                        ScalarValue::Utf8(v)
                        | ScalarValue::LargeUtf8(v)
                        | ScalarValue::Utf8View(v) => v.clone(),
                        _ => None,
                    };
                    return Ok(ColumnarValue::Scalar(ScalarValue::Int32(
                        name.as_deref().and_then(&lookup),
                    )));
                }
                ColumnarValue::Array(array) => cast(array, &DataType::Utf8)?,
            };
            let names: &StringArray = names.as_string::<i32>();
            let oids: Int32Array = names.iter().map(|n| n.and_then(&lookup)).collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
        }),
    ))
}

/// PostgreSQL's `pg_size_pretty(bigint)`: bytes below 10 kB, else the
/// largest unit that keeps at least 10 of them, rounded half away from zero
/// (PostgreSQL's algorithm: one spare bit kept for the rounding).
pub fn size_pretty(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    const LIMIT2: i64 = LIMIT * 2 - 1;
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    if bytes.abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    let mut size = bytes >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < LIMIT2 {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    format!("{} PB", half_rounded(size))
}

fn size_pretty_udf() -> ScalarUDF {
    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let [arg] = args else {
                return Err(datafusion::error::DataFusionError::External(Box::new(
                    LochError::DatatypeMismatch("pg_size_pretty takes one argument".into()),
                )));
            };
            Ok(match arg {
                ColumnarValue::Scalar(ScalarValue::Int64(v)) => {
                    ColumnarValue::Scalar(ScalarValue::Utf8(v.map(size_pretty)))
                }
                ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
                ColumnarValue::Array(array) => {
                    let values = array.as_any().downcast_ref::<Int64Array>().ok_or_else(|| {
                        datafusion::error::DataFusionError::External(Box::new(
                            LochError::DatatypeMismatch("pg_size_pretty takes a bigint".into()),
                        ))
                    })?;
                    let out: StringArray = values.iter().map(|v| v.map(size_pretty)).collect();
                    ColumnarValue::Array(Arc::new(out) as Arc<dyn Array>)
                }
            })
        }),
    )
}

/// `f(oid) → bigint` for sizes Loch does not report per relation (yet):
/// NULL, which `\dt+` shows as an empty size.
fn unknown_size_udf(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Int64,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Int64(None)))),
    )
}

/// `f(oid, …) → text` that knows nothing about the object: NULL.
fn null_text_udf(name: &str, args: Vec<DataType>) -> ScalarUDF {
    create_udf(
        name,
        args,
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    )
}

/// Gives the session `ctx` of `user` its `pg_catalog` (registered in
/// `visible`, the session's own catalog) and the functions clients call.
pub fn install(
    ctx: &SessionContext,
    engine: &Engine,
    visible: &VisibleCatalog,
    user: &str,
) -> Result<(), LochError> {
    let store = Arc::clone(engine.catalog().store());
    // A list of its own (not the session's, which will hold pg_catalog
    // itself: a cycle no session would ever free).
    let list: Arc<dyn CatalogProviderList> = Arc::new(MemoryCatalogProviderList::new());
    list.register_catalog(
        DATABASE_NAME.to_string(),
        Arc::new(VisibleCatalog::new(
            engine.catalog().provider(),
            Arc::clone(&store),
            user,
        )),
    );
    let schema = PgCatalogSchemaProvider::try_new(
        Arc::clone(&list),
        static_tables()?,
        StoreRoles { store },
    )?;
    visible.add_session_schema(
        "pg_catalog",
        Arc::new(amend::LochPgCatalog::new(Arc::new(schema), list)),
    );

    for udf in [
        pg::create_current_database_udf(DATABASE_NAME),
        pg::create_current_schema_udf(),
        pg::create_current_schemas_udf(),
        pg::create_pg_get_userbyid_udf(),
        has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
        pg::create_pg_table_is_visible(),
        visible_udf("pg_function_is_visible"),
        visible_udf("pg_type_is_visible"),
        visible_udf("pg_collation_is_visible"),
        // Loch has no indexes: nothing to define.
        ScalarUDF::new_from_impl(NullText::new("pg_get_indexdef")),
        // psql's \df: Loch has no SQL functions to describe yet.
        null_text_udf("pg_get_function_result", vec![DataType::Int32]),
        null_text_udf("pg_get_function_arguments", vec![DataType::Int32]),
        null_text_udf("pg_get_function_identity_arguments", vec![DataType::Int32]),
        // No sequences: SQLAlchemy's column listing asks.
        null_text_udf(
            "pg_get_serial_sequence",
            vec![DataType::Utf8, DataType::Utf8],
        ),
        // Comments: Loch keeps none yet.
        null_text_udf("obj_description", vec![DataType::Int32, DataType::Utf8]),
        null_text_udf("col_description", vec![DataType::Int32, DataType::Int32]),
        null_text_udf("shobj_description", vec![DataType::Int32, DataType::Utf8]),
        size_pretty_udf(),
        unknown_size_udf("pg_table_size"),
        unknown_size_udf("pg_indexes_size"),
        format_type::create_format_type_udf(),
        pg_get_expr_udf::create_pg_get_expr_udf(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_backend_pid_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        quote_ident_udf(),
        ScalarUDF::new_from_impl(NullText::new("pg_advisory_unlock_all")),
        datafusion_pg_catalog::pg_catalog::quote_ident_udf::create_parse_ident_udf(),
        array_bounds_udf::create_array_upper_udf(),
        array_bounds_udf::create_array_lower_udf(),
        // The crate's answer "postgres"; these know who logged in.
        constant_udf("session_user", user),
        constant_udf("current_user", user),
    ] {
        ctx.register_udf(udf);
    }
    ctx.register_udf(to_regtype_udf()?);
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject {
        signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Stable),
    }));
    ctx.register_udtf("pg_get_keywords", static_tables()?.pg_get_keywords.clone());
    // `regclass`, `regtype`, `oid` … as type names in casts.
    let state = ctx.state_ref();
    let current = state.read().clone();
    let with_types = SessionStateBuilder::new_from_existing(current)
        .with_type_planner(Arc::new(oid_type_planner::PgOidTypePlanner))
        .build();
    *state.write() = with_types;
    datafusion_pg_catalog::pg_catalog::generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(
        ctx,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_postgresql_prints_them() {
        for (bytes, text) in [
            (0, "0 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (1_048_576, "1024 kB"),
            (10_485_760, "10 MB"),
            (123_456_789, "118 MB"),
            (-10240, "-10 kB"),
        ] {
            assert_eq!(size_pretty(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn quote_ident_quotes_like_postgresql() {
        let udf = quote_ident_udf();
        let names = ["orders", "Orders", "user", "a b", "x\"y", "_t1", "1t"];
        let array: datafusion::arrow::array::ArrayRef =
            Arc::new(datafusion::arrow::array::StringArray::from(names.to_vec()));
        let field = Arc::new(datafusion::arrow::datatypes::Field::new(
            "n",
            DataType::Utf8,
            true,
        ));
        let out = udf
            .invoke_with_args(datafusion::logical_expr::ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(array)],
                arg_fields: vec![field.clone()],
                number_rows: names.len(),
                return_field: field,
                config_options: Arc::new(Default::default()),
            })
            .unwrap();
        let ColumnarValue::Array(out) = out else {
            panic!("an array in, an array out");
        };
        let out = datafusion::arrow::array::AsArray::as_string::<i32>(&out);
        let quoted: Vec<&str> = out.iter().map(|v| v.unwrap()).collect();
        assert_eq!(
            quoted,
            [
                "orders",
                "\"Orders\"",
                "\"user\"",
                "\"a b\"",
                "\"x\"\"y\"",
                "_t1",
                "\"1t\""
            ]
        );
    }
}
