//! The coordinator's side of the cluster: the executor registry and its
//! endpoint, how queries are planned over the live executors
//! (datafusion-distributed, with Loch's placement), `system.executors`, and
//! the executor child processes of `loch local`.

pub mod placement;
pub mod registry;
pub mod service;
pub mod system;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Distribution;
use datafusion::execution::SessionStateBuilder;
use datafusion_distributed::{DistributedExt, SessionStateBuilderExt};
use loch_executor::cluster::{ClusterSecret, SignedChannelResolver};
use tokio::process::{Child, Command};

pub use registry::{Registry, RegistryResolver};

/// The share of an executor's query pool one broadcast build side may
/// take (divided again by each session's `memory_limit`, see
/// `session::Session::set`).
pub const BROADCAST_POOL_SHARE: u64 = 16;

/// The largest estimated build side (bytes, rows) a hash join sends whole
/// to every task of its probe side instead of shuffling both sides.
///
/// DataFusion's own thresholds (1 MiB, 128 Ki rows) are tuned for one
/// process, where a partitioned join's repartition only moves pointers.
/// Across executors the alternative to a broadcast is sending the probe
/// side over the network too, and the probe side is the big one (TPC-H's
/// lineitem). Measured on TPC-H SF1 with 2 executors: q3, q5, q7, q18 and
/// q21 20–40 % faster with these than with DataFusion's; the most any
/// query lost was q17, about 7 %. Sessions can still `SET
/// datafusion.optimizer.hash_join_single_partition_threshold[_rows]`.
pub const BROADCAST_BUILD_BYTES: usize = 32 << 20;
/// See [`BROADCAST_BUILD_BYTES`].
pub const BROADCAST_BUILD_ROWS: usize = 2_000_000;

/// How every session of a coordinator with executors plans: stages cut by
/// datafusion-distributed, workers from the registry, scans placed by
/// [`placement`], every call to an executor signed with the cluster secret.
///
/// Hash joins broadcast build sides up to `broadcast_bytes` (at most
/// [`BROADCAST_BUILD_BYTES`]; less when executors have little memory,
/// since every task of the probe side holds the whole build side).
///
/// `same_machine` (a loopback cluster endpoint: every executor runs here)
/// turns off compression of exchanged batches: over loopback it only costs
/// CPU the query needs (measured: TPC-H SF1 q21 and q5 about 15 % faster
/// without it). `SET distributed.compression = 'lz4'` turns it back on.
pub fn distribution(
    registry: Arc<Registry>,
    secret: &ClusterSecret,
    same_machine: bool,
    broadcast_bytes: usize,
) -> Distribution {
    // One resolver for all sessions, so connections to executors are reused.
    let channels = SignedChannelResolver::new(secret.clone());
    Arc::new(move |builder: SessionStateBuilder| {
        let mut builder = builder
            .with_distributed_worker_resolver(RegistryResolver(Arc::clone(&registry)))
            .with_distributed_channel_resolver(channels.clone())
            .with_distributed_scale_up_leaf_node_handler(placement::scale_up)
            .with_distributed_route_tasks_handler(placement::route)
            .with_distributed_desired_task_count_handler(placement::single_partition_input)
            .with_distributed_desired_task_count_handler(placement::scan_tasks)
            .with_distributed_user_codec(loch_catalog::delta_write::DeltaWriteCodec)
            .with_distributed_planner();
        let config = builder.config().get_or_insert_default();
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.hash_join_single_partition_threshold = broadcast_bytes.min(BROADCAST_BUILD_BYTES);
        optimizer.hash_join_single_partition_threshold_rows = BROADCAST_BUILD_ROWS;
        if same_machine && let Err(e) = config.set_distributed_compression(None) {
            tracing::warn!(error = %e, "cannot turn exchange compression off");
        }
        builder
    })
}

/// The memory of each executor `loch local` starts.
#[derive(Debug, Clone)]
pub struct ExecutorMemory {
    /// Bytes it may use.
    pub limit: u64,
    /// Where it spills (in a directory of its own there).
    pub spill_dir: std::path::PathBuf,
    /// Most bytes of spill files at once.
    pub spill_limit: u64,
}

/// Executor processes started by `loch local`; killed when dropped.
#[derive(Debug, Default)]
pub struct Children(Vec<Child>);

impl Children {
    /// Starts `count` executors of this same binary on loopback ports,
    /// registering with `coordinator`.
    pub fn spawn(
        count: usize,
        coordinator: &str,
        secret: &ClusterSecret,
        data_dir: &Path,
        tls: Option<(&Path, &Path)>,
        data_cache_mb: u64,
        memory: &ExecutorMemory,
    ) -> std::io::Result<Children> {
        let exe = std::env::current_exe()?;
        // The children run in the data directory: absolute paths.
        let tls = match tls {
            Some((cert, key)) => Some((std::fs::canonicalize(cert)?, std::fs::canonicalize(key)?)),
            None => None,
        };
        let mut children = Vec::with_capacity(count);
        for _ in 0..count {
            let mut command = Command::new(&exe);
            command
                .arg("executor")
                .args(["--coordinator", coordinator])
                .args(["--listen", "127.0.0.1:0"])
                .args(["--coordinator-timeout", "5"])
                .args(["--data-cache-mb", &data_cache_mb.to_string()])
                .args(["--memory-limit", &memory.limit.to_string()])
                .args(["--spill-limit", &memory.spill_limit.to_string()])
                .arg("--spill-dir")
                .arg(std::path::absolute(&memory.spill_dir)?);
            // Flight SQL clients then read direct endpoints over TLS too.
            if let Some((cert, key)) = &tls {
                command
                    .arg("--tls-cert")
                    .arg(cert)
                    .arg("--tls-key")
                    .arg(key);
            }
            let child = command
                .env("LOCH_CLUSTER_SECRET", secret.to_hex())
                .current_dir(data_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            children.push(child);
        }
        Ok(Children(children))
    }

    /// Process ids of the executors (tests kill one to see the cluster cope).
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().filter_map(Child::id).collect()
    }

    /// Stops them all and waits for them.
    pub async fn stop(mut self) {
        for child in &mut self.0 {
            let _ = child.start_kill();
        }
        for child in &mut self.0 {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
    }
}
