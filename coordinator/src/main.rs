//! The `loch` binary: argument parsing and wiring only; what each command
//! starts is `loch_coordinator::server`.

use std::process::ExitCode;

use clap::Parser;
use loch_coordinator::server::cli::Cli;

/// mimalloc for the coordinator and the executors alike: results and
/// exchange data move in buffers of megabytes, which glibc's allocator maps
/// and unmaps for each message (a fifth of the CPU of a served scan went to
/// page faults).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Loch's own events at info; the Delta libraries log every snapshot and
/// scan at info, which drowns everything else, so only their warnings.
const DEFAULT_LOG: &str = "info,buoyant_kernel=warn,delta_kernel=warn,deltalake_core=warn";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
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
    runtime.block_on(cli.run())
}
