//! The `loch` command line: `loch local`, `loch coordinator` and `loch
//! executor`, their flags (each also a `LOCH_*` environment variable), and
//! what each starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loch_executor::cluster::ClusterSecret;
use loch_executor::memory::{DEFAULT_SHARE, Size, available_memory, human};
use loch_executor::worker::{ExecutorOptions, run_executor};

use super::local::{ClusterOptions, LocalOptions, MemoryOptions, TlsOptions, TlsSource, start};
use super::secrets::{PasswordSource, cluster_secret};
use crate::access::authn::ADMIN_USER;
use crate::frontend::tls::TlsIdentity;

/// Loch: a distributed SQL warehouse over lake tables.
#[derive(Debug, Parser)]
#[command(name = "loch", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Commands,
}

impl Cli {
    /// Runs the command line's command until it ends (Ctrl-C for servers).
    pub async fn run(self) -> ExitCode {
        match self.command {
            Commands::Local(args) => run_local(args).await,
            Commands::Coordinator(args) => run_coordinator(args).await,
            Commands::Executor(args) => run_executor_process(args).await,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the whole warehouse on this machine, listening on loopback, with
    /// the TPC-H sample data set and executor child processes.
    Local(LocalArgs),
    /// Run the front door of a multi-machine warehouse; executors started
    /// with `loch executor` join it.
    Coordinator(CoordinatorArgs),
    /// Run an executor: runs query stages for a coordinator.
    Executor(ExecutorArgs),
}

#[derive(Debug, clap::Args)]
struct LocalArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Executor processes to start (0 = run every query in this process).
    #[arg(long, env = "LOCH_EXECUTORS", default_value_t = 2)]
    executors: usize,
    /// Where executors register (port 0 = any free loopback port).
    #[arg(long, env = "LOCH_CLUSTER_ADDR", default_value = "127.0.0.1:0")]
    cluster_addr: SocketAddr,
    /// The cluster secret (hex); a fresh one each start when not given.
    #[arg(long, env = "LOCH_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// MiB of decoded Parquet files each executor keeps (0 = none).
    #[arg(long, env = "LOCH_DATA_CACHE_MB", default_value_t = DATA_CACHE_MB)]
    data_cache_mb: u64,
}

#[derive(Debug, clap::Args)]
struct CoordinatorArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Where executors register (the cluster endpoint).
    #[arg(long, env = "LOCH_CLUSTER_ADDR", default_value = "127.0.0.1:5435")]
    cluster_addr: SocketAddr,
    /// The cluster secret (64 hex digits) executors must share; generated
    /// into <data-dir>/cluster-secret when not given.
    #[arg(long, env = "LOCH_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ExecutorArgs {
    /// The coordinator's cluster endpoint, e.g. http://10.0.0.1:5435.
    #[arg(long, env = "LOCH_COORDINATOR")]
    coordinator: url::Url,
    /// Address the executor listens on (port 0 = any free port).
    #[arg(long, env = "LOCH_EXECUTOR_ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Host name or IP the coordinator and other executors reach this one
    /// at (default: the listen IP).
    #[arg(long, env = "LOCH_EXECUTOR_ADVERTISE")]
    advertise: Option<String>,
    /// The cluster secret, as printed by / given to the coordinator.
    #[arg(long, env = "LOCH_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: String,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 500)]
    heartbeat_interval_ms: u64,
    /// Seconds without an answer from the coordinator after which the
    /// executor exits.
    #[arg(long, default_value_t = 10)]
    coordinator_timeout: u64,
    /// PEM certificate (chain) for serving Flight SQL clients their direct
    /// endpoints over TLS, on a port of their own; needed for direct
    /// endpoints when the coordinator's Flight SQL port uses TLS.
    #[arg(long, env = "LOCH_EXECUTOR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "LOCH_EXECUTOR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Port of the direct endpoints' TLS service, on the listen IP (0 = any
    /// free port).
    #[arg(long, env = "LOCH_EXECUTOR_TLS_PORT", default_value_t = 0)]
    tls_port: u16,
    /// MiB of decoded Parquet files this executor keeps, so that the next
    /// scans of the same files skip decoding (0 = none).
    #[arg(long, env = "LOCH_DATA_CACHE_MB", default_value_t = DATA_CACHE_MB)]
    data_cache_mb: u64,
    /// Memory this executor may use: 4GiB, 512MiB or 75% (of its cgroup
    /// limit, else of the machine); default 80 % of that.
    #[arg(long, env = "LOCH_MEMORY_LIMIT")]
    memory_limit: Option<Size>,
    /// Where it spills sorts and aggregations that do not fit (in a
    /// directory of its own, `<spill-dir>/<pid>`).
    #[arg(long, env = "LOCH_SPILL_DIR")]
    spill_dir: Option<PathBuf>,
    /// Most bytes of spill files at once.
    #[arg(long, env = "LOCH_SPILL_LIMIT", default_value = "100GiB")]
    spill_limit: Size,
}

/// Default size of each executor's data cache, in MiB.
const DATA_CACHE_MB: u64 = 1024;

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// Data directory: catalog and sample data live here.
    #[arg(long, env = "LOCH_DATA_DIR", default_value = "./loch-data")]
    data_dir: PathBuf,
    /// Address for the PostgreSQL wire protocol.
    #[arg(long, env = "LOCH_PG_ADDR", default_value = "127.0.0.1:5433")]
    pg_addr: SocketAddr,
    /// Scale factor of the TPC-H sample generated on first start (0 = none).
    #[arg(long, env = "LOCH_SAMPLE_SCALE", default_value_t = 0.1)]
    sample_scale: f64,
    /// Partitions per query stage (0 = one per core).
    #[arg(long, env = "LOCH_TARGET_PARTITIONS", default_value_t = 0)]
    target_partitions: usize,
    /// Address for Arrow Flight SQL, or `off`. Clients log in as `loch` with
    /// the admin password (LOCH_ADMIN_PASSWORD, else generated on first start
    /// into <data-dir>/admin-password).
    #[arg(long, env = "LOCH_FLIGHT_ADDR", default_value = "127.0.0.1:5434", value_parser = parse_flight_addr)]
    flight_addr: FlightAddr,
    /// Seconds a Flight SQL token lives without being used.
    #[arg(long, env = "LOCH_FLIGHT_TOKEN_TTL", default_value_t = 3600)]
    flight_token_ttl: u64,
    /// Milliseconds without a heartbeat after which an executor gets no new
    /// work.
    #[arg(long, env = "LOCH_HEARTBEAT_TIMEOUT_MS", default_value_t = 3000)]
    heartbeat_timeout_ms: u64,
    /// Server certificate chain (PEM) for TLS on pg wire and Flight SQL.
    #[arg(long, env = "LOCH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "LOCH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve TLS with a private CA made under <data-dir>/tls/ (clients
    /// trust <data-dir>/tls/ca.pem); for trying TLS out and for tests.
    #[arg(long, env = "LOCH_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// Refuse pg wire connections that do not switch to TLS.
    #[arg(long, env = "LOCH_TLS_REQUIRED")]
    tls_required: bool,
    /// MiB of query results the coordinator keeps to answer repeated
    /// queries (0 = no result cache); one result may take half of it.
    #[arg(long, env = "LOCH_RESULT_CACHE_MB", default_value_t = 2048)]
    result_cache_mb: u64,
    /// Memory Loch may use: 4GiB, 512MiB or 75% (of the cgroup memory
    /// limit, else of the machine's memory); default 80 % of that. `loch
    /// local` divides it between the coordinator and its executors.
    #[arg(long, env = "LOCH_MEMORY_LIMIT")]
    memory_limit: Option<Size>,
    /// Where queries spill what does not fit in memory (default
    /// <data-dir>/spill).
    #[arg(long, env = "LOCH_SPILL_DIR")]
    spill_dir: Option<PathBuf>,
    /// Most bytes of spill files each process holds at once.
    #[arg(long, env = "LOCH_SPILL_LIMIT", default_value = "100GiB")]
    spill_limit: Size,
    /// Queries that run at once (default: from cores and memory); more
    /// wait in line.
    #[arg(long, env = "LOCH_MAX_CONCURRENT_QUERIES")]
    max_concurrent_queries: Option<usize>,
    /// Queries that may wait in line; past that they are refused (53000).
    #[arg(long, env = "LOCH_MAX_QUEUED_QUERIES", default_value_t = 100)]
    max_queued_queries: usize,
    /// Queries whose shape last ran in at most this many milliseconds take
    /// a fast lane of their own, past the queue (0: no fast lane).
    #[arg(long, env = "LOCH_FAST_QUERY_MS", default_value_t = 100)]
    fast_query_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct FlightAddr(Option<SocketAddr>);

fn parse_flight_addr(value: &str) -> Result<FlightAddr, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(FlightAddr(None));
    }
    value
        .parse()
        .map(|a| FlightAddr(Some(a)))
        .map_err(|e| format!("{e}: expected IP:PORT or `off`"))
}

/// The value, or `None` after telling the user what is wrong with the
/// cluster secret.
fn reported<T, E: std::fmt::Display>(result: Result<T, E>) -> Option<T> {
    result
        .map_err(|e| eprintln!("loch: cluster secret: {e}"))
        .ok()
}

impl ServerArgs {
    fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms.max(100))
    }

    /// The TLS settings, or what is wrong with the flags.
    fn tls(&self) -> Result<Option<TlsOptions>, String> {
        let source = match (&self.tls_cert, &self.tls_key, self.tls_self_signed) {
            (Some(cert), Some(key), false) => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (None, None, true) => TlsSource::SelfSigned,
            (None, None, false) if self.tls_required => {
                return Err(
                    "--tls-required needs --tls-cert/--tls-key or --tls-self-signed".into(),
                );
            }
            (None, None, false) => return Ok(None),
            _ => return Err("give --tls-cert with --tls-key, or --tls-self-signed alone".into()),
        };
        Ok(Some(TlsOptions {
            source,
            required: self.tls_required,
        }))
    }
}

async fn run_local(args: LocalArgs) -> ExitCode {
    let cluster = if args.executors == 0 {
        None
    } else {
        let secret = match args.cluster_secret.as_deref() {
            Some(hex) => ClusterSecret::from_hex(hex),
            None => ClusterSecret::generate(),
        };
        let Some(secret) = reported(secret) else {
            return ExitCode::FAILURE;
        };
        Some(ClusterOptions {
            addr: args.cluster_addr,
            secret,
            heartbeat_timeout: args.server.heartbeat_timeout(),
            spawn_executors: args.executors,
            executor_data_cache_mb: args.data_cache_mb,
        })
    };
    serve(args.server, cluster).await
}

async fn run_coordinator(args: CoordinatorArgs) -> ExitCode {
    let Some((hex, source)) = reported(cluster_secret(&args.server.data_dir, args.cluster_secret))
    else {
        return ExitCode::FAILURE;
    };
    let Some(secret) = reported(ClusterSecret::from_hex(&hex)) else {
        return ExitCode::FAILURE;
    };
    if let PasswordSource::File(path) = &source {
        println!(
            "Cluster secret in {} (give it to executors as LOCH_CLUSTER_SECRET)",
            path.display()
        );
    }
    let cluster = ClusterOptions {
        addr: args.cluster_addr,
        secret,
        heartbeat_timeout: args.server.heartbeat_timeout(),
        spawn_executors: 0,
        executor_data_cache_mb: 0,
    };
    serve(args.server, Some(cluster)).await
}

async fn run_executor_process(args: ExecutorArgs) -> ExitCode {
    let Some(secret) = reported(ClusterSecret::from_hex(&args.cluster_secret)) else {
        return ExitCode::FAILURE;
    };
    let direct_tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match TlsIdentity::load(cert, key) {
            Ok(identity) => Some(identity.grpc_identity()),
            Err(e) => {
                eprintln!("loch executor: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let available = available_memory();
    let memory_limit = match args.memory_limit {
        Some(size) => size.of(available.bytes),
        None => (available.bytes as f64 * DEFAULT_SHARE) as u64,
    };
    let spill_dir = args
        .spill_dir
        .unwrap_or_else(|| std::env::temp_dir().join("loch-spill"));
    let Size::Bytes(spill_limit) = args.spill_limit else {
        eprintln!("loch executor: --spill-limit takes a size such as 100GiB, not a percentage");
        return ExitCode::FAILURE;
    };
    let options = ExecutorOptions {
        memory_limit,
        spill_dir,
        spill_limit,
        direct_tls,
        direct_tls_port: args.tls_port,
        listen: args.listen,
        advertise_host: args.advertise,
        coordinator: args.coordinator,
        secret,
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms.max(10)),
        coordinator_timeout: Duration::from_secs(args.coordinator_timeout.max(1)),
        status_of: crate::frontend::flight::datafusion_status,
        data_cache_bytes: args.data_cache_mb.saturating_mul(1024 * 1024),
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match run_executor(options, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loch executor: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServerArgs, cluster: Option<ClusterOptions>) -> ExitCode {
    if !(args.sample_scale >= 0.0 && args.sample_scale.is_finite()) {
        eprintln!("loch: --sample-scale must be a number >= 0");
        return ExitCode::FAILURE;
    }
    let tls = match args.tls() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("loch: {e}");
            return ExitCode::FAILURE;
        }
    };
    let available = available_memory();
    let (total, source) = match args.memory_limit {
        Some(size) => (size.of(available.bytes), "--memory-limit".to_string()),
        None => (
            (available.bytes as f64 * DEFAULT_SHARE) as u64,
            format!(
                "{:.0} % of {} of {}",
                DEFAULT_SHARE * 100.0,
                human(available.bytes),
                available.source
            ),
        ),
    };
    let memory = MemoryOptions {
        total,
        source,
        spill_dir: args
            .spill_dir
            .clone()
            .unwrap_or_else(|| args.data_dir.join("spill")),
        spill_limit: match args.spill_limit {
            Size::Bytes(bytes) => bytes,
            Size::Percent(_) => {
                eprintln!("loch: --spill-limit takes a size such as 100GiB, not a percentage");
                return ExitCode::FAILURE;
            }
        },
        max_concurrent_queries: args.max_concurrent_queries,
        max_queued_queries: args.max_queued_queries,
        fast_query: Duration::from_millis(args.fast_query_ms),
    };
    let options = LocalOptions {
        memory,
        data_dir: args.data_dir,
        pg_addr: args.pg_addr,
        sample_scale: args.sample_scale,
        target_partitions: args.target_partitions,
        flight_addr: args.flight_addr.0,
        flight_token_ttl: Duration::from_secs(args.flight_token_ttl.max(1)),
        admin_password: std::env::var("LOCH_ADMIN_PASSWORD").ok(),
        tls,
        cluster,
        result_cache_bytes: args.result_cache_mb.saturating_mul(1 << 20),
    };
    for (flag, addr) in [
        ("--pg-addr", Some(options.pg_addr)),
        ("--flight-addr", options.flight_addr),
    ] {
        if let Some(addr) = addr
            && !addr.ip().is_loopback()
            && options.tls.is_none()
        {
            eprintln!(
                "loch: {flag} {addr} is not a loopback address: off loopback Loch serves \
                 only with TLS (--tls-cert/--tls-key; add --tls-required to refuse clear text)"
            );
            return ExitCode::FAILURE;
        }
    }
    let running = match start(&options).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("loch: {e}");
            return ExitCode::FAILURE;
        }
    };
    let password = match (&running.generated_password, &running.password_source) {
        (Some(generated), PasswordSource::File(path)) => {
            format!("password {generated}, kept in {}", path.display())
        }
        (_, PasswordSource::Environment) => "password from LOCH_ADMIN_PASSWORD".to_string(),
        (_, PasswordSource::File(path)) => format!(
            "password as last set; the first one is in {}",
            path.display()
        ),
    };
    let scheme = if running.tls { "grpc+tls" } else { "grpc" };
    if let Some(flight) = running.flight_addr {
        println!("Flight SQL on {scheme}://{flight}   (user {ADMIN_USER})");
    }
    if let (Some(cluster), Some(registry)) = (running.cluster_addr, &running.registry) {
        println!(
            "Executors: {} live; cluster endpoint http://{cluster}",
            registry.live_urls().len()
        );
    }
    let addr = running.pg_addr;
    let connect = match &running.tls_ca {
        Some(ca) => format!(
            "psql \"host={} port={} user={ADMIN_USER} sslmode=verify-full sslrootcert={}\"",
            addr.ip(),
            addr.port(),
            ca.display()
        ),
        None if running.tls => format!(
            "psql \"host={} port={} user={ADMIN_USER} sslmode=require\"",
            addr.ip(),
            addr.port()
        ),
        None => format!("psql -h {} -p {} -U {ADMIN_USER}", addr.ip(), addr.port()),
    };
    println!("{}", running.memory_summary);
    println!("Loch is ready: {connect}   ({password})");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("loch: cannot wait for Ctrl-C: {e}");
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    ExitCode::SUCCESS
}
