//! Where file scans run: rendezvous hashing of file chunks over the live
//! executors, so the same chunk of the same file goes to the same executor
//! query after query (its caches depend on it), and when an executor joins
//! or leaves only the chunks whose best executor changed move (about 1/N).
//!
//! datafusion-distributed asks how many tasks a scan stage gets
//! ([`scan_tasks`] answers from the bytes of the columns it reads); these
//! two handlers replace its round-robin split of files over tasks and its
//! random routing of tasks to workers:
//!
//! - [`scale_up`] cuts the scan into chunks (files, or byte ranges of big
//!   files, as DataFusion's own file repartitioning would), gives each chunk
//!   its rendezvous home among the live executors, and builds one scan per
//!   task from the chunks homed on that task's executor.
//! - [`route`] sends task `i` to that executor. It recomputes the same
//!   assignment from the chunks in the plan and the executors live at that
//!   moment, so nothing has to be remembered between the two.
//!
//! When a stage has fewer tasks than there are live executors, the tasks go
//! to the executors that are home to the most bytes, and chunks homed
//! elsewhere are placed by rendezvous among those.

use std::sync::Arc;

use datafusion::catalog::memory::DataSourceExec;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileGroupPartitioner, FileScanConfig};
use datafusion::error::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{Distribution, ExecutionPlan, ExecutionPlanProperties};
use datafusion_distributed::{
    BroadcastExec, DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedConfig,
    DistributedExec, DistributedGetterExt, DistributedLeafExec, NetworkBoundaryExt,
    NetworkCoalesceExec, RouteTasksEvent, RouteTasksEventResponse, ScaleUpLeafNodeEvent,
    ScaleUpLeafNodeEventResponse,
};
use url::Url;

/// Splits a file scan over `ev.task_count` tasks by rendezvous placement.
pub fn scale_up(ev: ScaleUpLeafNodeEvent) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let scan = file_scan(ev.plan)?;
    // Partitioned or ordered scans keep datafusion-distributed's own split,
    // which preserves those properties.
    if scan.output_partitioning.is_some() || !scan.output_ordering.is_empty() {
        return None;
    }
    let urls = ev
        .session_config
        .get_distributed_worker_resolver()
        .ok()?
        .get_urls()
        .ok()?;
    if urls.is_empty() || ev.task_count < 2 {
        return None;
    }
    let partitions = ev.plan.output_partitioning().partition_count().max(1);
    let groups = FileGroupPartitioner::new()
        .with_target_partitions(partitions * ev.task_count)
        .with_repartition_file_min_size(0)
        .repartition_file_groups(&scan.file_groups)
        .unwrap_or_else(|| scan.file_groups.clone());
    let chunks: Vec<PartitionedFile> = groups.iter().flat_map(|g| g.iter().cloned()).collect();
    let (per_task, _) = assign(&chunks, &urls, ev.task_count);
    let variants = per_task.into_iter().map(|chunks| {
        let mut variant = scan.clone();
        variant.file_groups = balance(chunks, partitions);
        DataSourceExec::from_data_source(variant) as Arc<dyn ExecutionPlan>
    });
    Some(
        DistributedLeafExec::try_new(Arc::clone(ev.plan), variants)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

/// Routes the tasks of a stage whose leaf [`scale_up`] built.
pub fn route(ev: RouteTasksEvent) -> Option<Result<RouteTasksEventResponse>> {
    let chunks = leaf_chunks(ev.plan, ev.task_count)?;
    let urls = match ev
        .task_ctx
        .session_config()
        .get_distributed_worker_resolver()
        .and_then(|r| r.get_urls())
    {
        Ok(urls) if !urls.is_empty() => urls,
        Ok(_) => return None,
        Err(e) => return Some(Err(e)),
    };
    let (_, task_urls) = assign(&chunks, &urls, ev.task_count);
    Some(Ok(RouteTasksEventResponse::new(task_urls)))
}

/// A distributed plan cut for Flight SQL's direct endpoints: one plan per
/// scan task, and the executor that task is placed on (the same placement
/// as [`route`]). `None` unless the plan is one stage of scan tasks that
/// the coordinator only gathers, through operators that work row by row
/// (projections), so the tasks' rows, read side by side, are the answer.
/// Tasks whose scans got no files are left out.
pub fn direct_tasks(
    plan: &Arc<dyn ExecutionPlan>,
    urls: &[Url],
) -> Option<Vec<(Url, Arc<dyn ExecutionPlan>)>> {
    let mut node = Arc::clone(*plan.downcast_ref::<DistributedExec>()?.children().first()?);
    // The coordinator's part above the gather: kept on every task's plan.
    let mut head = Vec::new();
    while !node.is_network_boundary() {
        let row_by_row = node.is::<ProjectionExec>()
            || node.is::<CoalescePartitionsExec>()
            || node.name() == "CoalesceBatchesExec";
        if !row_by_row || node.fetch().is_some() || node.children().len() != 1 {
            return None;
        }
        head.push(Arc::clone(&node));
        node = Arc::clone(*node.children().first()?);
    }
    if !node.is::<NetworkCoalesceExec>() || node.fetch().is_some() {
        return None;
    }
    let stage = node.as_network_boundary()?.input_stage();
    let tasks = stage.task_count();
    let local = stage.local_plan()?;
    let chunks = leaf_chunks(local, tasks)?;
    if urls.is_empty() {
        return None;
    }
    let (_, task_urls) = assign(&chunks, urls, tasks);
    let mut out = Vec::with_capacity(tasks);
    for (task, url) in task_urls.into_iter().enumerate() {
        let mut plan = Arc::clone(local)
            .transform_down(|node| {
                Ok(match node.downcast_ref::<DistributedLeafExec>() {
                    Some(leaf) => leaf
                        .variants()
                        .get(task)
                        .map(|variant| {
                            Transformed::new(Arc::clone(variant), true, TreeNodeRecursion::Jump)
                        })
                        .unwrap_or(Transformed::no(node)),
                    None => Transformed::no(node),
                })
            })
            .ok()?
            .data;
        // Anything else of datafusion-distributed's needs a worker's task
        // context: such plans stay on the usual path.
        let standalone = !plan
            .exists(|node| {
                Ok(node.is_network_boundary()
                    || node.is::<DistributedLeafExec>()
                    || node.is::<DistributedExec>()
                    || node.is::<BroadcastExec>()
                    || matches!(node.name(), "ChildrenIsolatorUnionExec" | "SamplerExec"))
            })
            .unwrap_or(true);
        if !standalone {
            return None;
        }
        // A task placement gave no file reads nothing: no endpoint for it
        // (an empty stream costs the client a connection and a call).
        let reads_nothing = !plan
            .exists(|node| {
                Ok(node.children().is_empty()
                    && file_scan(node)
                        .is_none_or(|scan| scan.file_groups.iter().any(|g| !g.is_empty())))
            })
            .unwrap_or(true);
        if reads_nothing {
            continue;
        }
        for above in head.iter().rev() {
            plan = Arc::clone(above)
                .replace_children(
                    vec![plan],
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )
                .ok()?;
        }
        out.push((url, plan));
    }
    Some(out)
}

/// For `EXPLAIN`: each stage of a distributed plan, its task count, and the
/// executors its tasks go to with the executors live now (scan stages), or
/// that they are chosen when the query runs (the others: beside their
/// input, or round robin).
pub fn describe(plan: &Arc<dyn ExecutionPlan>, urls: &[Url]) -> Vec<String> {
    fn walk(plan: &Arc<dyn ExecutionPlan>, urls: &[Url], out: &mut Vec<(usize, String)>) {
        if let Some(boundary) = plan.as_network_boundary() {
            let stage = boundary.input_stage();
            let tasks = stage.task_count();
            let placed = match stage.local_plan() {
                Some(local) => {
                    leaf_chunks(local, tasks)
                        .filter(|_| !urls.is_empty())
                        .map(|chunks| {
                            let (_, task_urls) = assign(&chunks, urls, tasks);
                            task_urls
                                .iter()
                                .enumerate()
                                .map(|(i, u)| format!("t{i}={u}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                }
                None => None,
            };
            let placed = placed.unwrap_or_else(|| "executors chosen when the query runs".into());
            out.push((
                stage.num(),
                format!("Stage {}: {tasks} task(s): {placed}", stage.num()),
            ));
            if let Some(local) = stage.local_plan() {
                walk(local, urls, out);
            }
            return;
        }
        for child in plan.children() {
            walk(child, urls, out);
        }
    }
    let mut stages = Vec::new();
    walk(plan, urls, &mut stages);
    stages.sort_by_key(|(num, _)| *num);
    stages.dedup_by_key(|(num, _)| *num);
    stages.into_iter().map(|(_, line)| line).collect()
}

/// The chunks of the placed file scan in a stage's plan (not looking into
/// other stages), when it has one variant per task.
fn leaf_chunks(plan: &Arc<dyn ExecutionPlan>, task_count: usize) -> Option<Vec<PartitionedFile>> {
    let mut chunks = None;
    let _ = plan.apply(|node| {
        if node.is_network_boundary() {
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Some(leaf) = node.downcast_ref::<DistributedLeafExec>()
            && file_scan(leaf.original()).is_some()
            && leaf.variants().len() == task_count
        {
            let mut all = Vec::new();
            for variant in leaf.variants() {
                if let Some(scan) = file_scan(variant) {
                    all.extend(scan.file_groups.iter().flat_map(|g| g.iter().cloned()));
                }
            }
            chunks = Some(all);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    chunks
}

/// One task for an operator that needs all of its input in one partition
/// (a `Single`/`Final` aggregate, a global limit, an unpartitioned window).
///
/// datafusion-distributed cuts stages only at repartitions, broadcasts and
/// merges. With `target_partitions = 1` DataFusion plans no merge below such
/// an operator (its input already has one partition), so without this the
/// crate may give its stage several tasks, each seeing part of the input
/// (found by the config grid test: TPC-H q15 lost its row). Joins are left
/// to the crate, which broadcasts their build side.
pub fn single_partition_input(
    ev: DesiredTaskCountEvent,
) -> Option<Result<DesiredTaskCountEventResponse>> {
    let plan = ev.plan;
    if plan.is::<HashJoinExec>() || plan.is::<NestedLoopJoinExec>() || plan.is::<CrossJoinExec>() {
        return None;
    }
    plan.input_distribution_requirements()
        .into_per_child()
        .iter()
        .any(|d| matches!(d, Distribution::SinglePartition))
        .then(|| Ok(DesiredTaskCountEventResponse::maximum(1)))
}

/// How many tasks a file scan's stage wants: the bytes it reads over
/// `distributed.file_scan_config_bytes_per_partition`, per partition of a
/// task.
///
/// datafusion-distributed counts whole files. A scan reading two narrow
/// columns of a wide table (TPC-H q16 and q2 read `ps_partkey, ps_suppkey`
/// of partsupp, which is mostly `ps_comment`) then gets as many tasks as a
/// scan of every column, and pays a network stage for work one executor
/// does in milliseconds. This counts, per file, the share of its data in
/// the columns the scan reads (the files' column statistics, which
/// DataFusion collects when it plans), so only scans with enough to read
/// spread over executors.
pub fn scan_tasks(ev: DesiredTaskCountEvent) -> Option<Result<DesiredTaskCountEventResponse>> {
    let scan = file_scan(ev.plan)?;
    let per_partition = DistributedConfig::from_session_config(ev.session_config)
        .ok()?
        .file_scan_config_bytes_per_partition
        .max(1);
    let tasks = usize::try_from(scan_bytes(scan))
        .unwrap_or(usize::MAX)
        .div_ceil(per_partition)
        .div_ceil(ev.session_config.target_partitions().max(1));
    Some(Ok(DesiredTaskCountEventResponse::desired(tasks.max(1))))
}

/// The bytes a file scan reads: each chunk's byte range, times the share
/// of its file's data in the projected columns when the file's statistics
/// know the columns' sizes.
fn scan_bytes(scan: &FileScanConfig) -> u64 {
    let columns = scan.file_source().projection().map(|p| p.column_indices());
    scan.file_groups
        .iter()
        .flat_map(|group| group.iter())
        .map(|file| {
            let share = columns
                .as_deref()
                .zip(file.statistics.as_deref())
                .and_then(|(columns, stats)| projected_share(columns, stats))
                .unwrap_or(1.0);
            (file.effective_size() as f64 * share).ceil() as u64
        })
        .sum()
}

/// The share of a file's data in `columns`, from the sizes its statistics
/// give (columns of unknown size are left out of both sides).
fn projected_share(columns: &[usize], stats: &Statistics) -> Option<f64> {
    let size = |c: &ColumnStatistics| c.byte_size.get_value().copied();
    let total: usize = stats.column_statistics.iter().filter_map(size).sum();
    if total == 0 {
        return None;
    }
    let read: usize = columns
        .iter()
        .filter_map(|i| stats.column_statistics.get(*i).and_then(size))
        .sum();
    Some((read as f64 / total as f64).clamp(0.0, 1.0))
}

fn file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// The placement: chunks per task and the executor of each task. Depends
/// only on the set of chunks and of URLs, not on their order.
fn assign(
    chunks: &[PartitionedFile],
    urls: &[Url],
    task_count: usize,
) -> (Vec<Vec<PartitionedFile>>, Vec<Url>) {
    let mut urls: Vec<&Url> = urls.iter().collect();
    urls.sort();
    urls.dedup();
    let keys: Vec<u64> = chunks.iter().map(chunk_key).collect();
    // Bytes homed on each executor.
    let mut homed = vec![0u64; urls.len()];
    for (chunk, key) in chunks.iter().zip(&keys) {
        homed[best(*key, &urls, |_| true)] += chunk_bytes(chunk);
    }
    // The task executors: the executors home to the most bytes (all of them
    // when there are at least as many tasks), ties by URL; more tasks than
    // executors cycle over them.
    let mut ranked: Vec<usize> = (0..urls.len()).collect();
    ranked.sort_by(|a, b| homed[*b].cmp(&homed[*a]).then(a.cmp(b)));
    ranked.truncate(task_count.min(urls.len()));
    ranked.sort();
    let task_urls: Vec<Url> = (0..task_count)
        .map(|i| urls[ranked[i % ranked.len()]].clone())
        .collect();
    let homes = bounded_homes(chunks, &keys, &urls, &ranked);
    let mut per_task: Vec<Vec<PartitionedFile>> = vec![Vec::new(); task_count];
    for ((chunk, key), home) in chunks.iter().zip(&keys).zip(homes) {
        // Tasks on that executor: i, i + ranked.len(), …; spread by the key.
        let slot = ranked.iter().position(|r| *r == home).unwrap_or(0);
        let on_home: Vec<usize> = (slot..task_count).step_by(ranked.len()).collect();
        let task = on_home[(mix(*key) % on_home.len() as u64) as usize];
        per_task[task].push(chunk.clone());
    }
    (per_task, task_urls)
}

/// How far above an even share of the bytes an executor's chunks may go
/// before some move to another executor.
const LOAD_SLACK: f64 = 0.1;

/// The executor (among `allowed`, indexes into `urls`) of each chunk:
/// its rendezvous home, unless that executor would get more than
/// (1 + [`LOAD_SLACK`]) × an even share of the bytes. Then the chunks it
/// is least attached to (lowest score) move, one by one, to their best
/// executor with room, or else to the lightest when that evens the load
/// out. With many chunks almost none move, so placement stays as stable
/// as plain rendezvous; with few (a table of 8 files over 2 executors),
/// the plain split is often 6:2 and the slowest executor decides the
/// query's time. The result depends only on the sets of chunks and
/// executors.
fn bounded_homes(
    chunks: &[PartitionedFile],
    keys: &[u64],
    urls: &[&Url],
    allowed: &[usize],
) -> Vec<usize> {
    let score = |key: u64, executor: usize| mix(key ^ fnv(urls[executor].as_str().as_bytes()));
    let mut homes: Vec<usize> = keys
        .iter()
        .map(|key| best(*key, urls, |i| allowed.contains(&i)))
        .collect();
    let bytes: Vec<u64> = chunks.iter().map(chunk_bytes).collect();
    let mut load = vec![0u64; urls.len()];
    for (home, b) in homes.iter().zip(&bytes) {
        load[*home] += b;
    }
    let total: u64 = bytes.iter().sum();
    let cap = (total as f64 / allowed.len().max(1) as f64 * (1.0 + LOAD_SLACK)) as u64;
    // Every move lowers the sum of squared loads, so this ends; the bound
    // is a second guard.
    for _ in 0..chunks.len() * allowed.len() {
        let Some(&over) = allowed
            .iter()
            .filter(|e| load[**e] > cap)
            .max_by(|a, b| load[**a].cmp(&load[**b]).then(b.cmp(a)))
        else {
            break;
        };
        // Its chunks, least attached first (ties by key).
        let mut mine: Vec<usize> = (0..chunks.len()).filter(|c| homes[*c] == over).collect();
        mine.sort_by_key(|c| (score(keys[*c], over), keys[*c]));
        let mut moved = false;
        for c in mine {
            let b = bytes[c];
            let with_room = allowed
                .iter()
                .filter(|e| **e != over && load[**e] + b <= cap)
                .max_by_key(|e| score(keys[c], **e));
            let lightest = allowed
                .iter()
                .filter(|e| **e != over && load[**e] + b < load[over])
                .min_by(|a, b| load[**a].cmp(&load[**b]).then(a.cmp(b)));
            if let Some(&to) = with_room.or(lightest) {
                load[over] -= b;
                load[to] += b;
                homes[c] = to;
                moved = true;
                break;
            }
        }
        if !moved {
            break;
        }
    }
    homes
}

/// The allowed executor with the highest rendezvous score for `key`.
fn best(key: u64, urls: &[&Url], allowed: impl Fn(usize) -> bool) -> usize {
    let mut winner = 0;
    let mut top = None;
    for (i, url) in urls.iter().enumerate() {
        if !allowed(i) {
            continue;
        }
        let score = mix(key ^ fnv(url.as_str().as_bytes()));
        if top.is_none_or(|t| score > t) {
            top = Some(score);
            winner = i;
        }
    }
    winner
}

/// Spreads one task's chunks over `partitions` groups, largest first onto
/// the lightest group, so the task's cores get even work.
fn balance(mut chunks: Vec<PartitionedFile>, partitions: usize) -> Vec<FileGroup> {
    chunks.sort_by(|a, b| {
        chunk_bytes(b)
            .cmp(&chunk_bytes(a))
            .then_with(|| chunk_key(a).cmp(&chunk_key(b)))
    });
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
    for chunk in chunks {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            lightest.0 += chunk_bytes(&chunk);
            lightest.1.push(chunk);
        }
    }
    groups.into_iter().map(|(_, g)| FileGroup::new(g)).collect()
}

fn chunk_bytes(chunk: &PartitionedFile) -> u64 {
    match &chunk.range {
        Some(range) => (range.end - range.start).max(0) as u64,
        None => chunk.object_meta.size,
    }
}

/// Stable identity of a chunk: its path and byte range.
fn chunk_key(chunk: &PartitionedFile) -> u64 {
    let mut h = fnv(chunk.object_meta.location.as_ref().as_bytes());
    if let Some(range) = &chunk.range {
        h = mix(h ^ range.start as u64);
        h = mix(h ^ range.end as u64);
    }
    h
}

/// FNV-1a: stable across processes, builds and versions (unlike std's hasher).
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: turns a combined key into a well-spread score.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(n: usize) -> Vec<PartitionedFile> {
        (0..n)
            .map(|i| PartitionedFile::new(format!("t/part-{i}.parquet"), 1000))
            .collect()
    }

    fn urls(ports: &[u16]) -> Vec<Url> {
        ports
            .iter()
            .map(|p| Url::parse(&format!("http://127.0.0.1:{p}")).unwrap())
            .collect()
    }

    fn homes(chunks: &[PartitionedFile], urls: &[Url]) -> Vec<Url> {
        let (per_task, task_urls) = assign(chunks, urls, urls.len());
        let mut home = vec![None; chunks.len()];
        for (task, list) in per_task.iter().enumerate() {
            for c in list {
                let i = chunks.iter().position(|x| x.path() == c.path()).unwrap();
                home[i] = Some(task_urls[task].clone());
            }
        }
        home.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn scans_count_the_bytes_of_the_columns_they_read() {
        use datafusion::common::stats::Precision;
        let sized = |b: usize| ColumnStatistics::new_unknown().with_byte_size(Precision::Exact(b));
        let stats = Statistics {
            num_rows: Precision::Exact(10),
            total_byte_size: Precision::Absent,
            column_statistics: vec![sized(80), sized(15), sized(5)],
        };
        let share =
            |columns: &[usize], stats: &Statistics| projected_share(columns, stats).unwrap();
        assert!((share(&[1, 2], &stats) - 0.2).abs() < 1e-9);
        assert!((share(&[0, 1, 2], &stats) - 1.0).abs() < 1e-9);
        // Columns of unknown size count on neither side.
        let mut partial = stats.clone();
        partial.column_statistics[0].byte_size = Precision::Absent;
        assert!((share(&[2], &partial) - 0.25).abs() < 1e-9);
        // Nothing known: no share (the whole chunk counts).
        partial.column_statistics = vec![ColumnStatistics::new_unknown(); 3];
        assert_eq!(projected_share(&[0], &partial), None);
    }

    #[test]
    fn placement_is_stable_and_moves_little() {
        let chunks = chunks(600);
        let three = urls(&[1, 2, 3]);
        let before = homes(&chunks, &three);
        // Same answer whatever the order of URLs or chunks.
        let mut reversed = three.clone();
        reversed.reverse();
        assert_eq!(before, homes(&chunks, &reversed));
        // Every executor gets a fair share.
        for url in &three {
            let n = before.iter().filter(|u| *u == url).count();
            assert!((120..=280).contains(&n), "{url}: {n}");
        }
        // A fourth executor joins: the chunks that move, move to it (~1/4;
        // a few more where the bound on load evens shares out).
        let four = urls(&[1, 2, 3, 4]);
        let after = homes(&chunks, &four);
        let moved: Vec<usize> = (0..chunks.len())
            .filter(|i| before[*i] != after[*i])
            .collect();
        let elsewhere = moved.iter().filter(|i| after[**i] != four[3]).count();
        assert!(elsewhere <= 30, "{elsewhere} moved between old executors");
        assert!((90..=240).contains(&moved.len()), "moved {}", moved.len());
        // Executor 2 leaves: its chunks move, and few others.
        let two = urls(&[1, 3]);
        let after = homes(&chunks, &two);
        let others_moved = (0..chunks.len())
            .filter(|i| before[*i] != three[1] && before[*i] != after[*i])
            .count();
        assert!(
            others_moved <= 30,
            "{others_moved} chunks of staying executors moved"
        );
    }

    /// A few chunks: plain rendezvous often splits 8 files 6:2 over two
    /// executors; the bound on load keeps every share within one chunk of
    /// even.
    #[test]
    fn few_chunks_are_shared_evenly() {
        let chunks = chunks(8);
        for first in 1..40u16 {
            for n in [2usize, 3] {
                let ports: Vec<u16> = (0..n as u16).map(|i| first * 100 + i).collect();
                let executors = urls(&ports);
                let placed = homes(&chunks, &executors);
                for url in &executors {
                    let count = placed.iter().filter(|u| *u == url).count();
                    let even = chunks.len() / n;
                    assert!(
                        (even.saturating_sub(1)..=even + 1).contains(&count),
                        "{ports:?}: {url} has {count}"
                    );
                }
                assert_eq!(placed, homes(&chunks, &executors), "stable");
            }
        }
    }

    #[test]
    fn fewer_tasks_than_executors() {
        let chunks = chunks(50);
        let (per_task, task_urls) = assign(&chunks, &urls(&[1, 2, 3]), 2);
        assert_eq!(task_urls.len(), 2);
        assert_ne!(task_urls[0], task_urls[1]);
        assert_eq!(per_task.iter().map(Vec::len).sum::<usize>(), 50);
        let (per_task, task_urls) = assign(&chunks, &urls(&[1, 2]), 5);
        assert_eq!(task_urls.len(), 5);
        assert_eq!(per_task.iter().map(Vec::len).sum::<usize>(), 50);
    }

    #[test]
    fn balance_keeps_partition_count() {
        let groups = balance(chunks(3), 8);
        assert_eq!(groups.len(), 8);
        assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), 3);
    }
}
