//! Parsing SQL text into what a session runs: Loch's own session commands
//! (`SET`, `SHOW`, `RESET`, transaction control, `DISCARD`) and everything
//! else, which DataFusion plans.
//!
//! Session commands are answered by the session itself because their
//! PostgreSQL meaning (`search_path`, `statement_timeout`, client settings that
//! drivers send at connect) does not exist in DataFusion; `SET datafusion.*`
//! and `SET distributed.*` still reach DataFusion's own configuration.

use std::borrow::Cow;

use datafusion::sql::parser::{DFParserBuilder, ResetStatement, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    CloseCursor, Declare, DeclareType, DiscardObject, Expr, FetchDirection, Ident, Reset, Set,
    SetSessionAuthorizationParamKind, Statement, TransactionAccessMode, TransactionMode, Value,
    ValueWithSpan,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::error::LochError;

pub mod client_catalog;
pub mod credentials;
pub mod databricks;
pub mod names;
pub mod security;
pub mod tokens;

use databricks::DeltaCommand;
use tokens::significant;

/// One statement of a client's SQL text.
#[derive(Debug, Clone)]
pub enum Command {
    /// `SET name = value` / `SET name TO DEFAULT` (value `None`).
    Set { name: String, value: Option<String> },
    /// `RESET name`, or `RESET ALL` (name `None`).
    Reset { name: Option<String> },
    /// `SHOW name` or `SHOW ALL` (name `all`).
    Show { name: String },
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `DISCARD ALL`.
    Discard,
    /// A statement with nothing to do in Loch, answered with its tag:
    /// `UNLISTEN` (no `LISTEN`), `DISCARD PLANS|SEQUENCES|TEMP` (none kept).
    Noop(&'static str),
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo(String),
    /// `DECLARE name [NO SCROLL] CURSOR [WITH HOLD] FOR query`.
    Declare {
        name: String,
        hold: bool,
        query: Box<DfStatement>,
    },
    /// `FETCH [FORWARD] [count | ALL] [FROM | IN] name`; `count` `None` is
    /// `ALL`.
    Fetch { name: String, count: Option<usize> },
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    Close(Option<String>),
    /// `DESCRIBE HISTORY`, `OPTIMIZE`, `VACUUM`, `RESTORE` of a Delta table.
    Delta(DeltaCommand),
    /// Roles, grants and ownership (`CREATE ROLE`, `GRANT`, `SHOW GRANTS`, …).
    Security(security::SecurityCommand),
    /// `CREATE TABLE … PARTITIONED BY (cols) [AS …]`: a managed table
    /// partitioned by those columns; `statement` is the `CREATE TABLE`
    /// without the clause.
    CreatePartitioned {
        statement: Box<DfStatement>,
        partition_by: Vec<String>,
    },
    /// Anything else: planned and run by DataFusion.
    Query(Box<DfStatement>),
}

impl Command {
    /// True for statements that only read (queries, `EXPLAIN`, `SHOW`);
    /// false for those that change session or catalog state.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self.tag().as_str(),
            "SELECT" | "EXPLAIN" | "SHOW" | "DESCRIBE"
        )
    }

    /// The PostgreSQL command tag for a statement that returns no rows.
    pub fn tag(&self) -> String {
        match self {
            Command::Set { .. } => "SET".into(),
            Command::Reset { .. } => "RESET".into(),
            Command::Show { .. } => "SHOW".into(),
            Command::Begin => "BEGIN".into(),
            Command::Commit => "COMMIT".into(),
            Command::Rollback => "ROLLBACK".into(),
            Command::Discard => "DISCARD ALL".into(),
            Command::Noop(tag) => (*tag).into(),
            Command::Savepoint(_) => "SAVEPOINT".into(),
            Command::Release(_) => "RELEASE".into(),
            Command::RollbackTo(_) => "ROLLBACK".into(),
            Command::Declare { .. } => "DECLARE CURSOR".into(),
            Command::Fetch { .. } => "FETCH".into(),
            Command::Close(_) => "CLOSE CURSOR".into(),
            Command::Delta(command) => command.tag().into(),
            Command::Security(command) => command.tag().into(),
            Command::CreatePartitioned { .. } => "CREATE TABLE".into(),
            Command::Query(stmt) => query_tag(stmt),
        }
    }
}

/// Parses `sql` into its statements (empty for an empty query).
///
/// The text is tokenized once and cut into statements on the tokens. Each
/// statement is then read once: Loch's own statements (Delta utilities,
/// roles and grants, storage credentials) by Loch's parsers, the rest by
/// DataFusion's parser from the same tokens, after the Databricks
/// spellings were rewritten on the tokens ([`databricks::rewrite`]). Client
/// catalog queries are the exception: datafusion-pg-catalog's rewrites
/// ([`client_catalog`]) take their text.
pub fn parse(sql: &str) -> Result<Vec<Command>, LochError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location()?;
    let mut commands = Vec::new();
    for statement in tokens.split(|t| matches!(t.token, Token::SemiColon)) {
        let plain: Vec<Token> = statement.iter().map(|t| t.token.clone()).collect();
        let words = significant(&plain);
        if words.is_empty() {
            continue;
        }
        if security::is_security_statement(&words) {
            commands.push(Command::Security(security::parse(&words)?));
        } else if databricks::is_delta_utility(&words) {
            commands.push(Command::Delta(databricks::parse_utility(&words)?));
        } else {
            commands.extend(parse_statement(sql, statement, plain, &dialect)?);
        }
    }
    Ok(commands)
}

/// Parses one statement for DataFusion: its tokens as the tokenizer made
/// them (with their positions, for error messages), and without them.
///
/// Client catalog queries (`pg_catalog`, `::regclass`, `information_schema.
/// columns`, …) take datafusion-pg-catalog's rewrites, which read text: they
/// are handed the statement's text as the client wrote it. Every other
/// statement is parsed once, from its tokens.
fn parse_statement(
    sql: &str,
    located: &[TokenWithSpan],
    mut plain: Vec<Token>,
    dialect: &PostgreSqlDialect,
) -> Result<Vec<Command>, LochError> {
    let rewritten = databricks::rewrite(&mut plain);
    let text: Cow<'_, str> = match source_text(sql, located) {
        Some(text) if !rewritten => Cow::Borrowed(text),
        _ => Cow::Owned(text_of(&plain)),
    };
    if client_catalog::is_client_catalog_query(&text) {
        let redirected = client_catalog::information_schema_columns(&text);
        let text = redirected.as_deref().unwrap_or(&text);
        if let Some(statements) = client_catalog::catalog_query(text) {
            return statements
                .into_iter()
                .map(|s| classify(DfStatement::Statement(Box::new(s))))
                .collect();
        }
        if redirected.is_some() {
            let mut parser = DFParserBuilder::new(text).with_dialect(dialect).build()?;
            return parser
                .parse_statements()?
                .into_iter()
                .map(classify)
                .collect();
        }
    }
    // A rewritten statement has tokens the text did not: no positions.
    let tokens = if rewritten {
        plain.into_iter().map(TokenWithSpan::wrap).collect()
    } else {
        located.to_vec()
    };
    let mut parser = DFParserBuilder::new(tokens).with_dialect(dialect).build()?;
    parser
        .parse_statements()?
        .into_iter()
        .map(classify)
        .collect()
}

/// The SQL text of tokens (as the tokenizer read it, or rewritten). String
/// literals lose the doubling of their quotes: only for rewritten tokens.
fn text_of(tokens: &[Token]) -> String {
    tokens.iter().map(ToString::to_string).collect()
}

/// The text of a statement as the client wrote it: from its first token's
/// start to its last token's end in `sql`.
fn source_text<'a>(sql: &'a str, tokens: &[TokenWithSpan]) -> Option<&'a str> {
    let significant = |t: &&TokenWithSpan| !matches!(t.token, Token::Whitespace(_) | Token::EOF);
    let first = tokens.iter().find(significant)?;
    let last = tokens.iter().rev().find(significant)?;
    sql.get(offset(sql, first.span.start)?..offset(sql, last.span.end)?)
}

/// The byte offset of a tokenizer location (1-based line and column, the
/// column counted in characters).
fn offset(sql: &str, at: Location) -> Option<usize> {
    let mut line_start = 0;
    for _ in 1..at.line {
        line_start += sql.get(line_start..)?.find('\n')? + 1;
    }
    let column = usize::try_from(at.column.checked_sub(1)?).ok()?;
    let line = sql.get(line_start..)?;
    Some(
        line_start
            + line
                .char_indices()
                .nth(column)
                .map_or(line.len(), |(i, _)| i),
    )
}

fn classify(statement: DfStatement) -> Result<Command, LochError> {
    if let DfStatement::Reset(ResetStatement::Variable(name)) = &statement {
        let name = name.to_string().to_ascii_lowercase();
        if !name.starts_with("datafusion.") {
            return Ok(Command::Reset {
                name: (name != "all").then_some(name),
            });
        }
    }
    let DfStatement::Statement(inner) = &statement else {
        return Ok(Command::Query(Box::new(statement)));
    };
    let command = match inner.as_ref() {
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => {
            let name = variable.to_string().to_ascii_lowercase();
            // DataFusion's settings and datafusion-distributed's (task
            // sizing, broadcast joins, …) are its configuration's own.
            if name.starts_with("datafusion.") || name.starts_with("distributed.") {
                return Ok(Command::Query(Box::new(statement)));
            }
            let value = set_value(values);
            Command::Set { name, value }
        }
        Statement::Set(Set::SetTimeZone { value, .. }) => Command::Set {
            name: "timezone".into(),
            value: set_value(std::slice::from_ref(value)),
        },
        Statement::Set(Set::SetNames { charset_name, .. }) => Command::Set {
            name: "client_encoding".into(),
            value: Some(charset_name.value.clone()),
        },
        Statement::ShowVariable { variable } => {
            let parts: Vec<String> = variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect();
            // Dotted names are DataFusion's; PostgreSQL's are words
            // (`SHOW TRANSACTION ISOLATION LEVEL`).
            let dotted = matches!(
                parts.first().map(String::as_str),
                Some("datafusion" | "distributed")
            );
            let name = parts.join(if dotted { "." } else { " " });
            // DataFusion's settings and datafusion-distributed's (task
            // sizing, broadcast joins, …) are its configuration's own.
            if name.starts_with("datafusion.") || name.starts_with("distributed.") {
                return Ok(Command::Query(Box::new(statement)));
            }
            Command::Show {
                name: canonical_name(&name),
            }
        }
        Statement::Reset(reset) => match &reset.reset {
            Reset::ALL => Command::Reset { name: None },
            Reset::ConfigurationParameter(name) => {
                let name = name.to_string().to_ascii_lowercase();
                Command::Reset {
                    name: (name != "all").then_some(name),
                }
            }
        },
        Statement::StartTransaction { .. } => Command::Begin,
        Statement::Commit { .. } => Command::Commit,
        Statement::Rollback {
            savepoint: None, ..
        } => Command::Rollback,
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => Command::RollbackTo(ident_name(name)),
        Statement::Savepoint { name } => Command::Savepoint(ident_name(name)),
        Statement::ReleaseSavepoint { name } => Command::Release(ident_name(name)),
        Statement::Declare { stmts } => declare(stmts)?,
        Statement::Fetch {
            name,
            direction,
            into,
            ..
        } => {
            if into.is_some() {
                return Err(LochError::NotSupported("FETCH … INTO".into()));
            }
            Command::Fetch {
                name: ident_name(name),
                count: fetch_count(direction)?,
            }
        }
        Statement::Close { cursor } => Command::Close(match cursor {
            CloseCursor::All => None,
            CloseCursor::Specific { name } => Some(ident_name(name)),
        }),
        Statement::Discard { object_type } => match object_type {
            DiscardObject::ALL => Command::Discard,
            DiscardObject::PLANS => Command::Noop("DISCARD PLANS"),
            DiscardObject::SEQUENCES => Command::Noop("DISCARD SEQUENCES"),
            DiscardObject::TEMP => Command::Noop("DISCARD TEMP"),
        },
        Statement::UNLISTEN { .. } => Command::Noop("UNLISTEN"),
        Statement::CreateTable(create) if create.partition_by.is_some() => {
            let mut create = create.clone();
            let partition_by = create
                .partition_by
                .take()
                .map(|e| partition_columns(&e))
                .transpose()?
                .unwrap_or_default();
            Command::CreatePartitioned {
                statement: Box::new(DfStatement::Statement(Box::new(Statement::CreateTable(
                    create,
                )))),
                partition_by,
            }
        }
        // Connection pools (Npgsql's reset) go back to the login role.
        Statement::Set(Set::SetSessionAuthorization(param)) => match &param.kind {
            SetSessionAuthorizationParamKind::Default => Command::Set {
                name: "session_authorization".into(),
                value: None,
            },
            SetSessionAuthorizationParamKind::User(_) => {
                return Err(LochError::NotSupported(
                    "SET SESSION AUTHORIZATION to another role: log in as that role".into(),
                ));
            }
        },
        // `SET [SESSION CHARACTERISTICS AS] TRANSACTION …` (Metabase, pgjdbc's
        // setTransactionIsolation): recorded and shown; every Loch statement
        // is its own snapshot-isolated transaction whatever the level.
        Statement::Set(Set::SetTransaction { modes, session, .. }) => {
            let prefix = if *session { "default_" } else { "" };
            let setting = modes.iter().find_map(|mode| match mode {
                TransactionMode::IsolationLevel(level) => Some((
                    format!("{prefix}transaction_isolation"),
                    level.to_string().to_ascii_lowercase(),
                )),
                _ => None,
            });
            let setting = setting.or_else(|| {
                modes.iter().find_map(|mode| match mode {
                    TransactionMode::AccessMode(access) => Some((
                        format!("{prefix}transaction_read_only"),
                        match access {
                            TransactionAccessMode::ReadOnly => "on".to_string(),
                            TransactionAccessMode::ReadWrite => "off".to_string(),
                        },
                    )),
                    _ => None,
                })
            });
            match setting {
                Some((name, value)) => Command::Set {
                    name,
                    value: Some(value),
                },
                None => Command::Noop("SET"),
            }
        }
        _ => Command::Query(Box::new(statement)),
    };
    Ok(command)
}

/// The columns of `PARTITIONED BY (a, b)`: names only (Delta partitions
/// by column values, not by ranges or expressions).
fn partition_columns(expr: &Expr) -> Result<Vec<String>, LochError> {
    match expr {
        Expr::Identifier(ident) => Ok(vec![ident_name(ident)]),
        Expr::Nested(inner) => partition_columns(inner),
        Expr::Tuple(items) => items
            .iter()
            .map(|item| match item {
                Expr::Identifier(ident) => Ok(ident_name(ident)),
                other => Err(LochError::NotSupported(format!(
                    "PARTITIONED BY {other}: partition by columns, e.g. PARTITIONED BY (day)"
                ))),
            })
            .collect(),
        other => Err(LochError::NotSupported(format!(
            "PARTITION BY {other}: Delta tables partition by columns, e.g. PARTITIONED BY (day)"
        ))),
    }
}

/// A name as PostgreSQL folds it: lower case unless quoted.
fn ident_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// `DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR query`.
fn declare(stmts: &[Declare]) -> Result<Command, LochError> {
    let [declare] = stmts else {
        return Err(LochError::Syntax("DECLARE names one cursor".into()));
    };
    let ([name], Some(DeclareType::Cursor), Some(query)) = (
        declare.names.as_slice(),
        &declare.declare_type,
        &declare.for_query,
    ) else {
        return Err(LochError::NotSupported(
            "DECLARE other than DECLARE name CURSOR FOR query".into(),
        ));
    };
    if declare.binary == Some(true) {
        return Err(LochError::NotSupported("BINARY cursors".into()));
    }
    if declare.scroll == Some(true) {
        return Err(LochError::NotSupported(
            "SCROLL cursors: Loch's cursors only move forward".into(),
        ));
    }
    // A cursor over a client's catalog query gets the same rewrites as the
    // query would on its own.
    let statement = match client_catalog::catalog_query(&query.to_string()) {
        Some(mut rewritten) if rewritten.len() == 1 => rewritten.remove(0),
        _ => Statement::Query(query.clone()),
    };
    Ok(Command::Declare {
        name: ident_name(name),
        hold: declare.hold == Some(true),
        query: Box::new(DfStatement::Statement(Box::new(statement))),
    })
}

/// How many rows a `FETCH` reads (`None`: all); cursors only move forward.
fn fetch_count(direction: &FetchDirection) -> Result<Option<usize>, LochError> {
    let count = |limit: &ValueWithSpan| -> Result<Option<usize>, LochError> {
        match &limit.value {
            Value::Number(n, _) => n.parse::<usize>().map(Some).map_err(|_| {
                LochError::NotSupported(format!("FETCH {n}: Loch's cursors only move forward"))
            }),
            other => Err(LochError::Syntax(format!("FETCH count {other}"))),
        }
    };
    match direction {
        FetchDirection::Next => Ok(Some(1)),
        FetchDirection::Forward { limit: None } => Ok(Some(1)),
        FetchDirection::Count { limit } | FetchDirection::Forward { limit: Some(limit) } => {
            count(limit)
        }
        FetchDirection::All | FetchDirection::ForwardAll => Ok(None),
        other => Err(LochError::NotSupported(format!(
            "FETCH {other}: Loch's cursors only move forward"
        ))),
    }
}

/// PostgreSQL's spellings of a few settings, mapped to one name.
pub(crate) fn canonical_name(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "time zone" | "time_zone" => "timezone".into(),
        "transaction isolation level" => "transaction_isolation".into(),
        "session authorization" => "session_authorization".into(),
        "names" => "client_encoding".into(),
        _ => name,
    }
}

/// The columns a statement's result will have, when it is a session command
/// that returns rows (`SHOW`); `None` for everything else.
pub fn command_schema(command: &Command) -> Option<arrow::datatypes::SchemaRef> {
    use arrow::datatypes::{DataType, Field, Schema};
    if let Command::Security(security::SecurityCommand::ShowGrants { .. }) = command {
        return Some(security::show_grants_schema());
    }
    if let Command::Security(security::SecurityCommand::Credential(
        credentials::CredentialCommand::Show,
    )) = command
    {
        return Some(credentials::show_schema());
    }
    let Command::Show { name } = command else {
        return None;
    };
    let fields = if name == "all" {
        vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ]
    } else {
        vec![Field::new(name.as_str(), DataType::Utf8, false)]
    };
    Some(std::sync::Arc::new(Schema::new(fields)))
}

/// The text of a `SET` value list: quoted strings lose their quotes, lists
/// are joined with ", " (as PostgreSQL shows `search_path`), `DEFAULT` is `None`.
fn set_value(values: &[Expr]) -> Option<String> {
    let mut parts = Vec::with_capacity(values.len());
    for value in values {
        let text = match value {
            Expr::Value(ValueWithSpan {
                value: Value::SingleQuotedString(s) | Value::DoubleQuotedString(s),
                ..
            }) => s.clone(),
            Expr::Value(ValueWithSpan {
                value: Value::Number(n, _),
                ..
            }) => n.clone(),
            Expr::Identifier(ident) => {
                if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") {
                    return None;
                }
                ident.value.clone()
            }
            other => other.to_string(),
        };
        parts.push(text);
    }
    Some(parts.join(", "))
}

fn query_tag(statement: &DfStatement) -> String {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_) => "SELECT".into(),
            Statement::Insert(_) => "INSERT".into(),
            Statement::Update { .. } => "UPDATE".into(),
            Statement::Delete(_) => "DELETE".into(),
            Statement::CreateView { .. } => "CREATE VIEW".into(),
            Statement::CreateTable(_) => "CREATE TABLE".into(),
            Statement::CreateSchema { .. } => "CREATE SCHEMA".into(),
            Statement::Drop { object_type, .. } => format!("DROP {object_type}"),
            Statement::Explain { .. } => "EXPLAIN".into(),
            Statement::Set(_) => "SET".into(),
            Statement::ShowVariable { .. } => "SHOW".into(),
            other => first_keyword(&other.to_string()),
        },
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".into(),
        DfStatement::CopyTo(_) => "COPY".into(),
        DfStatement::Explain(_) => "EXPLAIN".into(),
        other => first_keyword(&other.to_string()),
    }
}

fn first_keyword(sql: &str) -> String {
    sql.split_whitespace()
        .next()
        .unwrap_or("OK")
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Command {
        let mut commands = parse(sql).unwrap_or_default();
        assert_eq!(commands.len(), 1, "{sql}");
        commands.remove(0)
    }

    #[test]
    fn session_commands_are_recognised() {
        assert!(matches!(
            one("SET search_path TO tpch, public"),
            Command::Set { name, value: Some(v) } if name == "search_path" && v == "tpch, public"
        ));
        assert!(matches!(
            one("set statement_timeout = '300ms'"),
            Command::Set { name, value: Some(v) } if name == "statement_timeout" && v == "300ms"
        ));
        assert!(matches!(
            one("SET extra_float_digits = 3"),
            Command::Set { value: Some(v), .. } if v == "3"
        ));
        assert!(matches!(
            one("SET search_path TO DEFAULT"),
            Command::Set { value: None, .. }
        ));
        assert!(matches!(one("SHOW search_path"), Command::Show { name } if name == "search_path"));
        assert!(matches!(one("SHOW ALL"), Command::Show { name } if name == "all"));
        assert!(matches!(one("RESET ALL"), Command::Reset { name: None }));
        assert!(matches!(one("BEGIN"), Command::Begin));
        assert!(matches!(one("START TRANSACTION"), Command::Begin));
        assert!(matches!(one("COMMIT"), Command::Commit));
        assert!(matches!(one("ROLLBACK"), Command::Rollback));
        assert!(matches!(one("DISCARD ALL"), Command::Discard));
        assert!(matches!(one("DISCARD TEMP"), Command::Noop("DISCARD TEMP")));
        assert!(matches!(one("UNLISTEN *"), Command::Noop("UNLISTEN")));
        assert!(matches!(
            one("SET SESSION AUTHORIZATION DEFAULT"),
            Command::Set { name, value: None } if name == "session_authorization"
        ));
        assert!(matches!(
            one("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED"),
            Command::Set { name, value: Some(v) }
                if name == "default_transaction_isolation" && v == "read uncommitted"
        ));
        assert!(matches!(
            one("SET datafusion.execution.batch_size = 1024"),
            Command::Query(_)
        ));
    }

    #[test]
    fn savepoints_and_cursors_as_clients_send_them() {
        assert!(
            matches!(one("SAVEPOINT _EXEC_SVP_1"), Command::Savepoint(n) if n == "_exec_svp_1")
        );
        assert!(matches!(one("RELEASE _EXEC_SVP_1"), Command::Release(n) if n == "_exec_svp_1"));
        assert!(matches!(one("RELEASE SAVEPOINT a"), Command::Release(n) if n == "a"));
        assert!(matches!(one("ROLLBACK TO SAVEPOINT \"A\""), Command::RollbackTo(n) if n == "A"));
        assert!(matches!(one("ROLLBACK TO a"), Command::RollbackTo(n) if n == "a"));
        assert!(matches!(
            one("declare \"SQL_CUR0x1\" cursor with hold for select * from t"),
            Command::Declare { name, hold: true, .. } if name == "SQL_CUR0x1"
        ));
        assert!(matches!(
            one("DECLARE c NO SCROLL CURSOR FOR SELECT 1"),
            Command::Declare { name, hold: false, .. } if name == "c"
        ));
        assert!(matches!(
            one("fetch 100 in \"SQL_CUR0x1\""),
            Command::Fetch { name, count: Some(100) } if name == "SQL_CUR0x1"
        ));
        assert!(matches!(
            one("FETCH FORWARD 5 FROM c"),
            Command::Fetch { count: Some(5), .. }
        ));
        assert!(matches!(
            one("FETCH NEXT FROM c"),
            Command::Fetch { count: Some(1), .. }
        ));
        assert!(matches!(
            one("FETCH ALL IN c"),
            Command::Fetch { count: None, .. }
        ));
        assert!(matches!(one("CLOSE c"), Command::Close(Some(n)) if n == "c"));
        assert!(matches!(one("CLOSE ALL"), Command::Close(None)));
        for sql in [
            "FETCH PRIOR FROM c",
            "FETCH BACKWARD 2 FROM c",
            "DECLARE c SCROLL CURSOR FOR SELECT 1",
        ] {
            assert_eq!(
                parse(sql).err().map(|e| e.sqlstate()),
                Some("0A000"),
                "{sql}"
            );
        }
    }

    /// A client catalog query reaches datafusion-pg-catalog as the client
    /// wrote it: quotes doubled inside a literal stay doubled.
    #[test]
    fn catalog_queries_keep_their_text() {
        let sql = "SELECT 1; select relname from pg_catalog.pg_class where relname = 'o''brien'";
        let commands = parse(sql).unwrap();
        let [Command::Query(_), Command::Query(query)] = commands.as_slice() else {
            panic!("{commands:?}");
        };
        let text = query.to_string();
        assert!(text.contains("'o''brien'"), "{text}");
        assert!(!text.contains("'o'brien'"), "{text}");
    }

    #[test]
    fn queries_and_tags() {
        let q = one("select 1");
        assert!(matches!(q, Command::Query(_)));
        assert_eq!(q.tag(), "SELECT");
        assert_eq!(one("create view v as select 1").tag(), "CREATE VIEW");
        assert_eq!(one("drop view v").tag(), "DROP VIEW");
        assert_eq!(parse("select 1; select 2;").map(|c| c.len()).ok(), Some(2));
        assert_eq!(parse("").map(|c| c.len()).ok(), Some(0));
        assert!(matches!(parse("selec 1"), Err(LochError::DataFusion(_))));
    }
}
