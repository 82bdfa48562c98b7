//! The `loch` binary: argument parsing and wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loch_coordinator::auth::{ADMIN_USER, PasswordSource};
use loch_coordinator::local::{LocalOptions, start};

/// Loch: a distributed SQL warehouse over lake tables.
#[derive(Debug, Parser)]
#[command(name = "loch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the whole warehouse on this machine, listening on loopback, with
    /// the TPC-H sample data set.
    Local(LocalArgs),
}

#[derive(Debug, clap::Args)]
struct LocalArgs {
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loch: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Commands::Local(args) => runtime.block_on(run_local(args)),
    }
}

async fn run_local(args: LocalArgs) -> ExitCode {
    if !(args.sample_scale >= 0.0 && args.sample_scale.is_finite()) {
        eprintln!("loch: --sample-scale must be a number >= 0");
        return ExitCode::FAILURE;
    }
    let options = LocalOptions {
        data_dir: args.data_dir,
        pg_addr: args.pg_addr,
        sample_scale: args.sample_scale,
        target_partitions: args.target_partitions,
        flight_addr: args.flight_addr.0,
        flight_token_ttl: Duration::from_secs(args.flight_token_ttl.max(1)),
        admin_password: std::env::var("LOCH_ADMIN_PASSWORD").ok(),
    };
    for (flag, addr) in [
        ("--pg-addr", Some(options.pg_addr)),
        ("--flight-addr", options.flight_addr),
    ] {
        if let Some(addr) = addr
            && !addr.ip().is_loopback()
        {
            eprintln!(
                "loch: {flag} {addr} is not a loopback address; pg wire has no authentication \
                 and neither protocol has TLS yet, so `loch local` only listens on loopback"
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
    if let Some(flight) = running.flight_addr {
        let password = match &running.password_source {
            PasswordSource::Environment => "password from LOCH_ADMIN_PASSWORD".to_string(),
            PasswordSource::File(path) => format!("password in {}", path.display()),
        };
        println!("Flight SQL on grpc://{flight}   (user {ADMIN_USER}, {password})");
    }
    let addr = running.pg_addr;
    println!(
        "Loch is ready: psql -h {} -p {} -U loch   (no authentication yet: listening on loopback only)",
        addr.ip(),
        addr.port()
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("loch: cannot wait for Ctrl-C: {e}");
    }
    tracing::info!("shutting down");
    running.shutdown();
    ExitCode::SUCCESS
}
