//! Users, roles, role membership, ownership and grants, kept in the catalog
//! store next to the tables they protect.
//!
//! The store only records them; deciding what a user may do is the
//! coordinator's (one function for both protocols). Passwords are never
//! stored: a role holds a SCRAM-SHA-256 verifier (salt, iteration count,
//! StoredKey, ServerKey), from which the password cannot be recovered.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::{CatalogError, Result};
use crate::store::{CatalogStore, now};

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
    fn kind(&self) -> &'static str {
        match self {
            Securable::Table { .. } => "table",
            Securable::AllTables { .. } => "all_tables",
            Securable::Schema { .. } => "schema",
        }
    }

    fn parts(&self) -> (&str, &str) {
        match self {
            Securable::Table { schema, name } => (schema, name),
            Securable::AllTables { schema } | Securable::Schema { schema } => (schema, ""),
        }
    }

    fn from_row(kind: &str, schema: String, name: String) -> Result<Self> {
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

/// The tables of this module; called in the store's opening transaction.
pub(crate) fn create_tables(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS roles (
             name             TEXT PRIMARY KEY,
             login            INTEGER NOT NULL,
             superuser        INTEGER NOT NULL,
             verifier         TEXT,
             connection_limit INTEGER,
             created_at       TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS role_members (
             role   TEXT NOT NULL,
             member TEXT NOT NULL,
             PRIMARY KEY (role, member)
         );
         CREATE TABLE IF NOT EXISTS grants (
             grantee     TEXT NOT NULL,
             kind        TEXT NOT NULL,
             schema_name TEXT NOT NULL,
             name        TEXT NOT NULL,
             privilege   TEXT NOT NULL,
             grantor     TEXT NOT NULL,
             PRIMARY KEY (grantee, kind, schema_name, name, privilege)
         );
         CREATE TABLE IF NOT EXISTS owners (
             schema_name TEXT NOT NULL,
             name        TEXT NOT NULL,
             owner       TEXT NOT NULL,
             PRIMARY KEY (schema_name, name)
         );
         -- column_name '' is the table's row filter.
         CREATE TABLE IF NOT EXISTS policies (
             schema_name TEXT NOT NULL,
             name        TEXT NOT NULL,
             column_name TEXT NOT NULL,
             expression  TEXT NOT NULL,
             PRIMARY KEY (schema_name, name, column_name)
         );",
    )
}

/// The grants a new store starts with, once: everyone may use schema
/// `public` (as in PostgreSQL) and read the bundled TPC-H sample.
pub(crate) fn initialize(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let done = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'security_initialized'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()?;
    if done.is_some() {
        return Ok(());
    }
    let defaults = [
        ("schema", crate::DEFAULT_SCHEMA, "USAGE"),
        ("schema", crate::SAMPLE_SCHEMA, "USAGE"),
        ("all_tables", crate::SAMPLE_SCHEMA, "SELECT"),
    ];
    for (kind, schema, privilege) in defaults {
        tx.execute(
            "INSERT OR IGNORE INTO grants (grantee, kind, schema_name, name, privilege, grantor)
             VALUES (?1, ?2, ?3, '', ?4, '')",
            params![PUBLIC, kind, schema, privilege],
        )?;
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('security_initialized', ?1)",
        params![now()],
    )?;
    Ok(())
}

/// Drops the ownership and grants of a relation that is gone.
pub(crate) fn forget_relation(conn: &Connection, schema: &str, name: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM owners WHERE schema_name = ?1 AND name = ?2",
        params![schema, name],
    )?;
    conn.execute(
        "DELETE FROM grants WHERE kind = 'table' AND schema_name = ?1 AND name = ?2",
        params![schema, name],
    )?;
    conn.execute(
        "DELETE FROM policies WHERE schema_name = ?1 AND name = ?2",
        params![schema, name],
    )?;
    Ok(())
}

/// Drops the ownership and grants of a schema and everything in it.
pub(crate) fn forget_schema(conn: &Connection, schema: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM owners WHERE schema_name = ?1", params![schema])?;
    conn.execute("DELETE FROM grants WHERE schema_name = ?1", params![schema])?;
    conn.execute(
        "DELETE FROM policies WHERE schema_name = ?1",
        params![schema],
    )?;
    Ok(())
}

fn read_role(r: &rusqlite::Row<'_>) -> rusqlite::Result<Role> {
    Ok(Role {
        name: r.get(0)?,
        login: r.get(1)?,
        superuser: r.get(2)?,
        verifier: r.get(3)?,
        connection_limit: r
            .get::<_, Option<i64>>(4)?
            .map(|n| n.clamp(0, u32::MAX as i64) as u32),
    })
}

impl CatalogStore {
    /// One role, when it exists.
    pub fn role(&self, name: &str) -> Result<Option<Role>> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "SELECT name, login, superuser, verifier, connection_limit
                 FROM roles WHERE name = ?1",
            )?
            .query_row(params![name], read_role)
            .optional()
        })
    }

    /// Creates `role`; false when one of that name exists.
    pub fn create_role(&self, role: &Role) -> Result<bool> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO roles (name, login, superuser, verifier, connection_limit,
                                              created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    role.name,
                    role.login,
                    role.superuser,
                    role.verifier,
                    role.connection_limit,
                    now()
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Replaces the attributes of an existing role; false when it is missing.
    pub fn update_role(&self, role: &Role) -> Result<bool> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "UPDATE roles SET login = ?2, superuser = ?3, verifier = ?4, connection_limit = ?5
                 WHERE name = ?1",
                params![
                    role.name,
                    role.login,
                    role.superuser,
                    role.verifier,
                    role.connection_limit
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Drops a role with its memberships and the grants made to it. A role
    /// that still owns schemas or tables is refused (as in PostgreSQL):
    /// `ALTER … OWNER TO` them first. False when it did not exist.
    pub fn drop_role(&self, name: &str) -> Result<bool> {
        let result = self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let owned: Vec<(String, String)> = tx
                .prepare_cached("SELECT schema_name, name FROM owners WHERE owner = ?1")?
                .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            if !owned.is_empty() {
                return Ok(Err(owned));
            }
            let n = tx.execute("DELETE FROM roles WHERE name = ?1", params![name])?;
            tx.execute(
                "DELETE FROM role_members WHERE role = ?1 OR member = ?1",
                params![name],
            )?;
            tx.execute("DELETE FROM grants WHERE grantee = ?1", params![name])?;
            tx.commit()?;
            Ok(Ok(n == 1))
        })?;
        result.map_err(|owned| {
            let objects: Vec<String> = owned
                .into_iter()
                .map(|(s, n)| {
                    if n.is_empty() {
                        format!("schema {s}")
                    } else {
                        format!("{s}.{n}")
                    }
                })
                .collect();
            CatalogError::RoleInUse {
                role: name.to_string(),
                objects: objects.join(", "),
            }
        })
    }

    /// Makes `member` a member of `role`; false when it was already.
    pub fn add_member(&self, role: &str, member: &str) -> Result<bool> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO role_members (role, member) VALUES (?1, ?2)",
                params![role, member],
            )?;
            Ok(n == 1)
        })
    }

    /// Ends `member`'s membership of `role`; false when it was none.
    pub fn remove_member(&self, role: &str, member: &str) -> Result<bool> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "DELETE FROM role_members WHERE role = ?1 AND member = ?2",
                params![role, member],
            )?;
            Ok(n == 1)
        })
    }

    /// Records a grant (granting twice is one grant).
    pub fn grant(&self, grant: &Grant) -> Result<()> {
        let (schema, name) = grant.securable.parts();
        self.with_conn(|conn| {
            conn.execute(
                "INSERT OR IGNORE INTO grants (grantee, kind, schema_name, name, privilege, grantor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    grant.grantee,
                    grant.securable.kind(),
                    schema,
                    name,
                    grant.privilege.as_str(),
                    grant.grantor
                ],
            )?;
            Ok(())
        })
    }

    /// Removes a grant; false when there was none.
    pub fn revoke(
        &self,
        grantee: &str,
        securable: &Securable,
        privilege: Privilege,
    ) -> Result<bool> {
        let (schema, name) = securable.parts();
        self.with_conn(|conn| {
            let n = conn.execute(
                "DELETE FROM grants
                 WHERE grantee = ?1 AND kind = ?2 AND schema_name = ?3 AND name = ?4
                   AND privilege = ?5",
                params![grantee, securable.kind(), schema, name, privilege.as_str()],
            )?;
            Ok(n == 1)
        })
    }

    /// Sets the owner of a table or view (`name`), or of a schema (`name` "").
    pub fn set_owner(&self, schema: &str, name: &str, owner: &str) -> Result<()> {
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO owners (schema_name, name, owner) VALUES (?1, ?2, ?3)
                 ON CONFLICT (schema_name, name) DO UPDATE SET owner = excluded.owner",
                params![schema, name, owner],
            )?;
            Ok(())
        })
    }

    /// Records the creator of a new table, view or schema as its owner; an
    /// object that has an owner keeps it (`CREATE OR REPLACE`, `IF NOT
    /// EXISTS` of an existing one).
    pub fn claim_owner(&self, schema: &str, name: &str, owner: &str) -> Result<()> {
        self.with_conn(|conn| {
            conn.execute(
                "INSERT OR IGNORE INTO owners (schema_name, name, owner) VALUES (?1, ?2, ?3)",
                params![schema, name, owner],
            )?;
            Ok(())
        })
    }

    /// Sets (`Some`) or drops (`None`) the row filter (`column` "") or the
    /// mask of `column` of table `schema.name`; false when there was
    /// nothing to drop.
    pub fn set_policy(
        &self,
        schema: &str,
        name: &str,
        column: &str,
        expression: Option<&str>,
    ) -> Result<bool> {
        self.with_conn(|conn| {
            let n = match expression {
                Some(expression) => conn.execute(
                    "INSERT INTO policies (schema_name, name, column_name, expression)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (schema_name, name, column_name)
                     DO UPDATE SET expression = excluded.expression",
                    params![schema, name, column, expression],
                )?,
                None => conn.execute(
                    "DELETE FROM policies
                     WHERE schema_name = ?1 AND name = ?2 AND column_name = ?3",
                    params![schema, name, column],
                )?,
            };
            Ok(n == 1)
        })
    }

    /// Roles, memberships, grants and owners, read in one transaction.
    pub fn security_state(&self) -> Result<SecurityState> {
        let raw = self.with_conn(|conn| {
            let tx = conn.transaction()?;
            let roles = tx
                .prepare_cached(
                    "SELECT name, login, superuser, verifier, connection_limit FROM roles",
                )?
                .query_map([], read_role)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let members = tx
                .prepare_cached("SELECT role, member FROM role_members")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<BTreeSet<(String, String)>>>()?;
            let grants = tx
                .prepare_cached(
                    "SELECT grantee, kind, schema_name, name, privilege, grantor FROM grants
                     ORDER BY grantee, kind, schema_name, name, privilege",
                )?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let owners = tx
                .prepare_cached("SELECT schema_name, name, owner FROM owners")?
                .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
                .collect::<rusqlite::Result<BTreeMap<(String, String), String>>>()?;
            let mut policies: BTreeMap<(String, String), TablePolicy> = BTreeMap::new();
            let rows = tx
                .prepare_cached("SELECT schema_name, name, column_name, expression FROM policies")?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (schema, name, column, expression) in rows {
                let policy = policies.entry((schema, name)).or_default();
                if column.is_empty() {
                    policy.row_filter = Some(expression);
                } else {
                    policy.masks.insert(column, expression);
                }
            }
            Ok((roles, members, grants, owners, policies))
        })?;
        let (roles, members, raw_grants, owners, policies) = raw;
        let mut grants = Vec::with_capacity(raw_grants.len());
        for (grantee, kind, schema, name, privilege, grantor) in raw_grants {
            let privilege = Privilege::parse(&privilege).ok_or_else(|| {
                CatalogError::Store(format!("unknown privilege {privilege:?} in grants"))
            })?;
            grants.push(Grant {
                grantee,
                securable: Securable::from_row(&kind, schema, name)?,
                privilege,
                grantor,
            });
        }
        Ok(SecurityState {
            roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
            members,
            grants,
            owners,
            policies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> Role {
        Role {
            name: name.into(),
            login: true,
            superuser: false,
            verifier: Some("SCRAM-SHA-256$4096:c2FsdA==$a:b".into()),
            connection_limit: Some(3),
        }
    }

    #[test]
    fn roles_grants_and_owners_survive_reopening() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CatalogError::Store(e.to_string()))?;
        {
            let store = CatalogStore::open(dir.path())?;
            assert!(store.create_role(&role("ann"))?);
            assert!(!store.create_role(&role("ann"))?);
            assert!(store.create_role(&Role {
                login: false,
                ..role("analysts")
            })?);
            assert!(store.add_member("analysts", "ann")?);
            store.grant(&Grant {
                grantee: "analysts".into(),
                securable: Securable::Table {
                    schema: "public".into(),
                    name: "t".into(),
                },
                privilege: Privilege::Select,
                grantor: "loch".into(),
            })?;
            store.set_owner("public", "t", "bob")?;
            store.set_owner("public", "t", "ann")?;
        }
        let store = CatalogStore::open(dir.path())?;
        let state = store.security_state()?;
        assert_eq!(state.roles.get("ann"), Some(&role("ann")));
        assert_eq!(
            state.roles_of("ann"),
            BTreeSet::from(["ann".into(), "analysts".into(), PUBLIC.into()])
        );
        assert_eq!(state.owner("public", "t"), Some("ann"));
        // The defaults, plus the one grant above.
        assert_eq!(state.grants.len(), 4);
        // A role that owns something cannot go; a revoked grant is gone.
        assert!(matches!(
            store.drop_role("ann"),
            Err(CatalogError::RoleInUse { .. })
        ));
        let table = Securable::Table {
            schema: "public".into(),
            name: "t".into(),
        };
        assert!(store.revoke("analysts", &table, Privilege::Select)?);
        assert!(!store.revoke("analysts", &table, Privilege::Select)?);
        assert!(store.drop_role("analysts")?);
        assert!(store.security_state()?.members.is_empty());
        Ok(())
    }

    #[test]
    fn row_filters_and_masks_survive_reopening_and_go_with_their_table() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CatalogError::Store(e.to_string()))?;
        {
            let store = CatalogStore::open(dir.path())?;
            store.set_policy("public", "t", "", Some("region = 'EU'"))?;
            store.set_policy("public", "t", "ssn", Some("'***'"))?;
            store.set_policy("public", "t", "ssn", Some("left(ssn, 3)"))?;
            store.set_policy("public", "u", "", Some("true"))?;
        }
        let store = CatalogStore::open(dir.path())?;
        let state = store.security_state()?;
        let key = |t: &str| ("public".to_string(), t.to_string());
        assert_eq!(
            state.policies.get(&key("t")),
            Some(&TablePolicy {
                row_filter: Some("region = 'EU'".into()),
                masks: BTreeMap::from([("ssn".into(), "left(ssn, 3)".into())]),
            })
        );
        assert!(store.set_policy("public", "t", "", None)?);
        assert!(!store.set_policy("public", "t", "", None)?);
        store.with_conn(|conn| forget_relation(conn, "public", "t"))?;
        let state = store.security_state()?;
        assert!(!state.policies.contains_key(&key("t")));
        store.with_conn(|conn| forget_schema(conn, "public"))?;
        assert!(store.security_state()?.policies.is_empty());
        Ok(())
    }
}
