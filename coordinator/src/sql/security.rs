//! The role, grant and ownership statements (`CREATE ROLE`, `GRANT`,
//! `SHOW GRANTS`, `ALTER … OWNER TO`, row filters and masks) read into a
//! [`SecurityCommand`].
//!
//! They are parsed on sqlparser's tokens: their PostgreSQL forms are not
//! what sqlparser's AST expects for every dialect, and a password must
//! never go through a path that could echo it.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use loch_catalog::access_control::Privilege;

use super::tokens::{Tokens, is_word};
use crate::error::LochError;

/// Role attributes a `CREATE ROLE` / `ALTER ROLE` sets.
#[derive(Default, Clone)]
pub struct RoleOptions {
    pub login: Option<bool>,
    pub superuser: Option<bool>,
    /// `Some(None)`: `PASSWORD NULL`.
    pub password: Option<Option<String>>,
    pub connection_limit: Option<Option<u32>>,
}

impl std::fmt::Debug for RoleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleOptions")
            .field("login", &self.login)
            .field("superuser", &self.superuser)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("connection_limit", &self.connection_limit)
            .finish()
    }
}

/// What a `GRANT`/`REVOKE` is on.
#[derive(Debug, Clone)]
pub enum Target {
    Tables(Vec<Vec<String>>),
    AllTablesIn(Vec<String>),
    Schemas(Vec<String>),
}

/// A role, grant or ownership statement.
#[derive(Debug, Clone)]
pub enum SecurityCommand {
    CreateRole {
        name: String,
        if_not_exists: bool,
        options: RoleOptions,
    },
    AlterRole {
        name: String,
        options: RoleOptions,
    },
    /// `ALTER ROLE role SET name = value` (`Some`) or `RESET name`
    /// (`None`; name `all` for every setting).
    RoleSetting {
        role: String,
        name: String,
        value: Option<String>,
    },
    DropRole {
        names: Vec<String>,
        if_exists: bool,
    },
    /// `GRANT/REVOKE privileges ON target TO/FROM grantees`; `None`
    /// privileges means `ALL`.
    Privileges {
        grant: bool,
        privileges: Option<Vec<Privilege>>,
        target: Target,
        grantees: Vec<String>,
    },
    /// `GRANT/REVOKE role TO/FROM members`.
    Membership {
        grant: bool,
        roles: Vec<String>,
        members: Vec<String>,
    },
    /// `ALTER TABLE|VIEW|SCHEMA x OWNER TO role`.
    Owner {
        schema_level: bool,
        name: Vec<String>,
        owner: String,
    },
    /// `ALTER TABLE t SET|DROP ROW FILTER` (`column` `None`) and `ALTER
    /// TABLE t ALTER COLUMN c SET|DROP MASK`; `expression` `None` drops.
    Policy {
        table: Vec<String>,
        column: Option<String>,
        expression: Option<String>,
    },
    /// `SHOW GRANTS [ON …] [TO|FOR role]`.
    ShowGrants {
        on: Option<Target>,
        to: Option<String>,
    },
    /// `CREATE|DROP STORAGE CREDENTIAL`, `SHOW STORAGE CREDENTIALS`.
    Credential(crate::sql::credentials::CredentialCommand),
}

impl SecurityCommand {
    /// The PostgreSQL command tag.
    pub fn tag(&self) -> &'static str {
        match self {
            SecurityCommand::CreateRole { .. } => "CREATE ROLE",
            SecurityCommand::AlterRole { .. } | SecurityCommand::RoleSetting { .. } => "ALTER ROLE",
            SecurityCommand::DropRole { .. } => "DROP ROLE",
            SecurityCommand::Privileges { grant: true, .. }
            | SecurityCommand::Membership { grant: true, .. } => "GRANT",
            SecurityCommand::Privileges { grant: false, .. }
            | SecurityCommand::Membership { grant: false, .. } => "REVOKE",
            SecurityCommand::Owner {
                schema_level: true, ..
            } => "ALTER SCHEMA",
            SecurityCommand::Owner { .. } | SecurityCommand::Policy { .. } => "ALTER TABLE",
            SecurityCommand::ShowGrants { .. } => "SHOW",
            SecurityCommand::Credential(command) => command.tag(),
        }
    }
}

/// The columns of `SHOW GRANTS`.
pub fn show_grants_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("principal", DataType::Utf8, false),
        Field::new("privilege", DataType::Utf8, false),
        Field::new("object_type", DataType::Utf8, false),
        Field::new("object_name", DataType::Utf8, false),
        Field::new("grantor", DataType::Utf8, false),
    ]))
}

/// True for the statements [`parse`] reads (`words` without whitespace).
pub fn is_security_statement(words: &[Token]) -> bool {
    let w = |i: usize, word: &str| words.get(i).is_some_and(|t| is_word(t, word));
    let role_word = |i: usize| w(i, "ROLE") || w(i, "USER") || w(i, "GROUP");
    super::credentials::is_statement(words)
        || (w(0, "CREATE") && role_word(1))
        || (w(0, "ALTER") && role_word(1))
        || (w(0, "DROP") && role_word(1))
        || w(0, "GRANT")
        || w(0, "REVOKE")
        || (w(0, "SHOW") && w(1, "GRANTS"))
        || (w(0, "ALTER")
            && (w(1, "TABLE") || w(1, "VIEW") || w(1, "SCHEMA"))
            && words.iter().any(|t| is_word(t, "OWNER")))
        || (w(0, "ALTER") && w(1, "TABLE") && is_policy_clause(words))
}

/// `… SET|DROP ROW FILTER …` or `… SET|DROP MASK …` after `ALTER TABLE`.
fn is_policy_clause(words: &[Token]) -> bool {
    words.windows(3).any(|w| {
        (is_word(&w[0], "SET") || is_word(&w[0], "DROP"))
            && is_word(&w[1], "ROW")
            && is_word(&w[2], "FILTER")
    }) || words
        .windows(2)
        .any(|w| (is_word(&w[0], "SET") || is_word(&w[0], "DROP")) && is_word(&w[1], "MASK"))
}

/// Parses a statement [`is_security_statement`] recognised.
pub fn parse(words: &[Token]) -> Result<SecurityCommand, LochError> {
    if super::credentials::is_statement(words) {
        return super::credentials::parse(words).map(SecurityCommand::Credential);
    }
    let mut p = Tokens {
        tokens: words,
        at: 0,
    };
    if p.word("CREATE") {
        let is_user = p.word("USER");
        if !is_user && !p.word("ROLE") && !p.word("GROUP") {
            return Err(p.error("expected ROLE or USER"));
        }
        let if_not_exists = p.word("IF");
        if if_not_exists && !(p.word("NOT") && p.word("EXISTS")) {
            return Err(p.error("expected IF NOT EXISTS"));
        }
        let name = p.identifier()?;
        let mut options = role_options(&mut p)?;
        if is_user && options.login.is_none() {
            options.login = Some(true);
        }
        return Ok(SecurityCommand::CreateRole {
            name,
            if_not_exists,
            options,
        });
    }
    if p.word("DROP") {
        p.at += 1; // ROLE | USER | GROUP
        let if_exists = p.word("IF");
        if if_exists && !p.word("EXISTS") {
            return Err(p.error("expected IF EXISTS"));
        }
        let names = name_list(&mut p)?;
        p.end()?;
        return Ok(SecurityCommand::DropRole { names, if_exists });
    }
    if p.word("ALTER") {
        if p.word("ROLE") || p.word("USER") || p.word("GROUP") {
            let name = p.identifier()?;
            if p.word("SET") {
                let setting = setting_name(&mut p)?;
                if !(p.token(&Token::Eq) || p.word("TO")) {
                    return Err(p.error("expected = or TO"));
                }
                let value = rest_as_value(&mut p)?;
                return Ok(SecurityCommand::RoleSetting {
                    role: name,
                    name: setting,
                    value: Some(value),
                });
            }
            if p.word("RESET") {
                let setting = if p.word("ALL") {
                    "all".to_string()
                } else {
                    setting_name(&mut p)?
                };
                p.end()?;
                return Ok(SecurityCommand::RoleSetting {
                    role: name,
                    name: setting,
                    value: None,
                });
            }
            let options = role_options(&mut p)?;
            return Ok(SecurityCommand::AlterRole { name, options });
        }
        let schema_level = p.word("SCHEMA");
        if !schema_level && !p.word("TABLE") && !p.word("VIEW") {
            return Err(p.error("expected TABLE, VIEW or SCHEMA"));
        }
        let name = p.table_name()?;
        if !schema_level && let Some(command) = policy_clause(&mut p, &name)? {
            return Ok(command);
        }
        if !(p.word("OWNER") && p.word("TO")) {
            return Err(LochError::NotSupported(
                "ALTER TABLE other than OWNER TO".into(),
            ));
        }
        let owner = p.identifier()?;
        p.end()?;
        return Ok(SecurityCommand::Owner {
            schema_level,
            name,
            owner,
        });
    }
    if p.word("SHOW") {
        p.at += 1; // GRANTS
        let on = if p.word("ON") {
            Some(target(&mut p)?)
        } else {
            None
        };
        let to = if p.word("TO") || p.word("FOR") {
            Some(p.identifier()?)
        } else {
            None
        };
        p.end()?;
        return Ok(SecurityCommand::ShowGrants { on, to });
    }
    let grant = p.word("GRANT");
    if !grant && !p.word("REVOKE") {
        return Err(p.error("expected GRANT or REVOKE"));
    }
    // A privilege list is followed by ON; a role list by TO/FROM.
    let has_on = words[p.at..].iter().any(|t| is_word(t, "ON"));
    if !has_on {
        let roles = name_list(&mut p)?;
        to_or_from(&mut p, grant)?;
        let members = grantees(&mut p)?;
        p.end()?;
        return Ok(SecurityCommand::Membership {
            grant,
            roles,
            members,
        });
    }
    let privileges = if p.word("ALL") {
        p.word("PRIVILEGES");
        None
    } else {
        let mut list = Vec::new();
        loop {
            let Some(Token::Word(w)) = p.peek() else {
                return Err(p.error("expected a privilege"));
            };
            let Some(privilege) = Privilege::parse(&w.value) else {
                let word = w.value.to_ascii_uppercase();
                return Err(
                    if word == "TRUNCATE" || word == "REFERENCES" || word == "TRIGGER" {
                        LochError::NotSupported(format!("the {word} privilege"))
                    } else {
                        p.error("expected SELECT, INSERT, UPDATE, DELETE, USAGE, CREATE or ALL")
                    },
                );
            };
            p.at += 1;
            list.push(privilege);
            if !p.token(&Token::Comma) {
                break;
            }
        }
        Some(list)
    };
    if !p.word("ON") {
        return Err(p.error("expected ON"));
    }
    let target = target(&mut p)?;
    to_or_from(&mut p, grant)?;
    let grantees = grantees(&mut p)?;
    if grant && p.word("WITH") {
        return Err(LochError::NotSupported("WITH GRANT OPTION".into()));
    }
    p.word("CASCADE");
    p.word("RESTRICT");
    p.end()?;
    if let Some(list) = &privileges {
        let schema_target = matches!(target, Target::Schemas(_));
        if let Some(bad) = list
            .iter()
            .find(|p| p.is_table_privilege() == schema_target)
        {
            return Err(LochError::InvalidGrant(format!(
                "invalid privilege type {} for {}",
                bad.as_str(),
                if schema_target { "schema" } else { "table" }
            )));
        }
    }
    Ok(SecurityCommand::Privileges {
        grant,
        privileges,
        target,
        grantees,
    })
}

/// The clause after `ALTER TABLE t`, when it is a row filter or mask one.
fn policy_clause(
    p: &mut Tokens<'_>,
    table: &[String],
) -> Result<Option<SecurityCommand>, LochError> {
    let start = p.at;
    let column = if p.word("ALTER") {
        p.word("COLUMN");
        Some(p.identifier()?)
    } else {
        None
    };
    let set = p.word("SET");
    if !set && !p.word("DROP") {
        p.at = start;
        return Ok(None);
    }
    let is_clause = match column {
        None => p.word("ROW") && p.word("FILTER"),
        Some(_) => p.word("MASK"),
    };
    if !is_clause {
        p.at = start;
        return Ok(None);
    }
    let expression = if set {
        let rest = &p.tokens[p.at..];
        p.at = p.tokens.len();
        Some(super::security::parse_expression(rest)?)
    } else {
        p.end()?;
        None
    };
    Ok(Some(SecurityCommand::Policy {
        table: table.to_vec(),
        column,
        expression,
    }))
}

/// `TO` after a `GRANT`, `FROM` after a `REVOKE`.
fn to_or_from(p: &mut Tokens<'_>, grant: bool) -> Result<(), LochError> {
    match grant {
        true if p.word("TO") => Ok(()),
        false if p.word("FROM") => Ok(()),
        true => Err(p.error("expected TO")),
        false => Err(p.error("expected FROM")),
    }
}

fn grantees(p: &mut Tokens<'_>) -> Result<Vec<String>, LochError> {
    let mut out = Vec::new();
    loop {
        // `ROLE r`, `USER u`, `GROUP g` are r, u, g.
        if matches!(p.tokens.get(p.at + 1), Some(Token::Word(_))) {
            let _ = p.word("ROLE") || p.word("USER") || p.word("GROUP");
        }
        out.push(p.identifier()?);
        if !p.token(&Token::Comma) {
            return Ok(out);
        }
    }
}

fn target(p: &mut Tokens<'_>) -> Result<Target, LochError> {
    if p.word("ALL") {
        if !(p.word("TABLES") && p.word("IN") && p.word("SCHEMA")) {
            return Err(p.error("expected ALL TABLES IN SCHEMA"));
        }
        return Ok(Target::AllTablesIn(name_list(p)?));
    }
    if p.word("SCHEMA") {
        return Ok(Target::Schemas(name_list(p)?));
    }
    if !p.word("TABLE") {
        p.word("VIEW");
    }
    let mut tables = vec![p.table_name()?];
    while p.token(&Token::Comma) {
        tables.push(p.table_name()?);
    }
    Ok(Target::Tables(tables))
}

/// `name [, name …]`: roles or schemas.
fn name_list(p: &mut Tokens<'_>) -> Result<Vec<String>, LochError> {
    let mut out = vec![p.identifier()?];
    while p.token(&Token::Comma) {
        out.push(p.identifier()?);
    }
    Ok(out)
}

/// A setting's name, dotted for DataFusion's (`datafusion.execution.x`).
fn setting_name(p: &mut Tokens<'_>) -> Result<String, LochError> {
    let mut name = p.identifier()?.to_ascii_lowercase();
    while p.token(&Token::Period) {
        name.push('.');
        name.push_str(&p.identifier()?.to_ascii_lowercase());
    }
    Ok(name)
}

/// The rest of the statement as a setting's value: a quoted string, or the
/// tokens as written (`2`, `30s`, `64MiB`).
fn rest_as_value(p: &mut Tokens<'_>) -> Result<String, LochError> {
    let mut value = String::new();
    while let Some(token) = p.peek() {
        match token {
            Token::SingleQuotedString(s) => value.push_str(s),
            Token::Word(w) => value.push_str(&w.value),
            other => value.push_str(&other.to_string()),
        }
        p.at += 1;
    }
    if value.is_empty() {
        return Err(p.error("expected a value"));
    }
    Ok(value)
}

fn role_options(p: &mut Tokens<'_>) -> Result<RoleOptions, LochError> {
    let mut o = RoleOptions::default();
    p.word("WITH");
    while !p.at_end() {
        if p.word("LOGIN") {
            o.login = Some(true);
        } else if p.word("NOLOGIN") {
            o.login = Some(false);
        } else if p.word("SUPERUSER") {
            o.superuser = Some(true);
        } else if p.word("NOSUPERUSER") {
            o.superuser = Some(false);
        } else if p.word("ENCRYPTED") || p.word("PASSWORD") {
            if matches!(p.tokens.get(p.at - 1), Some(t) if is_word(t, "ENCRYPTED"))
                && !p.word("PASSWORD")
            {
                return Err(p.error("expected PASSWORD"));
            }
            o.password = Some(match p.peek() {
                Some(Token::SingleQuotedString(s))
                | Some(Token::EscapedStringLiteral(s))
                | Some(Token::DollarQuotedString(
                    datafusion::sql::sqlparser::ast::DollarQuotedString { value: s, .. },
                )) => {
                    let s = s.clone();
                    p.at += 1;
                    Some(s)
                }
                Some(t) if is_word(t, "NULL") => {
                    p.at += 1;
                    None
                }
                // Never echo what was there: it may be a password.
                _ => {
                    return Err(LochError::Syntax(
                        "PASSWORD takes a quoted string or NULL".into(),
                    ));
                }
            });
        } else if p.word("CONNECTION") {
            if !p.word("LIMIT") {
                return Err(p.error("expected CONNECTION LIMIT"));
            }
            let negative = p.token(&Token::Minus);
            let n = p.number()?;
            o.connection_limit = Some(if negative {
                None
            } else {
                Some(u32::try_from(n).map_err(|_| p.error("connection limit too large"))?)
            });
        } else if p.word("INHERIT") || p.word("NOCREATEDB") || p.word("NOCREATEROLE") {
            // What Loch does anyway.
        } else {
            return Err(match p.peek() {
                Some(Token::Word(w)) => LochError::NotSupported(format!(
                    "role option {} (Loch has LOGIN, SUPERUSER, PASSWORD and CONNECTION LIMIT)",
                    w.value.to_ascii_uppercase()
                )),
                _ => LochError::Syntax("expected a role option".into()),
            });
        }
    }
    Ok(o)
}

/// Parses the expression of `SET ROW FILTER` / `SET MASK` from the rest of
/// the statement; its canonical SQL text is what the catalog keeps.
pub fn parse_expression(tokens: &[Token]) -> Result<String, LochError> {
    if tokens.is_empty() {
        return Err(LochError::Syntax("an expression is needed".into()));
    }
    let mut parser = Parser::new(&PostgreSqlDialect {}).with_tokens(tokens.to_vec());
    let expr = parser
        .parse_expr()
        .map_err(|e| LochError::Syntax(e.to_string()))?;
    if parser.peek_token().token != Token::EOF {
        return Err(LochError::Syntax(format!(
            "unexpected {} after the expression",
            parser.peek_token().token
        )));
    }
    Ok(expr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn parse_sql(sql: &str) -> Result<SecurityCommand, LochError> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .map_err(|e| LochError::Syntax(e.to_string()))?;
        let words = crate::sql::tokens::significant(&tokens);
        assert!(is_security_statement(&words), "{sql}");
        parse(&words)
    }

    #[test]
    fn role_statements_parse() {
        let c = parse_sql("CREATE USER ann WITH PASSWORD 'p''w' CONNECTION LIMIT 2").unwrap();
        let SecurityCommand::CreateRole { name, options, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(name, "ann");
        assert_eq!(options.login, Some(true));
        assert_eq!(options.password, Some(Some("p'w".into())));
        assert_eq!(options.connection_limit, Some(Some(2)));
        assert!(!format!("{options:?}").contains("p'w"));
        let c = parse_sql("create role analysts").unwrap();
        assert!(
            matches!(c, SecurityCommand::CreateRole { options, .. } if options.login.is_none())
        );
        let e = parse_sql("ALTER ROLE ann PASSWORD hunter2").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(matches!(
            parse_sql("DROP USER IF EXISTS ann, bob").unwrap(),
            SecurityCommand::DropRole { names, if_exists: true } if names.len() == 2
        ));
    }

    #[test]
    fn grant_statements_parse() {
        let c = parse_sql("GRANT SELECT, INSERT ON TABLE s.t, u TO ann, ROLE analysts").unwrap();
        let SecurityCommand::Privileges {
            grant: true,
            privileges: Some(p),
            target: Target::Tables(t),
            grantees,
        } = c
        else {
            panic!("{c:?}")
        };
        assert_eq!(p, vec![Privilege::Select, Privilege::Insert]);
        assert_eq!(t.len(), 2);
        assert_eq!(grantees, vec!["ann".to_string(), "analysts".into()]);
        assert!(matches!(
            parse_sql("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA sales FROM PUBLIC").unwrap(),
            SecurityCommand::Privileges {
                grant: false,
                privileges: None,
                target: Target::AllTablesIn(_),
                ..
            }
        ));
        assert!(matches!(
            parse_sql("GRANT USAGE ON SCHEMA sales TO ann").unwrap(),
            SecurityCommand::Privileges {
                target: Target::Schemas(_),
                ..
            }
        ));
        assert!(parse_sql("GRANT SELECT ON SCHEMA sales TO ann").is_err());
        assert!(matches!(
            parse_sql("GRANT analysts TO ann").unwrap(),
            SecurityCommand::Membership { grant: true, .. }
        ));
        assert!(matches!(
            parse_sql("ALTER TABLE t OWNER TO ann").unwrap(),
            SecurityCommand::Owner {
                schema_level: false,
                ..
            }
        ));
        assert!(matches!(
            parse_sql("SHOW GRANTS ON TABLE t").unwrap(),
            SecurityCommand::ShowGrants {
                on: Some(_),
                to: None
            }
        ));
    }
}
