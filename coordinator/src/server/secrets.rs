//! The data directory's secret files: the admin password, the cluster
//! secret and the key storage credentials are sealed with. Each comes from
//! the environment when set, else from a 0600 file generated on first
//! start; the admin role is created (or its password reset) from them.

use std::io::Write;
use std::path::{Path, PathBuf};

use loch_catalog::CatalogStore;
use loch_catalog::access_control::Role;

use crate::access::authn::{ADMIN_USER, AuthError, PASSWORD_FILE, Verifier, random_hex};

/// Creates the admin role on first start, or resets its password when
/// `from_env` (`LOCH_ADMIN_PASSWORD`) is given. Returns where the password
/// is, and the password itself when it was generated just now (to print
/// once).
pub fn bootstrap_admin(
    store: &dyn CatalogStore,
    data_dir: &Path,
    from_env: Option<String>,
) -> Result<(PasswordSource, Option<String>), AuthError> {
    let existing = store.role(ADMIN_USER)?;
    let file = data_dir.join(PASSWORD_FILE);
    let (password, source, generated) = match (existing.as_ref(), from_env) {
        (_, Some(password)) => {
            let (password, source) = admin_password(data_dir, Some(password))?;
            (password, source, false)
        }
        (Some(_), None) => {
            // The admin exists: its password is whatever it was set to.
            return Ok((PasswordSource::File(file), None));
        }
        (None, None) => {
            let fresh = !file.exists();
            let (password, source) = admin_password(data_dir, None)?;
            (password, source, fresh)
        }
    };
    let role = Role {
        name: ADMIN_USER.to_string(),
        login: true,
        superuser: true,
        verifier: Some(Verifier::new(&password)?.to_text()),
        connection_limit: None,
    };
    if existing.is_some() {
        store.update_role(&role)?;
    } else {
        store.create_role(&role)?;
    }
    Ok((source, generated.then_some(password)))
}

/// Where the admin password came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `LOCH_ADMIN_PASSWORD`.
    Environment,
    /// The 0600 file in the data directory (generated on first start).
    File(PathBuf),
}

/// The admin password: `from_env` when given, else the one in
/// `<data_dir>/admin-password`, generated and written there (0600) on first
/// start.
pub fn admin_password(
    data_dir: &Path,
    from_env: Option<String>,
) -> Result<(String, PasswordSource), AuthError> {
    private_secret(data_dir, PASSWORD_FILE, "LOCH_ADMIN_PASSWORD", from_env, 18)
}

/// The cluster secret of `loch coordinator`: `from_env` (`--cluster-secret`
/// / `LOCH_CLUSTER_SECRET`) when given, else `<data_dir>/cluster-secret`,
/// generated (256 bits, hex) and written there 0600 on first start.
pub fn cluster_secret(
    data_dir: &Path,
    from_env: Option<String>,
) -> Result<(String, PasswordSource), AuthError> {
    private_secret(
        data_dir,
        "cluster-secret",
        "LOCH_CLUSTER_SECRET",
        from_env,
        32,
    )
}

/// The key storage credentials are sealed with in the catalog
/// ([`loch_catalog::storage_credentials`]): `LOCH_STORAGE_KEY` (64 hex digits) when
/// set, else `<data_dir>/storage-key`, generated and written there 0600 on
/// first start. Keep it out of backups of `catalog.sqlite`: without it the
/// credentials there cannot be read.
pub fn storage_key(data_dir: &Path) -> Result<(String, PasswordSource), AuthError> {
    let from_env = std::env::var("LOCH_STORAGE_KEY").ok();
    private_secret(data_dir, "storage-key", "LOCH_STORAGE_KEY", from_env, 32)
}

/// A secret given by the environment, or kept in a 0600 file of the data
/// directory, generated as `bytes` random bytes (hex) on first use.
fn private_secret(
    data_dir: &Path,
    file_name: &str,
    env_name: &str,
    from_env: Option<String>,
    bytes: usize,
) -> Result<(String, PasswordSource), AuthError> {
    if let Some(password) = from_env {
        if password.is_empty() {
            return Err(AuthError::EmptyPassword(env_name.into()));
        }
        return Ok((password, PasswordSource::Environment));
    }
    let path = data_dir.join(file_name);
    let file_error = |source| AuthError::PasswordFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let password = text.trim().to_string();
            if password.is_empty() {
                return Err(AuthError::EmptyPassword(path.display().to_string()));
            }
            return Ok((password, PasswordSource::File(path)));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_error(e)),
    }
    let password = random_hex(bytes)?;
    std::fs::create_dir_all(data_dir).map_err(file_error)?;
    // Written beside the target and renamed, so a crash never leaves a
    // half-written password; created 0600 so no other user can read it.
    let tmp = data_dir.join(format!(".{file_name}.{}", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(file_error)?;
        writeln!(file, "{password}").map_err(file_error)?;
        file.sync_all().map_err(file_error)?;
    }
    // Two first starts racing: the first rename wins and both use its file.
    if let Err(e) = std::fs::hard_link(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return private_secret(data_dir, file_name, env_name, None, bytes);
        }
        return Err(file_error(e));
    }
    let _ = std::fs::remove_file(&tmp);
    Ok((password, PasswordSource::File(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_password_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = admin_password(dir.path(), None).unwrap();
        assert_eq!(source, PasswordSource::File(dir.path().join(PASSWORD_FILE)));
        assert!(first.len() >= 32);
        let mode = std::fs::metadata(dir.path().join(PASSWORD_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, _) = admin_password(dir.path(), None).unwrap();
        assert_eq!(first, second);
        let (env, source) = admin_password(dir.path(), Some("x".into())).unwrap();
        assert_eq!((env.as_str(), source), ("x", PasswordSource::Environment));
        assert!(admin_password(dir.path(), Some(String::new())).is_err());
    }
}
