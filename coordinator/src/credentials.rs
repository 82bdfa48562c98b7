//! `CREATE STORAGE CREDENTIAL`, `DROP STORAGE CREDENTIAL` and `SHOW STORAGE
//! CREDENTIALS`: named object store settings tables use with
//! `OPTIONS ('credential' 'name')` ([`loch_catalog::storage_credentials`] keeps
//! them, sealed). Superusers only, like the external tables that use them.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::tokenizer::Token;
use loch_catalog::storage_credentials;

use crate::databricks::{Tokens, is_word};
use crate::error::LochError;
use crate::session::{Output, Session};

/// A storage credential statement.
#[derive(Clone, PartialEq)]
pub enum CredentialCommand {
    /// `CREATE [OR REPLACE] STORAGE CREDENTIAL [IF NOT EXISTS] name
    /// [WITH] OPTIONS ('key' 'value', …)`.
    Create {
        name: String,
        settings: BTreeMap<String, String>,
        or_replace: bool,
        if_not_exists: bool,
    },
    /// `DROP STORAGE CREDENTIAL [IF EXISTS] name`.
    Drop { name: String, if_exists: bool },
    /// `SHOW STORAGE CREDENTIALS`.
    Show,
}

impl std::fmt::Debug for CredentialCommand {
    // Never the settings' values: statements end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialCommand::Create { name, settings, .. } => f
                .debug_struct("CreateStorageCredential")
                .field("name", name)
                .field("settings", &settings.keys().collect::<Vec<_>>())
                .finish(),
            CredentialCommand::Drop { name, .. } => f
                .debug_struct("DropStorageCredential")
                .field("name", name)
                .finish(),
            CredentialCommand::Show => f.write_str("ShowStorageCredentials"),
        }
    }
}

impl CredentialCommand {
    /// The command tag.
    pub fn tag(&self) -> &'static str {
        match self {
            CredentialCommand::Create { .. } => "CREATE STORAGE CREDENTIAL",
            CredentialCommand::Drop { .. } => "DROP STORAGE CREDENTIAL",
            CredentialCommand::Show => "SHOW",
        }
    }
}

/// True for the statements [`parse`] reads (`words` without whitespace).
pub fn is_statement(words: &[Token]) -> bool {
    let w = |i: usize, word: &str| words.get(i).is_some_and(|t| is_word(t, word));
    let at = if w(0, "CREATE") && w(1, "OR") && w(2, "REPLACE") {
        3
    } else {
        1
    };
    ((w(0, "CREATE") || w(0, "DROP")) && w(at, "STORAGE") && w(at + 1, "CREDENTIAL"))
        || (w(0, "SHOW") && w(1, "STORAGE") && w(2, "CREDENTIALS"))
}

/// Parses a statement [`is_statement`] recognised.
pub fn parse(words: &[Token]) -> Result<CredentialCommand, LochError> {
    let mut p = Tokens {
        tokens: words,
        at: 0,
    };
    if p.word("SHOW") {
        p.at += 2; // STORAGE CREDENTIALS
        p.end()?;
        return Ok(CredentialCommand::Show);
    }
    if p.word("DROP") {
        p.at += 2; // STORAGE CREDENTIAL
        let if_exists = p.word("IF");
        if if_exists && !p.word("EXISTS") {
            return Err(p.error("expected IF EXISTS"));
        }
        let name = p.identifier()?;
        p.end()?;
        return Ok(CredentialCommand::Drop { name, if_exists });
    }
    p.at += 1; // CREATE
    let or_replace = p.word("OR");
    if or_replace {
        p.at += 1; // REPLACE
    }
    p.at += 2; // STORAGE CREDENTIAL
    let if_not_exists = p.word("IF");
    if if_not_exists && !(p.word("NOT") && p.word("EXISTS")) {
        return Err(p.error("expected IF NOT EXISTS"));
    }
    if if_not_exists && or_replace {
        return Err(LochError::Syntax(
            "OR REPLACE and IF NOT EXISTS cannot be used together".into(),
        ));
    }
    let name = p.identifier()?;
    p.word("WITH");
    if !p.word("OPTIONS") {
        return Err(p.error("expected OPTIONS ('key' 'value', …)"));
    }
    // Errors inside the list never quote what was found: it may be a secret.
    let bad =
        |what: &str| LochError::Syntax(format!("storage credential OPTIONS: expected {what}"));
    if !p.token(&Token::LParen) {
        return Err(bad("("));
    }
    let mut settings = BTreeMap::new();
    loop {
        let key = string(&mut p).ok_or_else(|| bad("a setting name in quotes"))?;
        p.token(&Token::Eq);
        let value = string(&mut p).ok_or_else(|| bad("a value in quotes"))?;
        if settings.insert(key.clone(), value).is_some() {
            return Err(LochError::Syntax(format!("setting \"{key}\" given twice")));
        }
        if p.token(&Token::Comma) {
            continue;
        }
        if p.token(&Token::RParen) {
            break;
        }
        return Err(bad(", or )"));
    }
    if !p.at_end() {
        return Err(bad("the end of the statement after )"));
    }
    Ok(CredentialCommand::Create {
        name,
        settings,
        or_replace,
        if_not_exists,
    })
}

/// A quoted string (or a bare word, for setting names).
fn string(p: &mut Tokens<'_>) -> Option<String> {
    let value = match p.peek() {
        Some(Token::SingleQuotedString(s)) => s.clone(),
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.clone(),
        _ => return None,
    };
    p.at += 1;
    Some(value)
}

/// The columns of `SHOW STORAGE CREDENTIALS`.
pub fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("settings", DataType::Utf8, false),
        Field::new("owner", DataType::Utf8, false),
        Field::new("created_at", DataType::Utf8, false),
        Field::new("used_by", DataType::Utf8, false),
    ]))
}

/// Runs a credential statement; `superuser` says whether the user is one.
pub fn run(
    session: &Session,
    superuser: bool,
    command: CredentialCommand,
) -> Result<Output, LochError> {
    if !superuser {
        return Err(LochError::PermissionDenied(
            "storage credentials (only superusers may create, drop or list them)".into(),
        ));
    }
    let store = session.engine().catalog().store();
    let tag = command.tag();
    match command {
        CredentialCommand::Create {
            name,
            settings,
            or_replace,
            if_not_exists,
        } => {
            let settings = storage_credentials::validate(&settings)
                .map_err(|e| LochError::InvalidParameter(e.to_string()))?;
            store.create_credential(&name, &settings, session.user(), or_replace, if_not_exists)?;
        }
        CredentialCommand::Drop { name, if_exists } => {
            if !store.drop_credential(&name)? && !if_exists {
                return Err(loch_catalog::CatalogError::CredentialNotFound(name).into());
            }
        }
        CredentialCommand::Show => {
            let listed = store.credentials()?;
            let rows: Vec<[String; 5]> = listed
                .into_iter()
                .map(|c| {
                    [
                        c.name,
                        c.settings.join(", "),
                        c.owner,
                        c.created_at,
                        c.used_by.join(", "),
                    ]
                })
                .collect();
            let columns: Vec<Vec<&str>> = (0..5)
                .map(|i| rows.iter().map(|r| r[i].as_str()).collect())
                .collect();
            return crate::session::text_rows(show_schema(), columns);
        }
    }
    Ok(Output::Command {
        tag: tag.to_string(),
        rows: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn parse_sql(sql: &str) -> Result<CredentialCommand, LochError> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .map_err(|e| LochError::Syntax(e.to_string()))?;
        let words = crate::databricks::significant(&tokens);
        assert!(is_statement(&words), "{sql}");
        parse(&words)
    }

    #[test]
    fn credential_statements_parse() -> Result<(), LochError> {
        let c = parse_sql(
            "CREATE OR REPLACE STORAGE CREDENTIAL lake WITH OPTIONS \
             ('aws.access_key_id' 'AKIA', aws_secret_access_key = 's3cret')",
        )?;
        let CredentialCommand::Create {
            name,
            settings,
            or_replace: true,
            if_not_exists: false,
        } = &c
        else {
            panic!("{c:?}");
        };
        assert_eq!(name, "lake");
        assert_eq!(settings.len(), 2);
        assert!(!format!("{c:?}").contains("s3cret"), "Debug hides values");
        assert!(matches!(
            parse_sql("create storage credential if not exists \"Lake\" options ('a' 'b')")?,
            CredentialCommand::Create { name, if_not_exists: true, .. } if name == "Lake"
        ));
        assert!(matches!(
            parse_sql("DROP STORAGE CREDENTIAL IF EXISTS lake")?,
            CredentialCommand::Drop {
                if_exists: true,
                ..
            }
        ));
        assert_eq!(
            parse_sql("SHOW STORAGE CREDENTIALS")?,
            CredentialCommand::Show
        );
        for bad in [
            "CREATE STORAGE CREDENTIAL lake",
            "CREATE STORAGE CREDENTIAL lake OPTIONS ()",
            "CREATE STORAGE CREDENTIAL lake OPTIONS ('a' 'b' 'c')",
            "CREATE STORAGE CREDENTIAL lake OPTIONS ('a' 'b', 'a' 'c')",
            "CREATE OR REPLACE STORAGE CREDENTIAL IF NOT EXISTS lake OPTIONS ('a' 'b')",
            "DROP STORAGE CREDENTIAL",
        ] {
            assert!(matches!(parse_sql(bad), Err(LochError::Syntax(_))), "{bad}");
        }
        let Err(e) = parse_sql("CREATE STORAGE CREDENTIAL l OPTIONS ('k' 'v' 'hidden')") else {
            panic!("parsed");
        };
        assert!(!e.to_string().contains("hidden"), "{e}");
        Ok(())
    }
}
