//! Named storage credentials: object store settings (keys, tokens,
//! endpoints, regions) kept once under a name, and used by any number of
//! tables with `OPTIONS ('credential' 'name')`.
//!
//! A table names its credential; the settings are looked up each time the
//! table is resolved, so replacing a credential (a rotated key) applies to
//! every table that uses it from the next statement on, and dropping one is
//! refused while a table still names it.
//!
//! This module checks the settings, seals and opens them, and puts them in
//! place of the name a table gives; the metadata store only keeps them,
//! sealed: AES-256-GCM under a key the server keeps outside the store
//! (`storage-key` in the data directory, or `LOCH_STORAGE_KEY`), bound to
//! the credential's name. A copy of `catalog.sqlite` alone does not reveal
//! them. Only setting names are kept in the clear, for `SHOW STORAGE
//! CREDENTIALS`.

use std::collections::BTreeMap;
use std::str::FromStr;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{CatalogError, Result};
pub use crate::object_stores::CREDENTIAL_OPTION;
use crate::object_stores::{self, StoreOptions};

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
    pub(crate) fn seal(&self, name: &str, settings: &StoreOptions) -> Result<String> {
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

    pub(crate) fn open(&self, name: &str, sealed: &str) -> Result<StoreOptions> {
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

/// Table `options` with the credential they name replaced by its
/// `settings`: the credential's settings go under any the table gives
/// itself (the table's own win).
pub(crate) fn resolve(
    options: &BTreeMap<String, String>,
    settings: StoreOptions,
) -> BTreeMap<String, String> {
    let mut resolved = options.clone();
    resolved.retain(|k, _| k.trim().trim_start_matches("format.") != CREDENTIAL_OPTION);
    let (own, _) = object_stores::split_options(&resolved);
    for (key, value) in settings {
        if !own.contains_key(&key) {
            resolved.insert(key, value);
        }
    }
    resolved
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
}
