//! Client catalog queries rewritten for DataFusion: what psql, JDBC/ODBC
//! drivers and BI tools ask of `pg_catalog` and `information_schema`.
//!
//! Client catalog queries go through datafusion-pg-catalog's SQL rewrites
//! (regclass casts, `OPERATOR(pg_catalog.~)`, psql's fixed queries), which
//! take text; other statements do not, because one of those rewrites
//! replaces correlated subqueries in a select list by NULL, which would
//! change the answers of real queries. The rest work on the parsed
//! statement.

use std::ops::ControlFlow;
use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    OrderBy, OrderByKind, SelectItem, SetExpr, Statement, Value, ValueWithSpan, visit_expressions,
    visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
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

/// Whether `lower` (SQL in lower case) reads `pg_catalog` or uses its
/// casts and operators.
fn reads_pg_catalog(lower: &str) -> bool {
    lower.contains("::reg")
        || lower.contains("operator(")
        || lower
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| CATALOG_WORDS.iter().any(|w| word.starts_with(w)))
}

/// Whether `sql` may be a client's catalog query: it reads `pg_catalog`
/// or `information_schema.columns` (which reads Loch's copy in
/// `pg_catalog`, see [`information_schema_columns`]).
pub fn is_client_catalog_query(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    reads_pg_catalog(&lower) || names_information_schema_columns(&lower)
}

/// Whether `lower` (SQL in lower case) may read `information_schema.columns`.
fn names_information_schema_columns(lower: &str) -> bool {
    lower.contains("information_schema") && lower.contains("columns")
}

/// A client's catalog query, rewritten for DataFusion: `Some` when `sql`
/// reads `pg_catalog` or uses its casts and operators and parses into
/// queries only; `None` leaves it to the normal path.
pub fn catalog_query(sql: &str) -> Option<Vec<Statement>> {
    if !reads_pg_catalog(&sql.to_ascii_lowercase()) {
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

/// The table in `pg_catalog` that client queries of
/// `information_schema.columns` read instead (see
/// [`redirect_information_schema_columns`]).
pub const INFORMATION_SCHEMA_COLUMNS: &str = "loch_information_schema_columns";

/// `sql` with its reads of `information_schema.columns` redirected to
/// Loch's copy ([`redirect_information_schema_columns`]); `None` when it
/// reads none.
pub fn information_schema_columns(sql: &str) -> Option<String> {
    if !names_information_schema_columns(&sql.to_ascii_lowercase()) {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    for statement in &mut statements {
        // Every statement, not only up to the first one that changed.
        changed |= redirect_information_schema_columns(statement);
    }
    changed.then(|| {
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Client queries of `information_schema.columns` read Loch's copy in
/// `pg_catalog` instead, whose `data_type` has PostgreSQL's type names
/// (Metabase, Grafana and hand-written queries read it). True when
/// `statement` read it.
pub fn redirect_information_schema_columns(statement: &mut Statement) -> bool {
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
                        ObjectNamePart::Identifier(Ident::new(INFORMATION_SCHEMA_COLUMNS)),
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
    let mut redirect = Redirect { changed: false };
    let _ = statement.visit(&mut redirect);
    redirect.changed
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
    fn only_catalog_queries_take_the_compatibility_path() {
        assert!(catalog_query("select relname from pg_catalog.pg_class").is_some());
        assert!(catalog_query("select 'tpch.nation'::regclass").is_some());
        assert!(catalog_query("select pg_count, (select 1) from t").is_none());
        assert!(catalog_query("select * from tpch.nation").is_none());
        // A catalog word in a statement that is not a query: left alone.
        assert!(catalog_query("create table pg_class_copy as select 1").is_none());
    }
}
