//! `heavy`: TPC-H's most memory-hungry queries all at once under a memory
//! limit, and the report of each Loch process's peak memory against its
//! share of `--memory-limit` that `tpch` and `heavy` print.

use super::*;

#[derive(Debug, Serialize)]
struct HeavyQuery {
    query: usize,
    copy: usize,
    /// "answered", "wrong answer" or "failed".
    outcome: &'static str,
    sqlstate: Option<String>,
    message: Option<String>,
    ms: f64,
    rows: usize,
    /// Answered right, or refused cleanly (53200, 53000).
    acceptable: bool,
}

#[derive(Debug, Serialize)]
struct HeavyReport {
    benchmark: &'static str,
    scale_factor: f64,
    executors: usize,
    loch_local_flags: Vec<String>,
    queries: Vec<HeavyQuery>,
    pids_before: Vec<u32>,
    pids_after: Vec<u32>,
    /// Every process of before alive afterwards, and no other.
    processes_kept: bool,
    coordinator_answers: bool,
    memory: MemoryReport,
    passed: bool,
}

/// `loch-benchmarks heavy`: false when an answer was wrong.
pub(crate) async fn heavy(args: HeavyArgs) -> Result<bool, BoxError> {
    let (sample_dir, bin) = args.data.prepare()?;
    // The oracle's answers first, so that it does not compete with Loch.
    let mut expected: BTreeMap<usize, Vec<Vec<Cell>>> = BTreeMap::new();
    {
        let ctx = oracle::tpch_context(&sample_dir).await;
        for &n in &args.query {
            eprintln!("q{n}: the oracle's answer (in-process DataFusion)");
            let batches = ctx.sql(&loch_tests::tpch_query(n)).await?.collect().await?;
            expected.insert(n, oracle::arrow_rows(&batches));
        }
    }
    let flags = args.workload.flags();
    let server = Server::start_with(
        &bin,
        &args.data.data_dir,
        args.data.sf,
        args.workload.executors,
        NO_CACHES,
        &flags,
    )?;
    let pids_before = server.pids();
    let monitor = server.pg_client("").await?;
    let mut runs = Vec::new();
    for &n in &args.query {
        for copy in 0..args.copies.max(1) {
            let client = server.pg_client("options='-c search_path=tpch'").await?;
            runs.push((n, copy, client));
        }
    }
    eprintln!("running {} queries at once", runs.len());
    let results = futures::future::join_all(runs.iter().map(|(n, _, client)| async move {
        let sql = loch_tests::tpch_query(*n);
        let start = Instant::now();
        let result = client.query(sql.as_str(), &[]).await;
        (sql, start.elapsed(), result)
    }))
    .await;
    let mut queries = Vec::new();
    let mut all_right = true;
    for ((n, copy, _), (sql, elapsed, result)) in runs.iter().zip(results) {
        let mut q = HeavyQuery {
            query: *n,
            copy: *copy,
            outcome: "answered",
            sqlstate: None,
            message: None,
            ms: elapsed.as_secs_f64() * 1000.0,
            rows: 0,
            acceptable: true,
        };
        match result {
            Ok(rows) => {
                q.rows = rows.len();
                let want = expected.get(n).map(Vec::as_slice).unwrap_or_default();
                if let Err(e) =
                    oracle::compare(want, &oracle::pg_rows(&rows), oracle::is_ordered(&sql))
                {
                    q.outcome = "wrong answer";
                    q.message = Some(e);
                    q.acceptable = false;
                    all_right = false;
                }
            }
            Err(e) => {
                let code = sqlstate(&e);
                q.outcome = "failed";
                q.acceptable = CLEAN_REFUSALS.contains(&code.as_str());
                q.sqlstate = Some(code);
                q.message = Some(message(&e));
            }
        }
        queries.push(q);
    }
    let pids_after = server.pids();
    let processes_kept = pids_before == pids_after && pids_after.iter().all(|p| alive(*p));
    let coordinator_answers = match server.pg_client("").await {
        Ok(client) => client.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    };
    let memory = memory_report(&server, &monitor).await;
    drop(server);

    let passed = queries.iter().all(|q| q.acceptable) && processes_kept && coordinator_answers;
    println!(
        "\nHeavy queries at SF{}: {} at once, {} executors{}\n",
        args.data.sf,
        queries.len(),
        args.workload.executors,
        if flags.is_empty() {
            String::new()
        } else {
            format!(", loch local {}", flags.join(" "))
        }
    );
    println!("| query | copy | outcome | SQLSTATE | ms | rows |");
    println!("|---|---:|---|---|---:|---:|");
    for q in &queries {
        println!(
            "| q{} | {} | {} | {} | {:.0} | {} |",
            q.query,
            q.copy + 1,
            q.outcome,
            q.sqlstate.as_deref().unwrap_or(""),
            q.ms,
            q.rows
        );
    }
    for q in queries.iter().filter(|q| q.outcome != "answered") {
        if let Some(m) = &q.message {
            println!("q{} copy {}: {m}", q.query, q.copy + 1);
        }
    }
    println!(
        "\nLoch processes before {pids_before:?}, after {pids_after:?}: {}; the coordinator {}",
        if processes_kept {
            "all alive, same pids"
        } else {
            "NOT the same"
        },
        if coordinator_answers {
            "answers"
        } else {
            "does NOT answer"
        }
    );
    print_memory(&memory, args.workload.memory_limit.as_deref());
    println!(
        "\nverdict (each query answered right or refused with {}; every process alive with its pid): {}",
        CLEAN_REFUSALS.join("/"),
        if passed { "PASS" } else { "MISS" }
    );
    let report = HeavyReport {
        benchmark: "heavy",
        scale_factor: args.data.sf,
        executors: args.workload.executors,
        loch_local_flags: flags,
        queries,
        pids_before,
        pids_after,
        processes_kept,
        coordinator_answers,
        memory,
        passed,
    };
    std::fs::write(&args.output, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", args.output.display());
    Ok(all_right)
}

/// The processes whose parent is `pid`, from every process's
/// `/proc/<p>/stat` (`/proc/<pid>/task/*/children` needs a kernel option
/// not every kernel has).
pub(crate) fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| {
            let p: u32 = entry.file_name().to_str()?.parse().ok()?;
            let (_, ppid) = state_and_parent(p)?;
            (ppid == pid).then_some(p)
        })
        .collect();
    children.sort_unstable();
    children
}

/// A process's state letter and parent, from `/proc/<pid>/stat` (after the
/// command name, which may hold spaces and parentheses).
fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Running or sleeping: not gone, not a zombie.
fn alive(pid: u32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// One Loch process's peak resident set and its limit.
#[derive(Debug, Serialize)]
pub(crate) struct ProcessMemory {
    process: String,
    pid: u32,
    /// VmHWM (None: the process is gone).
    peak_rss_mib: Option<f64>,
    /// Its limit as `system.memory` shows it.
    limit_mib: Option<f64>,
}

/// Each Loch process's peak RSS, and their sum against the limit.
#[derive(Debug, Serialize)]
pub(crate) struct MemoryReport {
    processes: Vec<ProcessMemory>,
    peak_rss_sum_mib: f64,
    /// The sum of the processes' limits (what `--memory-limit` gives, as
    /// Loch divided it); None when a process has no row in
    /// `system.memory`.
    limit_mib: Option<f64>,
    /// Peak sum at most the limit plus [`LIMIT_SLACK`].
    limit_holds: Option<bool>,
}

/// Every Loch process's high-water mark (VmHWM, exact where sampling
/// VmRSS could miss a peak), with its limit from `system.memory`.
pub(crate) async fn memory_report(server: &Server, client: &Client) -> MemoryReport {
    let rows = client
        .query("SELECT process, pid, limit_bytes FROM system.memory", &[])
        .await
        .unwrap_or_default();
    let limits: BTreeMap<i64, (String, i64)> = rows
        .iter()
        .filter_map(|r| {
            let pid: i64 = r.try_get(1).ok()?;
            Some((pid, (r.try_get(0).ok()?, r.try_get(2).ok()?)))
        })
        .collect();
    let coordinator = server.child.id();
    let processes: Vec<ProcessMemory> = server
        .pids()
        .into_iter()
        .map(|pid| {
            let known = limits.get(&i64::from(pid));
            let process = match known {
                Some((name, _)) if pid == coordinator => name.clone(),
                Some((name, _)) => format!("executor {name}"),
                None if pid == coordinator => "coordinator".to_string(),
                None => "executor".to_string(),
            };
            ProcessMemory {
                process,
                pid,
                peak_rss_mib: peak_rss_mb(pid),
                limit_mib: known.map(|(_, bytes)| *bytes as f64 / (1 << 20) as f64),
            }
        })
        .collect();
    let peak_rss_sum_mib = processes.iter().filter_map(|p| p.peak_rss_mib).sum();
    let limit_mib = processes.iter().map(|p| p.limit_mib).sum::<Option<f64>>();
    MemoryReport {
        limit_holds: limit_mib.map(|limit| peak_rss_sum_mib <= limit * (1.0 + LIMIT_SLACK)),
        processes,
        peak_rss_sum_mib,
        limit_mib,
    }
}

/// The per-process table and the verdict; `flag`: the `--memory-limit`
/// given, if any.
pub(crate) fn print_memory(report: &MemoryReport, flag: Option<&str>) {
    println!(
        "\nmemory of Loch's processes: peak RSS (VmHWM) against each one's limit in system.memory\n"
    );
    let mib = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    let ratio = |peak: Option<f64>, limit: Option<f64>| {
        peak.zip(limit)
            .map_or_else(|| "-".to_string(), |(p, l)| format!("{:.2}", p / l))
    };
    println!("| process | pid | peak RSS (MiB) | limit (MiB) | peak / limit |");
    println!("|---|---:|---:|---:|---:|");
    for p in &report.processes {
        let peak = p
            .peak_rss_mib
            .map_or_else(|| "gone".to_string(), |v| format!("{v:.0}"));
        println!(
            "| {} | {} | {peak} | {} | {} |",
            p.process,
            p.pid,
            mib(p.limit_mib),
            ratio(p.peak_rss_mib, p.limit_mib)
        );
    }
    let sum = Some(report.peak_rss_sum_mib);
    println!(
        "| **sum** | | {} | {} | {} |",
        mib(sum),
        mib(report.limit_mib),
        ratio(sum, report.limit_mib)
    );
    let source = flag.map_or_else(
        || "loch local's default limit".to_string(),
        |size| format!("--memory-limit {size}"),
    );
    match report.limit_holds {
        Some(holds) => println!(
            "\n{source}: the sum of peaks {} the limit + {:.0} % ({})",
            if holds { "is within" } else { "EXCEEDS" },
            LIMIT_SLACK * 100.0,
            if holds { "holds" } else { "MISS" }
        ),
        None => println!("\n{source}: not every process is in system.memory, no verdict"),
    }
}
