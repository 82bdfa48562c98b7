//! Loch's benchmark runner.
//!
//! `loch-benchmarks tpch --sf 1` generates TPC-H at that scale (Parquet, the
//! same generator `loch local` uses), starts the real `loch` binary on it,
//! runs the 22 queries over pg wire and with plain in-process DataFusion on
//! the same files in the same run (1 warm-up, then the median of 3), checks
//! the answers agree, and prints per-query times with the Loch/DataFusion
//! ratio; the same over Flight SQL. `loch-benchmarks scan --sf 1` measures
//! `SELECT * FROM lineitem` into clients (rows/s). `concurrency` and
//! `heavy` (in [`concurrency`]) measure many sessions and memory-hungry
//! queries at once. Results also go to a JSON file. No timing is asserted
//! anywhere.

mod concurrency;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use clap::{Parser, Subcommand};
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use loch_tests::oracle::{self, Cell};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "loch-benchmarks", about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// TPC-H: Loch over pg wire and Flight SQL against in-process DataFusion.
    Tpch(TpchArgs),
    /// `SELECT * FROM lineitem` into a client: in-process DataFusion, ADBC
    /// Flight SQL into a pyarrow.Table, psycopg over pg wire.
    Scan(ScanArgs),
    /// TPC-H as managed Delta tables against the same data as Parquet
    /// files, and `CREATE TABLE AS` of lineitem against the `deltalake`
    /// package writing it from pyarrow.
    Delta(DeltaArgs),
    /// Many BI sessions at once over pg wire: latency percentiles and
    /// errors per class of query, against the same mix run serially.
    Concurrency(concurrency::ConcurrencyArgs),
    /// TPC-H q9, q13, q18, q21 twice each, all at once: each answered right
    /// or refused cleanly, and no Loch process died.
    Heavy(concurrency::HeavyArgs),
}

/// What every benchmark runs on.
#[derive(Debug, clap::Args)]
struct DataArgs {
    /// Scale factor.
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// Where the data set is generated (reused across runs).
    #[arg(long, default_value = "./bench-data")]
    data_dir: PathBuf,
    /// The `loch` binary (default: next to this one).
    #[arg(long, env = "LOCH_BIN")]
    loch_bin: Option<PathBuf>,
}

impl DataArgs {
    /// The TPC-H files (generated on first use) and the `loch` binary.
    fn prepare(&self) -> Result<(PathBuf, PathBuf), BoxError> {
        eprintln!(
            "generating / reusing TPC-H SF{} under {}",
            self.sf,
            self.data_dir.display()
        );
        let sample_dir = loch_catalog::sample::ensure_tpch(&self.data_dir, self.sf)?;
        let bin = match &self.loch_bin {
            Some(bin) => bin.clone(),
            None => sibling_bin()?,
        };
        Ok((sample_dir, bin))
    }
}

/// The Python the benchmark scripts run with: `--python`, else dev/test's
/// venv.
fn python_or_default(python: &Option<PathBuf>) -> Result<PathBuf, BoxError> {
    python
        .clone()
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/loch-venv/bin/python"))
        })
        .ok_or_else(|| "no Python: pass --python".into())
}

#[derive(Debug, clap::Args)]
struct DeltaArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Measured runs (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The Python with deltalake and pyarrow (dev/test's venv by default).
    #[arg(long, env = "LOCH_PYTHON")]
    python: Option<PathBuf>,
    /// Executor processes `loch local` runs.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "delta-results.json")]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ScanArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Measured runs (after one warm-up); the median is reported. psycopg
    /// runs once: it is an order of magnitude slower.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The Python with adbc-driver-flightsql, pyarrow and psycopg (dev/test's
    /// venv by default).
    #[arg(long, env = "LOCH_PYTHON")]
    python: Option<PathBuf>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "scan-results.json")]
    output: PathBuf,
    /// Executor processes `loch local` runs (0 = single process).
    #[arg(long, default_value_t = 0)]
    executors: usize,
}

#[derive(Debug, clap::Args)]
struct TpchArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Measured runs per query (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these queries (e.g. `--query 1 --query 18`); default all 22.
    #[arg(long)]
    query: Vec<usize>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "tpch-results.json")]
    output: PathBuf,
    /// Executor processes `loch local` runs (0 = single process).
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// MiB of each executor's data cache (0: every scan decodes its files,
    /// as in-process DataFusion does).
    #[arg(long, default_value_t = 0)]
    data_cache_mb: u64,
    /// Memory Loch may use (`loch local --memory-limit`: 4GiB, 512MiB,
    /// 75%); the report says whether its processes' peaks stayed within it.
    #[arg(long)]
    memory_limit: Option<String>,
}

#[derive(Debug, Serialize)]
struct QueryResult {
    query: usize,
    datafusion_ms: f64,
    loch_ms: f64,
    ratio: f64,
    flight_ms: f64,
    flight_ratio: f64,
    rows: usize,
    answers_agree: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    scale_factor: f64,
    runs: usize,
    datafusion_total_ms: f64,
    loch_total_ms: f64,
    total_ratio: f64,
    geomean_ratio: f64,
    flight_total_ms: f64,
    flight_total_ratio: f64,
    flight_geomean_ratio: f64,
    executors: usize,
    data_cache_mb: u64,
    loch_peak_rss_mb: f64,
    datafusion_peak_rss_mb: f64,
    memory_limit: Option<String>,
    /// Each Loch process's peak RSS against its limit.
    memory: concurrency::MemoryReport,
    queries: Vec<QueryResult>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Commands::Tpch(args) => match runtime.block_on(tpch(args)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("some answers differ between Loch and DataFusion");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("benchmark failed: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Scan(args) => match runtime.block_on(scan(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("benchmark failed: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Delta(args) => match runtime.block_on(delta(args)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("some answers differ between the Delta and the Parquet tables");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("benchmark failed: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Concurrency(args) => match runtime.block_on(concurrency::concurrency(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("benchmark failed: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Heavy(args) => match runtime.block_on(concurrency::heavy(args)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("some answers differ between Loch and DataFusion");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("benchmark failed: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

type BoxError = Box<dyn std::error::Error>;

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

async fn tpch(args: TpchArgs) -> Result<bool, BoxError> {
    let runs = args.runs.max(1);
    let queries: Vec<usize> = if args.query.is_empty() {
        (1..=22).collect()
    } else {
        args.query.clone()
    };
    let (sample_dir, bin) = args.data.prepare()?;
    let server = Server::start_with(
        &bin,
        &args.data.data_dir,
        args.data.sf,
        args.executors,
        Caches {
            data_mb: args.data_cache_mb,
            ..NO_CACHES
        },
        &concurrency::memory_limit_flags(args.memory_limit.as_deref()),
    )?;
    let client = server.pg_client("options='-c search_path=tpch'").await?;
    let mut flight = server.flight_client().await?;
    flight
        .execute("SET search_path = tpch".to_string(), None)
        .await?;
    let ctx = oracle::tpch_context(&sample_dir).await;

    let mut results = Vec::new();
    let mut all_agree = true;
    for &n in &queries {
        let sql = loch_tests::tpch_query(n);
        // DataFusion in-process.
        let mut df_times = Vec::new();
        let mut expected: Vec<Vec<Cell>> = Vec::new();
        for i in 0..=runs {
            let start = Instant::now();
            let batches = ctx.sql(&sql).await?.collect().await?;
            let elapsed = start.elapsed();
            if i == 0 {
                expected = oracle::arrow_rows(&batches);
            } else {
                df_times.push(elapsed);
            }
        }
        // Loch over pg wire (extended protocol, binary results).
        let mut loch_times = Vec::new();
        let mut got = Vec::new();
        for i in 0..=runs {
            let start = Instant::now();
            let rows = client.query(sql.as_str(), &[]).await?;
            let elapsed = start.elapsed();
            if i == 0 {
                got = oracle::pg_rows(&rows);
            } else {
                loch_times.push(elapsed);
            }
        }
        // Loch over Flight SQL (Arrow all the way).
        let mut flight_times = Vec::new();
        let mut flight_got = Vec::new();
        for i in 0..=runs {
            let start = Instant::now();
            let batches = flight_query(&mut flight, &sql).await?;
            let elapsed = start.elapsed();
            if i == 0 {
                flight_got = oracle::arrow_rows(&batches);
            } else {
                flight_times.push(elapsed);
            }
        }
        let ordered = oracle::is_ordered(&sql);
        // Which protocol differed is said: both are checked on their first run.
        let agree = oracle::compare(&expected, &got, ordered)
            .map_err(|e| format!("over pg wire: {e}"))
            .and_then(|()| {
                oracle::compare(&expected, &flight_got, ordered)
                    .map_err(|e| format!("over Flight SQL: {e}"))
            });
        if let Err(e) = &agree {
            eprintln!("q{n}: answers differ: {e}");
            all_agree = false;
        }
        let (d, l, f) = (median(df_times), median(loch_times), median(flight_times));
        let result = QueryResult {
            query: n,
            datafusion_ms: d,
            loch_ms: l,
            ratio: l / d,
            flight_ms: f,
            flight_ratio: f / d,
            rows: got.len(),
            answers_agree: agree.is_ok(),
        };
        eprintln!(
            "q{n:<2} datafusion {d:>9.1} ms   pg wire {l:>9.1} ms ({:.2})   flight sql {f:>9.1} ms ({:.2})",
            result.ratio, result.flight_ratio
        );
        results.push(result);
    }
    // Peak memory: each process's high-water mark (VmHWM); for Loch the sum
    // over the coordinator and its executors (an upper bound of their
    // simultaneous peak), for DataFusion this benchmark process, which also
    // holds the client side.
    let loch_pids = server.pids();
    let loch_peak_rss_mb = loch_pids
        .iter()
        .filter_map(|p| peak_rss_mb(*p))
        .sum::<f64>();
    let datafusion_peak_rss_mb = peak_rss_mb(std::process::id()).unwrap_or(0.0);
    let memory = concurrency::memory_report(&server, &client).await;
    drop(server);

    let df_total: f64 = results.iter().map(|r| r.datafusion_ms).sum();
    let loch_total: f64 = results.iter().map(|r| r.loch_ms).sum();
    let flight_total: f64 = results.iter().map(|r| r.flight_ms).sum();
    let geo = |f: fn(&QueryResult) -> f64| {
        (results.iter().map(|r| f(r).ln()).sum::<f64>() / results.len().max(1) as f64).exp()
    };
    let geomean = geo(|r| r.ratio);
    let flight_geomean = geo(|r| r.flight_ratio);
    println!(
        "\nTPC-H SF{} — median of {runs} runs after 1 warm-up\n",
        args.data.sf
    );
    println!(
        "| query | DataFusion in-process (ms) | pg wire (ms) | pg wire / DataFusion | Flight SQL (ms) | Flight SQL / DataFusion | rows | answers agree |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in &results {
        println!(
            "| q{} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {} | {} |",
            r.query,
            r.datafusion_ms,
            r.loch_ms,
            r.ratio,
            r.flight_ms,
            r.flight_ratio,
            r.rows,
            if r.answers_agree { "yes" } else { "NO" }
        );
    }
    println!(
        "| **total** | {df_total:.1} | {loch_total:.1} | {:.2} | {flight_total:.1} | {:.2} | | |",
        loch_total / df_total,
        flight_total / df_total
    );
    println!("| geomean | | | {geomean:.2} | | {flight_geomean:.2} | | |");
    let report = Report {
        benchmark: "tpch",
        scale_factor: args.data.sf,
        runs,
        datafusion_total_ms: df_total,
        loch_total_ms: loch_total,
        total_ratio: loch_total / df_total,
        geomean_ratio: geomean,
        flight_total_ms: flight_total,
        flight_total_ratio: flight_total / df_total,
        flight_geomean_ratio: flight_geomean,
        executors: args.executors,
        data_cache_mb: args.data_cache_mb,
        loch_peak_rss_mb,
        datafusion_peak_rss_mb,
        memory_limit: args.memory_limit.clone(),
        memory,
        queries: results,
    };
    println!(
        "\npeak RSS: Loch ({} processes) {loch_peak_rss_mb:.0} MB, DataFusion in-process (with this benchmark) {datafusion_peak_rss_mb:.0} MB, ratio {:.2}",
        loch_pids.len(),
        loch_peak_rss_mb / datafusion_peak_rss_mb.max(1.0)
    );
    concurrency::print_memory(&report.memory, args.memory_limit.as_deref());
    std::fs::write(&args.output, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", args.output.display());
    Ok(all_agree)
}

fn sibling_bin() -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .map(|p| p.join("loch"))
        .ok_or("no parent directory")?;
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it with the same profile (cargo build --release -p loch-coordinator) or pass --loch-bin",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// A process's peak resident set (VmHWM) in MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The admin password the benchmark gives `loch local` (loopback only).
const BENCH_PASSWORD: &str = "loch-benchmark";

/// The `loch local` process under test.
struct Server {
    child: std::process::Child,
    port: u16,
    flight_port: u16,
}

/// MiB of the coordinator's result cache and of each executor's data
/// cache.
#[derive(Debug, Clone, Copy)]
struct Caches {
    result_mb: u64,
    data_mb: u64,
}

/// Both off: every query runs and decodes its files.
const NO_CACHES: Caches = Caches {
    result_mb: 0,
    data_mb: 0,
};

/// `loch local`'s defaults.
const DEFAULT_CACHES: Caches = Caches {
    result_mb: 2048,
    data_mb: 1024,
};

impl Server {
    /// `caches`: what the server keeps (the scan benchmark measures
    /// repeated queries from its caches; the others measure running
    /// queries, so both are off for them).
    fn start(
        bin: &Path,
        data_dir: &Path,
        sf: f64,
        executors: usize,
        caches: Caches,
    ) -> Result<Server, BoxError> {
        Server::start_with(bin, data_dir, sf, executors, caches, &[])
    }

    /// [`Server::start`] with `extra` flags for `loch local`
    /// (`--memory-limit 2GiB`).
    fn start_with(
        bin: &Path,
        data_dir: &Path,
        sf: f64,
        executors: usize,
        caches: Caches,
        extra: &[String],
    ) -> Result<Server, BoxError> {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(bin)
            .arg("local")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--pg-addr",
                "127.0.0.1:0",
                "--flight-addr",
                "127.0.0.1:0",
                "--sample-scale",
                &sf.to_string(),
                "--executors",
                &executors.to_string(),
            ])
            .args(["--result-cache-mb", &caches.result_mb.to_string()])
            .args(["--data-cache-mb", &caches.data_mb.to_string()])
            .args(extra)
            .env("LOCH_ADMIN_PASSWORD", BENCH_PASSWORD)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut flight_port = 0;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err("loch exited before it was ready".into());
            }
            if let Some(i) = line.find("grpc://") {
                flight_port = line[i + 7..]
                    .split_whitespace()
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .ok_or("no port in the Flight SQL line")?;
            }
            if let Some(i) = line.find("-p ") {
                let port = line[i + 3..]
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("no port in the ready line")?;
                return Ok(Server {
                    child,
                    port,
                    flight_port,
                });
            }
        }
    }

    /// The `loch local` process and its executor children.
    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        std::iter::once(pid)
            .chain(concurrency::child_pids(pid))
            .collect()
    }

    /// A pg wire client as the admin, with `extra` connection settings.
    async fn pg_client(&self, extra: &str) -> Result<tokio_postgres::Client, BoxError> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=loch password={BENCH_PASSWORD} dbname=loch {extra}",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn flight_uri(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.flight_port)
    }

    /// A logged-in Flight SQL client.
    async fn flight_client(&self) -> Result<FlightClient, BoxError> {
        let channel = tonic::transport::Channel::from_shared(format!(
            "http://127.0.0.1:{}",
            self.flight_port
        ))?
        // Like gRPC's C++ and Go clients, which size their windows by
        // bandwidth-delay probing: h2's 64 KiB default throttles a stream.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect()
        .await?;
        let mut client = FlightSqlServiceClient::new(channel);
        client.handshake("loch", BENCH_PASSWORD).await?;
        Ok(client)
    }
}

type FlightClient = FlightSqlServiceClient<tonic::transport::Channel>;

/// Runs `sql` over Flight SQL and collects its batches, reading all
/// endpoints at once, each where its location says (executors, for direct
/// endpoints), as ADBC does.
async fn flight_query(client: &mut FlightClient, sql: &str) -> Result<Vec<RecordBatch>, BoxError> {
    let info = client.execute(sql.to_string(), None).await?;
    let reads = info.endpoint.into_iter().map(|endpoint| {
        let mut client = client.clone();
        async move {
            let ticket = endpoint.ticket.ok_or("endpoint without a ticket")?;
            let batches: Vec<RecordBatch> = match endpoint.location.first() {
                Some(location) => {
                    let url = location
                        .uri
                        .replacen("grpc+tcp://", "http://", 1)
                        .replacen("grpc://", "http://", 1);
                    let channel = tonic::transport::Channel::from_shared(url)?
                        .initial_stream_window_size(Some(8 << 20))
                        .initial_connection_window_size(Some(16 << 20))
                        .connect()
                        .await?;
                    let mut located =
                        arrow_flight::flight_service_client::FlightServiceClient::new(channel)
                            .max_decoding_message_size(64 << 20);
                    let data = located.do_get(ticket).await?.into_inner();
                    arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                        data.map_err(arrow_flight::error::FlightError::from),
                    )
                    .try_collect()
                    .await?
                }
                None => client.do_get(ticket).await?.try_collect().await?,
            };
            Ok::<_, BoxError>(batches)
        }
    });
    let parts = futures::future::try_join_all(reads).await?;
    Ok(parts.into_iter().flatten().collect())
}

/// Rows/s of `runs` Flight SQL scans after a warm-up, in a session that
/// first ran `setup`; checks the row count.
async fn flight_scan(
    server: &Server,
    setup: &[&str],
    rows: usize,
    runs: usize,
) -> Result<f64, BoxError> {
    let mut client = server.flight_client().await?;
    for sql in setup {
        flight_query(&mut client, sql).await?;
    }
    let mut times = Vec::new();
    for i in 0..=runs {
        let start = Instant::now();
        let batches = flight_query(&mut client, SCAN_SQL).await?;
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        if n != rows {
            return Err(format!("Flight SQL returned {n} rows, DataFusion {rows}").into());
        }
        if i > 0 {
            times.push(start.elapsed());
        }
    }
    Ok(rows as f64 / (median(times) / 1000.0))
}

/// Runs every query: the session does not use the result cache.
const NO_CACHE: &str = "SET use_cached_result = false";

/// Streams a distributed query's rows through the coordinator instead of
/// from the executors' direct endpoints.
const THROUGH_COORDINATOR: &str = "SET loch.flight_endpoints = 'coordinator'";

#[derive(Debug, Serialize)]
struct ScanReport {
    benchmark: &'static str,
    scale_factor: f64,
    rows: usize,
    datafusion_rows_per_s: f64,
    /// From executors without a data cache: every scan decodes its files
    /// (none with no executors).
    flight_rust_decoding_rows_per_s: Option<f64>,
    adbc_decoding_rows_per_s: Option<f64>,
    /// The rest from `loch local`'s defaults: each executor's data cache
    /// holds the files the warm-up run decoded.
    flight_rust_rows_per_s: f64,
    /// With `loch.flight_endpoints = 'coordinator'` (the same path as
    /// direct when there are no executors).
    flight_rust_coordinator_rows_per_s: f64,
    adbc_rows_per_s: f64,
    adbc_coordinator_rows_per_s: f64,
    /// The same query repeated, answered from the result cache.
    adbc_cached_rows_per_s: f64,
    psycopg_rows_per_s: f64,
    adbc_vs_datafusion: f64,
    /// ADBC from a Flight server that does no work per query: the client's
    /// ceiling on this machine.
    adbc_reference_rows_per_s: f64,
    adbc_vs_reference: f64,
}

const SCAN_SQL: &str = "select * from tpch.lineitem";

/// Runs `benchmarks/python/scan.py` against `server`: ADBC and psycopg
/// (or, with `only_adbc`, ADBC from direct endpoints alone).
fn python_scan(
    python: &Path,
    server: &Server,
    lineitem_dir: &Path,
    runs: usize,
    only_adbc: bool,
) -> Result<serde_json::Value, BoxError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/scan.py");
    let mut command = std::process::Command::new(python);
    command
        .arg(&script)
        .args([
            server.flight_uri(),
            server.port.to_string(),
            BENCH_PASSWORD.to_string(),
            SCAN_SQL.to_string(),
            runs.to_string(),
        ])
        .arg(lineitem_dir)
        .stderr(std::process::Stdio::inherit());
    if only_adbc {
        command.env("SCAN_ONLY", "adbc");
    }
    let out = command.output()?;
    if !out.status.success() {
        return Err(format!("{} failed", script.display()).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Rows/s that `client` got in `v`, checking its row count.
fn client_rate(v: &serde_json::Value, client: &str, rows: usize) -> Result<f64, BoxError> {
    let n = v[client]["rows"].as_u64().unwrap_or(0) as usize;
    if n != rows {
        return Err(format!("{client} returned {n} rows, DataFusion {rows}").into());
    }
    Ok(v[client]["rows_per_s"].as_f64().unwrap_or(0.0))
}

async fn scan(args: ScanArgs) -> Result<(), BoxError> {
    use futures::StreamExt;
    let runs = args.runs.max(1);
    let (sample_dir, bin) = args.data.prepare()?;
    let python = python_or_default(&args.python)?;
    let lineitem_dir = sample_dir.join("lineitem");

    // In-process DataFusion producing the same batches.
    let ctx = oracle::tpch_context(&sample_dir).await;
    let mut df_times = Vec::new();
    let mut rows = 0usize;
    for i in 0..=runs {
        let start = Instant::now();
        let mut stream = ctx
            .sql(&SCAN_SQL.replace("tpch.", ""))
            .await?
            .execute_stream()
            .await?;
        let mut n = 0usize;
        while let Some(batch) = stream.next().await {
            n += batch?.num_rows();
        }
        if i > 0 {
            df_times.push(start.elapsed());
        }
        rows = n;
    }
    let df = rows as f64 / (median(df_times) / 1000.0);
    eprintln!(
        "datafusion in-process: {rows} rows, {:.2} M rows/s",
        df / 1e6
    );

    // Executors that decode the Parquet files at every scan (no data
    // cache, no result cache), from direct endpoints.
    let decoding = if args.executors > 0 {
        let server = Server::start(
            &bin,
            &args.data.data_dir,
            args.data.sf,
            args.executors,
            NO_CACHES,
        )?;
        let rust = flight_scan(&server, &[], rows, runs).await?;
        eprintln!(
            "flight sql (rust client), decoding every scan: {:.2} M rows/s",
            rust / 1e6
        );
        let v = python_scan(&python, &server, &lineitem_dir, runs, true)?;
        let adbc = client_rate(&v, "adbc", rows)?;
        Some((rust, adbc))
    } else {
        None
    };

    let server = Server::start(
        &bin,
        &args.data.data_dir,
        args.data.sf,
        args.executors,
        DEFAULT_CACHES,
    )?;
    // Loch over Flight SQL, Rust client (arrow-flight): direct endpoints
    // (the default), then through the coordinator; running the query every
    // time (result cache off for the session), the files decoded by the
    // warm-up run kept in the executors' data caches.
    let flight_rust = flight_scan(&server, &[NO_CACHE], rows, runs).await?;
    eprintln!(
        "flight sql (rust client): {:.2} M rows/s",
        flight_rust / 1e6
    );
    let flight_rust_coordinator =
        flight_scan(&server, &[NO_CACHE, THROUGH_COORDINATOR], rows, runs).await?;
    eprintln!(
        "flight sql (rust client, through the coordinator): {:.2} M rows/s",
        flight_rust_coordinator / 1e6
    );

    // ADBC into a pyarrow.Table, and psycopg over pg wire.
    let v = python_scan(&python, &server, &lineitem_dir, runs, false)?;
    let adbc = client_rate(&v, "adbc", rows)?;
    let adbc_coordinator = client_rate(&v, "adbc_coordinator", rows)?;
    let adbc_cached = client_rate(&v, "adbc_cached", rows)?;
    let psycopg = client_rate(&v, "psycopg", rows)?;
    let reference = client_rate(&v, "adbc_reference", rows)?;
    drop(server);

    println!(
        "\n`{SCAN_SQL}` at SF{} ({rows} rows), {} executors, median of {runs} runs after 1 warm-up\n",
        args.data.sf, args.executors
    );
    println!(
        "ADBC from Loch / ADBC from the no-work server: {:.2}",
        adbc / reference
    );
    if let Some((_, adbc_decoding)) = decoding {
        println!(
            "ADBC from the executors' data caches / decoding every scan: {:.2}",
            adbc / adbc_decoding
        );
    }
    println!(
        "ADBC direct endpoints / through the coordinator: {:.2}",
        adbc / adbc_coordinator
    );
    println!(
        "ADBC repeated query from the result cache / direct endpoints: {:.2}\n",
        adbc_cached / adbc
    );
    println!("| client | M rows/s | vs in-process DataFusion |");
    println!("|---|---:|---:|");
    let mut table = vec![("DataFusion in-process (stream of batches)", df)];
    if let Some((rust, adbc)) = decoding {
        table.push((
            "Loch Flight SQL, Rust arrow-flight client, decoding every scan (no data cache)",
            rust,
        ));
        table.push((
            "Loch Flight SQL, Python ADBC → pyarrow.Table, decoding every scan (no data cache)",
            adbc,
        ));
    }
    table.extend([
        ("Loch Flight SQL, Rust arrow-flight client", flight_rust),
        (
            "Loch Flight SQL, Rust arrow-flight client, through the coordinator",
            flight_rust_coordinator,
        ),
        ("Loch Flight SQL, Python ADBC → pyarrow.Table", adbc),
        (
            "Loch Flight SQL, Python ADBC → pyarrow.Table, through the coordinator",
            adbc_coordinator,
        ),
        (
            "Loch Flight SQL, Python ADBC → pyarrow.Table, repeated query (result cache)",
            adbc_cached,
        ),
        (
            "no-work Flight server (pyarrow, batches in memory), ADBC → pyarrow.Table",
            reference,
        ),
        ("Loch pg wire, Python psycopg 3 (1 run)", psycopg),
    ]);
    for (name, r) in table {
        println!("| {name} | {:.2} | {:.2} |", r / 1e6, r / df);
    }
    let report = ScanReport {
        benchmark: "scan",
        scale_factor: args.data.sf,
        rows,
        datafusion_rows_per_s: df,
        flight_rust_decoding_rows_per_s: decoding.map(|(rust, _)| rust),
        adbc_decoding_rows_per_s: decoding.map(|(_, adbc)| adbc),
        flight_rust_rows_per_s: flight_rust,
        flight_rust_coordinator_rows_per_s: flight_rust_coordinator,
        adbc_rows_per_s: adbc,
        adbc_coordinator_rows_per_s: adbc_coordinator,
        adbc_cached_rows_per_s: adbc_cached,
        psycopg_rows_per_s: psycopg,
        adbc_vs_datafusion: adbc / df,
        adbc_reference_rows_per_s: reference,
        adbc_vs_reference: adbc / reference,
    };
    std::fs::write(&args.output, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// The eight TPC-H tables.
const TPCH_TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

#[derive(Debug, Serialize)]
struct DeltaQuery {
    query: usize,
    parquet_ms: f64,
    delta_ms: f64,
    ratio: f64,
    answers_agree: bool,
}

#[derive(Debug, Serialize)]
struct DeltaReport {
    benchmark: &'static str,
    scale_factor: f64,
    runs: usize,
    executors: usize,
    lineitem_rows: u64,
    ctas_lineitem_s: f64,
    insert_lineitem_s: f64,
    deltalake_read_s: f64,
    deltalake_write_s: f64,
    ctas_vs_deltalake_read_and_write: f64,
    parquet_total_ms: f64,
    delta_total_ms: f64,
    total_ratio: f64,
    queries: Vec<DeltaQuery>,
}

async fn delta(args: DeltaArgs) -> Result<bool, BoxError> {
    let runs = args.runs.max(1);
    let (sample_dir, bin) = args.data.prepare()?;
    let python = python_or_default(&args.python)?;
    let server = Server::start(
        &bin,
        &args.data.data_dir,
        args.data.sf,
        args.executors,
        NO_CACHES,
    )?;
    let client = server.pg_client("").await?;

    // CREATE TABLE AS of every table; lineitem's timed, `runs` times.
    client
        .batch_execute("DROP SCHEMA IF EXISTS tpch_delta CASCADE; CREATE SCHEMA tpch_delta")
        .await?;
    let mut ctas_times = Vec::new();
    let mut lineitem_rows = 0;
    for table in TPCH_TABLES {
        let repeat = if table == "lineitem" { runs + 1 } else { 1 };
        for i in 0..repeat {
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS tpch_delta.{table}"))
                .await?;
            let start = Instant::now();
            let n = client
                .execute(
                    &format!("CREATE TABLE tpch_delta.{table} AS SELECT * FROM tpch.{table}"),
                    &[],
                )
                .await?;
            let elapsed = start.elapsed();
            if table == "lineitem" {
                lineitem_rows = n;
                if i > 0 {
                    ctas_times.push(elapsed);
                }
            }
        }
    }
    let ctas_s = median(ctas_times) / 1000.0;
    eprintln!(
        "CREATE TABLE AS lineitem: {lineitem_rows} rows in {ctas_s:.2} s ({:.2} M rows/s)",
        lineitem_rows as f64 / ctas_s / 1e6
    );

    // INSERT … SELECT of lineitem into an empty Delta table: the files are
    // written by the executors, one commit on the coordinator.
    let mut insert_times = Vec::new();
    for i in 0..=runs {
        client
            .batch_execute(
                "DROP TABLE IF EXISTS tpch_delta.lineitem_insert; \
                 CREATE TABLE tpch_delta.lineitem_insert AS SELECT * FROM tpch.lineitem LIMIT 0",
            )
            .await?;
        let start = Instant::now();
        let n = client
            .execute(
                "INSERT INTO tpch_delta.lineitem_insert SELECT * FROM tpch.lineitem",
                &[],
            )
            .await?;
        let elapsed = start.elapsed();
        if n != lineitem_rows {
            return Err(format!("INSERT wrote {n} rows of {lineitem_rows}").into());
        }
        if i > 0 {
            insert_times.push(elapsed);
        }
    }
    client
        .batch_execute("DROP TABLE tpch_delta.lineitem_insert")
        .await?;
    let insert_s = median(insert_times) / 1000.0;
    eprintln!(
        "INSERT INTO … SELECT lineitem: {insert_s:.2} s ({:.2} M rows/s)",
        lineitem_rows as f64 / insert_s / 1e6
    );

    // The deltalake package writing the same rows from pyarrow.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/delta_write.py");
    let scratch = args.data.data_dir.join("delta-write-reference");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(sample_dir.join("lineitem"))
        .arg(&scratch)
        .arg(runs.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let _ = std::fs::remove_dir_all(&scratch);
    if !out.status.success() {
        return Err(format!("{} failed", script.display()).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if v["rows"].as_u64() != Some(lineitem_rows) {
        return Err(format!("deltalake wrote {} rows, Loch {lineitem_rows}", v["rows"]).into());
    }
    let py_read = v["read_s"].as_f64().unwrap_or(0.0);
    let py_write = v["write_s"].as_f64().unwrap_or(0.0);
    eprintln!("deltalake from pyarrow: read {py_read:.2} s, write {py_write:.2} s");

    // The 22 queries over both, through pg wire, interleaved per query.
    let mut results = Vec::new();
    let mut all_agree = true;
    for n in 1..=22 {
        let sql = loch_tests::tpch_query(n);
        let mut answers = Vec::new();
        let mut times = [Vec::new(), Vec::new()];
        for (k, schema) in ["tpch", "tpch_delta"].iter().enumerate() {
            client
                .batch_execute(&format!("SET search_path = {schema}"))
                .await?;
            for i in 0..=runs {
                let start = Instant::now();
                let rows = client.query(sql.as_str(), &[]).await?;
                let elapsed = start.elapsed();
                if i == 0 {
                    answers.push(oracle::pg_rows(&rows));
                } else {
                    times[k].push(elapsed);
                }
            }
        }
        let agree = oracle::compare(&answers[0], &answers[1], oracle::is_ordered(&sql));
        if let Err(e) = &agree {
            eprintln!("q{n}: answers differ: {e}");
            all_agree = false;
        }
        let [p, d] = times;
        let (p, d) = (median(p), median(d));
        eprintln!(
            "q{n:<2} parquet {p:>9.1} ms   delta {d:>9.1} ms ({:.2})",
            d / p
        );
        results.push(DeltaQuery {
            query: n,
            parquet_ms: p,
            delta_ms: d,
            ratio: d / p,
            answers_agree: agree.is_ok(),
        });
    }
    drop(server);

    let parquet_total: f64 = results.iter().map(|r| r.parquet_ms).sum();
    let delta_total: f64 = results.iter().map(|r| r.delta_ms).sum();
    println!(
        "\nTPC-H SF{} through pg wire, {} executors — median of {runs} runs after 1 warm-up\n",
        args.data.sf, args.executors
    );
    println!(
        "| query | Parquet files (ms) | managed Delta (ms) | Delta / Parquet | answers agree |"
    );
    println!("|---|---:|---:|---:|---|");
    for r in &results {
        println!(
            "| q{} | {:.1} | {:.1} | {:.2} | {} |",
            r.query,
            r.parquet_ms,
            r.delta_ms,
            r.ratio,
            if r.answers_agree { "yes" } else { "NO" }
        );
    }
    println!(
        "| **total** | {parquet_total:.1} | {delta_total:.1} | {:.2} | |",
        delta_total / parquet_total
    );
    let reference = py_read + py_write;
    println!(
        "\nlineitem ({lineitem_rows} rows) into a new Delta table:\n\n\
         | writer | s | M rows/s | vs deltalake from pyarrow (read + write) |\n\
         |---|---:|---:|---:|\n\
         | Loch `CREATE TABLE AS SELECT * FROM tpch.lineitem` | {ctas_s:.2} | {:.2} | {:.2} |\n\
         | Loch `INSERT INTO … SELECT * FROM tpch.lineitem` | {insert_s:.2} | {:.2} | {:.2} |\n\
         | deltalake `write_deltalake` from pyarrow, read + write | {reference:.2} | {:.2} | 1.00 |\n\
         | deltalake `write_deltalake`, write only | {py_write:.2} | {:.2} | {:.2} |",
        lineitem_rows as f64 / ctas_s / 1e6,
        ctas_s / reference,
        lineitem_rows as f64 / insert_s / 1e6,
        insert_s / reference,
        lineitem_rows as f64 / reference / 1e6,
        lineitem_rows as f64 / py_write / 1e6,
        py_write / reference,
    );
    let report = DeltaReport {
        benchmark: "delta",
        scale_factor: args.data.sf,
        runs,
        executors: args.executors,
        lineitem_rows,
        ctas_lineitem_s: ctas_s,
        insert_lineitem_s: insert_s,
        deltalake_read_s: py_read,
        deltalake_write_s: py_write,
        ctas_vs_deltalake_read_and_write: ctas_s / reference,
        parquet_total_ms: parquet_total,
        delta_total_ms: delta_total,
        total_ratio: delta_total / parquet_total,
        queries: results,
    };
    std::fs::write(&args.output, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", args.output.display());
    Ok(all_agree)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
