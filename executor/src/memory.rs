//! Memory and spill, for the coordinator and the executors alike: how much
//! memory a process may use (`--memory-limit`, else a share of its cgroup
//! limit or of the machine), how that is divided between the caches, the
//! query memory pool and headroom, the pool itself, the per-query bound
//! (`memory_limit`) that travels with a query to the executors, and the
//! spill directory.
//!
//! The pool is DataFusion's [`FairSpillPool`] inside a [`TrackConsumersPool`]:
//! operators that can spill (sorts, aggregations, sort-merge joins) each
//! get a fair share of what unspillable operators (hash join build sides)
//! leave, so one big sort cannot starve a concurrent join, and when an
//! allocation fails the error names the operators holding the most. A
//! greedy pool would let the first spiller take everything.
//!
//! The cgroup limit is read here rather than with `sysinfo` (which Loch
//! has through deltalake): `sysinfo` reads only the cgroup root's files,
//! right inside a container but wrong for a process placed in a child
//! cgroup (systemd units, a test's cgroup), where the limit is on the
//! process's own cgroup or an ancestor of it.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::disk_manager::{DiskManager, DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use serde::{Deserialize, Serialize};

/// The share of the memory available to it that Loch plans to use when no
/// `--memory-limit` is given (the rest is for the kernel and other
/// processes).
pub const DEFAULT_SHARE: f64 = 0.8;

/// The share of a process's limit (after its caches) given to the query
/// pool. The rest is headroom for what DataFusion does not count: decoded
/// Parquet pages in flight, network buffers, plans, the allocator's slack.
pub const POOL_SHARE: f64 = 0.6;

/// The most of a process's limit its cache (result cache, data cache) may
/// take; a larger `--result-cache-mb`/`--data-cache-mb` is shrunk to it.
pub const CACHE_SHARE: f64 = 0.25;

/// A size as the flags take it: bytes, or a percentage of what is
/// available.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    Bytes(u64),
    Percent(f64),
}

impl Size {
    /// The size in bytes, percentages taken of `available`.
    pub fn of(self, available: u64) -> u64 {
        match self {
            Size::Bytes(b) => b,
            Size::Percent(p) => (available as f64 * p / 100.0) as u64,
        }
    }
}

impl std::str::FromStr for Size {
    type Err = String;

    /// `4GiB`, `512MiB`, `4GB`, `2g`, `1048576` (bytes) or `75%`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(Size::Percent(p)),
                _ => Err(format!(
                    "{text}: a percentage must be above 0 and at most 100"
                )),
            };
        }
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text}: expected a size such as 4GiB, 512MiB or 75%"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "{text}: unknown unit (use B, KiB, MiB, GiB, TiB or %)"
                ));
            }
        };
        let bytes = number * scale as f64;
        if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(format!("{text}: a size must be at least 1 byte"));
        }
        Ok(Size::Bytes(bytes as u64))
    }
}

/// `bytes` as people read it (`1.5 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How much memory this process may really use, and what says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Available {
    pub bytes: u64,
    pub source: &'static str,
}

/// The memory this process may use: the smallest memory limit of its
/// cgroup and the cgroup's ancestors (v2 `memory.max`, v1
/// `memory.limit_in_bytes`), else the machine's memory.
pub fn available_memory() -> Available {
    let machine = machine_memory().unwrap_or(4 << 30);
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    match cgroup_limit(&cgroups, Path::new("/sys/fs/cgroup")) {
        Some((bytes, source)) if bytes < machine => Available { bytes, source },
        _ => Available {
            bytes: machine,
            source: "machine memory",
        },
    }
}

fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The smallest memory limit on the cgroup paths `/proc/self/cgroup`
/// names, under the cgroup file systems at `root`.
fn cgroup_limit(proc_cgroup: &str, root: &Path) -> Option<(u64, &'static str)> {
    let mut best: Option<(u64, &'static str)> = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (bases, file, source): (Vec<PathBuf>, &str, &'static str) =
            if id == "0" && controllers.is_empty() {
                (
                    vec![root.to_path_buf(), root.join("unified")],
                    "memory.max",
                    "cgroup v2 memory.max",
                )
            } else if controllers.split(',').any(|c| c == "memory") {
                (
                    vec![root.join("memory")],
                    "memory.limit_in_bytes",
                    "cgroup v1 memory.limit_in_bytes",
                )
            } else {
                continue;
            };
        for base in bases {
            // The process's own cgroup and each ancestor up to the mount's
            // root (inside a container the mount's root is the container's
            // cgroup, and the longer paths simply do not exist).
            let mut dir = PathBuf::from(path.trim_start_matches('/'));
            loop {
                if let Some(limit) = read_limit(&base.join(&dir).join(file))
                    && best.is_none_or(|(b, _)| limit < b)
                {
                    best = Some((limit, source));
                }
                if !dir.pop() {
                    break;
                }
            }
        }
    }
    best
}

/// A cgroup limit file's value; `None` for "max" and v1's "no limit"
/// (a number near `i64::MAX`).
fn read_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 60).then_some(value)
}

/// How one process's memory is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// All this process should use.
    pub process: u64,
    /// Its cache (result cache or data cache).
    pub cache: u64,
    /// The query memory pool.
    pub pool: u64,
}

impl Budget {
    /// `process` bytes for a process whose operator asked for `cache`
    /// bytes of cache: the cache gets at most [`CACHE_SHARE`] of it, the
    /// query pool [`POOL_SHARE`] of the rest.
    pub fn new(process: u64, cache: u64) -> Self {
        let cache = cache.min((process as f64 * CACHE_SHARE) as u64);
        let pool = ((process - cache) as f64 * POOL_SHARE) as u64;
        Budget {
            process,
            cache,
            pool: pool.max(1 << 20),
        }
    }
}

/// The query memory pool of a process of `bytes`.
pub fn query_pool(bytes: u64) -> Arc<dyn MemoryPool> {
    let top = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
    Arc::new(TrackConsumersPool::new(
        FairSpillPool::new(usize::try_from(bytes).unwrap_or(usize::MAX)),
        top,
    ))
}

/// Where a process spills: its own directory `<base>/<pid>`, made empty.
/// Directories of processes that are gone (killed before they could clean
/// up) are removed; other live processes' are left alone.
pub fn prepare_spill_dir(base: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(base)?;
    let own = std::process::id();
    for entry in std::fs::read_dir(base)?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if (pid == own || !Path::new(&format!("/proc/{pid}")).exists())
            && let Err(e) = std::fs::remove_dir_all(entry.path())
        {
            tracing::warn!(path = %entry.path().display(), "cannot remove old spill files: {e}");
        }
    }
    let dir = base.join(own.to_string());
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The disk manager spilling into `dir`, at most `limit` bytes at once.
pub fn disk_manager(dir: PathBuf, limit: u64) -> Result<Arc<DiskManager>> {
    Ok(Arc::new(
        DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::Directories(vec![dir]))
            .with_max_temp_directory_size(limit)
            .build()?,
    ))
}

/// The spill files under `dir` now (for tests).
pub fn spill_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

extensions_options! {
    /// Loch's per-query options; they travel with a query's stages to the
    /// executors (datafusion-distributed's option extensions).
    pub struct QueryOptions {
        /// Bytes one query may hold in each process's pool (0: only the
        /// pool bounds it); the `memory_limit` setting.
        pub memory_limit: usize, default = 0
    }
}

impl ConfigExtension for QueryOptions {
    const PREFIX: &'static str = "loch";
}

/// A query's view of a process's pool: every allocation also counts
/// against the query's own `limit`, so one query fails alone (53200) before
/// it takes memory the others need. Within its limit the query's operators
/// share as in the process's pool (a [`FairSpillPool`] of the limit's
/// size): each spilling operator gets its fair part, so one partition's
/// sort cannot leave another none to merge with.
#[derive(Debug)]
pub struct QueryPool {
    inner: Arc<dyn MemoryPool>,
    own: FairSpillPool,
    limit: usize,
}

impl QueryPool {
    /// A pool over `inner` that lets the query hold at most `limit` bytes.
    pub fn new(inner: Arc<dyn MemoryPool>, limit: usize) -> Self {
        QueryPool {
            inner,
            own: FairSpillPool::new(limit),
            limit,
        }
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "query pool of {} over {}", self.limit, self.inner)
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "loch_query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.own.register(consumer);
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.own.unregister(consumer);
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.own.grow(reservation, additional);
        self.inner.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.own.shrink(reservation, shrink);
        self.inner.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.own
            .try_grow(reservation, additional)
            .map_err(|e| match e {
                DataFusionError::ResourcesExhausted(message) => {
                    DataFusionError::ResourcesExhausted(format!(
                        "{message} (the query's memory_limit is {})",
                        human(self.limit as u64)
                    ))
                }
                other => other,
            })?;
        if let Err(e) = self.inner.try_grow(reservation, additional) {
            self.own.shrink(reservation, additional);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.own.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// `shared` with every allocation also counted against a query's own
/// `limit` ([`QueryPool`]); the same caches, stores and spill directory.
pub fn with_query_limit(shared: &Arc<RuntimeEnv>, limit: usize) -> Arc<RuntimeEnv> {
    let pool: Arc<dyn MemoryPool> =
        Arc::new(QueryPool::new(Arc::clone(&shared.memory_pool), limit));
    match RuntimeEnvBuilder::from_runtime_env(shared).build() {
        Ok(mut runtime) => {
            runtime.memory_pool = pool;
            Arc::new(runtime)
        }
        // Building from a built runtime does not fail; if it ever did, the
        // process's pool still bounds the query.
        Err(_) => Arc::clone(shared),
    }
}

/// What a process's memory looks like now (executors send it with their
/// heartbeats; the coordinator shows it in `system.memory`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// The process's limit, its cache's share and its pool.
    pub limit: u64,
    pub cache: u64,
    pub pool: u64,
    /// Bytes the pool lends out now.
    pub reserved: u64,
    /// Spill files now, and their bytes.
    pub spill_files: u64,
    pub spill_bytes: u64,
    /// The process's resident set size now.
    pub rss: u64,
}

impl MemoryStats {
    /// The stats of a process with `budget`, `pool` and `disk`.
    pub fn of(budget: &Budget, pool: &dyn MemoryPool, disk: &DiskManager) -> Self {
        let progress = disk.spilling_progress();
        MemoryStats {
            limit: budget.process,
            cache: budget.cache,
            pool: budget.pool,
            reserved: pool.reserved() as u64,
            spill_files: progress.active_files_count as u64,
            spill_bytes: progress.current_bytes,
            rss: resident_bytes().unwrap_or(0),
        }
    }
}

/// This process's resident set size.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_flags_document() {
        assert_eq!("4GiB".parse::<Size>(), Ok(Size::Bytes(4 << 30)));
        assert_eq!("512MiB".parse::<Size>(), Ok(Size::Bytes(512 << 20)));
        assert_eq!("1.5g".parse::<Size>(), Ok(Size::Bytes(3 << 29)));
        assert_eq!("1024".parse::<Size>(), Ok(Size::Bytes(1024)));
        assert_eq!("75%".parse::<Size>(), Ok(Size::Percent(75.0)));
        assert_eq!(Size::Percent(50.0).of(1000), 500);
        for bad in ["", "0", "12 parsecs", "150%", "-1GiB", "0%"] {
            assert!(bad.parse::<Size>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn the_smallest_limit_of_a_cgroup_and_its_ancestors_counts() {
        let root = tempfile::tempdir().unwrap();
        let v1 = root.path().join("memory/outer/inner");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(
            root.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("memory/outer/memory.limit_in_bytes"),
            "2048\n",
        )
        .unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "4096\n").unwrap();
        let found = cgroup_limit("4:memory:/outer/inner\n0::/\n", root.path());
        assert_eq!(found, Some((2048, "cgroup v1 memory.limit_in_bytes")));

        let v2 = root.path().join("v2");
        std::fs::create_dir_all(v2.join("app")).unwrap();
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        std::fs::write(v2.join("app/memory.max"), "1000\n").unwrap();
        assert_eq!(
            cgroup_limit("0::/app\n", &v2),
            Some((1000, "cgroup v2 memory.max"))
        );
        assert_eq!(cgroup_limit("0::/\n", &v2), None);
    }

    #[test]
    fn caches_are_shrunk_to_their_share() {
        let budget = Budget::new(1000 << 20, 2000 << 20);
        assert_eq!(budget.cache, 250 << 20);
        assert!(budget.cache + budget.pool < budget.process);
    }

    #[test]
    fn a_query_pool_refuses_past_its_limit_and_frees_what_it_refused() {
        let shared = query_pool(1 << 20);
        let pool: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 1000));
        let reservation = MemoryConsumer::new("HashJoinInput").register(&pool);
        reservation.try_grow(600).unwrap();
        let error = reservation.try_grow(600).unwrap_err();
        assert!(matches!(error, DataFusionError::ResourcesExhausted(_)));
        assert!(error.to_string().contains("HashJoinInput"), "{error}");
        assert!(error.to_string().contains("memory_limit"), "{error}");
        assert_eq!(pool.reserved(), 600);
        assert_eq!(shared.reserved(), 600);
        drop(reservation);
        assert_eq!(shared.reserved(), 0);
    }

    #[test]
    fn spill_dirs_of_dead_processes_are_removed() {
        let base = tempfile::tempdir().unwrap();
        // No process has pid 4_000_000 (above Linux's pid_max limit).
        let dead = base.path().join("4000000");
        std::fs::create_dir_all(dead.join("datafusion-x")).unwrap();
        std::fs::write(dead.join("datafusion-x/spill"), b"old").unwrap();
        let dir = prepare_spill_dir(base.path()).unwrap();
        assert!(!dead.exists());
        assert!(dir.exists());
        assert!(spill_files(base.path()).is_empty());
    }
}
