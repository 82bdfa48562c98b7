//! The SQLite table of storage credentials: each one's name, owner, setting
//! names, and its settings as [`Sealer`] sealed them. Sealing, checking and
//! using the settings is [`crate::storage_credentials`]'s.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::{SqliteStore, now};
use crate::error::{CatalogError, Result};
use crate::object_stores::StoreOptions;
use crate::storage_credentials::{CredentialInfo, Sealer, named_in};
use crate::store::{CatalogStore, Relation};

/// The table of this module; created in the store's opening transaction.
pub(super) fn create_tables(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS storage_credentials (
             name       TEXT PRIMARY KEY,
             settings   TEXT NOT NULL,
             sealed     TEXT NOT NULL,
             owner      TEXT NOT NULL,
             created_at TEXT NOT NULL
         );",
    )
}

/// [`CatalogStore::set_storage_key`].
pub(super) fn set_storage_key(store: &SqliteStore, hex_key: &str) -> Result<()> {
    let sealer = Sealer::from_hex(hex_key)?;
    // Set once; a second call keeps the first key.
    let _ = store.sealer.set(sealer);
    Ok(())
}

fn sealer(store: &SqliteStore) -> Result<&Sealer> {
    store.sealer.get().ok_or_else(|| {
        CatalogError::Invalid("this server has no storage key: credentials are off".into())
    })
}

/// [`CatalogStore::create_credential`].
pub(super) fn create_credential(
    store: &SqliteStore,
    name: &str,
    settings: &StoreOptions,
    owner: &str,
    or_replace: bool,
    if_not_exists: bool,
) -> Result<bool> {
    let sealed = sealer(store)?.seal(name, settings)?;
    let names = serde_json::to_string(&settings.keys().collect::<Vec<_>>())
        .map_err(|e| CatalogError::Store(e.to_string()))?;
    let now = now();
    store
        .with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM storage_credentials WHERE name = ?1",
                    params![name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if exists && !or_replace {
                return Ok(Some(if_not_exists));
            }
            tx.execute(
                "INSERT INTO storage_credentials (name, settings, sealed, owner, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET settings = ?2, sealed = ?3, created_at = ?5",
                params![name, names, sealed, owner, now],
            )?;
            tx.commit()?;
            Ok(None)
        })
        .and_then(|existed| match existed {
            None => Ok(true),
            Some(true) => Ok(false),
            Some(false) => Err(CatalogError::CredentialExists(name.to_string())),
        })
}

/// [`CatalogStore::drop_credential`].
pub(super) fn drop_credential(store: &SqliteStore, name: &str) -> Result<bool> {
    let users = credential_users(store, name)?;
    if !users.is_empty() {
        return Err(CatalogError::CredentialInUse {
            name: name.to_string(),
            tables: users.join(", "),
        });
    }
    store
        .with_conn(|conn| {
            conn.execute(
                "DELETE FROM storage_credentials WHERE name = ?1",
                params![name],
            )
        })
        .map(|n| n > 0)
}

/// [`CatalogStore::credentials`].
pub(super) fn credentials(store: &SqliteStore) -> Result<Vec<CredentialInfo>> {
    let rows = store.with_conn(|conn| {
        let mut stmt = conn.prepare(
            "SELECT name, settings, owner, created_at FROM storage_credentials ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    })?;
    rows.into_iter()
        .map(|(name, settings, owner, created_at)| {
            Ok(CredentialInfo {
                settings: serde_json::from_str(&settings)
                    .map_err(|e| CatalogError::Store(format!("credential {name}: {e}")))?,
                used_by: credential_users(store, &name)?,
                name,
                owner,
                created_at,
            })
        })
        .collect()
}

/// The tables whose OPTIONS name credential `name`.
fn credential_users(store: &SqliteStore, name: &str) -> Result<Vec<String>> {
    let mut users = Vec::new();
    for schema in store.schemas()? {
        for relation in store.relations(&schema)? {
            if named_in(&relation.options) == Some(name) {
                users.push(format!("{}.{}", relation.schema, relation.name));
            }
        }
    }
    Ok(users)
}

/// The settings of credential `name`.
fn credential_settings(store: &SqliteStore, name: &str) -> Result<StoreOptions> {
    let sealed: Option<String> = store.with_conn(|conn| {
        conn.query_row(
            "SELECT sealed FROM storage_credentials WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()
    })?;
    let sealed = sealed.ok_or_else(|| CatalogError::CredentialNotFound(name.to_string()))?;
    sealer(store)?.open(name, &sealed)
}

/// [`CatalogStore::with_credential`].
pub(super) fn with_credential(store: &SqliteStore, relation: &Relation) -> Result<Relation> {
    let Some(name) = named_in(&relation.options) else {
        return Ok(relation.clone());
    };
    let settings = credential_settings(store, name)?;
    Ok(relation.with_credential_settings(settings))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::storage_credentials::validate;
    use crate::store::RelationKind;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tables_get_the_settings_of_their_credential() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CatalogError::Store(e.to_string()))?;
        let store = SqliteStore::open(dir.path())?;
        let s = validate(&settings(&[
            ("aws.access_key_id", "id"),
            ("aws.region", "eu-west-1"),
        ]))?;
        assert!(
            store
                .create_credential("lake", &s, "loch", false, false)
                .is_err(),
            "no key, no credentials"
        );
        store.set_storage_key(KEY)?;
        assert!(store.create_credential("lake", &s, "loch", false, false)?);
        assert!(!store.create_credential("lake", &s, "loch", false, true)?);
        assert!(matches!(
            store.create_credential("lake", &s, "loch", false, false),
            Err(CatalogError::CredentialExists(_))
        ));
        let relation = Relation {
            schema: "public".into(),
            name: "t".into(),
            kind: RelationKind::External,
            format: Some("PARQUET".into()),
            location: Some("s3://b/t/".into()),
            options: settings(&[("credential", "lake"), ("aws.region", "us-east-1")]),
            partition_cols: vec![],
            columns: None,
            definition: None,
            default_schema: None,
        };
        let resolved = store.with_credential(&relation)?;
        assert_eq!(
            resolved
                .options
                .get("aws_access_key_id")
                .map(String::as_str),
            Some("id")
        );
        assert!(
            !resolved.options.contains_key("aws_region"),
            "the table's own wins"
        );
        assert!(!resolved.options.contains_key("credential"));
        store.create_relation(&relation, false)?;
        assert!(matches!(
            store.drop_credential("lake"),
            Err(CatalogError::CredentialInUse { .. })
        ));
        let listed = store.credentials()?;
        assert_eq!(listed[0].used_by, ["public.t"]);
        assert_eq!(listed[0].settings, ["aws_access_key_id", "aws_region"]);
        store.drop_relation("public", "t")?;
        assert!(store.drop_credential("lake")?);
        assert!(!store.drop_credential("lake")?);
        assert!(matches!(
            store.with_credential(&relation),
            Err(CatalogError::CredentialNotFound(_))
        ));
        Ok(())
    }
}
