//! Reading statements on sqlparser's tokens: the helpers Loch's own
//! statement parsers (Delta utilities, roles and grants, storage
//! credentials) and the Databricks rewrites share.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Word};

use crate::error::LochError;

pub(crate) fn is(t: &Token, k: Keyword) -> bool {
    matches!(t, Token::Word(w) if w.keyword == k)
}

/// An unquoted word that sqlparser has no keyword for.
pub(crate) fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Index of the next token that is not whitespace, from `i`.
pub(crate) fn next(tokens: &[Token], mut i: usize) -> usize {
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
