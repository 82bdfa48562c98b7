//! The cluster secret: what proves a request to an executor (or to the
//! coordinator's executor registry) comes from a member of the cluster.
//!
//! A plan can read any file an executor can, so an executor must run plans
//! only for its coordinator. Every internal gRPC call carries the header
//! [`AUTH_HEADER`] = `v1.<unix-ms>.<nonce>.<HMAC-SHA256(secret, "v1.<unix-ms>.<nonce>")>`:
//!
//! - the secret itself never crosses the network, so reading traffic does not
//!   give it away;
//! - a fresh random nonce per request, remembered by the receiver for the
//!   whole validity window, and a timestamp checked against that window
//!   ([`MAX_SKEW`]) make a captured request useless: replaying it is
//!   rejected, as is any header older than the window;
//! - checked by a tonic interceptor before the request reaches the
//!   datafusion-distributed worker service, so nothing is decoded or run.
//!
//! Clocks of the machines must agree within [`MAX_SKEW`] (NTP).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion_distributed::grpc::{
    BoxCloneSyncChannel, DefaultChannelResolver, create_worker_client,
};
use datafusion_distributed::{ChannelResolver, WorkerChannel};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use url::Url;

/// The header carrying the cluster credential.
pub const AUTH_HEADER: &str = "x-loch-cluster-auth";
/// How far a credential's timestamp may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(120);
/// Bytes of a generated secret.
const SECRET_BYTES: usize = 32;

/// The shared secret of one cluster.
#[derive(Clone)]
pub struct ClusterSecret {
    key: hmac::Key,
    /// Hex form, to hand to child processes.
    hex: Arc<str>,
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// A secret that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the cluster secret must be at least 32 hex digits (16 bytes)")]
    TooShort,
    #[error("the cluster secret must be hex digits: {0}")]
    NotHex(#[from] hex::FromHexError),
    #[error("no random numbers from the system")]
    NoRandom,
}

impl ClusterSecret {
    /// A new random secret (`loch local`).
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = [0u8; SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecretError::NoRandom)?;
        Self::from_hex(&hex::encode(bytes))
    }

    /// The secret given as hex (`--cluster-secret`, `LOCH_CLUSTER_SECRET`).
    pub fn from_hex(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let bytes = hex::decode(text)?;
        if bytes.len() < 16 {
            return Err(SecretError::TooShort);
        }
        Ok(ClusterSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            hex: text.to_ascii_lowercase().into(),
        })
    }

    /// The hex form, for passing to processes this one starts.
    pub fn to_hex(&self) -> &str {
        &self.hex
    }

    /// A fresh credential for one request.
    pub fn sign(&self) -> String {
        self.sign_at(unix_ms())
    }

    /// A credential dated `unix_ms` (tests use it to show stale ones fail).
    pub fn sign_at(&self, unix_ms: u64) -> String {
        let mut nonce = [0u8; 16];
        // If the system RNG fails the all-zero nonce is rejected as a replay
        // after its first use: requests fail, nothing is weakened.
        let _ = SystemRandom::new().fill(&mut nonce);
        let payload = format!("v1.{unix_ms}.{}", hex::encode(nonce));
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", hex::encode(tag.as_ref()))
    }

    /// `payload` followed by its HMAC-SHA256 tag: what the coordinator
    /// hands out for an executor to check later (direct-endpoint tickets).
    /// Payloads must start with a tag of their own kind, so one kind of
    /// sealed data is never taken for another.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let tag = hmac::sign(&self.key, payload);
        let mut sealed = Vec::with_capacity(payload.len() + tag.as_ref().len());
        sealed.extend_from_slice(payload);
        sealed.extend_from_slice(tag.as_ref());
        sealed
    }

    /// The payload of data [`Self::seal`] made with this secret; `None`
    /// when it was made with another or changed since.
    pub fn open<'a>(&self, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let at = sealed
            .len()
            .checked_sub(hmac::HMAC_SHA256.digest_algorithm().output_len())?;
        let (payload, tag) = sealed.split_at(at);
        hmac::verify(&self.key, payload, tag).ok()?;
        Some(payload)
    }

    /// A verifier that remembers the nonces it has accepted.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            secret: self.clone(),
            seen: Arc::new(
                moka::sync::Cache::builder()
                    .max_capacity(1_000_000)
                    .time_to_live(MAX_SKEW * 2)
                    .build(),
            ),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks credentials; cheap to clone (shares the nonce memory).
#[derive(Clone)]
pub struct Verifier {
    secret: ClusterSecret,
    seen: Arc<moka::sync::Cache<[u8; 16], ()>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// Accepts a credential once; the reason for a refusal is logged, the
    /// caller only learns UNAUTHENTICATED.
    pub fn verify(&self, value: &str) -> Result<(), &'static str> {
        let mut parts = value.split('.');
        let (Some("v1"), Some(ts), Some(nonce), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err("malformed credential");
        };
        let payload_len = value.len() - tag.len() - 1;
        let tag = hex::decode(tag).map_err(|_| "malformed credential")?;
        hmac::verify(&self.secret.key, &value.as_bytes()[..payload_len], &tag)
            .map_err(|_| "wrong cluster secret")?;
        let ts: u64 = ts.parse().map_err(|_| "malformed credential")?;
        if unix_ms().abs_diff(ts) > MAX_SKEW.as_millis() as u64 {
            return Err("credential outside the validity window (stale, or clocks disagree)");
        }
        let nonce: [u8; 16] = hex::decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or("malformed credential")?;
        let fresh = self.seen.entry(nonce).or_insert(()).is_fresh();
        if !fresh {
            return Err("credential replayed");
        }
        Ok(())
    }

    /// Checks the credential in a request's metadata.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let value = metadata
            .get(AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("no cluster credential");
        match value.and_then(|v| self.verify(v)) {
            Ok(()) => Ok(()),
            Err(reason) => {
                tracing::warn!(reason, "refused an internal request");
                Err(Status::unauthenticated(
                    "this endpoint is internal to a Loch cluster: valid cluster credential required",
                ))
            }
        }
    }

    /// A tonic interceptor that refuses requests without a valid credential.
    pub fn interceptor(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        let verifier = self.clone();
        move |request: Request<()>| {
            verifier.check(request.metadata())?;
            Ok(request)
        }
    }
}

/// Opens (and reuses) connections to executors, signing every request with
/// the cluster secret. Used by the coordinator and by executors alike.
#[derive(Clone)]
pub struct SignedChannelResolver {
    inner: DefaultChannelResolver,
    secret: ClusterSecret,
}

impl SignedChannelResolver {
    pub fn new(secret: ClusterSecret) -> Self {
        SignedChannelResolver {
            inner: DefaultChannelResolver::default(),
            secret,
        }
    }
}

#[async_trait]
impl ChannelResolver for SignedChannelResolver {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        let channel = self.inner.get_channel(url).await.map_err(|source| {
            DataFusionError::External(Box::new(ExecutorUnreachable {
                url: url.to_string(),
                source,
            }))
        })?;
        Ok(create_worker_client(BoxCloneSyncChannel::new(Signed {
            inner: channel,
            secret: self.secret.clone(),
        })))
    }
}

/// An executor that could not be reached: its connection failed or never
/// became ready. The coordinator finds it in a failed query's error by its
/// type (it counts as a lost executor: SQLSTATE 58000, and a reason to
/// plan the query again on the executors left).
#[derive(Debug, thiserror::Error)]
#[error("executor {url} cannot be reached: {source}")]
pub struct ExecutorUnreachable {
    pub url: String,
    #[source]
    pub source: DataFusionError,
}

/// A channel that adds a fresh credential to each request.
#[derive(Clone)]
pub struct Signed<S> {
    inner: S,
    secret: ClusterSecret,
}

impl<S> Signed<S> {
    pub fn new(inner: S, secret: ClusterSecret) -> Self {
        Signed { inner, secret }
    }
}

impl<S> tower::Service<http::Request<Body>> for Signed<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Ok(value) = http::HeaderValue::from_str(&self.secret.sign()) {
            request.headers_mut().insert(AUTH_HEADER, value);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_verify_once() {
        let secret = ClusterSecret::generate().unwrap();
        let verifier = secret.verifier();
        let credential = secret.sign();
        assert_eq!(verifier.verify(&credential), Ok(()));
        assert_eq!(verifier.verify(&credential), Err("credential replayed"));
        assert!(verifier.verify(&secret.sign()).is_ok());
    }

    #[test]
    fn wrong_secret_and_garbage_are_refused() {
        let ours = ClusterSecret::generate().unwrap();
        let theirs = ClusterSecret::generate().unwrap();
        let verifier = ours.verifier();
        assert_eq!(verifier.verify(&theirs.sign()), Err("wrong cluster secret"));
        for garbage in ["", "v1", "v1.1.2.3.4", "v2.1.2.zz", "v1...", "v1.x.y.00"] {
            assert!(verifier.verify(garbage).is_err(), "{garbage}");
        }
        // A tampered timestamp breaks the HMAC.
        let credential = ours.sign();
        let tampered = credential.replacen("v1.1", "v1.2", 1);
        assert!(verifier.verify(&tampered).is_err());
    }

    #[test]
    fn stale_credentials_are_refused() {
        let secret = ClusterSecret::generate().unwrap();
        let old = secret.sign_at(unix_ms() - 10 * 60 * 1000);
        assert!(
            secret
                .verifier()
                .verify(&old)
                .unwrap_err()
                .contains("window")
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(ClusterSecret::from_hex("abcd").is_err());
        assert!(ClusterSecret::from_hex("zz").is_err());
        assert!(ClusterSecret::from_hex(&"ab".repeat(16)).is_ok());
    }
}
