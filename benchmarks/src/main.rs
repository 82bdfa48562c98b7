//! Loch's benchmark runner.
//!
//! `loch-benchmarks tpch --sf 1` generates TPC-H at that scale (Parquet, the
//! same generator `loch local` uses), starts the real `loch` binary on it,
//! runs the 22 queries over pg wire and with plain in-process DataFusion on
//! the same files in the same run (1 warm-up, then the median of 3), checks
//! the answers agree, and prints per-query times with the Loch/DataFusion
//! ratio. Results also go to a JSON file. No timing is asserted anywhere.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
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
    /// TPC-H: Loch over pg wire against in-process DataFusion.
    Tpch(TpchArgs),
}

#[derive(Debug, clap::Args)]
struct TpchArgs {
    /// Scale factor.
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// Where the data set is generated (reused across runs).
    #[arg(long, default_value = "./bench-data")]
    data_dir: PathBuf,
    /// Measured runs per query (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these queries (e.g. `--query 1 --query 18`); default all 22.
    #[arg(long)]
    query: Vec<usize>,
    /// The `loch` binary (default: next to this one).
    #[arg(long, env = "LOCH_BIN")]
    loch_bin: Option<PathBuf>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "tpch-results.json")]
    output: PathBuf,
}

#[derive(Debug, Serialize)]
struct QueryResult {
    query: usize,
    datafusion_ms: f64,
    loch_ms: f64,
    ratio: f64,
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
    eprintln!(
        "generating / reusing TPC-H SF{} under {}",
        args.sf,
        args.data_dir.display()
    );
    let sample_dir = loch_catalog::sample::ensure_tpch(&args.data_dir, args.sf)?;

    let bin = match &args.loch_bin {
        Some(bin) => bin.clone(),
        None => sibling_bin()?,
    };
    let server = Server::start(&bin, &args.data_dir, args.sf)?;
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=loch dbname=loch options='-c search_path=tpch'",
            server.port
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
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
        let agree = oracle::compare(&expected, &got, oracle::is_ordered(&sql));
        if let Err(e) = &agree {
            eprintln!("q{n}: answers differ: {e}");
            all_agree = false;
        }
        let (d, l) = (median(df_times), median(loch_times));
        let result = QueryResult {
            query: n,
            datafusion_ms: d,
            loch_ms: l,
            ratio: l / d,
            rows: got.len(),
            answers_agree: agree.is_ok(),
        };
        eprintln!(
            "q{n:<2} datafusion {d:>9.1} ms   loch {l:>9.1} ms   ratio {:.2}",
            result.ratio
        );
        results.push(result);
    }
    drop(server);

    let df_total: f64 = results.iter().map(|r| r.datafusion_ms).sum();
    let loch_total: f64 = results.iter().map(|r| r.loch_ms).sum();
    let geomean =
        (results.iter().map(|r| r.ratio.ln()).sum::<f64>() / results.len().max(1) as f64).exp();
    println!(
        "\nTPC-H SF{} — median of {runs} runs after 1 warm-up\n",
        args.sf
    );
    println!(
        "| query | DataFusion in-process (ms) | Loch over pg wire (ms) | Loch / DataFusion | rows | answers agree |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for r in &results {
        println!(
            "| q{} | {:.1} | {:.1} | {:.2} | {} | {} |",
            r.query,
            r.datafusion_ms,
            r.loch_ms,
            r.ratio,
            r.rows,
            if r.answers_agree { "yes" } else { "NO" }
        );
    }
    println!(
        "| **total** | {df_total:.1} | {loch_total:.1} | {:.2} | | |",
        loch_total / df_total
    );
    println!("| geomean | | | {geomean:.2} | | |");
    let report = Report {
        benchmark: "tpch",
        scale_factor: args.sf,
        runs,
        datafusion_total_ms: df_total,
        loch_total_ms: loch_total,
        total_ratio: loch_total / df_total,
        geomean_ratio: geomean,
        queries: results,
    };
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

/// The `loch local` process under test.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    fn start(bin: &Path, data_dir: &Path, sf: f64) -> Result<Server, BoxError> {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(bin)
            .arg("local")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--pg-addr",
                "127.0.0.1:0",
                "--sample-scale",
                &sf.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err("loch exited before it was ready".into());
            }
            if let Some(i) = line.find("-p ") {
                let port = line[i + 3..]
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("no port in the ready line")?;
                return Ok(Server { child, port });
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
