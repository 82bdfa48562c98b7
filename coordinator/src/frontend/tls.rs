//! TLS on both client protocols, with rustls (ring as the one crypto
//! provider).
//!
//! A server certificate and key (PEM) serve pg wire — through `pgwire`'s own
//! `SSLRequest` and direct-TLS negotiation — and Flight SQL, through
//! tonic's TLS. `loch local --tls-self-signed` makes a private CA and a
//! loopback server certificate under `<data-dir>/tls/` so clients can verify
//! the server (`sslmode=verify-full sslrootcert=…/ca.pem`, ADBC
//! `tls_root_certs`) without any setup. See docs/security.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN name PostgreSQL 17 clients send with direct TLS
/// (`sslnegotiation=direct`); pgwire refuses direct TLS without it.
const POSTGRESQL_ALPN: &[u8] = b"postgresql";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("the certificate and key do not make a server identity: {0}")]
    Config(#[from] rustls::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Makes ring the process's rustls provider. rustls is built with both ring
/// and aws-lc-rs here (object_store's HTTP client brings the second), and
/// tonic's TLS asks for the process default, which rustls cannot pick by
/// itself when both are present. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server identity both protocols present.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    pg: Arc<ServerConfig>,
    end_point: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl TlsIdentity {
    /// Loads a certificate chain (server certificate first) and its private
    /// key, both PEM, and checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        install_crypto_provider();
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let pem_error = |path: &Path, message: String| TlsError::Pem {
            path: path.to_path_buf(),
            message,
        };
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_error(cert, "no CERTIFICATE block".into()));
        }
        let end_point = server_end_point(&chain[0]);
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_error(key, format!("no usable private key: {e}")))?;
        let mut pg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, private_key)?;
        pg.alpn_protocols = vec![POSTGRESQL_ALPN.to_vec()];
        Ok(TlsIdentity {
            cert_pem,
            key_pem,
            pg: Arc::new(pg),
            end_point,
        })
    }

    /// The `tls-server-end-point` channel binding data (RFC 5929): the hash
    /// of the server certificate that SCRAM-SHA-256-PLUS binds a login to.
    /// `None` when the certificate's signature algorithm leaves it undefined
    /// (Ed25519); then only plain SCRAM-SHA-256 is offered.
    pub fn server_end_point(&self) -> Option<Arc<[u8]>> {
        self.end_point.clone()
    }

    /// The acceptor pg wire hands to `pgwire::tokio::process_socket`.
    pub fn pg_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.pg))
    }

    /// The same identity for Flight SQL's gRPC server.
    pub fn flight_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(self.grpc_identity())
    }

    /// The identity as tonic takes it (for an executor's direct tickets).
    pub fn grpc_identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// RFC 5929 §4.1: the certificate hashed with its signature's hash, SHA-256
/// for MD5 and SHA-1 — what libpq and pgjdbc compute on their side.
fn server_end_point(cert: &CertificateDer<'_>) -> Option<Arc<[u8]>> {
    use x509_certificate::SignatureAlgorithm as Alg;
    let parsed = x509_certificate::X509Certificate::from_der(cert.as_ref()).ok()?;
    let hash = match parsed.signature_algorithm()? {
        Alg::RsaSha1 | Alg::RsaSha256 | Alg::EcdsaSha256 => &ring::digest::SHA256,
        Alg::RsaSha384 | Alg::EcdsaSha384 => &ring::digest::SHA384,
        Alg::RsaSha512 => &ring::digest::SHA512,
        _ => return None,
    };
    Some(Arc::from(
        ring::digest::digest(hash, cert.as_ref()).as_ref(),
    ))
}

/// The files `--tls-self-signed` uses.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The private CA's certificate: what clients trust.
    pub ca: PathBuf,
    /// The server certificate (signed by the CA).
    pub cert: PathBuf,
    /// The server's private key (mode 0600).
    pub key: PathBuf,
}

/// The self-signed set under `<data_dir>/tls/`, made on first use and kept
/// after that (so clients keep trusting the same CA across restarts). The
/// CA's own key is not kept: nothing else can be signed with it.
pub fn self_signed(data_dir: &Path) -> Result<SelfSigned, TlsError> {
    let dir = data_dir.join("tls");
    let files = SelfSigned {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    if files.ca.exists() && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(write_error(&dir))?;

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    // A name of its own: verifiers pick a CA by subject name, so two Loch
    // installations must not share one.
    let mut tag = [0u8; 6];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tag)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("Loch local CA {}", hex::encode(tag)),
    );
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut server_params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    server_params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = rcgen::KeyPair::generate()?;
    let server = server_params.signed_by(&server_key, &ca)?;

    write_private(&files.key, server_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, server.pem()).map_err(write_error(&files.cert))?;
    // Last: its presence says the set is complete.
    std::fs::write(&files.ca, ca.pem()).map_err(write_error(&files.ca))?;
    Ok(files)
}

/// Writes a file only its owner can read, from the first byte on.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let error = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_set_loads_and_is_kept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let files = self_signed(dir.path())?;
        TlsIdentity::load(&files.cert, &files.key)?;
        let ca = std::fs::read(&files.ca)?;
        let again = self_signed(dir.path())?;
        assert_eq!(std::fs::read(&again.ca)?, ca, "a restart keeps the CA");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key)?.permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
        Ok(())
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let one = tempfile::tempdir()?;
        let two = tempfile::tempdir()?;
        let a = self_signed(one.path())?;
        let b = self_signed(two.path())?;
        assert!(TlsIdentity::load(&a.cert, &b.key).is_err());
        assert!(
            TlsIdentity::load(&a.ca, &a.cert).is_err(),
            "no key in a cert file"
        );
        Ok(())
    }
}
