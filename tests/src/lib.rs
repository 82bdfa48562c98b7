//! The integration-test harness: starts the real `loch` binary on a free
//! loopback port, waits until it says it is ready (no sleeps), and prints
//! the tail of its log when a test fails. Also the oracle: plain in-process
//! DataFusion over the same Parquet files, and a canonical form of result
//! cells so answers from any client compare exactly.
//!
//! Test code: panicking on a broken environment is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod oracle;
pub mod stores;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to become ready (first start generates data).
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Scale of the TPC-H sample the tests use.
pub const TEST_SCALE: f64 = 0.1;

/// A running `loch local`, killed when dropped.
pub struct LochServer {
    child: Child,
    /// The pg wire port.
    pub port: u16,
    /// The Flight SQL port.
    pub flight_port: u16,
    /// The TPC-H sample scale it was started with.
    pub scale: f64,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The admin password given through `LOCH_ADMIN_PASSWORD`, if any.
    env_password: Option<String>,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

/// The `loch` binary under test: `$LOCH_BIN`, or the one cargo built next
/// to this test executable.
pub fn loch_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("LOCH_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/loch
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("loch");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p loch-coordinator with the same profile) or set LOCH_BIN",
        bin.display()
    );
    bin
}

/// A data directory shared by the tests of one target dir, so the sample is
/// generated once. Read-only tests use it; tests that write use their own.
pub fn shared_data_dir(target_tmp: &str) -> PathBuf {
    PathBuf::from(target_tmp).join(format!("loch-data-sf{TEST_SCALE}"))
}

static SAMPLE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

impl LochServer {
    /// Starts `loch local` on the data directory shared by this target dir,
    /// generating the sample once (other tests wait for it, not race it).
    pub fn start_shared(target_tmp: &str) -> LochServer {
        let dir = shared_data_dir(target_tmp);
        {
            let mut ready = SAMPLE.lock().unwrap_or_else(|e| e.into_inner());
            if !*ready {
                drop(LochServer::start(&dir));
                *ready = true;
            }
        }
        LochServer::start(&dir)
    }

    /// Starts `loch local` on `data_dir` with the test sample scale.
    pub fn start(data_dir: &Path) -> LochServer {
        Self::start_with(data_dir, TEST_SCALE)
    }

    /// Starts `loch local` with another sample scale.
    pub fn start_with(data_dir: &Path, scale: f64) -> LochServer {
        Self::start_opts(data_dir, scale, &[], &[])
    }

    /// Starts `loch local` with extra arguments and environment variables.
    pub fn start_opts(
        data_dir: &Path,
        scale: f64,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> LochServer {
        Self::start_wrapped(data_dir, scale, &[], args, envs)
    }

    /// Starts `loch local` through `wrapper` (a command that ends by running
    /// its arguments, e.g. `sh -c '… exec "$0" "$@"'`), with extra
    /// arguments and environment variables.
    pub fn start_wrapped(
        data_dir: &Path,
        scale: f64,
        wrapper: &[&str],
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> LochServer {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log_path = log_dir.path().join("loch.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let sample_scale = scale;
        let scale = scale.to_string();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(loch_bin());
                command
            }
            None => Command::new(loch_bin()),
        };
        let mut child = command
            .arg("local")
            .args(["--data-dir", data_dir.to_str().expect("utf8 path")])
            .args(["--pg-addr", "127.0.0.1:0"])
            .args(["--flight-addr", "127.0.0.1:0"])
            .args(["--sample-scale", &scale])
            .args(args)
            .env_remove("LOCH_LOG")
            .env_remove("LOCH_ADMIN_PASSWORD")
            // Tests run queries to test how they run: the result cache is
            // off unless a test turns it on (tests/tests/results.rs).
            .env("LOCH_RESULT_CACHE_MB", "0")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn loch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut flight = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.starts_with("Flight SQL on") {
                    flight = line.clone();
                }
                if line.contains("Loch is ready") {
                    let _ = tx.send((line.clone(), flight.clone()));
                }
                line.clear();
            }
        });
        let (line, flight) = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(lines) => lines,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "loch did not become ready within {READY_TIMEOUT:?}\n{}",
                    tail(&log_path)
                );
            }
        };
        let port = parse_port(&line).unwrap_or_else(|| panic!("no port in {line:?}"));
        let flight_port = parse_flight_port(&flight).unwrap_or(0);
        LochServer {
            child,
            port,
            flight_port,
            scale: sample_scale,
            data_dir: data_dir.to_path_buf(),
            env_password: envs
                .iter()
                .find(|(k, _)| *k == "LOCH_ADMIN_PASSWORD")
                .map(|(_, v)| v.to_string()),
            log_path,
            _log_dir: log_dir,
        }
    }

    /// The Flight SQL URI, `grpc://127.0.0.1:PORT`.
    pub fn flight_uri(&self) -> String {
        assert_ne!(self.flight_port, 0, "Flight SQL is off");
        format!("grpc://127.0.0.1:{}", self.flight_port)
    }

    /// The admin password: the one given through `LOCH_ADMIN_PASSWORD`,
    /// else the one `loch local` generated into the data directory.
    pub fn password(&self) -> String {
        if let Some(password) = &self.env_password {
            return password.clone();
        }
        let path = self.data_dir.join("admin-password");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// A libpq-style connection string for the admin user `loch`.
    pub fn conn_str(&self) -> String {
        self.conn_str_as("loch", &self.password())
    }

    /// A libpq-style connection string for `user` with `password`.
    pub fn conn_str_as(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=loch password='{}'",
            self.port,
            password.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    /// Connects with tokio-postgres and drives the connection in the background.
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.connect_with("").await
    }

    /// Connects as `user` (its password), driving the connection in the
    /// background; the error when the login fails.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.conn_str_as(user, password), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Connects with extra connection-string settings (e.g. `options=…`).
    pub async fn connect_with(&self, extra: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!("{} {extra}", self.conn_str()),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.log_tail()));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path)
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// True while the process runs.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The sample's Parquet directory (for the oracle).
    pub fn sample_dir(&self) -> PathBuf {
        self.data_dir
            .join("sample")
            .join(format!("tpch-sf{}", self.scale))
    }
}

impl Drop for LochServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- loch log tail ({}) ---\n{}",
                self.log_path.display(),
                self.log_tail()
            );
        }
    }
}

/// The port of the connect line: `psql -h H -p P …`, or with TLS
/// `psql "host=H port=P …"`.
fn parse_port(line: &str) -> Option<u16> {
    let start = match line.find("-p ") {
        Some(at) => at + 3,
        None => line.find("port=")? + 5,
    };
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The port of `Flight SQL on grpc://H:P` (or `grpc+tls://`).
fn parse_flight_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("://")? + 3..];
    let addr = rest.split_whitespace().next()?;
    addr.rsplit(':').next()?.parse().ok()
}

fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The Python of the venv dev/test made (`$LOCH_PYTHON`), else `python3`.
pub fn python() -> PathBuf {
    std::env::var_os("LOCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Runs tests/python/delta_interop.py (the deltalake package, an
/// independent Delta writer and reader) with `mode` on the table at
/// `path`; returns the one JSON object it prints.
pub fn deltalake(server: &LochServer, mode: &str, path: &str) -> serde_json::Value {
    let out = run_python_script(server, "delta_interop.py", &[mode, path], "deltalake");
    assert_eq!(out.len(), 1, "{out:?}");
    out.into_iter().next().unwrap_or_default()
}

/// Runs tests/python/`script` with `args`; returns the JSON objects it
/// prints, one per line. A failure shows the script's stderr, `needs` (the
/// packages it imports) and the server's log tail.
pub fn run_python_script<S: AsRef<std::ffi::OsStr>>(
    server: &LochServer,
    script: &str,
    args: &[S],
    needs: &str,
) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        // libpq-based clients (psycopg) read the admin password from here.
        .env("PGPASSWORD", server.password())
        .output()
        .unwrap_or_else(|e| panic!("running python: {e}"));
    assert!(
        out.status.success(),
        "{} failed (is {needs} installed in $LOCH_PYTHON?):\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The `rows` of a script's JSON line as canonical cells.
pub fn json_rows(v: &serde_json::Value) -> Vec<Vec<oracle::Cell>> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(oracle::Cell::from_json)
                .collect()
        })
        .collect()
}

/// The text of TPC-H query `n` (1..=22) from benchmarks/queries/tpch.
pub fn tpch_query(n: usize) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../benchmarks/queries/tpch")
        .join(format!("q{n}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Polls `system.executors` (never a fixed sleep) until `count_sql`, a
/// count over it, returns `want`.
pub async fn wait_count(
    server: &LochServer,
    client: &tokio_postgres::Client,
    count_sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    want: i64,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = client.query_one(count_sql, params).await.unwrap().get(0);
        if n == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count_sql}: {n}, waited for {want}\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until `want` executors are alive.
pub async fn wait_alive(server: &LochServer, client: &tokio_postgres::Client, want: i64) {
    let sql = "SELECT count(*) FROM system.executors WHERE state = 'alive'";
    wait_count(server, client, sql, &[], want).await;
}

/// Bytes per partition that makes datafusion-distributed give every scan of
/// the SF 0.1 sample as many tasks as there are executors, so statements
/// really run distributed.
pub const FORCE_DISTRIBUTION: &str = "SET distributed.file_scan_config_bytes_per_partition = 65536";
