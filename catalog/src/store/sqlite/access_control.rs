//! The SQLite tables of users and roles, role membership, ownership,
//! grants, row filters and column masks ([`crate::access_control`] has
//! their types), beside the relations they protect: dropping a relation or
//! a schema drops its grants, owner and policies in the same transaction.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{SqliteStore, now};
use crate::access_control::{
    Grant, Privilege, Role, Securable, SecurityState, TablePolicy, default_grants,
};
use crate::error::{CatalogError, Result};
#[cfg(doc)]
use crate::store::CatalogStore;

/// The tables of this module; created in the store's opening transaction.
pub(super) fn create_tables(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS roles (
             name             TEXT PRIMARY KEY,
             login            INTEGER NOT NULL,
             superuser        INTEGER NOT NULL,
             verifier         TEXT,
             connection_limit INTEGER,
             created_at       TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS role_settings (
             role  TEXT NOT NULL,
             name  TEXT NOT NULL,
             value TEXT NOT NULL,
             PRIMARY KEY (role, name)
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

/// Records the grants a new store starts with ([`default_grants`]), once.
pub(super) fn initialize(tx: &Transaction<'_>) -> rusqlite::Result<()> {
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
    for grant in default_grants() {
        let (schema, name) = grant.securable.parts();
        tx.execute(
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
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('security_initialized', ?1)",
        params![now()],
    )?;
    Ok(())
}

/// Drops the ownership and grants of a relation that is gone.
pub(super) fn forget_relation(conn: &Connection, schema: &str, name: &str) -> rusqlite::Result<()> {
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
pub(super) fn forget_schema(conn: &Connection, schema: &str) -> rusqlite::Result<()> {
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

/// [`CatalogStore::role`].
pub(super) fn role(store: &SqliteStore, name: &str) -> Result<Option<Role>> {
    store.with_conn(|conn| {
        conn.prepare_cached(
            "SELECT name, login, superuser, verifier, connection_limit
             FROM roles WHERE name = ?1",
        )?
        .query_row(params![name], read_role)
        .optional()
    })
}

/// [`CatalogStore::create_role`].
pub(super) fn create_role(store: &SqliteStore, role: &Role) -> Result<bool> {
    store.with_conn(|conn| {
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

/// [`CatalogStore::update_role`].
pub(super) fn update_role(store: &SqliteStore, role: &Role) -> Result<bool> {
    store.with_conn(|conn| {
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

/// [`CatalogStore::drop_role`].
pub(super) fn drop_role(store: &SqliteStore, name: &str) -> Result<bool> {
    let result = store.with_conn(|conn| {
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
        tx.execute("DELETE FROM role_settings WHERE role = ?1", params![name])?;
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

/// [`CatalogStore::set_role_setting`].
pub(super) fn set_role_setting(
    store: &SqliteStore,
    role: &str,
    name: &str,
    value: Option<&str>,
) -> Result<bool> {
    store.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists = tx
            .prepare_cached("SELECT 1 FROM roles WHERE name = ?1")?
            .query_row(params![role], |_| Ok(()))
            .optional()?
            .is_some();
        if exists {
            match value {
                Some(value) => tx.execute(
                    "INSERT INTO role_settings (role, name, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (role, name) DO UPDATE SET value = excluded.value",
                    params![role, name, value],
                )?,
                None => tx.execute(
                    "DELETE FROM role_settings WHERE role = ?1 AND name = ?2",
                    params![role, name],
                )?,
            };
        }
        tx.commit()?;
        Ok(exists)
    })
}

/// [`CatalogStore::role_settings`].
pub(super) fn role_settings(store: &SqliteStore, role: &str) -> Result<BTreeMap<String, String>> {
    store.with_conn(|conn| {
        conn.prepare_cached("SELECT name, value FROM role_settings WHERE role = ?1")?
            .query_map(params![role], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    })
}

/// [`CatalogStore::add_member`].
pub(super) fn add_member(store: &SqliteStore, role: &str, member: &str) -> Result<bool> {
    store.with_conn(|conn| {
        let n = conn.execute(
            "INSERT OR IGNORE INTO role_members (role, member) VALUES (?1, ?2)",
            params![role, member],
        )?;
        Ok(n == 1)
    })
}

/// [`CatalogStore::remove_member`].
pub(super) fn remove_member(store: &SqliteStore, role: &str, member: &str) -> Result<bool> {
    store.with_conn(|conn| {
        let n = conn.execute(
            "DELETE FROM role_members WHERE role = ?1 AND member = ?2",
            params![role, member],
        )?;
        Ok(n == 1)
    })
}

/// [`CatalogStore::grant`].
pub(super) fn grant(store: &SqliteStore, grant: &Grant) -> Result<()> {
    let (schema, name) = grant.securable.parts();
    store.with_conn(|conn| {
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

/// [`CatalogStore::revoke`].
pub(super) fn revoke(
    store: &SqliteStore,
    grantee: &str,
    securable: &Securable,
    privilege: Privilege,
) -> Result<bool> {
    let (schema, name) = securable.parts();
    store.with_conn(|conn| {
        let n = conn.execute(
            "DELETE FROM grants
             WHERE grantee = ?1 AND kind = ?2 AND schema_name = ?3 AND name = ?4
               AND privilege = ?5",
            params![grantee, securable.kind(), schema, name, privilege.as_str()],
        )?;
        Ok(n == 1)
    })
}

/// [`CatalogStore::set_owner`].
pub(super) fn set_owner(store: &SqliteStore, schema: &str, name: &str, owner: &str) -> Result<()> {
    store.with_conn(|conn| {
        conn.execute(
            "INSERT INTO owners (schema_name, name, owner) VALUES (?1, ?2, ?3)
             ON CONFLICT (schema_name, name) DO UPDATE SET owner = excluded.owner",
            params![schema, name, owner],
        )?;
        Ok(())
    })
}

/// [`CatalogStore::claim_owner`].
pub(super) fn claim_owner(
    store: &SqliteStore,
    schema: &str,
    name: &str,
    owner: &str,
) -> Result<()> {
    store.with_conn(|conn| {
        conn.execute(
            "INSERT OR IGNORE INTO owners (schema_name, name, owner) VALUES (?1, ?2, ?3)",
            params![schema, name, owner],
        )?;
        Ok(())
    })
}

/// [`CatalogStore::set_policy`].
pub(super) fn set_policy(
    store: &SqliteStore,
    schema: &str,
    name: &str,
    column: &str,
    expression: Option<&str>,
) -> Result<bool> {
    store.with_conn(|conn| {
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

/// [`CatalogStore::security_state`].
pub(super) fn security_state(store: &SqliteStore) -> Result<SecurityState> {
    let raw = store.with_conn(|conn| {
        let tx = conn.transaction()?;
        let roles = tx
            .prepare_cached("SELECT name, login, superuser, verifier, connection_limit FROM roles")?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_control::PUBLIC;
    use crate::store::CatalogStore;

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
            let store = SqliteStore::open(dir.path())?;
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
        let store = SqliteStore::open(dir.path())?;
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
            let store = SqliteStore::open(dir.path())?;
            store.set_policy("public", "t", "", Some("region = 'EU'"))?;
            store.set_policy("public", "t", "ssn", Some("'***'"))?;
            store.set_policy("public", "t", "ssn", Some("left(ssn, 3)"))?;
            store.set_policy("public", "u", "", Some("true"))?;
        }
        let store = SqliteStore::open(dir.path())?;
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
