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

use std::sync::{Arc, LazyLock, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    OrderBy, OrderByKind, SelectItem, SetExpr, Statement, Value, ValueWithSpan, visit_expressions,
    visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf, format_type,
    has_privilege_udf, oid_type_planner, pg_get_expr_udf,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use loch_catalog::{CatalogStore, DATABASE_NAME};
use loch_executor::Engine;

mod amend;

use crate::error::LochError;
use crate::security::VisibleCatalog;

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
            return Err(datafusion::error::DataFusionError::Plan(
                "json_build_object takes key, value pairs".into(),
            ));
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
                return Err(datafusion::error::DataFusionError::Plan(
                    "pg_size_pretty takes one argument".into(),
                ));
            };
            Ok(match arg {
                ColumnarValue::Scalar(ScalarValue::Int64(v)) => {
                    ColumnarValue::Scalar(ScalarValue::Utf8(v.map(size_pretty)))
                }
                ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
                ColumnarValue::Array(array) => {
                    let values = array.as_any().downcast_ref::<Int64Array>().ok_or_else(|| {
                        datafusion::error::DataFusionError::Plan(
                            "pg_size_pretty takes a bigint".into(),
                        )
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

/// Words that make a statement a client's catalog query: `pg_catalog`, its
/// tables and its functions (a user's column named `pg_count` does not).
const CATALOG_WORDS: &[&str] = &[
    "pg_catalog",
    "pg_am",
    "pg_attr",
    "pg_auth",
    "pg_backend_pid",
    "pg_cast",
    "pg_class",
    "pg_collation",
    "pg_constraint",
    "pg_database",
    "pg_depend",
    "pg_description",
    "pg_encoding_to_char",
    "pg_enum",
    "pg_event_trigger",
    "pg_extension",
    "pg_foreign",
    "pg_function_is_visible",
    "pg_get_",
    "pg_index",
    "pg_inherits",
    "pg_language",
    "pg_matviews",
    "pg_namespace",
    "pg_opclass",
    "pg_operator",
    "pg_partitioned_table",
    "pg_policy",
    "pg_proc",
    "pg_publication",
    "pg_range",
    "pg_relation_size",
    "pg_rewrite",
    "pg_roles",
    "pg_sequence",
    "pg_settings",
    "pg_shdescription",
    "pg_stat",
    "pg_table_is_visible",
    "pg_tables",
    "pg_tablespace",
    "pg_total_relation_size",
    "pg_trigger",
    "pg_ts_",
    "pg_type",
    "pg_user",
    "pg_views",
];

/// The crate's parser with its blacklist of client queries and rewrites.
static COMPATIBILITY: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// A client's catalog query, rewritten for DataFusion: `Some` when `sql`
/// reads `pg_catalog` or uses its casts and operators and parses into
/// queries only; `None` leaves it to the normal path.
pub fn catalog_query(sql: &str) -> Option<Vec<Statement>> {
    let lower = sql.to_ascii_lowercase();
    let catalog_like = lower.contains("::reg")
        || lower.contains("operator(")
        || lower
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| CATALOG_WORDS.iter().any(|w| word.starts_with(w)));
    if !catalog_like {
        return None;
    }
    let regproc = regproc_columns_as_text(sql);
    let sql = regproc.as_deref().unwrap_or(sql);
    let mut statements = COMPATIBILITY.parse(sql).ok()?;
    if !statements.iter().all(|s| matches!(s, Statement::Query(_))) {
        return None;
    }
    for statement in &mut statements {
        let _ = visit_expressions_mut(statement, |e| {
            array_subquery_to_aggregate(e);
            scalar_subquery_to_aggregate(e);
            like_escape_to_backslash(e);
            vector_functions(e);
            case_subqueries_on_absent_features(e);
            ControlFlow::<()>::Continue(())
        });
    }
    Some(statements)
}

/// `ARRAY(SELECT x FROM … [ORDER BY …])`, which DataFusion does not plan,
/// as `(SELECT array_agg(x [ORDER BY …]) FROM …)` (psql's `\du` asks for a
/// role's memberships so). Unlike `ARRAY()`, no rows give NULL, not `{}`.
fn array_subquery_to_aggregate(expr: &mut SqlExpr) {
    let SqlExpr::Function(f) = expr else {
        return;
    };
    let FunctionArguments::Subquery(query) = &f.args else {
        return;
    };
    if !f.name.to_string().eq_ignore_ascii_case("array")
        || query.limit_clause.is_some()
        || query.fetch.is_some()
    {
        return;
    }
    let mut query = (**query).clone();
    let order_by = query.order_by.take();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let [item] = select.projection.as_slice() else {
        return;
    };
    let element = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return,
    };
    let order = match order_by {
        None => String::new(),
        Some(OrderBy {
            kind: OrderByKind::Expressions(list),
            ..
        }) => {
            let mut terms = Vec::with_capacity(list.len());
            for term in &list {
                // `ORDER BY 1` is the selected column, not the constant.
                let text = term.to_string();
                match (&term.expr, text.strip_prefix('1')) {
                    (SqlExpr::Value(v), Some(rest)) if v.to_string() == "1" => {
                        terms.push(format!("{element}{rest}"))
                    }
                    _ => terms.push(text),
                }
            }
            format!(" ORDER BY {}", terms.join(", "))
        }
        Some(_) => return,
    };
    let text = format!("array_agg({element}{order})");
    let Ok(aggregate) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
    else {
        return;
    };
    select.projection = vec![SelectItem::UnnamedExpr(aggregate)];
    *expr = SqlExpr::Subquery(Box::new(query));
}

/// Client queries of `information_schema.columns` read Loch's copy in
/// `pg_catalog` instead, whose `data_type` has PostgreSQL's type names
/// (Metabase, Grafana and hand-written queries read it). `None` when `sql`
/// does not name that table.
pub fn information_schema_columns(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{
        Ident, ObjectName, ObjectNamePart, TableAlias, TableFactor, VisitMut, VisitorMut,
    };
    struct Redirect {
        changed: bool,
    }
    impl VisitorMut for Redirect {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, alias, .. } = factor {
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .map(|p| p.to_string().to_ascii_lowercase())
                    .collect();
                if parts == ["information_schema", "columns"] {
                    *name = ObjectName(vec![
                        ObjectNamePart::Identifier(Ident::new("pg_catalog")),
                        ObjectNamePart::Identifier(Ident::new(amend::INFORMATION_SCHEMA_COLUMNS)),
                    ]);
                    // `columns.x` references keep working.
                    alias.get_or_insert(TableAlias {
                        explicit: true,
                        name: Ident::new("columns"),
                        columns: Vec::new(),
                        at: None,
                    });
                    self.changed = true;
                }
            }
            ControlFlow::Continue(())
        }
    }
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("information_schema") || !lower.contains("columns") {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut redirect = Redirect { changed: false };
    for statement in &mut statements {
        let _ = statement.visit(&mut redirect);
    }
    redirect.changed.then(|| {
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// `pg_type`'s function columns, which the crate keeps as the function's
/// name (PostgreSQL's `regproc` prints as one).
const REGPROC_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
];

/// `typinput = 'pg_catalog.array_in'::regproc` (pgjdbc's array test) as
/// `typinput = 'array_in'`: the crate would turn the cast into a `pg_proc`
/// OID, which cannot be compared with the name it stores. Likewise a join
/// `pg_proc.oid = a.typreceive` (Npgsql's type loading) compares the
/// function's name: `pg_proc.proname = a.typreceive`. `None` when the text
/// has no such comparison.
fn regproc_columns_as_text(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    if !REGPROC_COLUMNS.iter().any(|c| lower.contains(c)) {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    for statement in &mut statements {
        let _ = visit_expressions_mut(statement, |e| {
            if let SqlExpr::BinaryOp { left, op, right } = e
                && matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq)
            {
                if let Some(proname) = function_oid_as_name(left, right) {
                    **left = proname;
                    changed = true;
                } else if let Some(proname) = function_oid_as_name(right, left) {
                    **right = proname;
                    changed = true;
                } else if let Some(name) = regproc_name(left, right) {
                    **right = SqlExpr::Value(Value::SingleQuotedString(name).into());
                    changed = true;
                } else if let Some(name) = regproc_name(right, left) {
                    **left = SqlExpr::Value(Value::SingleQuotedString(name).into());
                    changed = true;
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
    changed.then(|| {
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// `x.proname` when `oid` is a column `x.oid` compared with one of
/// [`REGPROC_COLUMNS`].
fn function_oid_as_name(oid: &SqlExpr, column: &SqlExpr) -> Option<SqlExpr> {
    let SqlExpr::CompoundIdentifier(parts) = oid else {
        return None;
    };
    let (last, qualifier) = parts.split_last()?;
    if !last.value.eq_ignore_ascii_case("oid") || qualifier.is_empty() {
        return None;
    }
    let name = match column {
        SqlExpr::Identifier(i) => &i.value,
        SqlExpr::CompoundIdentifier(parts) => &parts.last()?.value,
        _ => return None,
    };
    if !REGPROC_COLUMNS.iter().any(|c| name.eq_ignore_ascii_case(c)) {
        return None;
    }
    let mut parts = qualifier.to_vec();
    parts.push(datafusion::sql::sqlparser::ast::Ident::new("proname"));
    Some(SqlExpr::CompoundIdentifier(parts))
}

/// The function name in `value` when `column` is one of
/// [`REGPROC_COLUMNS`] and `value` is `'[pg_catalog.]name'::regproc`.
fn regproc_name(column: &SqlExpr, value: &SqlExpr) -> Option<String> {
    let name = match column {
        SqlExpr::Identifier(i) => &i.value,
        SqlExpr::CompoundIdentifier(parts) => &parts.last()?.value,
        _ => return None,
    };
    if !REGPROC_COLUMNS.iter().any(|c| name.eq_ignore_ascii_case(c)) {
        return None;
    }
    let SqlExpr::Cast {
        expr, data_type, ..
    } = value
    else {
        return None;
    };
    if !data_type
        .to_string()
        .to_ascii_lowercase()
        .ends_with("regproc")
    {
        return None;
    }
    let SqlExpr::Value(ValueWithSpan {
        value: Value::SingleQuotedString(function),
        ..
    }) = expr.as_ref()
    else {
        return None;
    };
    Some(
        function
            .strip_prefix("pg_catalog.")
            .unwrap_or(function)
            .to_string(),
    )
}

/// Parses one SQL expression (for rewrites built as text).
fn expression(text: &str) -> Option<SqlExpr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// `x LIKE p ESCAPE '/'` (SQLAlchemy's schema listing) as a LIKE with
/// DataFusion's only escape character, the backslash: literal backslashes
/// in `p` are doubled, then `/c` becomes `\c`.
fn like_escape_to_backslash(expr: &mut SqlExpr) {
    let (SqlExpr::Like {
        pattern,
        escape_char,
        ..
    }
    | SqlExpr::ILike {
        pattern,
        escape_char,
        ..
    }) = expr
    else {
        return;
    };
    let Some(ValueWithSpan {
        value: Value::SingleQuotedString(escape),
        ..
    }) = escape_char
    else {
        return;
    };
    let mut chars = escape.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return;
    };
    if c == '\\' {
        return;
    }
    let escaped: String = if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\{c}")
    }
    .replace('\'', "''");
    let Some(translated) = expression(&format!(
        "regexp_replace(replace({pattern}, '\\', '\\\\'), '{escaped}(.)', '\\${{1}}', 'g')"
    )) else {
        return;
    };
    **pattern = translated;
    *escape_char = None;
}

/// Catalog tables that never describe anything of a Loch table: column
/// defaults, sequences (identity columns), collations.
const ABSENT_FEATURE_TABLES: &[&str] = &["pg_attrdef", "pg_sequence", "pg_collation"];

/// Correlated scalar subqueries inside a `CASE` (SQLAlchemy's column
/// listing asks for defaults, identity options and collations so), which
/// DataFusion cannot decorrelate, when they read only tables of features
/// Loch's tables do not have, or compare a type's collation: NULL. With no
/// defaults (`atthasdef` false), identities (`attidentity` empty) or
/// collations (`attcollation` 0) every such `CASE` answers NULL anyway.
fn case_subqueries_on_absent_features(expr: &mut SqlExpr) {
    if !matches!(expr, SqlExpr::Case { .. }) {
        return;
    }
    let _ = visit_expressions_mut(expr, |e| {
        if let SqlExpr::Subquery(query) = e
            && reads_absent_feature(query)
        {
            *e = SqlExpr::Value(Value::Null.into());
        }
        ControlFlow::<()>::Continue(())
    });
}

fn reads_absent_feature(query: &datafusion::sql::sqlparser::ast::Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let tables: Vec<String> = select
        .from
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
        .map(|r| match r {
            datafusion::sql::sqlparser::ast::TableFactor::Table { name, .. } => name
                .0
                .last()
                .map(|p| p.to_string().to_ascii_lowercase())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .collect();
    let absent = !tables.is_empty()
        && tables
            .iter()
            .all(|t| ABSENT_FEATURE_TABLES.contains(&t.as_str()));
    let collation = select.projection.len() == 1
        && select.projection[0]
            .to_string()
            .to_ascii_lowercase()
            .ends_with("typcollation");
    absent || collation
}

/// `pg_index`'s `int2vector`/`oidvector` columns, which the crate keeps as
/// space-separated text.
const VECTOR_COLUMNS: &[&str] = &[
    "indkey",
    "indclass",
    "indcollation",
    "indoption",
    "proargtypes",
];

/// `unnest(indkey)` and `generate_subscripts(a, 1)` (SQLAlchemy's key and
/// index listings) in forms DataFusion plans: vector columns split into an
/// integer array, subscripts as `unnest(range(1, cardinality(a) + 1))`.
fn vector_functions(expr: &mut SqlExpr) {
    let SqlExpr::Function(f) = expr else {
        return;
    };
    let name = f.name.to_string().to_ascii_lowercase();
    let name = name
        .strip_prefix("pg_catalog.")
        .unwrap_or(&name)
        .to_string();
    if name != "unnest" && name != "generate_subscripts" {
        return;
    }
    let FunctionArguments::List(list) = &f.args else {
        return;
    };
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(array))) = list.args.first() else {
        return;
    };
    let column = match array {
        SqlExpr::Identifier(i) => Some(&i.value),
        SqlExpr::CompoundIdentifier(parts) => parts.last().map(|i| &i.value),
        _ => None,
    };
    let vector = column.is_some_and(|c| VECTOR_COLUMNS.iter().any(|v| c.eq_ignore_ascii_case(v)));
    let array = if vector {
        format!("CAST(string_to_array({array}, ' ') AS INT[])")
    } else if name == "unnest" {
        return;
    } else {
        array.to_string()
    };
    let text = if name == "unnest" {
        format!("unnest({array})")
    } else {
        format!("unnest(range(1, CAST(cardinality({array}) AS BIGINT) + 1))")
    };
    if let Some(rewritten) = expression(&text) {
        *expr = rewritten;
    }
}

/// Aggregates a catalog query's scalar subquery may already hold.
const AGGREGATES: &[&str] = &[
    "array_agg",
    "avg",
    "bool_and",
    "bool_or",
    "count",
    "every",
    "first_value",
    "last_value",
    "max",
    "min",
    "string_agg",
    "sum",
];

/// A scalar subquery that selects one plain expression per outer row,
/// `(SELECT c.relkind = 'c' FROM pg_class c WHERE c.oid = t.typrelid)`, as
/// `(SELECT first_value(…) FROM … WHERE …)`: DataFusion decorrelates only
/// aggregated scalar subqueries, and pgjdbc's `getTypeInfo()` sends this
/// one. No row still gives NULL; where PostgreSQL would fail on a second
/// row, this takes the first.
fn scalar_subquery_to_aggregate(expr: &mut SqlExpr) {
    let SqlExpr::Subquery(query) = expr else {
        return;
    };
    if query.limit_clause.is_some() || query.fetch.is_some() || query.with.is_some() {
        return;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(list, _) if list.is_empty());
    if grouped || select.distinct.is_some() || select.having.is_some() || select.from.is_empty() {
        return;
    }
    let [item] = select.projection.as_mut_slice() else {
        return;
    };
    let element = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return,
    };
    let aggregated = visit_expressions(&*element, |e| match e {
        SqlExpr::Function(f)
            if AGGREGATES
                .iter()
                .any(|a| f.name.to_string().eq_ignore_ascii_case(a))
                || f.over.is_some() =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break();
    if aggregated {
        return;
    }
    let Ok(aggregate) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("first_value({element})"))
        .and_then(|mut p| p.parse_expr())
    else {
        return;
    };
    *element = aggregate;
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
    fn array_of_a_subquery_becomes_an_aggregate() {
        let statements = catalog_query(
            "SELECT r.rolname, ARRAY(SELECT b.rolname FROM pg_catalog.pg_roles b \
             WHERE b.oid = r.oid ORDER BY 1) AS memberof FROM pg_catalog.pg_roles r",
        )
        .unwrap();
        let text = statements[0].to_string();
        assert!(
            text.contains("(SELECT array_agg(b.rolname ORDER BY b.rolname) FROM"),
            "{text}"
        );
    }

    #[test]
    fn a_plain_scalar_subquery_becomes_an_aggregate() {
        let statements = catalog_query(
            "SELECT t.typname FROM pg_catalog.pg_type t WHERE t.typrelid = 0 OR \
             (SELECT c.relkind = 'c' FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid)",
        )
        .unwrap();
        let text = statements[0].to_string();
        assert!(
            text.contains("(SELECT first_value(c.relkind = 'c') FROM"),
            "{text}"
        );
        // Already aggregated, or grouped: left alone.
        let statements = catalog_query(
            "SELECT (SELECT count(*) FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid), \
             (SELECT max(c.oid) FROM pg_catalog.pg_class c GROUP BY c.relkind LIMIT 1) \
             FROM pg_catalog.pg_type t",
        )
        .unwrap();
        let text = statements[0].to_string();
        assert!(!text.contains("first_value"), "{text}");
    }

    #[test]
    fn regproc_comparisons_with_type_columns_compare_names() {
        let statements = catalog_query(
            "SELECT typinput='pg_catalog.array_in'::regproc as is_array, typname \
             FROM pg_catalog.pg_type WHERE pg_type.oid = $1",
        )
        .unwrap();
        let text = statements[0].to_string();
        assert!(text.contains("typinput = 'array_in' AS is_array"), "{text}");
    }

    #[test]
    fn like_escapes_and_vector_functions_are_rewritten() {
        let text = catalog_query(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname NOT LIKE 'pg/_' || '%' ESCAPE '/'",
        )
        .unwrap()[0]
            .to_string();
        assert!(!text.contains("ESCAPE"), "{text}");
        assert!(text.contains("regexp_replace"), "{text}");
        let text = catalog_query(
            "SELECT unnest(i.indkey) AS a, generate_subscripts(i.indkey, 1) AS o FROM pg_catalog.pg_index i",
        )
        .unwrap()[0]
            .to_string();
        assert!(
            text.contains("unnest(CAST(string_to_array(i.indkey, ' ') AS INT[]))"),
            "{text}"
        );
        assert!(text.contains("unnest(range(1, CAST(cardinality("), "{text}");
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

    #[test]
    fn only_catalog_queries_take_the_compatibility_path() {
        assert!(catalog_query("select relname from pg_catalog.pg_class").is_some());
        assert!(catalog_query("select 'tpch.nation'::regclass").is_some());
        assert!(catalog_query("select pg_count, (select 1) from t").is_none());
        assert!(catalog_query("select * from tpch.nation").is_none());
        // A catalog word in a statement that is not a query: left alone.
        assert!(catalog_query("create table pg_class_copy as select 1").is_none());
    }
}
