//! Access control as the catalog records it: users and roles, role
//! membership, ownership, grants, and the row filters and column masks of
//! tables; the types the metadata store keeps them in, next to the tables
//! they protect, and [`SecurityState`], all of them read at once.
//!
//! The catalog only records them; deciding what a user may do is the
//! coordinator's (one function for both protocols). Passwords are never
//! stored: a role holds a SCRAM-SHA-256 verifier (salt, iteration count,
//! StoredKey, ServerKey), from which the password cannot be recovered.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{CatalogError, Result};

/// The grantee that stands for every role (`GRANT … TO PUBLIC`).
pub const PUBLIC: &str = "public";

/// A user or role. A user is a role that may log in.
#[derive(Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// May connect (`LOGIN`; `CREATE USER` implies it).
    pub login: bool,
    /// Bypasses every privilege check.
    pub superuser: bool,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as
    /// PostgreSQL stores it; `None` when the role has no password.
    pub verifier: Option<String>,
    /// Most connections at once (`CONNECTION LIMIT n`); `None` for no limit.
    pub connection_limit: Option<u32>,
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Role")
            .field("name", &self.name)
            .field("login", &self.login)
            .field("superuser", &self.superuser)
            .field("has_password", &self.verifier.is_some())
            .field("connection_limit", &self.connection_limit)
            .finish()
    }
}

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
    /// Using a schema's objects at all (schemas only).
    Usage,
    /// Creating objects in a schema (schemas only).
    Create,
}

impl Privilege {
    /// Every table privilege, what `ALL` on a table means.
    pub const TABLE: [Privilege; 4] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
    ];
    /// Every schema privilege, what `ALL` on a schema means.
    pub const SCHEMA: [Privilege; 2] = [Privilege::Usage, Privilege::Create];

    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Usage => "USAGE",
            Privilege::Create => "CREATE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "SELECT" => Privilege::Select,
            "INSERT" => Privilege::Insert,
            "UPDATE" => Privilege::Update,
            "DELETE" => Privilege::Delete,
            "USAGE" => Privilege::Usage,
            "CREATE" => Privilege::Create,
            _ => return None,
        })
    }

    /// True for the privileges a table (or view) can be granted.
    pub fn is_table_privilege(self) -> bool {
        Privilege::TABLE.contains(&self)
    }
}

/// What a grant is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Securable {
    /// One table or view.
    Table { schema: String, name: String },
    /// Every table and view of a schema, present and future (as a
    /// Databricks schema grant; PostgreSQL's `ALL TABLES IN SCHEMA` covers
    /// only the tables that exist when it runs).
    AllTables { schema: String },
    /// The schema itself (`USAGE`, `CREATE`).
    Schema { schema: String },
}

impl Securable {
    /// What kind of object this is, as the store writes it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Securable::Table { .. } => "table",
            Securable::AllTables { .. } => "all_tables",
            Securable::Schema { .. } => "schema",
        }
    }

    /// (schema, name) as the store writes them: name "" for a schema's
    /// own grants.
    pub(crate) fn parts(&self) -> (&str, &str) {
        match self {
            Securable::Table { schema, name } => (schema, name),
            Securable::AllTables { schema } | Securable::Schema { schema } => (schema, ""),
        }
    }

    /// The securable [`Securable::kind`] and [`Securable::parts`] wrote.
    pub(crate) fn from_row(kind: &str, schema: String, name: String) -> Result<Self> {
        Ok(match kind {
            "table" => Securable::Table { schema, name },
            "all_tables" => Securable::AllTables { schema },
            "schema" => Securable::Schema { schema },
            other => {
                return Err(CatalogError::Store(format!(
                    "unknown grant object kind {other:?}"
                )));
            }
        })
    }

    /// True when a table grant on this covers table or view `schema.name`.
    pub fn covers_table(&self, schema: &str, name: &str) -> bool {
        match self {
            Securable::Table { schema: s, name: n } => s == schema && n == name,
            Securable::AllTables { schema: s } => s == schema,
            Securable::Schema { .. } => false,
        }
    }

    /// True when this is schema `schema` itself.
    pub fn is_schema(&self, schema: &str) -> bool {
        matches!(self, Securable::Schema { schema: s } if s == schema)
    }

    /// `TABLE s.t`, `ALL TABLES IN SCHEMA s`, `SCHEMA s`.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Securable::Table { schema, name } => ("TABLE", format!("{schema}.{name}")),
            Securable::AllTables { schema } => ("ALL TABLES IN SCHEMA", schema.clone()),
            Securable::Schema { schema } => ("SCHEMA", schema.clone()),
        }
    }
}

/// One privilege granted to one role (or [`PUBLIC`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub grantee: String,
    pub securable: Securable,
    pub privilege: Privilege,
    pub grantor: String,
}

/// Everything an authorization decision needs, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct SecurityState {
    pub roles: BTreeMap<String, Role>,
    /// (role, member): `member` has the rights of `role`.
    pub members: BTreeSet<(String, String)>,
    pub grants: Vec<Grant>,
    /// (schema, name) → owner; a schema's own entry has name "".
    pub owners: BTreeMap<(String, String), String>,
    /// (schema, table) → its row filter and column masks.
    pub policies: BTreeMap<(String, String), TablePolicy>,
}

/// The row filter and column masks of one table: SQL expressions over its
/// columns, applied to every read of it by every user (owners and
/// superusers included; an expression exempts whom it means to with
/// `is_member('role')` or `current_user`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePolicy {
    /// Rows for which it is not true are not seen.
    pub row_filter: Option<String>,
    /// column → what readers see instead of the column's value.
    pub masks: BTreeMap<String, String>,
}

impl SecurityState {
    /// `user`, every role it is a member of (directly or through other
    /// roles), and [`PUBLIC`].
    pub fn roles_of(&self, user: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([user.to_string(), PUBLIC.to_string()]);
        let mut pending = vec![user.to_string()];
        while let Some(member) = pending.pop() {
            for (role, m) in &self.members {
                if *m == member && out.insert(role.clone()) {
                    pending.push(role.clone());
                }
            }
        }
        out
    }

    /// The owner of a table or view (`name`), or of a schema (`name` "").
    pub fn owner(&self, schema: &str, name: &str) -> Option<&str> {
        self.owners
            .get(&(schema.to_string(), name.to_string()))
            .map(String::as_str)
    }
}

/// The grants a new store starts with: everyone may use schema `public`
/// (as in PostgreSQL) and read the bundled TPC-H sample.
pub(crate) fn default_grants() -> [Grant; 3] {
    let public = |securable, privilege| Grant {
        grantee: PUBLIC.to_string(),
        securable,
        privilege,
        grantor: String::new(),
    };
    [
        public(
            Securable::Schema {
                schema: crate::DEFAULT_SCHEMA.to_string(),
            },
            Privilege::Usage,
        ),
        public(
            Securable::Schema {
                schema: crate::SAMPLE_SCHEMA.to_string(),
            },
            Privilege::Usage,
        ),
        public(
            Securable::AllTables {
                schema: crate::SAMPLE_SCHEMA.to_string(),
            },
            Privilege::Select,
        ),
    ]
}
