//! Named storage credentials: object store settings (keys, tokens,
//! endpoints, regions) kept once under a name, and used by any number of
//! tables with `OPTIONS ('credential' 'name')`.
//!
//! A table names its credential; the settings are looked up each time the
//! table is resolved, so replacing a credential (a rotated key) applies to
//! every table that uses it from the next statement on, and dropping one is
//! refused while a table still names it.
//!
//! The settings are sealed in the catalog file: AES-256-GCM under a key the
//! server keeps outside it (`storage-key` in the data directory, or
//! `LOCH_STORAGE_KEY`), bound to the credential's name. A copy of
//! `catalog.sqlite` alone does not reveal them. Only setting names are kept
//! in the clear, for `SHOW STORAGE CREDENTIALS`.

use std::collections::BTreeMap;
use std::str::FromStr;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::{CatalogError, Result};
use crate::store::{CatalogStore, Relation};
use crate::object_stores::{self, StoreOptions};

/// The table option that names a credential.
pub const CREDENTIAL_OPTION: &str = "credential";

/// What `SHOW STORAGE CREDENTIALS` lists of one credential: never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    pub name: String,
    /// Setting names (`aws_access_key_id`, `aws_endpoint`, …).
    pub settings: Vec<String>,
    pub owner: String,
    pub created_at: String,
    /// `schema.table` of the tables that name it.
    pub used_by: Vec<String>,
}

/// Seals and opens credential settings with the server's storage key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer over a 256-bit key given as 64 hex digits.
    pub fn from_hex(key: &str) -> Result<Self> {
        let bytes = hex::decode(key.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                CatalogError::Invalid("the storage key must be 64 hex digits (256 bits)".into())
            })?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| CatalogError::Invalid("unusable storage key".into()))?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// `nonce ‖ ciphertext ‖ tag`, hex; `name` is authenticated with it, so
    /// sealed settings cannot be moved to another credential.
    fn seal(&self, name: &str, settings: &StoreOptions) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CatalogError::Store("the system random generator failed".into()))?;
        let mut data =
            serde_json::to_vec(settings).map_err(|e| CatalogError::Store(e.to_string()))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| CatalogError::Store("sealing a storage credential failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(hex::encode(out))
    }

    fn open(&self, name: &str, sealed: &str) -> Result<StoreOptions> {
        let unreadable = || {
            CatalogError::Store(format!(
                "storage credential \"{name}\" cannot be read with this server's storage key \
                 (was the data directory's storage-key or LOCH_STORAGE_KEY changed?)"
            ))
        };
        let mut bytes = hex::decode(sealed).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let data = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| unreadable())?;
        let mut data = data;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut data)
            .map_err(|_| unreadable())?;
        serde_json::from_slice(plain).map_err(|_| unreadable())
    }
}

pub(crate) fn create_tables(tx: &Transaction<'_>) -> rusqlite::Result<()> {
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

/// Checks that every key of `settings` is an object store setting, and
/// returns them with object_store's spelling.
pub fn validate(settings: &BTreeMap<String, String>) -> Result<StoreOptions> {
    if settings.is_empty() {
        return Err(CatalogError::Invalid(
            "a storage credential needs at least one setting".into(),
        ));
    }
    let (storage, other) = object_stores::split_options(settings);
    let unknown: Vec<&String> = other
        .keys()
        .chain(storage.keys().filter(|k| !is_known_setting(k)))
        .collect();
    if let Some(key) = unknown.first() {
        return Err(CatalogError::Invalid(format!(
            "\"{key}\" is not an object store setting (use object_store's keys: aws.access_key_id, \
             aws.endpoint, azure.storage_account_key, google.service_account_path, …)"
        )));
    }
    Ok(storage)
}

/// True for a key one of object_store's S3, Azure or GCS builders knows.
fn is_known_setting(key: &str) -> bool {
    use object_store::aws::AmazonS3ConfigKey;
    use object_store::azure::AzureConfigKey;
    use object_store::gcp::GoogleConfigKey;
    AmazonS3ConfigKey::from_str(key).is_ok()
        || AzureConfigKey::from_str(key).is_ok()
        || GoogleConfigKey::from_str(key).is_ok()
        || key.starts_with("object_store_")
}

/// The credential a table's OPTIONS name, if any.
pub fn named_in(options: &BTreeMap<String, String>) -> Option<&str> {
    options
        .iter()
        .find(|(k, _)| k.trim().trim_start_matches("format.") == CREDENTIAL_OPTION)
        .map(|(_, v)| v.as_str())
}

impl CatalogStore {
    /// Sets the key credentials are sealed with (once, at start).
    pub fn set_storage_key(&self, hex_key: &str) -> Result<()> {
        let sealer = Sealer::from_hex(hex_key)?;
        // Set once; a second call keeps the first key.
        let _ = self.sealer.set(sealer);
        Ok(())
    }

    fn sealer(&self) -> Result<&Sealer> {
        self.sealer.get().ok_or_else(|| {
            CatalogError::Invalid("this server has no storage key: credentials are off".into())
        })
    }

    /// `CREATE [OR REPLACE] STORAGE CREDENTIAL [IF NOT EXISTS]`. False when
    /// it existed and `if_not_exists` was given.
    pub fn create_credential(
        &self,
        name: &str,
        settings: &StoreOptions,
        owner: &str,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<bool> {
        let sealed = self.sealer()?.seal(name, settings)?;
        let names = serde_json::to_string(&settings.keys().collect::<Vec<_>>())
            .map_err(|e| CatalogError::Store(e.to_string()))?;
        let now = crate::store::now();
        self.with_conn(|conn| {
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

    /// `DROP STORAGE CREDENTIAL`: refused while a table names it. False
    /// when it did not exist.
    pub fn drop_credential(&self, name: &str) -> Result<bool> {
        let users = self.credential_users(name)?;
        if !users.is_empty() {
            return Err(CatalogError::CredentialInUse {
                name: name.to_string(),
                tables: users.join(", "),
            });
        }
        self.with_conn(|conn| {
            conn.execute(
                "DELETE FROM storage_credentials WHERE name = ?1",
                params![name],
            )
        })
        .map(|n| n > 0)
    }

    /// Every credential, by name.
    pub fn credentials(&self) -> Result<Vec<CredentialInfo>> {
        let rows = self.with_conn(|conn| {
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
                    used_by: self.credential_users(&name)?,
                    name,
                    owner,
                    created_at,
                })
            })
            .collect()
    }

    /// The tables whose OPTIONS name credential `name`.
    fn credential_users(&self, name: &str) -> Result<Vec<String>> {
        let mut users = Vec::new();
        for schema in self.schemas()? {
            for relation in self.relations(&schema)? {
                if named_in(&relation.options) == Some(name) {
                    users.push(format!("{}.{}", relation.schema, relation.name));
                }
            }
        }
        Ok(users)
    }

    /// The settings of credential `name`.
    fn credential_settings(&self, name: &str) -> Result<StoreOptions> {
        let sealed: Option<String> = self.with_conn(|conn| {
            conn.query_row(
                "SELECT sealed FROM storage_credentials WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
        })?;
        let sealed = sealed.ok_or_else(|| CatalogError::CredentialNotFound(name.to_string()))?;
        self.sealer()?.open(name, &sealed)
    }

    /// `relation` with the credential its OPTIONS name put in place of the
    /// name: the credential's settings, under any the table gives itself.
    /// Unchanged when it names none.
    pub fn with_credential(&self, relation: &Relation) -> Result<Relation> {
        let Some(name) = named_in(&relation.options) else {
            return Ok(relation.clone());
        };
        let settings = self.credential_settings(name)?;
        let mut resolved = relation.clone();
        resolved
            .options
            .retain(|k, _| k.trim().trim_start_matches("format.") != CREDENTIAL_OPTION);
        let (own, _) = object_stores::split_options(&resolved.options);
        for (key, value) in settings {
            if !own.contains_key(&key) {
                resolved.options.insert(key, value);
            }
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sealed_settings_open_only_under_their_name_and_key() -> Result<()> {
        let sealer = Sealer::from_hex(KEY)?;
        let s = settings(&[("aws_secret_access_key", "hunter2")]);
        let sealed = sealer.seal("lake", &s)?;
        assert!(!sealed.contains(&hex::encode("hunter2")));
        assert_eq!(sealer.open("lake", &sealed)?, s);
        assert!(sealer.open("other", &sealed).is_err(), "bound to its name");
        let other = Sealer::from_hex(&KEY.replace("1f", "ff"))?;
        assert!(other.open("lake", &sealed).is_err(), "bound to the key");
        assert!(Sealer::from_hex("abcd").is_err());
        Ok(())
    }

    #[test]
    fn only_object_store_settings_are_accepted() -> Result<()> {
        let ok = validate(&settings(&[
            ("aws.access_key_id", "a"),
            ("AWS_ENDPOINT", "http://127.0.0.1:1"),
            ("azure.storage_account_key", "k"),
            ("google.service_account_path", "/x"),
        ]))?;
        assert!(ok.contains_key("aws_endpoint"));
        assert!(validate(&settings(&[("aws.acces_key_id", "typo")])).is_err());
        assert!(validate(&settings(&[("format.has_header", "true")])).is_err());
        assert!(validate(&BTreeMap::new()).is_err());
        Ok(())
    }

    #[test]
    fn tables_get_the_settings_of_their_credential() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CatalogError::Store(e.to_string()))?;
        let store = CatalogStore::open(dir.path())?;
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
            kind: crate::store::RelationKind::External,
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
