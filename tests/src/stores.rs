//! The local object store servers the object-store tests run against:
//! moto's S3 server and the GCS emulator (PyPI, in the test venv) and
//! Azurite (npm; `$LOCH_AZURITE` or `azurite-blob` on the PATH), each on a
//! free loopback port, killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::python;

/// Azurite's well-known development account and key (public, in its docs).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running protocol server.
pub struct StoreServer {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl StoreServer {
    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// moto's S3 server.
    pub fn moto() -> StoreServer {
        let bin = python().with_file_name("moto_server");
        start("moto", |port, _| {
            let mut c = Command::new(&bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        })
    }

    /// Azurite's Blob service.
    pub fn azurite() -> StoreServer {
        let bin = std::env::var("LOCH_AZURITE").unwrap_or_else(|_| "azurite-blob".into());
        start("azurite", |port, dir| {
            let mut c = Command::new(&bin);
            c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"])
                .arg("--location")
                .arg(dir);
            c
        })
    }

    /// The GCS emulator, with bucket `bucket`.
    pub fn gcs(bucket: &str) -> StoreServer {
        let bin = python().with_file_name("gcp-storage-emulator");
        let bucket = format!("--default-bucket={bucket}");
        start("gcs", |port, _| {
            let mut c = Command::new(&bin);
            c.args(["start", "--host", "127.0.0.1", "--in-memory", &bucket])
                .args(["--port", &port.to_string()]);
            c
        })
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts `what` on a free port and waits until it accepts connections.
fn start(what: &str, command: impl Fn(u16, &std::path::Path) -> Command) -> StoreServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join(format!("{what}.log"));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let port = free_port();
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = command(port, &data)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what} (is it installed? dev/test installs it): {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{what} did not start in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    StoreServer {
        child,
        port,
        log,
        _dir: dir,
    }
}
