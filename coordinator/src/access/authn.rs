//! Who may connect: passwords as SCRAM-SHA-256 verifiers, the SCRAM
//! exchange pg wire clients authenticate with, password checks for Flight
//! SQL's basic auth, a role's `CONNECTION LIMIT` (pg wire connections and
//! Flight SQL sessions counted together), and the admin user created on
//! first start.
//!
//! The verifier is PostgreSQL's: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
//! It cannot give the password back, nor let anyone holding it log in
//! (the proof needs ClientKey, of which StoredKey is only the hash). That is
//! why the exchange is Loch's own rather than pgwire's `ScramAuth`: the
//! latter needs the salted password, which is as good as the password for
//! a SCRAM login (see docs/security.md).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

use loch_catalog::CatalogStore;
use loch_catalog::access_control::Role;

/// The admin user `loch local` creates.
pub const ADMIN_USER: &str = "loch";

/// The file, under the data directory, that holds a generated password.
pub const PASSWORD_FILE: &str = "admin-password";

/// PostgreSQL's default `scram_iterations`.
const ITERATIONS: u32 = 4096;

/// A parsed SCRAM-SHA-256 verifier.
#[derive(Clone)]
pub struct Verifier {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SaltedPassword := Hi(Normalize(password), salt, i) (RFC 5802), with
/// SASLprep as PostgreSQL applies it (the raw text when it does not apply).
fn salted_password(password: &str, salt: &[u8], iterations: NonZeroU32) -> [u8; 32] {
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        prepared.as_bytes(),
        &mut out,
    );
    out
}

/// Constant-time equality of two keys.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &str) -> Result<Self, AuthError> {
        let mut salt = vec![0u8; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| AuthError::Random)?;
        Ok(Self::with_salt(password, salt, iterations()))
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: NonZeroU32) -> Self {
        let salted = salted_password(password, &salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        Verifier {
            iterations,
            salt,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Reads PostgreSQL's text form; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let key = |s: &str| -> Option<[u8; 32]> { B64.decode(s).ok()?.try_into().ok() };
        Some(Verifier {
            iterations: NonZeroU32::new(iterations.parse().ok()?)?,
            salt: B64.decode(salt).ok()?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// PostgreSQL's text form, what the catalog stores.
    pub fn to_text(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    /// True when `password` is the one this verifier was made from.
    pub fn matches(&self, password: &str) -> bool {
        let salted = salted_password(password, &self.salt, self.iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        same(&sha256(&client_key), &self.stored_key)
    }
}

fn iterations() -> NonZeroU32 {
    NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN)
}

/// Why a login failed. Both say the same to the client; the SQLSTATE
/// differs (28000 for an unknown user, 28P01 for a wrong password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// No such role, or one that may not log in or has no password.
    UnknownUser,
    WrongPassword,
}

impl LoginFailure {
    pub fn sqlstate(self) -> &'static str {
        match self {
            LoginFailure::UnknownUser => "28000",
            LoginFailure::WrongPassword => "28P01",
        }
    }

    /// The message, the same for both causes.
    pub fn message(user: &str) -> String {
        format!("password authentication failed for user \"{user}\"")
    }
}

/// A login refused by the role's `CONNECTION LIMIT`: SQLSTATE 53300
/// (too_many_connections), as in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyConnections {
    user: String,
    limit: u32,
}

impl TooManyConnections {
    pub fn sqlstate(&self) -> &'static str {
        "53300"
    }

    pub fn message(&self) -> String {
        format!(
            "too many connections for role \"{}\" (CONNECTION LIMIT {}: pg wire connections \
             and Flight SQL sessions together)",
            self.user, self.limit
        )
    }
}

/// Open connections per user, for `CONNECTION LIMIT`: pg wire connections
/// and Flight SQL sessions alike.
#[derive(Default)]
struct ConnectionCounts {
    open: Mutex<HashMap<String, usize>>,
}

/// One open connection (or Flight SQL session) of a user; frees its place
/// under the role's `CONNECTION LIMIT` when dropped.
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    user: String,
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSlot")
            .field("user", &self.user)
            .finish()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Where logins are checked: the roles of the catalog store. Clones share
/// the count of open connections, so both protocols count against one
/// `CONNECTION LIMIT`.
#[derive(Clone)]
pub struct Users {
    store: Arc<dyn CatalogStore>,
    /// Per-process key for the made-up salts of unknown users, so the
    /// exchange for a user that does not exist looks like a real one.
    mock_key: [u8; 32],
    connections: Arc<ConnectionCounts>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").finish_non_exhaustive()
    }
}

impl Users {
    pub fn new(store: Arc<dyn CatalogStore>) -> Result<Self, AuthError> {
        let mut mock_key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut mock_key)
            .map_err(|_| AuthError::Random)?;
        Ok(Users {
            store,
            mock_key,
            connections: Arc::default(),
        })
    }

    /// A place for one more connection (pg wire) or session (Flight SQL)
    /// of `role`, unless its `CONNECTION LIMIT` is reached; it is given
    /// back when the slot is dropped.
    pub fn open_connection(&self, role: &Role) -> Result<ConnectionSlot, TooManyConnections> {
        // Plain counts: still right after a panic elsewhere held the lock.
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(role.name.clone()).or_default();
        if let Some(limit) = role.connection_limit
            && *count >= limit as usize
        {
            return Err(TooManyConnections {
                user: role.name.clone(),
                limit,
            });
        }
        *count += 1;
        Ok(ConnectionSlot {
            counts: Arc::clone(&self.connections),
            user: role.name.clone(),
        })
    }

    /// The role `user` logs in as, when it exists, may log in, and has a
    /// password.
    pub fn login_role(&self, user: &str) -> Option<(Role, Verifier)> {
        let role = match self.store.role(user) {
            Ok(role) => role?,
            Err(e) => {
                tracing::error!(error = %e, "reading roles");
                return None;
            }
        };
        if !role.login {
            return None;
        }
        let verifier = Verifier::parse(role.verifier.as_deref()?)?;
        Some((role, verifier))
    }

    /// The verifier to run SCRAM with: the user's, or a made-up one (a salt
    /// stable per user name, keys nobody can match) for an unknown user.
    pub fn scram_verifier(&self, user: &str) -> (Option<Role>, Verifier) {
        match self.login_role(user) {
            Some((role, verifier)) => (Some(role), verifier),
            None => {
                let salt = hmac_sha256(&self.mock_key, user.as_bytes())[..16].to_vec();
                let mut keys = [0u8; 32];
                // A key of random bytes: no proof can hash to it.
                let _ = SystemRandom::new().fill(&mut keys);
                (
                    None,
                    Verifier {
                        iterations: iterations(),
                        salt,
                        stored_key: keys,
                        server_key: keys,
                    },
                )
            }
        }
    }

    /// Checks a clear-text password (Flight SQL basic auth). Blocking: the
    /// key derivation is deliberately slow, and costs the same for an
    /// unknown user.
    pub fn check_password(&self, user: &str, password: &str) -> Result<Role, LoginFailure> {
        let (role, verifier) = self.scram_verifier(user);
        let ok = verifier.matches(password);
        match role {
            None => Err(LoginFailure::UnknownUser),
            Some(_) if !ok => Err(LoginFailure::WrongPassword),
            Some(role) => Ok(role),
        }
    }
}

// ---------------------------------------------------------------- SCRAM

/// A SCRAM-SHA-256 exchange in progress (server side, RFC 5802/7677), with
/// `tls-server-end-point` channel binding (RFC 5929) when the client chose
/// SCRAM-SHA-256-PLUS.
pub struct ScramExchange {
    verifier: Verifier,
    known: bool,
    /// What the client-final `c=` must decode to: the GS2 header, then the
    /// channel binding data when bound.
    binding: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl std::fmt::Debug for ScramExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramExchange").finish_non_exhaustive()
    }
}

/// A malformed SCRAM message (a protocol violation, 08P01).
#[derive(Debug, thiserror::Error)]
#[error("malformed SCRAM message: {0}")]
pub struct ScramError(pub &'static str);

impl ScramExchange {
    /// Reads the client-first message and answers with the server-first one.
    /// `plus`: the client chose SCRAM-SHA-256-PLUS. `end_point`: the TLS
    /// server certificate's hash when the connection is TLS and the server
    /// offered -PLUS (so a client flag `y`, "I could bind but you cannot",
    /// means someone stripped the offer).
    pub fn start(
        client_first: &[u8],
        verifier: Verifier,
        known: bool,
        plus: bool,
        end_point: Option<&[u8]>,
    ) -> Result<(Self, String), ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError("not UTF-8"))?;
        // gs2-header: "n,," / "y,," (unbound) or "p=tls-server-end-point,,",
        // with an optional authzid.
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().ok_or(ScramError("no GS2 header"))?;
        let authzid = parts.next().ok_or(ScramError("no GS2 header"))?;
        let bare = parts.next().ok_or(ScramError("no client-first-bare"))?;
        let mut binding = format!("{flag},{authzid},").into_bytes();
        match (flag, plus, end_point) {
            ("p=tls-server-end-point", true, Some(end_point)) => {
                binding.extend_from_slice(end_point);
            }
            (f, true, _) if f.starts_with("p=") => {
                return Err(ScramError("unsupported channel binding type"));
            }
            (_, true, _) => {
                return Err(ScramError("SCRAM-SHA-256-PLUS without channel binding"));
            }
            ("y", false, Some(_)) => {
                return Err(ScramError(
                    "channel binding negotiation error: the server offered SCRAM-SHA-256-PLUS",
                ));
            }
            ("n" | "y", false, _) => {}
            (f, false, _) if f.starts_with("p=") => {
                return Err(ScramError("channel binding requested with SCRAM-SHA-256"));
            }
            _ => return Err(ScramError("bad GS2 flag")),
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && c != ','))
            .ok_or(ScramError("no client nonce"))?;
        let mut server_nonce = [0u8; 18];
        SystemRandom::new()
            .fill(&mut server_nonce)
            .map_err(|_| ScramError("random generator failed"))?;
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = ScramExchange {
            verifier,
            known,
            binding,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Checks the client-final message: the server-final message to send
    /// on success, or why the login failed.
    pub fn finish(&self, client_final: &[u8]) -> Result<Result<String, LoginFailure>, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError("no client proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let binding = binding.ok_or(ScramError("no channel binding attribute"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.binding.as_slice()) {
            return Err(ScramError("channel binding does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError("bad client proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature))
        {
            *k = p ^ s;
        }
        let proved = same(&sha256(&client_key), &self.verifier.stored_key);
        if !self.known {
            return Ok(Err(LoginFailure::UnknownUser));
        }
        if !proved {
            return Ok(Err(LoginFailure::WrongPassword));
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(Ok(format!("v={}", B64.encode(server_signature))))
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
    #[error("catalog store: {0}")]
    Catalog(#[from] loch_catalog::CatalogError),
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
    fn verifiers_match_their_password_only() {
        let v = Verifier::new("s3cret").unwrap();
        assert!(v.matches("s3cret"));
        assert!(!v.matches("s3cret "));
        let text = v.to_text();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!text.contains("s3cret"));
        let back = Verifier::parse(&text).unwrap();
        assert!(back.matches("s3cret"));
        assert!(Verifier::parse("md5abc").is_none());
    }

    /// The client side of RFC 5802, to drive the server side.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        client_final_bound(password, client_first_bare, server_first, b"n,,")
    }

    /// The same with the client's view of the channel: `c=` is `cbind`.
    fn client_final_bound(
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        cbind: &[u8],
    ) -> String {
        let mut salt = None;
        let mut iters = None;
        let mut nonce = None;
        for a in server_first.split(',') {
            if let Some(v) = a.strip_prefix("s=") {
                salt = Some(B64.decode(v).unwrap());
            } else if let Some(v) = a.strip_prefix("i=") {
                iters = Some(v.parse::<u32>().unwrap());
            } else if let Some(v) = a.strip_prefix("r=") {
                nonce = Some(v.to_string());
            }
        }
        let salted = salted_password(
            password,
            &salt.unwrap(),
            NonZeroU32::new(iters.unwrap()).unwrap(),
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored = sha256(&client_key);
        let without_proof = format!("c={},r={}", B64.encode(cbind), nonce.unwrap());
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac_sha256(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn scram_exchange_accepts_the_password_and_refuses_others() {
        let v = Verifier::new("pencil").unwrap();
        let bare = "n=,r=rOprNGfwEbeRWgbNEkqO";
        for (password, known, expect) in [
            ("pencil", true, None),
            ("pen", true, Some(LoginFailure::WrongPassword)),
            ("pencil", false, Some(LoginFailure::UnknownUser)),
        ] {
            let (ex, first) = ScramExchange::start(
                format!("n,,{bare}").as_bytes(),
                v.clone(),
                known,
                false,
                None,
            )
            .unwrap();
            let fin = client_final(password, bare, &first);
            let result = ex.finish(fin.as_bytes()).unwrap();
            assert_eq!(result.as_ref().err().copied(), expect, "{password} {known}");
            if expect.is_none() {
                assert!(result.unwrap().starts_with("v="));
            }
        }
        // A proof for another nonce is a protocol error.
        let (ex, _) =
            ScramExchange::start(format!("n,,{bare}").as_bytes(), v, true, false, None).unwrap();
        assert!(ex.finish(b"c=biws,r=other,p=AAAA").is_err());
    }

    #[test]
    fn channel_binding_ties_the_login_to_the_server_certificate() {
        let v = Verifier::new("pencil").unwrap();
        let bare = "n=,r=rOprNGfwEbeRWgbNEkqO";
        let end_point = [7u8; 32];
        let header = "p=tls-server-end-point,,";
        let start = |first: &str, plus, end_point: Option<&[u8]>| {
            ScramExchange::start(first.as_bytes(), v.clone(), true, plus, end_point)
        };
        // Bound to the certificate the server has: accepted.
        let (ex, first) = start(&format!("{header}{bare}"), true, Some(&end_point)).unwrap();
        let mut cbind = header.as_bytes().to_vec();
        cbind.extend_from_slice(&end_point);
        let fin = client_final_bound("pencil", bare, &first, &cbind);
        assert!(ex.finish(fin.as_bytes()).unwrap().is_ok());
        // Bound to another certificate (a man in the middle's): refused.
        let (ex, first) = start(&format!("{header}{bare}"), true, Some(&end_point)).unwrap();
        let mut other = header.as_bytes().to_vec();
        other.extend_from_slice(&[8u8; 32]);
        let fin = client_final_bound("pencil", bare, &first, &other);
        assert!(ex.finish(fin.as_bytes()).is_err());
        // "y": the client could bind but was not offered -PLUS; it was.
        assert!(start(&format!("y,,{bare}"), false, Some(&end_point)).is_err());
        assert!(start(&format!("y,,{bare}"), false, None).is_ok());
        // -PLUS without binding, another binding type, binding without -PLUS.
        assert!(start(&format!("n,,{bare}"), true, Some(&end_point)).is_err());
        assert!(start(&format!("p=tls-unique,,{bare}"), true, Some(&end_point)).is_err());
        assert!(start(&format!("{header}{bare}"), false, Some(&end_point)).is_err());
    }

    #[test]
    fn connection_limit_counts_every_open_slot_of_a_role() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(loch_catalog::store::SqliteStore::open(dir.path()).unwrap());
        let users = Users::new(store).unwrap();
        let role = |name: &str, limit| Role {
            name: name.into(),
            login: true,
            superuser: false,
            verifier: None,
            connection_limit: limit,
        };
        let lim = role("lim", Some(2));
        // Clones (the two protocols' copies) share the count.
        let other_door = users.clone();
        let a = users.open_connection(&lim).unwrap();
        let b = other_door.open_connection(&lim).unwrap();
        let refused = users.open_connection(&lim).unwrap_err();
        assert_eq!(refused.sqlstate(), "53300");
        assert!(
            refused.message().contains("CONNECTION LIMIT 2"),
            "{refused:?}"
        );
        // Another role is not affected; no limit is no limit.
        let free: Vec<_> = (0..10)
            .map(|_| users.open_connection(&role("free", None)).unwrap())
            .collect();
        drop(a);
        let c = users.open_connection(&lim).unwrap();
        drop((b, c, free));
        assert!(users.connections.open.lock().unwrap().is_empty());
    }
}
