//! Starting a coordinator: `loch local` (the whole warehouse on loopback,
//! with the TPC-H sample and executor child processes) and `loch
//! coordinator` (executors join from other machines).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, EngineOptions};
use loch_executor::cluster::ClusterSecret;
use tokio::net::TcpListener;

use super::secrets::{PasswordSource, bootstrap_admin};
use crate::access::authn::{AuthError, Users};
use crate::admission::Admission;
use crate::cluster::{
    BROADCAST_POOL_SHARE, Children, ExecutorMemory, Registry, distribution, system::system_schema,
};
use crate::frontend::flight::{LochFlightSql, Sessions};
use crate::frontend::pgwire::{LochHandlers, serve};
use crate::frontend::tls::{TlsError, TlsIdentity, self_signed};
use loch_executor::memory::{Budget, human, prepare_spill_dir};

/// Settings of `loch local`.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Data directory (created when missing).
    pub data_dir: PathBuf,
    /// Where pg wire listens.
    pub pg_addr: SocketAddr,
    /// TPC-H sample scale factor; 0 for none.
    pub sample_scale: f64,
    /// Partitions per query stage; 0 means one per core.
    pub target_partitions: usize,
    /// Where Flight SQL listens; `None` turns it off.
    pub flight_addr: Option<SocketAddr>,
    /// How long a Flight SQL token lives without being used.
    pub flight_token_ttl: Duration,
    /// The admin password (`LOCH_ADMIN_PASSWORD`); generated when `None`.
    pub admin_password: Option<String>,
    /// TLS for both client protocols; `None` serves clear text only.
    pub tls: Option<TlsOptions>,
    /// The cluster: where executors register; `None` runs every query in
    /// this process.
    pub cluster: Option<ClusterOptions>,
    /// Bytes of query results kept for repeated queries; 0 keeps none
    /// (shrunk to its share of the coordinator's memory).
    pub result_cache_bytes: u64,
    /// Memory, spill and the admission queue.
    pub memory: MemoryOptions,
}

/// How much memory Loch uses, where it spills, how many queries run.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Bytes this process and the executors it starts may use in all.
    pub total: u64,
    /// What the total comes from (`--memory-limit`, a cgroup, the machine).
    pub source: String,
    /// Where spill files go (each process in a directory of its own).
    pub spill_dir: PathBuf,
    /// Most bytes of spill files each process holds at once.
    pub spill_limit: u64,
    /// Queries running at once; `None`: from cores and memory.
    pub max_concurrent_queries: Option<usize>,
    /// Queries waiting; more are refused (53000).
    pub max_queued_queries: usize,
    /// Query shapes that last ran this long or less take the fast lane
    /// (zero: no fast lane).
    pub fast_query: Duration,
}

/// The coordinator's share of `loch local`'s memory when it starts
/// executors (they run the stages; it merges results and keeps the
/// result cache). Measured at TPC-H SF10 with 2 executors: the
/// coordinator's peak RSS was 235–290 MiB while each executor's reached
/// 2.2 GiB.
const COORDINATOR_SHARE: f64 = 0.15;

/// Most memory one running query is planned with when choosing the
/// default `--max-concurrent-queries` (with at most one per core).
const MEMORY_PER_QUERY: u64 = 256 << 20;

impl MemoryOptions {
    /// The default number of queries at once: one per core (each query
    /// already uses every core: more at once only share the CPU and hold
    /// more memory), at most one per [`MEMORY_PER_QUERY`] of memory, at
    /// least 2. Queries that ran fast take the fast lane besides.
    fn max_concurrent(&self) -> usize {
        self.max_concurrent_queries.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let by_memory = usize::try_from(self.total / MEMORY_PER_QUERY).unwrap_or(usize::MAX);
            cores.min(by_memory).max(2)
        })
    }
}

/// TLS settings of the client protocols.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Where the certificate and key come from.
    pub source: TlsSource,
    /// Refuse pg wire logins that did not switch to TLS (Flight SQL is TLS
    /// only whenever TLS is on).
    pub required: bool,
}

/// Where the server certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files the operator provides.
    Files { cert: PathBuf, key: PathBuf },
    /// A private CA and loopback certificate under `<data-dir>/tls/`.
    SelfSigned,
}

/// The executors side of a coordinator.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the registry endpoint listens (port 0 = any free port).
    pub addr: SocketAddr,
    /// The secret every internal call is signed with.
    pub secret: ClusterSecret,
    /// An executor silent this long gets no new work.
    pub heartbeat_timeout: Duration,
    /// Executor child processes to start (`loch local --executors N`); the
    /// start waits until they have registered.
    pub spawn_executors: usize,
    /// `--data-cache-mb` of those executors.
    pub executor_data_cache_mb: u64,
}

/// How long `loch local` waits for its executors to register.
const EXECUTOR_START_LIMIT: Duration = Duration::from_secs(60);

/// Errors that stop `loch local` from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the catalog: {0}")]
    Catalog(#[from] loch_catalog::CatalogError),
    #[error("admin credentials: {0}")]
    Auth(#[from] AuthError),
    #[error("starting Flight SQL: {0}")]
    Flight(crate::LochError),
    #[error("starting executors: {0}")]
    Executors(std::io::Error),
    #[error("{0} executors did not register within {1:?}")]
    ExecutorsSilent(usize, Duration),
    #[error("system schema: {0}")]
    System(#[from] datafusion::error::DataFusionError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("spill directory {path}: {source}")]
    Spill {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS on Flight SQL: {0}")]
    FlightTls(#[from] tonic::transport::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A started server: its address, and the task serving it.
pub struct Running {
    /// The address pg wire listens on (the real port when 0 was asked for).
    pub pg_addr: SocketAddr,
    /// The address Flight SQL listens on, when it is on.
    pub flight_addr: Option<SocketAddr>,
    /// Where the admin password came from.
    pub password_source: PasswordSource,
    /// The admin password, when this start generated it (printed once).
    pub generated_password: Option<String>,
    /// The CA certificate clients should trust, when `--tls-self-signed`
    /// made one.
    pub tls_ca: Option<PathBuf>,
    /// Whether the client protocols offer TLS.
    pub tls: bool,
    /// The cluster endpoint executors register with, when there is one.
    pub cluster_addr: Option<SocketAddr>,
    /// The executor registry, when there is a cluster.
    pub registry: Option<Arc<Registry>>,
    /// How memory was divided, for the start-up message.
    pub memory_summary: String,
    children: Children,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Process ids of the executors this process started.
    pub fn executor_pids(&self) -> Vec<u32> {
        self.children.pids()
    }

    /// Stops accepting connections and stops the executors it started.
    pub async fn shutdown(self) {
        for task in self.tasks {
            task.abort();
        }
        self.children.stop().await;
    }
}

async fn listen(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    Ok((listener, bound))
}

/// Opens the engine (generating the sample data on first start), starts the
/// cluster endpoint and executors when asked, and starts serving pg wire
/// and Flight SQL.
pub async fn start(options: &LocalOptions) -> Result<Running, StartError> {
    // Before anything slow: a bad certificate should stop the start at once.
    let (tls, tls_ca, tls_files) = match &options.tls {
        Some(tls) => {
            let (cert, key, ca) = match &tls.source {
                TlsSource::Files { cert, key } => (cert.clone(), key.clone(), None),
                TlsSource::SelfSigned => {
                    let files = self_signed(&options.data_dir)?;
                    (files.cert, files.key, Some(files.ca))
                }
            };
            (Some(TlsIdentity::load(&cert, &key)?), ca, Some((cert, key)))
        }
        None => (None, None, None),
    };
    let flight_server = crate::frontend::flight::server(tls.as_ref())?;
    let memory = &options.memory;
    let spawned = options.cluster.as_ref().map_or(0, |c| c.spawn_executors);
    let (own, executor_memory) = if spawned == 0 {
        (memory.total, 0)
    } else {
        let own = (memory.total as f64 * COORDINATOR_SHARE) as u64;
        (own, (memory.total - own) / spawned as u64)
    };
    let budget = Budget::new(own, options.result_cache_bytes);
    let spill_dir = prepare_spill_dir(&memory.spill_dir).map_err(|source| StartError::Spill {
        path: memory.spill_dir.clone(),
        source,
    })?;
    let max_running = memory.max_concurrent();
    let mut memory_summary = format!(
        "Memory: {} ({}); coordinator {} (query pool {}, result cache {})",
        human(memory.total),
        memory.source,
        human(budget.process),
        human(budget.pool),
        human(budget.cache),
    );
    if spawned > 0 {
        memory_summary += &format!(", {spawned} executors {} each", human(executor_memory));
    }
    memory_summary += &format!(
        "; {max_running} queries at once, {} may wait; spill in {}",
        memory.max_queued_queries,
        memory.spill_dir.display()
    );
    // With little memory per executor, a join whose build side would take
    // much of an executor's pool is partitioned rather than broadcast.
    let broadcast_bytes = if spawned > 0 {
        let executor_pool = Budget::new(executor_memory, 0).pool;
        usize::try_from(executor_pool / BROADCAST_POOL_SHARE).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    let mut engine = Engine::open(&EngineOptions {
        data_dir: options.data_dir.clone(),
        sample_scale: options.sample_scale,
        target_partitions: options.target_partitions,
        memory: budget,
        spill_dir,
        spill_limit: memory.spill_limit,
    })
    .await?
    .with_result_cache(budget.cache)
    .with_admission(Admission::new(
        max_running,
        memory.max_queued_queries,
        memory.fast_query,
    ));
    let mut tasks = Vec::new();
    let mut children = Children::default();
    let (registry, cluster_addr) = match &options.cluster {
        Some(cluster) => {
            let registry = Registry::new(cluster.heartbeat_timeout);
            let (listener, addr) = listen(cluster.addr).await?;
            tasks.push(tokio::spawn(crate::cluster::service::serve(
                listener,
                Arc::clone(&registry),
                Arc::clone(engine.stores()),
                cluster.secret.clone(),
            )));
            engine = engine.with_distribution(
                distribution(
                    Arc::clone(&registry),
                    &cluster.secret,
                    addr.ip().is_loopback(),
                    broadcast_bytes,
                ),
                Arc::clone(&registry) as Arc<dyn crate::engine::ExecutorCheck>,
            );
            // With TLS, direct endpoints only at executors that serve them
            // over TLS: rows must not leave in clear when the Flight SQL
            // port encrypts them.
            engine = engine.with_ticket_secret(cluster.secret.clone(), tls.is_some());
            if cluster.spawn_executors > 0 {
                let url = format!("http://{addr}");
                children = Children::spawn(
                    cluster.spawn_executors,
                    &url,
                    &cluster.secret,
                    &options.data_dir,
                    tls_files
                        .as_ref()
                        .map(|(cert, key)| (cert.as_path(), key.as_path())),
                    cluster.executor_data_cache_mb,
                    &ExecutorMemory {
                        limit: executor_memory,
                        spill_dir: memory.spill_dir.clone(),
                        spill_limit: memory.spill_limit,
                    },
                )
                .map_err(StartError::Executors)?;
                if !registry
                    .wait_for_live(cluster.spawn_executors, EXECUTOR_START_LIMIT)
                    .await
                {
                    for task in &tasks {
                        task.abort();
                    }
                    children.stop().await;
                    return Err(StartError::ExecutorsSilent(
                        cluster.spawn_executors,
                        EXECUTOR_START_LIMIT,
                    ));
                }
            }
            (Some(registry), Some(addr))
        }
        None => (None, None),
    };
    engine.catalog().provider().register_schema(
        "system",
        system_schema(
            registry.clone(),
            engine.result_cache().cloned(),
            engine.memory_now(),
            engine.admission().cloned(),
        )?,
    )?;
    let store = Arc::clone(engine.catalog().store());
    let (password_source, generated_password) =
        bootstrap_admin(&*store, &options.data_dir, options.admin_password.clone())?;
    let (storage_key, _) = super::secrets::storage_key(&options.data_dir)?;
    store.set_storage_key(&storage_key)?;
    let users = Users::new(store)?;
    let (listener, pg_addr) = listen(options.pg_addr).await?;
    let flight_addr = match options.flight_addr {
        Some(addr) => {
            let (flight_listener, flight_addr) = listen(addr).await?;
            let sessions = Arc::new(Sessions::new(options.flight_token_ttl));
            let service = LochFlightSql::new(engine.clone(), users.clone(), Arc::clone(&sessions))
                .map_err(StartError::Flight)?;
            tasks.push(tokio::spawn(crate::frontend::flight::serve(
                flight_listener,
                service,
                sessions,
                flight_server,
            )));
            Some(flight_addr)
        }
        None => None,
    };
    let tls_required = options.tls.as_ref().is_some_and(|t| t.required);
    let handlers = Arc::new(LochHandlers::new(
        engine,
        users,
        tls_required,
        tls.as_ref().and_then(TlsIdentity::server_end_point),
    ));
    tasks.push(tokio::spawn(serve(
        listener,
        handlers,
        tls.as_ref().map(TlsIdentity::pg_acceptor),
    )));
    Ok(Running {
        pg_addr,
        flight_addr,
        password_source,
        generated_password,
        tls_ca,
        tls: tls.is_some(),
        cluster_addr,
        registry,
        memory_summary,
        children,
        tasks,
    })
}
