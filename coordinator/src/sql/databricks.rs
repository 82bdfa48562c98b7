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

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Whitespace, Word};
use loch_catalog::delta::TimeTravel;
use loch_catalog::maintenance::VacuumOptions;

use super::tokens::{Tokens, ident, is, is_word, next, significant};
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

/// Rewrites the Databricks spellings of `CREATE TABLE`, `PARTITIONED BY`
/// and time travel in one statement's tokens; false when it has none.
pub fn rewrite(tokens: &mut Vec<Token>) -> bool {
    let created = create_table(tokens);
    let partitioned = partitioned_by(tokens);
    let travelled = time_travel(tokens);
    created || partitioned || travelled
}

/// True for a Delta utility statement ([`parse_utility`] reads it), from
/// its significant tokens.
pub fn is_delta_utility(words: &[Token]) -> bool {
    match words.first() {
        Some(t) if is(t, Keyword::OPTIMIZE) || is(t, Keyword::VACUUM) || is_word(t, "RESTORE") => {
            true
        }
        Some(t) if is(t, Keyword::DESCRIBE) || is(t, Keyword::DESC) => {
            words.get(1).is_some_and(|t| is(t, Keyword::HISTORY))
        }
        _ => false,
    }
}

/// `CREATE TABLE t … PARTITIONED BY (a, b) …` (Databricks' managed table
/// partitioning) → `… PARTITION BY (a, b) …`, which the parser keeps in
/// the statement for Loch to take out (the sql module). External
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
            && !words.iter().any(|t| is(t, Keyword::EXTERNAL));
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
pub fn parse_utility(tokens: &[Token]) -> Result<DeltaCommand, LochError> {
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
            let space = || Token::Whitespace(Whitespace::Space);
            tokens.splice(
                using_at..=using_at,
                [
                    Token::make_keyword("STORED"),
                    space(),
                    Token::make_keyword("AS"),
                ],
            );
            tokens.splice(
                table_at..table_at,
                [Token::make_keyword("EXTERNAL"), space()],
            );
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
    use crate::sql::{Command, parse as parse_sql};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    /// `sql` with each statement rewritten; `None` when none changed.
    fn rewrite_sql(sql: &str) -> Option<String> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
        let mut changed = false;
        let mut out = Vec::new();
        for (i, statement) in tokens.split(|t| matches!(t, Token::SemiColon)).enumerate() {
            if i > 0 {
                out.push(Token::SemiColon);
            }
            let mut statement = statement.to_vec();
            changed |= rewrite(&mut statement);
            out.extend(statement);
        }
        changed.then(|| out.iter().map(ToString::to_string).collect())
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
        let parse = |sql: &str| match parse_sql(sql) {
            Ok(mut commands) if commands.len() == 1 => match commands.remove(0) {
                Command::Delta(c) => Some(c),
                _ => None,
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
            parse_sql("VACUUM t RETAIN x HOURS"),
            Err(LochError::Syntax(_))
        ));
        assert!(matches!(
            parse_sql("SELECT 1; OPTIMIZE t; SELECT 2").as_deref(),
            Ok([Command::Query(_), Command::Delta(_), Command::Query(_)])
        ));
        assert!(matches!(
            parse_sql("SELECT 'OPTIMIZE t'").as_deref(),
            Ok([Command::Query(_)])
        ));
    }
}
