//! Databricks' SQL spellings that DataFusion's parser does not know, turned
//! into what Loch runs. Everything here works on tokens, so string literals
//! and comments are never touched, and text without these spellings is
//! parsed exactly as written (keeping error positions).
//!
//! - `CREATE TABLE … USING fmt LOCATION …` → `CREATE EXTERNAL TABLE …`;
//! - time travel, `t VERSION AS OF 3` / `t TIMESTAMP AS OF '…'` → the table
//!   name `"t@v3"` / `"t@…"` (Databricks' own `t@v3` form, which the catalog
//!   resolves) aliased back to `t`;
//! - the Delta utilities `DESCRIBE HISTORY`, `OPTIMIZE`, `VACUUM`,
//!   `RESTORE TABLE`, parsed into [`DeltaCommand`]s.

use std::time::Duration;

use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace, Word};
use loch_catalog::delta::TimeTravel;
use loch_catalog::maintenance::VacuumOptions;

use crate::error::LochError;

/// A Delta utility statement.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaCommand {
    /// `DESCRIBE HISTORY t [LIMIT n]`.
    History {
        table: Vec<String>,
        limit: Option<usize>,
    },
    /// `OPTIMIZE t [ZORDER BY (c, …)]`.
    Optimize {
        table: Vec<String>,
        zorder: Vec<String>,
    },
    /// `VACUUM t [FULL | LITE] [RETAIN n HOURS] [DRY RUN]`.
    Vacuum {
        table: Vec<String>,
        options: VacuumOptions,
    },
    /// `RESTORE [TABLE] t [TO] VERSION AS OF n | TIMESTAMP AS OF '…'`.
    Restore { table: Vec<String>, to: TimeTravel },
}

impl DeltaCommand {
    /// The table the command works on, as written (normalized parts).
    pub fn table(&self) -> &[String] {
        match self {
            DeltaCommand::History { table, .. }
            | DeltaCommand::Optimize { table, .. }
            | DeltaCommand::Vacuum { table, .. }
            | DeltaCommand::Restore { table, .. } => table,
        }
    }

    /// The command tag.
    pub fn tag(&self) -> &'static str {
        match self {
            DeltaCommand::History { .. } => "DESCRIBE",
            DeltaCommand::Optimize { .. } => "OPTIMIZE",
            DeltaCommand::Vacuum { .. } => "VACUUM",
            DeltaCommand::Restore { .. } => "RESTORE",
        }
    }
}

/// One statement of a text: SQL for DataFusion, or a Delta utility.
#[derive(Debug)]
pub enum Piece {
    Sql(String),
    Delta(DeltaCommand),
    Security(crate::security::SecurityCommand),
}

/// Rewrites the Databricks spellings of `CREATE TABLE` and time travel;
/// `None` when there are none.
pub fn rewrite(sql: &str, dialect: &dyn Dialect) -> Option<String> {
    let mut tokens = Tokenizer::new(dialect, sql).tokenize().ok()?;
    let created = create_table(&mut tokens);
    let partitioned = partitioned_by(&mut tokens);
    let travelled = time_travel(&mut tokens);
    (created || partitioned || travelled).then(|| tokens.iter().map(|t| t.to_string()).collect())
}

/// Splits `sql` into statements when one of them is a Delta utility;
/// `None` when none is (the text then goes to the SQL parser whole).
pub fn delta_utilities(sql: &str, dialect: &dyn Dialect) -> Result<Option<Vec<Piece>>, LochError> {
    let Ok(tokens) = Tokenizer::new(dialect, sql).tokenize() else {
        return Ok(None);
    };
    let statements: Vec<&[Token]> = tokens.split(|t| matches!(t, Token::SemiColon)).collect();
    let is_utility = |statement: &[Token]| {
        let words = significant(statement);
        if crate::security::is_security_statement(&words) {
            return true;
        }
        match words.first() {
            Some(t)
                if is(t, Keyword::OPTIMIZE) || is(t, Keyword::VACUUM) || is_word(t, "RESTORE") =>
            {
                true
            }
            Some(t) if is(t, Keyword::DESCRIBE) || is(t, Keyword::DESC) => {
                words.get(1).is_some_and(|t| is(t, Keyword::HISTORY))
            }
            _ => false,
        }
    };
    if !statements.iter().any(|s| is_utility(s)) {
        return Ok(None);
    }
    let mut pieces = Vec::new();
    for statement in statements {
        let words = significant(statement);
        if crate::security::is_security_statement(&words) {
            pieces.push(Piece::Security(crate::security::parse(&words)?));
        } else if is_utility(statement) {
            pieces.push(Piece::Delta(parse_utility(&words)?));
        } else if !significant(statement).is_empty() {
            pieces.push(Piece::Sql(
                statement.iter().map(|t| t.to_string()).collect(),
            ));
        }
    }
    Ok(Some(pieces))
}

pub(crate) fn is(t: &Token, k: Keyword) -> bool {
    matches!(t, Token::Word(w) if w.keyword == k)
}

/// An unquoted word that sqlparser has no keyword for.
pub(crate) fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Index of the next token that is not whitespace, from `i`.
fn next(tokens: &[Token], mut i: usize) -> usize {
    while matches!(tokens.get(i), Some(Token::Whitespace(_))) {
        i += 1;
    }
    i
}

/// The tokens of a statement without whitespace and comments.
pub(crate) fn significant(tokens: &[Token]) -> Vec<Token> {
    tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .cloned()
        .collect()
}

/// An identifier as PostgreSQL reads it: unquoted names fold to lower case.
pub(crate) fn ident(word: &Word) -> String {
    if word.quote_style.is_some() {
        word.value.clone()
    } else {
        word.value.to_lowercase()
    }
}

/// `CREATE TABLE t … PARTITIONED BY (a, b) …` (Databricks' managed table
/// partitioning) → `… PARTITION BY (a, b) …`, which the parser keeps in
/// the statement for Loch to take out ([`crate::statement`]). External
/// tables keep `PARTITIONED BY`: DataFusion reads it there.
fn partitioned_by(tokens: &mut [Token]) -> bool {
    let mut changed = false;
    let mut start = 0;
    for i in 0..tokens.len() {
        if matches!(tokens[i], Token::SemiColon) {
            start = i + 1;
            continue;
        }
        if !is(&tokens[i], Keyword::PARTITIONED)
            || !tokens
                .get(next(tokens, i + 1))
                .is_some_and(|t| is(t, Keyword::BY))
        {
            continue;
        }
        let words = significant(&tokens[start..i]);
        let managed = words.first().is_some_and(|t| is(t, Keyword::CREATE))
            && words.iter().any(|t| is(t, Keyword::TABLE))
            // (`create_table` may have put `EXTERNAL ` there, space included.)
            && !words
                .iter()
                .any(|t| matches!(t, Token::Word(w) if w.value.trim().eq_ignore_ascii_case("EXTERNAL")));
        if managed {
            tokens[i] = Token::make_keyword("PARTITION");
            changed = true;
        }
    }
    changed
}

/// `t VERSION AS OF 3` → `"t@v3" AS t`, `t TIMESTAMP AS OF '…'` →
/// `"t@…" AS t` (no alias added when the query gives one).
fn time_travel(tokens: &mut Vec<Token>) -> bool {
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        let by_version = is(&tokens[i], Keyword::VERSION);
        if !(by_version || is(&tokens[i], Keyword::TIMESTAMP)) {
            i += 1;
            continue;
        }
        let as_at = next(tokens, i + 1);
        let of_at = next(tokens, as_at + 1);
        let value_at = next(tokens, of_at + 1);
        let spec = match tokens.get(value_at) {
            Some(Token::Number(n, _)) if by_version => Some(format!("v{n}")),
            Some(Token::SingleQuotedString(s)) if !by_version && !s.contains('"') => {
                Some(s.clone())
            }
            _ => None,
        };
        let name_at = tokens[..i]
            .iter()
            .rposition(|t| !matches!(t, Token::Whitespace(_)));
        let (Some(spec), Some(name_at)) = (spec, name_at) else {
            i += 1;
            continue;
        };
        let Some(Token::Word(name)) = tokens.get(name_at).cloned() else {
            i += 1;
            continue;
        };
        if name.keyword != Keyword::NoKeyword && name.quote_style.is_none()
            || !is(&tokens[as_at], Keyword::AS)
            || !is(&tokens[of_at], Keyword::OF)
        {
            i += 1;
            continue;
        }
        let after = next(tokens, value_at + 1);
        let has_alias = match tokens.get(after) {
            Some(Token::Word(w)) => {
                w.keyword == Keyword::AS
                    || w.keyword == Keyword::NoKeyword
                    || w.quote_style.is_some()
            }
            _ => false,
        };
        tokens[name_at] = Token::Word(Word {
            value: format!("{}@{spec}", ident(&name)),
            quote_style: Some('"'),
            keyword: Keyword::NoKeyword,
        });
        let alias = if has_alias {
            Vec::new()
        } else {
            vec![
                Token::Whitespace(Whitespace::Space),
                Token::make_keyword("AS"),
                Token::Whitespace(Whitespace::Space),
                Token::Word(name),
            ]
        };
        let alias_len = alias.len();
        tokens.splice(name_at + 1..=value_at, alias);
        changed = true;
        i = name_at + 1 + alias_len;
    }
    changed
}

/// Parses a Delta utility from its significant tokens.
fn parse_utility(tokens: &[Token]) -> Result<DeltaCommand, LochError> {
    let mut p = Tokens { tokens, at: 0 };
    if p.keyword(Keyword::DESCRIBE) || p.keyword(Keyword::DESC) {
        p.expect(Keyword::HISTORY)?;
        let table = p.table_name()?;
        let limit = if p.keyword(Keyword::LIMIT) {
            Some(p.number()? as usize)
        } else {
            None
        };
        p.end()?;
        return Ok(DeltaCommand::History { table, limit });
    }
    if p.keyword(Keyword::OPTIMIZE) {
        let table = p.table_name()?;
        if p.keyword(Keyword::WHERE) {
            return Err(LochError::NotSupported("OPTIMIZE … WHERE".into()));
        }
        let mut zorder = Vec::new();
        if p.keyword(Keyword::ZORDER) {
            p.expect(Keyword::BY)?;
            let parens = p.token(&Token::LParen);
            loop {
                zorder.push(p.identifier()?);
                if !p.token(&Token::Comma) {
                    break;
                }
            }
            if parens && !p.token(&Token::RParen) {
                return Err(p.error("expected ) after the ZORDER BY columns"));
            }
        }
        p.end()?;
        return Ok(DeltaCommand::Optimize { table, zorder });
    }
    if p.keyword(Keyword::VACUUM) {
        if p.at_end() {
            return Err(LochError::NotSupported(
                "VACUUM of a whole database; name a Delta table: VACUUM t".into(),
            ));
        }
        let table = p.table_name()?;
        let mut options = VacuumOptions::default();
        while !p.at_end() {
            if p.word("LITE") {
                options.lite = true;
            } else if p.keyword(Keyword::FULL) {
                options.lite = false;
            } else if p.keyword(Keyword::RETAIN) {
                let hours = p.float()?;
                if !(hours.is_finite() && hours >= 0.0) {
                    return Err(p.error("RETAIN takes a number of hours"));
                }
                p.expect(Keyword::HOURS)?;
                options.retain = Some(Duration::from_secs_f64(hours * 3600.0));
            } else if p.keyword(Keyword::DRY) {
                p.expect(Keyword::RUN)?;
                options.dry_run = true;
            } else {
                return Err(p.error("expected LITE, FULL, RETAIN n HOURS or DRY RUN"));
            }
        }
        return Ok(DeltaCommand::Vacuum { table, options });
    }
    if !p.word("RESTORE") {
        return Err(p.error("expected a Delta utility statement"));
    }
    p.keyword(Keyword::TABLE);
    let table = p.table_name()?;
    p.keyword(Keyword::TO);
    let to = if p.keyword(Keyword::VERSION) {
        p.expect(Keyword::AS)?;
        p.expect(Keyword::OF)?;
        TimeTravel::Version(p.number()?)
    } else {
        p.expect(Keyword::TIMESTAMP)?;
        p.expect(Keyword::AS)?;
        p.expect(Keyword::OF)?;
        let text = p.string()?;
        match TimeTravel::split(&format!("t@{text}")) {
            Some((_, Ok(at))) => at,
            _ => return Err(p.error(&format!("\"{text}\" is not a timestamp"))),
        }
    };
    p.end()?;
    Ok(DeltaCommand::Restore { table, to })
}

/// A cursor over significant tokens.
pub(crate) struct Tokens<'a> {
    pub(crate) tokens: &'a [Token],
    pub(crate) at: usize,
}

impl Tokens<'_> {
    pub(crate) fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    pub(crate) fn at_end(&self) -> bool {
        matches!(self.peek(), None | Some(Token::EOF))
    }

    pub(crate) fn error(&self, what: &str) -> LochError {
        match self.peek() {
            Some(t) if !self.at_end() => LochError::Syntax(format!("{what}, found {t}")),
            _ => LochError::Syntax(format!("{what}, found the end of the statement")),
        }
    }

    pub(crate) fn keyword(&mut self, k: Keyword) -> bool {
        let found = self.peek().is_some_and(|t| is(t, k));
        if found {
            self.at += 1;
        }
        found
    }

    pub(crate) fn word(&mut self, word: &str) -> bool {
        let found = self.peek().is_some_and(|t| is_word(t, word));
        if found {
            self.at += 1;
        }
        found
    }

    pub(crate) fn expect(&mut self, k: Keyword) -> Result<(), LochError> {
        if self.keyword(k) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {k:?}")))
        }
    }

    pub(crate) fn token(&mut self, token: &Token) -> bool {
        let found = self.peek() == Some(token);
        if found {
            self.at += 1;
        }
        found
    }

    pub(crate) fn end(&self) -> Result<(), LochError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.error("expected the end of the statement"))
        }
    }

    pub(crate) fn identifier(&mut self) -> Result<String, LochError> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let name = ident(w);
                self.at += 1;
                Ok(name)
            }
            _ => Err(self.error("expected a name")),
        }
    }

    /// `name`, `schema.name` or `database.schema.name`.
    pub(crate) fn table_name(&mut self) -> Result<Vec<String>, LochError> {
        let mut parts = vec![self.identifier()?];
        while self.token(&Token::Period) {
            parts.push(self.identifier()?);
        }
        if parts.len() > 3 {
            return Err(LochError::Syntax(format!(
                "improper qualified name (too many dotted names): {}",
                parts.join(".")
            )));
        }
        Ok(parts)
    }

    pub(crate) fn number(&mut self) -> Result<u64, LochError> {
        match self.peek() {
            Some(Token::Number(n, _)) => {
                let n = n
                    .parse()
                    .map_err(|_| self.error("expected a whole number"))?;
                self.at += 1;
                Ok(n)
            }
            _ => Err(self.error("expected a whole number")),
        }
    }

    pub(crate) fn float(&mut self) -> Result<f64, LochError> {
        match self.peek() {
            Some(Token::Number(n, _)) => {
                let n = n.parse().map_err(|_| self.error("expected a number"))?;
                self.at += 1;
                Ok(n)
            }
            _ => Err(self.error("expected a number")),
        }
    }

    pub(crate) fn string(&mut self) -> Result<String, LochError> {
        match self.peek() {
            Some(Token::SingleQuotedString(s)) => {
                let s = s.clone();
                self.at += 1;
                Ok(s)
            }
            _ => Err(self.error("expected a quoted timestamp")),
        }
    }
}

/// Databricks' spelling of table creation, which DataFusion's parser does
/// not know, in DataFusion's:
///
/// - `CREATE TABLE t [(cols)] USING fmt LOCATION 'x' …` →
///   `CREATE EXTERNAL TABLE t [(cols)] STORED AS fmt LOCATION 'x' …`
/// - `CREATE TABLE t … USING DELTA [AS …]` (no location) → the same without
///   `USING DELTA`: managed tables are Delta anyway.
///
fn create_table(tokens: &mut Vec<Token>) -> bool {
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        if !is(&tokens[i], Keyword::CREATE) {
            i += 1;
            continue;
        }
        let mut j = next(tokens, i + 1);
        if tokens.get(j).is_some_and(|t| is(t, Keyword::OR)) {
            j = next(tokens, next(tokens, j + 1) + 1);
        }
        let table_at = j;
        if !tokens.get(j).is_some_and(|t| is(t, Keyword::TABLE)) {
            i += 1;
            continue;
        }
        j = next(tokens, j + 1);
        if tokens.get(j).is_some_and(|t| is(t, Keyword::IF)) {
            j = next(tokens, next(tokens, next(tokens, j + 1) + 1) + 1);
        }
        // The name: words joined by periods.
        if !matches!(tokens.get(j), Some(Token::Word(_))) {
            i += 1;
            continue;
        }
        j = next(tokens, j + 1);
        while matches!(tokens.get(j), Some(Token::Period))
            && matches!(tokens.get(next(tokens, j + 1)), Some(Token::Word(_)))
        {
            j = next(tokens, next(tokens, j + 1) + 1);
        }
        if matches!(tokens.get(j), Some(Token::LParen)) {
            let mut depth = 0usize;
            while let Some(t) = tokens.get(j) {
                match t {
                    Token::LParen => depth += 1,
                    Token::RParen => depth -= 1,
                    _ => {}
                }
                j += 1;
                if depth == 0 {
                    break;
                }
            }
            j = next(tokens, j);
        }
        let using_at = j;
        if !tokens.get(using_at).is_some_and(|t| is(t, Keyword::USING)) {
            i += 1;
            continue;
        }
        let format_at = next(tokens, using_at + 1);
        let Some(Token::Word(format)) = tokens.get(format_at) else {
            i += 1;
            continue;
        };
        let is_delta = format.value.eq_ignore_ascii_case("delta");
        let end = tokens[format_at..]
            .iter()
            .position(|t| matches!(t, Token::SemiColon))
            .map_or(tokens.len(), |p| format_at + p);
        let has_location = tokens[format_at..end]
            .iter()
            .any(|t| is(t, Keyword::LOCATION));
        if has_location {
            tokens[using_at] = Token::make_keyword("STORED AS");
            tokens.insert(table_at, Token::make_keyword("EXTERNAL "));
        } else if is_delta {
            tokens[using_at] = Token::Whitespace(Whitespace::Space);
            tokens[format_at] = Token::Whitespace(Whitespace::Space);
        } else {
            i += 1;
            continue;
        }
        changed = true;
        i = end;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

    fn rewrite_sql(sql: &str) -> Option<String> {
        rewrite(sql, &PostgreSqlDialect {})
    }

    #[test]
    fn managed_tables_partition_by_columns() {
        assert_eq!(
            rewrite_sql("CREATE TABLE t (a INT, d TEXT) USING DELTA PARTITIONED BY (d)").as_deref(),
            Some("CREATE TABLE t (a INT, d TEXT)     PARTITION BY (d)")
        );
        assert_eq!(
            rewrite_sql("create table t partitioned by (d) as select 1 as a, 'x' as d").as_deref(),
            Some("create table t PARTITION by (d) as select 1 as a, 'x' as d")
        );
        assert_eq!(
            rewrite_sql("CREATE EXTERNAL TABLE t STORED AS CSV PARTITIONED BY (d) LOCATION '/x'"),
            None
        );
        assert_eq!(
            rewrite_sql("CREATE TABLE t USING DELTA LOCATION '/x' PARTITIONED BY (d)").as_deref(),
            Some("CREATE EXTERNAL TABLE t STORED AS DELTA LOCATION '/x' PARTITIONED BY (d)")
        );
    }

    #[test]
    fn create_table_is_rewritten_on_tokens_only() {
        assert_eq!(
            rewrite_sql("CREATE TABLE s.t USING DELTA LOCATION '/x/USING delta'").as_deref(),
            Some("CREATE EXTERNAL TABLE s.t STORED AS DELTA LOCATION '/x/USING delta'")
        );
        assert_eq!(
            rewrite_sql(
                "create or replace table if not exists t (a int) using parquet location 'p'"
            )
            .as_deref(),
            Some(
                "create or replace EXTERNAL table if not exists t (a int) STORED AS parquet location 'p'"
            )
        );
        assert_eq!(
            rewrite_sql("SELECT 1; CREATE TABLE t USING DELTA AS SELECT 1 AS a").as_deref(),
            Some("SELECT 1; CREATE TABLE t     AS SELECT 1 AS a")
        );
        assert_eq!(rewrite_sql("CREATE TABLE t (a int)"), None);
        assert_eq!(
            rewrite_sql("SELECT 'CREATE TABLE t USING DELTA LOCATION x'"),
            None
        );
    }

    #[test]
    fn time_travel_becomes_a_versioned_name_aliased_back() {
        assert_eq!(
            rewrite_sql("SELECT * FROM s.T VERSION AS OF 3 WHERE a = 1").as_deref(),
            Some("SELECT * FROM s.\"t@v3\" AS T WHERE a = 1")
        );
        assert_eq!(
            rewrite_sql("select * from t timestamp as of '2026-11-24 10:00:00' x").as_deref(),
            Some("select * from \"t@2026-11-24 10:00:00\" x")
        );
        assert_eq!(
            rewrite_sql("SELECT * FROM t VERSION AS OF 1 AS old JOIN t ON true").as_deref(),
            Some("SELECT * FROM \"t@v1\" AS old JOIN t ON true")
        );
        assert_eq!(rewrite_sql("SELECT CAST(x AS TIMESTAMP) FROM t"), None);
        assert_eq!(rewrite_sql("SELECT 'a VERSION AS OF 3'"), None);
    }

    #[test]
    fn delta_utilities_are_parsed() {
        let parse = |sql: &str| match delta_utilities(sql, &PostgreSqlDialect {}) {
            Ok(Some(mut pieces)) if pieces.len() == 1 => match pieces.remove(0) {
                Piece::Delta(c) => Some(c),
                Piece::Sql(_) | Piece::Security(_) => None,
            },
            _ => None,
        };
        assert_eq!(
            parse("DESCRIBE HISTORY s.t LIMIT 2"),
            Some(DeltaCommand::History {
                table: vec!["s".into(), "t".into()],
                limit: Some(2)
            })
        );
        assert_eq!(
            parse("optimize T zorder by (a, \"B\")"),
            Some(DeltaCommand::Optimize {
                table: vec!["t".into()],
                zorder: vec!["a".into(), "B".into()]
            })
        );
        assert_eq!(
            parse("VACUUM t RETAIN 0 HOURS DRY RUN"),
            Some(DeltaCommand::Vacuum {
                table: vec!["t".into()],
                options: VacuumOptions {
                    retain: Some(Duration::ZERO),
                    dry_run: true,
                    ..VacuumOptions::default()
                }
            })
        );
        assert_eq!(
            parse("RESTORE TABLE t TO VERSION AS OF 2"),
            Some(DeltaCommand::Restore {
                table: vec!["t".into()],
                to: TimeTravel::Version(2)
            })
        );
        assert!(matches!(
            delta_utilities("VACUUM t RETAIN x HOURS", &PostgreSqlDialect {}),
            Err(LochError::Syntax(_))
        ));
        assert!(matches!(
            delta_utilities("SELECT 1; OPTIMIZE t; SELECT 2", &PostgreSqlDialect {}),
            Ok(Some(p)) if p.len() == 3
        ));
        assert!(matches!(
            delta_utilities("SELECT 'OPTIMIZE t'", &PostgreSqlDialect {}),
            Ok(None)
        ));
    }
}
