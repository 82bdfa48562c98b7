//! Who may connect. Until users and roles live in the catalog (the security
//! issue), there is one user, the admin `loch`: its password comes from
//! `LOCH_ADMIN_PASSWORD` or is generated on first start and written once to
//! `<data-dir>/admin-password` (mode 0600). In memory it is kept only as a
//! salted PBKDF2-HMAC-SHA256 hash, the key derivation SCRAM-SHA-256 uses.

use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

/// The admin user `loch local` creates.
pub const ADMIN_USER: &str = "loch";

/// The file, under the data directory, that holds a generated password.
pub const PASSWORD_FILE: &str = "admin-password";

/// PostgreSQL's default `scram_iterations`.
const ITERATIONS: NonZeroU32 = match NonZeroU32::new(4096) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

/// A user name and a salted hash of its password.
pub struct Credentials {
    user: String,
    salt: [u8; 16],
    hash: [u8; 32],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials for `user` with `password`; the password is hashed at once.
    pub fn new(user: &str, password: &str) -> Result<Self, AuthError> {
        let mut salt = [0u8; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| AuthError::Random)?;
        let mut hash = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            ITERATIONS,
            &salt,
            password.as_bytes(),
            &mut hash,
        );
        Ok(Credentials {
            user: user.to_string(),
            salt,
            hash,
        })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// True when `user` and `password` match. An unknown user costs the same
    /// hash computation as a wrong password, so timing tells neither apart.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let password_ok = ring::pbkdf2::verify(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            ITERATIONS,
            &self.salt,
            password.as_bytes(),
            &self.hash,
        )
        .is_ok();
        password_ok && user == self.user
    }
}

/// Why the admin credentials could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the system random generator failed")]
    Random,
    #[error("{path}: {source}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    EmptyPassword(String),
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

/// `n` random bytes, hex-encoded: tokens and handles clients cannot guess.
pub fn random_hex(n: usize) -> Result<String, AuthError> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Random)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_needs_both_user_and_password() {
        let c = Credentials::new("loch", "s3cret").unwrap();
        assert!(c.verify("loch", "s3cret"));
        assert!(!c.verify("loch", "s3cret "));
        assert!(!c.verify("other", "s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

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
