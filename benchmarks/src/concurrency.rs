//! Workload-management benchmarks: many BI sessions at once
//! (`concurrency`), memory-hungry TPC-H queries at once (`heavy`), and the
//! report of each Loch process's peak memory against `--memory-limit`
//! that `tpch` and `heavy` print.
//!
//! `concurrency` starts `loch local` with its result cache off and runs N
//! sessions over pg wire for a fixed time, each on its own connection, with
//! no pause between queries: most sessions mix point lookups and small
//! aggregates, a fixed share runs TPC-H queries. It reports per class of
//! query the count, the errors by SQLSTATE and the latency percentiles,
//! then the same mix run by one session as the reference. `heavy` runs
//! TPC-H's most memory-hungry queries all at once and checks that each
//! either answers right or is refused cleanly (53200), and that no Loch
//! process died.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loch_tests::oracle::{self, Cell};
use serde::Serialize;
use tokio_postgres::Client;

use crate::{BoxError, Caches, DEFAULT_CACHES, DataArgs, NO_CACHES, Server, peak_rss_mb};

mod heavy;

pub(crate) use heavy::{MemoryReport, child_pids, heavy, memory_report, print_memory};

/// What `loch local` is started with, beyond the data and the caches.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkloadArgs {
    /// Executor processes `loch local` runs (0 = single process).
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Memory Loch may use (`loch local --memory-limit`: 4GiB, 512MiB, 75%).
    #[arg(long)]
    memory_limit: Option<String>,
    /// Queries that run at once (`loch local --max-concurrent-queries`).
    #[arg(long)]
    max_concurrent_queries: Option<usize>,
    /// Queries that may wait in line (`loch local --max-queued-queries`).
    #[arg(long)]
    max_queued_queries: Option<usize>,
}

impl WorkloadArgs {
    /// The flags these add to `loch local`.
    fn flags(&self) -> Vec<String> {
        let mut flags = memory_limit_flags(self.memory_limit.as_deref());
        if let Some(n) = self.max_concurrent_queries {
            flags.extend(["--max-concurrent-queries".to_string(), n.to_string()]);
        }
        if let Some(n) = self.max_queued_queries {
            flags.extend(["--max-queued-queries".to_string(), n.to_string()]);
        }
        flags
    }
}

/// `loch local --memory-limit SIZE`, when a size is given.
pub(crate) fn memory_limit_flags(limit: Option<&str>) -> Vec<String> {
    limit
        .map(|size| vec!["--memory-limit".to_string(), size.to_string()])
        .unwrap_or_default()
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConcurrencyArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Sessions at once; repeat for several levels, run one after the
    /// other on the same server (`--sessions 64 --sessions 256`).
    #[arg(long, default_values_t = [64])]
    sessions: Vec<usize>,
    /// Seconds each level runs; queries under way at the end finish.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// One session in this many runs TPC-H queries (0 = none); the others
    /// run point lookups and small aggregates.
    #[arg(long, default_value_t = 8)]
    tpch_every: usize,
    /// TPC-H queries the TPC-H sessions run, in turn.
    #[arg(long = "tpch-query", default_values_t = [1, 3, 6, 12])]
    tpch_queries: Vec<usize>,
    /// MiB of each executor's data cache (`loch local`'s default; the
    /// result cache is always off).
    #[arg(long, default_value_t = DEFAULT_CACHES.data_mb)]
    data_cache_mb: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "concurrency-results.json")]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct HeavyArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// TPC-H queries to run (`--query 9 --query 21`).
    #[arg(long, default_values_t = [9, 13, 18, 21])]
    query: Vec<usize>,
    /// Copies of each query; all of them start at once, each on its own
    /// connection.
    #[arg(long, default_value_t = 2)]
    copies: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "heavy-results.json")]
    output: PathBuf,
}

/// The latency target: at this many sessions, point lookups and small
/// aggregates within it at the 99th percentile, and no error.
const TARGET_SESSIONS: usize = 64;
const TARGET_P99_MS: f64 = 100.0;

/// A peak RSS sum within the memory limit plus this share holds it.
const LIMIT_SLACK: f64 = 0.10;

/// How long a session waits after an error before its next query (a
/// refused query returns at once; without a pause a session would spin).
const ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The serial reference: point lookups, small aggregates, rounds of the
/// TPC-H queries.
const SERIAL_POINT: usize = 50;
const SERIAL_SMALL: usize = 30;
const SERIAL_TPCH_ROUNDS: usize = 2;

/// SQLSTATEs that say "not now" cleanly: out of memory, and the admission
/// queue full.
const CLEAN_REFUSALS: [&str; 2] = ["53200", "53000"];

/// The classes of query in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Point,
    Small,
    Tpch,
}

impl Class {
    const ALL: [Class; 3] = [Class::Point, Class::Small, Class::Tpch];

    fn name(self) -> &'static str {
        match self {
            Class::Point => "point",
            Class::Small => "small",
            Class::Tpch => "tpch",
        }
    }
}

/// One query of the mix, as a session sends it (tokio-postgres' unnamed
/// statement: Parse/Describe, then Bind/Execute).
struct Query {
    class: Class,
    sql: String,
    param: Option<i64>,
}

/// xorshift64*: random keys, reproducible per session.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// The queries sessions draw from.
struct Mix {
    /// Rows of `tpch.orders`: order keys are dbgen's sparse keys of
    /// 1..=orders.
    orders: u64,
    tpch: Vec<(usize, String)>,
}

impl Mix {
    /// A lookup of an order that exists.
    fn point(&self, rng: &mut Rng) -> Query {
        let index = 1 + rng.below(self.orders) as i64;
        // tpchgen's `make_order_key`: 8 keys used of every 32.
        let key = ((index >> 3) << 5) + (index & 7);
        Query {
            class: Class::Point,
            sql: "SELECT * FROM tpch.orders WHERE o_orderkey = $1".to_string(),
            param: Some(key),
        }
    }

    /// One of three small aggregates: a month of orders by status, a
    /// nation's customers by segment, the nations.
    fn small(&self, rng: &mut Rng, variant: u64) -> Query {
        let (sql, param) = match variant % 3 {
            0 => {
                // Orders run from 1992-01 to 1998-08.
                let month = rng.below(79);
                let (year, m) = (1992 + month / 12, 1 + month % 12);
                let (next_year, next) = if m == 12 {
                    (year + 1, 1)
                } else {
                    (year, m + 1)
                };
                (
                    format!(
                        "SELECT o_orderstatus, count(*) FROM tpch.orders \
                         WHERE o_orderdate >= DATE '{year}-{m:02}-01' \
                         AND o_orderdate < DATE '{next_year}-{next:02}-01' GROUP BY 1"
                    ),
                    None,
                )
            }
            1 => (
                "SELECT c_mktsegment, count(*), avg(c_acctbal) FROM tpch.customer \
                 WHERE c_nationkey = $1 GROUP BY 1"
                    .to_string(),
                Some(rng.below(25) as i64),
            ),
            _ => ("SELECT count(*) FROM tpch.nation".to_string(), None),
        };
        Query {
            class: Class::Small,
            sql,
            param,
        }
    }

    /// What a BI session runs next: a point lookup or a small aggregate,
    /// half and half.
    fn bi(&self, rng: &mut Rng) -> Query {
        if rng.below(2) == 0 {
            self.point(rng)
        } else {
            let variant = rng.below(3);
            self.small(rng, variant)
        }
    }

    fn tpch(&self, i: usize) -> Query {
        let (_, sql) = &self.tpch[i % self.tpch.len().max(1)];
        Query {
            class: Class::Tpch,
            sql: sql.clone(),
            param: None,
        }
    }
}

/// What one class of query got: latencies of the answered ones, errors by
/// SQLSTATE (with the first message of each).
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, (u64, String)>,
    /// Answers with no row (a point lookup that found nothing).
    empty: u64,
}

impl Tally {
    fn error(&mut self, code: String, message: String) {
        self.errors.entry(code).or_insert((0, message)).0 += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (code, (n, message)) in other.errors {
            self.errors.entry(code).or_insert((0, message)).0 += n;
        }
        self.empty += other.empty;
    }

    fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }
}

/// One tally per class, indexed by `Class as usize`.
type Tallies = [Tally; 3];

/// The SQLSTATE of a failed query, or what stands for it when the server
/// sent none.
fn sqlstate(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => code.code().to_string(),
        None if e.is_closed() => "connection closed".to_string(),
        None => "no SQLSTATE".to_string(),
    }
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Runs `query`, its latency or error going to `tallies`; whether it was
/// answered.
async fn run_query(client: &Client, query: &Query, tallies: &mut Tallies) -> bool {
    let tally = &mut tallies[query.class as usize];
    let start = Instant::now();
    let result = match &query.param {
        Some(p) => client.query(query.sql.as_str(), &[p]).await,
        None => client.query(query.sql.as_str(), &[]).await,
    };
    match result {
        Ok(rows) => {
            tally.latencies.push(start.elapsed());
            if rows.is_empty() {
                tally.empty += 1;
            }
            true
        }
        Err(e) => {
            tally.error(sqlstate(&e), message(&e));
            false
        }
    }
}

/// One session: until `deadline`, BI queries or (`tpch_turn`) the TPC-H
/// queries in turn, from the given one.
async fn session(
    client: Client,
    mix: Arc<Mix>,
    tpch_turn: Option<usize>,
    seed: u64,
    deadline: Instant,
) -> Tallies {
    let mut tallies = Tallies::default();
    let mut rng = Rng::new(seed);
    let mut i = 0;
    while Instant::now() < deadline && !client.is_closed() {
        let query = match tpch_turn {
            Some(first) => mix.tpch(first + i),
            None => mix.bi(&mut rng),
        };
        i += 1;
        if !run_query(&client, &query, &mut tallies).await {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
    tallies
}

/// Latency percentiles and error counts of one class.
#[derive(Debug, Serialize)]
struct ClassStats {
    class: &'static str,
    queries: usize,
    errors: u64,
    errors_by_sqlstate: BTreeMap<String, u64>,
    /// Answers with no row.
    empty_answers: u64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    queries_per_s: f64,
}

/// The `p`th percentile (nearest rank) of `sorted`, in ms.
fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .map(|d| d.as_secs_f64() * 1000.0)
}

fn class_stats(class: Class, tally: &mut Tally, elapsed: Duration) -> ClassStats {
    tally.latencies.sort();
    let l = &tally.latencies;
    ClassStats {
        class: class.name(),
        queries: l.len(),
        errors: tally.error_count(),
        errors_by_sqlstate: tally
            .errors
            .iter()
            .map(|(code, (n, _))| (code.clone(), *n))
            .collect(),
        empty_answers: tally.empty,
        p50_ms: percentile_ms(l, 50.0),
        p95_ms: percentile_ms(l, 95.0),
        p99_ms: percentile_ms(l, 99.0),
        queries_per_s: l.len() as f64 / elapsed.as_secs_f64().max(1e-9),
    }
}

/// `system.admission`'s counters (None when the server has none).
#[derive(Debug, Clone, Copy, Serialize)]
struct Admission {
    max_running: i64,
    max_queued: i64,
    admitted: i64,
    refused: i64,
}

async fn admission(client: &Client) -> Option<Admission> {
    let row = client
        .query_one(
            "SELECT max_running, max_queued, admitted, refused FROM system.admission",
            &[],
        )
        .await
        .ok()?;
    Some(Admission {
        max_running: row.try_get(0).ok()?,
        max_queued: row.try_get(1).ok()?,
        admitted: row.try_get(2).ok()?,
        refused: row.try_get(3).ok()?,
    })
}

#[derive(Debug, Serialize)]
struct Level {
    sessions: usize,
    tpch_sessions: usize,
    /// Sessions that could not connect, by SQLSTATE.
    connect_errors: BTreeMap<String, u64>,
    /// From the start until the last session's last query ended.
    elapsed_s: f64,
    queries: usize,
    errors: u64,
    queries_per_s: f64,
    classes: Vec<ClassStats>,
    /// The admission queue's counters over the level (this benchmark's
    /// own queries of `system.admission` included).
    admitted: Option<i64>,
    refused: Option<i64>,
    max_running: Option<i64>,
    max_queued: Option<i64>,
    /// At [`TARGET_SESSIONS`] sessions: p99 of point and small within
    /// [`TARGET_P99_MS`] and no error.
    target_met: Option<bool>,
    /// First message of each SQLSTATE.
    error_messages: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct ConcurrencyReport {
    benchmark: &'static str,
    scale_factor: f64,
    executors: usize,
    loch_local_flags: Vec<String>,
    data_cache_mb: u64,
    duration_s: u64,
    tpch_every: usize,
    tpch_queries: Vec<usize>,
    levels: Vec<Level>,
    serial: Vec<ClassStats>,
}

/// Runs `sessions` sessions at once for `duration`.
async fn run_level(
    server: &Server,
    monitor: &Client,
    mix: &Arc<Mix>,
    sessions: usize,
    tpch_every: usize,
    duration: Duration,
) -> Result<Level, BoxError> {
    eprintln!("{sessions} sessions: connecting");
    let connects = (0..sessions).map(|_| server.pg_client("options='-c search_path=tpch'"));
    let clients = futures::future::join_all(connects).await;
    let before = admission(monitor).await;
    eprintln!("{sessions} sessions: running for {} s", duration.as_secs());
    let start = Instant::now();
    let deadline = start + duration;
    let mut connect_errors = BTreeMap::new();
    let mut error_messages = BTreeMap::new();
    let mut tasks = Vec::new();
    let mut tpch_sessions = 0;
    for (i, client) in clients.into_iter().enumerate() {
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                let (code, text) = match e.downcast_ref::<tokio_postgres::Error>() {
                    Some(e) => (sqlstate(e), message(e)),
                    None => ("no SQLSTATE".to_string(), e.to_string()),
                };
                *connect_errors.entry(code.clone()).or_insert(0) += 1;
                error_messages.entry(code).or_insert(text);
                continue;
            }
        };
        let tpch_turn = (tpch_every > 0 && i % tpch_every == tpch_every - 1).then(|| {
            tpch_sessions += 1;
            i / tpch_every
        });
        tasks.push(tokio::spawn(session(
            client,
            mix.clone(),
            tpch_turn,
            i as u64,
            deadline,
        )));
    }
    let mut tallies = Tallies::default();
    for task in futures::future::join_all(tasks).await {
        for (total, part) in tallies.iter_mut().zip(task?) {
            total.merge(part);
        }
    }
    let elapsed = start.elapsed();
    let after = admission(monitor).await;
    for tally in &tallies {
        for (code, (_, text)) in &tally.errors {
            error_messages
                .entry(code.clone())
                .or_insert_with(|| text.clone());
        }
    }
    let classes: Vec<ClassStats> = Class::ALL
        .iter()
        .zip(tallies.iter_mut())
        .map(|(class, tally)| class_stats(*class, tally, elapsed))
        .collect();
    let queries = classes.iter().map(|c| c.queries).sum::<usize>();
    let errors =
        classes.iter().map(|c| c.errors).sum::<u64>() + connect_errors.values().sum::<u64>();
    let target_met = (sessions == TARGET_SESSIONS).then(|| {
        errors == 0
            && classes[..2]
                .iter()
                .all(|c| c.p99_ms.is_some_and(|p| p < TARGET_P99_MS))
    });
    Ok(Level {
        sessions,
        tpch_sessions,
        connect_errors,
        elapsed_s: elapsed.as_secs_f64(),
        queries,
        errors,
        queries_per_s: queries as f64 / elapsed.as_secs_f64().max(1e-9),
        classes,
        admitted: before.zip(after).map(|(b, a)| a.admitted - b.admitted),
        refused: before.zip(after).map(|(b, a)| a.refused - b.refused),
        max_running: after.map(|a| a.max_running),
        max_queued: after.map(|a| a.max_queued),
        target_met,
        error_messages,
    })
}

/// The same mix in one session: each class's latencies alone.
async fn serial(client: &Client, mix: &Mix) -> Vec<ClassStats> {
    let mut tallies = Tallies::default();
    let mut rng = Rng::new(u64::MAX - 1);
    let start = Instant::now();
    for _ in 0..SERIAL_POINT {
        run_query(client, &mix.point(&mut rng), &mut tallies).await;
    }
    for i in 0..SERIAL_SMALL {
        run_query(client, &mix.small(&mut rng, i as u64), &mut tallies).await;
    }
    for i in 0..SERIAL_TPCH_ROUNDS * mix.tpch.len() {
        run_query(client, &mix.tpch(i), &mut tallies).await;
    }
    let elapsed = start.elapsed();
    Class::ALL
        .iter()
        .zip(tallies.iter_mut())
        .map(|(class, tally)| class_stats(*class, tally, elapsed))
        .collect()
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn print_level(level: &Level, serial: &[ClassStats], tpch_queries: &[usize]) {
    let names: Vec<String> = tpch_queries.iter().map(|n| format!("q{n}")).collect();
    println!(
        "\n### {} sessions ({} running TPC-H {}): {:.1} s, {} queries, {:.1} queries/s, {} errors\n",
        level.sessions,
        level.tpch_sessions,
        names.join(", "),
        level.elapsed_s,
        level.queries,
        level.queries_per_s,
        level.errors
    );
    println!(
        "| class | queries | errors | p50 (ms) | p95 (ms) | p99 (ms) | serial p50 (ms) | serial p99 (ms) | p99 / serial p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (c, s) in level.classes.iter().zip(serial) {
        let ratio = c
            .p99_ms
            .zip(s.p99_ms)
            .map_or_else(|| "-".to_string(), |(c, s)| format!("{:.2}", c / s));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {ratio} |",
            c.class,
            c.queries,
            c.errors,
            ms(c.p50_ms),
            ms(c.p95_ms),
            ms(c.p99_ms),
            ms(s.p50_ms),
            ms(s.p99_ms),
        );
    }
    let mut errors: Vec<String> = level
        .connect_errors
        .iter()
        .map(|(code, n)| format!("connect {code} × {n}"))
        .collect();
    for c in &level.classes {
        errors.extend(
            c.errors_by_sqlstate
                .iter()
                .map(|(code, n)| format!("{} {code} × {n}", c.class)),
        );
    }
    if errors.is_empty() {
        println!("\nerrors: none");
    } else {
        println!("\nerrors by SQLSTATE: {}", errors.join(", "));
        for (code, text) in &level.error_messages {
            println!("  {code}: {text}");
        }
    }
    let empty: u64 = level.classes[0].empty_answers;
    if empty > 0 {
        println!("point lookups that found no order: {empty} (the key formula is off)");
    }
    if let (Some(admitted), Some(refused), Some(running), Some(queued)) = (
        level.admitted,
        level.refused,
        level.max_running,
        level.max_queued,
    ) {
        println!(
            "admission (system.admission): {running} running at most, {queued} may wait; {admitted} admitted, {refused} refused during the level"
        );
    }
    match level.target_met {
        Some(met) => println!(
            "target ({TARGET_SESSIONS} sessions: p99 of point and small < {TARGET_P99_MS} ms, 0 errors): {} (point p99 {} ms, small p99 {} ms, {} errors)",
            if met { "PASS" } else { "MISS" },
            ms(level.classes[0].p99_ms),
            ms(level.classes[1].p99_ms),
            level.errors
        ),
        None => println!("(the target is stated for {TARGET_SESSIONS} sessions)"),
    }
}

/// `loch-benchmarks concurrency`.
pub(crate) async fn concurrency(args: ConcurrencyArgs) -> Result<(), BoxError> {
    let (_, bin) = args.data.prepare()?;
    let flags = args.workload.flags();
    let server = Server::start_with(
        &bin,
        &args.data.data_dir,
        args.data.sf,
        args.workload.executors,
        Caches {
            result_mb: 0,
            data_mb: args.data_cache_mb,
        },
        &flags,
    )?;
    let monitor = server.pg_client("").await?;
    let orders: i64 = monitor
        .query_one("SELECT count(*) FROM tpch.orders", &[])
        .await?
        .try_get(0)?;
    let mix = Arc::new(Mix {
        orders: u64::try_from(orders)?,
        tpch: args
            .tpch_queries
            .iter()
            .map(|&n| (n, loch_tests::tpch_query(n)))
            .collect(),
    });
    // The serial reference first: it is also what a warehouse has seen
    // before the rush (Loch's fast lane knows query shapes from their
    // earlier runs).
    eprintln!("serial reference: one session");
    let serial_client = server.pg_client("options='-c search_path=tpch'").await?;
    let serial = serial(&serial_client, &mix).await;
    let duration = Duration::from_secs(args.duration_secs.max(1));
    let mut levels = Vec::new();
    for &sessions in &args.sessions {
        let level = run_level(
            &server,
            &monitor,
            &mix,
            sessions.max(1),
            args.tpch_every,
            duration,
        )
        .await?;
        eprintln!(
            "{sessions} sessions: {} queries, {} errors",
            level.queries, level.errors
        );
        levels.push(level);
    }
    drop(server);

    println!(
        "\nConcurrency at SF{}: {} executors, result cache off, data cache {} MiB per executor, {} s per level{}",
        args.data.sf,
        args.workload.executors,
        args.data_cache_mb,
        duration.as_secs(),
        if flags.is_empty() {
            String::new()
        } else {
            format!(", loch local {}", flags.join(" "))
        }
    );
    println!(
        "\nSerial reference (one session: {SERIAL_POINT} point lookups, {SERIAL_SMALL} small aggregates, each TPC-H query {SERIAL_TPCH_ROUNDS} times)\n"
    );
    println!("| class | queries | errors | p50 (ms) | p95 (ms) | p99 (ms) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for s in &serial {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            s.class,
            s.queries,
            s.errors,
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms)
        );
    }
    for level in &levels {
        print_level(level, &serial, &args.tpch_queries);
    }
    let report = ConcurrencyReport {
        benchmark: "concurrency",
        scale_factor: args.data.sf,
        executors: args.workload.executors,
        loch_local_flags: flags,
        data_cache_mb: args.data_cache_mb,
        duration_s: duration.as_secs(),
        tpch_every: args.tpch_every,
        tpch_queries: args.tpch_queries,
        levels,
        serial,
    };
    std::fs::write(&args.output, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
