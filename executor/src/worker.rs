//! The executor process: datafusion-distributed's worker service behind the
//! cluster-secret check, plus registration and heartbeats to the coordinator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow_flight::Action;
use arrow_flight::flight_service_client::FlightServiceClient;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion_distributed::{
    DistributedExt, Worker, WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse,
    WorkerQueryContext,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use url::Url;

use crate::cluster::{ClusterSecret, Signed, SignedChannelResolver};
use crate::data_cache::DataCache;
use crate::direct::{DirectService, StatusOf};
use loch_catalog::object_stores::{StoreOptions, StoreRegistry};

/// DoAction type an executor sends to register and to stay registered.
pub const HEARTBEAT_ACTION: &str = "loch.executor.heartbeat";
/// DoAction type an executor sends when it stops cleanly.
pub const LEAVE_ACTION: &str = "loch.executor.leave";
/// DoAction type an executor sends for the settings of an object store a
/// task reads (body: the store's `scheme://authority`; answer: JSON
/// options).
pub const STORE_ACTION: &str = "loch.executor.store";

/// What an executor tells the coordinator in each heartbeat (JSON body).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Stable for the life of the process.
    pub id: String,
    /// Where the coordinator and other executors reach its worker service.
    pub url: String,
    /// Tasks it holds right now.
    pub running_tasks: u64,
    /// Loch version of the executor.
    pub version: String,
    /// Its process id on its machine.
    #[serde(default)]
    pub pid: u32,
    /// Where Flight SQL clients redeem direct tickets over TLS
    /// (`grpc+tls://host:port`), when it serves them so.
    #[serde(default)]
    pub direct_tls: Option<String>,
    /// Its data cache's counters, when it keeps one.
    #[serde(default)]
    pub data_cache: Option<crate::accounting::CacheStats>,
    /// Its memory: limit, pool, spill ([`crate::memory`]).
    #[serde(default)]
    pub memory: Option<crate::memory::MemoryStats>,
}

/// How an executor process runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Address the worker service listens on (port 0 = any free port).
    pub listen: SocketAddr,
    /// Host name or IP others use to reach it; default: the listen IP.
    pub advertise_host: Option<String>,
    /// The coordinator's cluster endpoint, e.g. `http://10.0.0.1:5435`.
    pub coordinator: Url,
    pub secret: ClusterSecret,
    pub heartbeat_interval: Duration,
    /// Exit when the coordinator has not answered for this long.
    pub coordinator_timeout: Duration,
    /// The status a Flight client gets for a query error on a direct
    /// endpoint ([`crate::direct`]).
    pub status_of: StatusOf,
    /// Also serve direct tickets over TLS with this certificate, on a
    /// port of their own (the worker service stays as it is).
    pub direct_tls: Option<tonic::transport::Identity>,
    /// The port of that service on the listen IP (0 = any free port).
    pub direct_tls_port: u16,
    /// Bytes of decoded Parquet files to keep ([`crate::data_cache`]; 0:
    /// none); shrunk to its share of `memory_limit`.
    pub data_cache_bytes: u64,
    /// Bytes this process may use ([`crate::memory::Budget`]).
    pub memory_limit: u64,
    /// Where it spills (its own directory `<spill_dir>/<pid>` in it).
    pub spill_dir: PathBuf,
    /// Bytes of spill files it may hold at once.
    pub spill_limit: u64,
}

/// Why an executor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid coordinator URL {0}")]
    CoordinatorUrl(String),
    #[error("the coordinator at {url} has not answered for {secs} s: stopping")]
    CoordinatorGone { url: String, secs: u64 },
    #[error("the heartbeat thread could not run")]
    HeartbeatThread,
    #[error("spill directory {path}: {source}")]
    Spill {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("memory pool: {0}")]
    Memory(#[from] datafusion::error::DataFusionError),
    #[error("worker service failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A running executor until `shutdown` resolves or the coordinator is gone.
pub async fn run_executor(
    options: ExecutorOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ExecutorError> {
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| ExecutorError::Listen {
                addr: options.listen,
                source,
            })?;
    let local = listener
        .local_addr()
        .map_err(|source| ExecutorError::Listen {
            addr: options.listen,
            source,
        })?;
    let host = options
        .advertise_host
        .clone()
        .unwrap_or_else(|| match local.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
    let url = format!("http://{host}:{}", local.port());
    let id = format!("{}-{}", host, local.port());

    let coordinator = coordinator_client(&options)?;
    let budget = crate::memory::Budget::new(options.memory_limit, options.data_cache_bytes);
    let spill_dir = crate::memory::prepare_spill_dir(&options.spill_dir).map_err(|source| {
        ExecutorError::Spill {
            path: options.spill_dir.clone(),
            source,
        }
    })?;
    tracing::info!(
        limit = %crate::memory::human(budget.process),
        pool = %crate::memory::human(budget.pool),
        data_cache = %crate::memory::human(budget.cache),
        spill = %spill_dir.display(),
        "executor memory"
    );
    let data_cache = DataCache::new(budget.cache);
    let (worker, runtime) = new_worker(
        &options.secret,
        coordinator.clone(),
        data_cache.clone(),
        &budget,
        spill_dir,
        options.spill_limit,
    )?;
    let memory = Memory {
        budget,
        runtime: Arc::clone(&runtime),
    };
    let direct = DirectService::new(options.secret.clone(), runtime, options.status_of)
        .with_data_cache(data_cache.clone());
    let running = Arc::new(AtomicU64::new(0));
    let server = InterceptedService::new(
        Counting {
            inner: worker.into_worker_server(),
            running: Arc::clone(&running),
        },
        options.secret.verifier().interceptor(),
    );
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (direct_tls, _serving_tls) = match options.direct_tls.clone() {
        Some(identity) => {
            let (location, serving) = serve_direct_tls(
                identity,
                SocketAddr::new(local.ip(), options.direct_tls_port),
                &host,
                direct.clone(),
                &running,
            )
            .await?;
            (Some(location), Some(crate::cpu::AbortOnDrop(serving)))
        }
        None => (None, None),
    };
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            // Clients redeem direct tickets here; it checks each ticket's
            // seal itself (clients do not hold the cluster secret).
            .add_service(Counting {
                inner: direct.into_server(),
                running: Arc::clone(&running),
            })
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );
    tracing::info!(%url, ?direct_tls, "executor serving; registering with {}", options.coordinator);

    let beat = Heartbeat {
        id,
        url,
        running_tasks: 0,
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        direct_tls,
        data_cache: None,
        memory: None,
    };
    let beating = spawn_heartbeats(
        options.clone(),
        Arc::clone(&running),
        data_cache,
        memory,
        beat.clone(),
    );
    let result = tokio::select! {
        r = beating => r.unwrap_or(Err(ExecutorError::HeartbeatThread)),
        () = shutdown => {
            let body = serde_json::to_vec(&beat).unwrap_or_default();
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                coordinator.clone().do_action(Action::new(LEAVE_ACTION, body)),
            )
            .await;
            Ok(())
        }
    };
    let _ = stop_tx.send(());
    match serving.await {
        Ok(Err(e)) => Err(e.into()),
        _ => result,
    }
}

/// Serves the direct tickets over TLS at `addr`: the location clients get
/// for them, and the server's task.
async fn serve_direct_tls(
    identity: tonic::transport::Identity,
    addr: SocketAddr,
    host: &str,
    direct: DirectService,
    running: &Arc<AtomicU64>,
) -> Result<(String, tokio::task::JoinHandle<()>), ExecutorError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ExecutorError::Listen { addr, source })?;
    let port = listener
        .local_addr()
        .map_err(|source| ExecutorError::Listen { addr, source })?
        .port();
    let server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?
        .add_service(Counting {
            inner: direct.into_server(),
            running: Arc::clone(running),
        });
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serving = tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming(incoming).await {
            tracing::error!("direct TLS service stopped: {e}");
        }
    });
    Ok((format!("grpc+tls://{host}:{port}"), serving))
}

/// Heartbeats run on a thread and runtime of their own: query work on the
/// executor's runtime can keep its workers busy for seconds, and a starved
/// heartbeat would make a healthy executor look lost.
fn spawn_heartbeats(
    options: ExecutorOptions,
    running: Arc<AtomicU64>,
    data_cache: Option<Arc<DataCache>>,
    memory: Memory,
    beat: Heartbeat,
) -> tokio::sync::oneshot::Receiver<Result<(), ExecutorError>> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("loch-heartbeat".into())
        .spawn(move || {
            let outcome = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async {
                    let client = coordinator_client(&options)?;
                    heartbeats(
                        &options,
                        client,
                        &running,
                        data_cache.as_deref(),
                        &memory,
                        beat,
                    )
                    .await
                }),
                Err(_) => Err(ExecutorError::HeartbeatThread),
            };
            let _ = done.send(outcome);
        });
    if spawned.is_err() {
        tracing::error!("cannot start the heartbeat thread");
    }
    result
}

/// What the heartbeats report of an executor's memory.
struct Memory {
    budget: crate::memory::Budget,
    runtime: Arc<RuntimeEnv>,
}

/// The worker: plans run in a session whose outgoing calls (to other
/// executors, for shuffles) are signed like the coordinator's, under the
/// executor's memory pool (and the query's own `memory_limit`, which comes
/// with each call), spilling into `spill_dir`. Also its runtime (object
/// stores, pool), which direct tickets run on too.
fn new_worker(
    secret: &ClusterSecret,
    coordinator: CoordinatorClient,
    data_cache: Option<Arc<DataCache>>,
    budget: &crate::memory::Budget,
    spill_dir: PathBuf,
    spill_limit: u64,
) -> Result<(Worker, Arc<RuntimeEnv>), ExecutorError> {
    let resolver = SignedChannelResolver::new(secret.clone());
    let stores = StoreRegistry::with_fetch(Arc::new(move |key: String| {
        let mut client = coordinator.clone();
        Box::pin(async move { store_settings(&mut client, key).await })
    }));
    let mut runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(stores))
        .with_memory_pool(crate::memory::query_pool(budget.pool))
        .build()?;
    runtime.disk_manager = crate::memory::disk_manager(spill_dir, spill_limit)?;
    let runtime = Arc::new(runtime);
    let shared = Arc::clone(&runtime);
    let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
        let resolver = resolver.clone();
        let data_cache = data_cache.clone();
        let shared = Arc::clone(&shared);
        async move {
            let mut builder = ctx
                .builder
                .with_distributed_channel_resolver(resolver)
                .with_distributed_user_codec(loch_catalog::delta_write::DeltaWriteCodec)
                .with_distributed_option_extension_from_headers::<crate::memory::QueryOptions>(
                    &ctx.headers,
                )?;
            let limit = builder
                .config()
                .as_ref()
                .and_then(|c| c.options().extensions.get::<crate::memory::QueryOptions>())
                .map_or(0, |o| o.memory_limit);
            if limit > 0 {
                builder = builder.with_runtime_env(crate::memory::with_query_limit(&shared, limit));
            }
            // Stage plans read their Parquet files through the data cache.
            if let Some(cache) = data_cache {
                builder = builder.with_distributed_worker_plan_rewrite_handler(
                    move |event: WorkerPlanRewriteEvent<'_>| {
                        Ok(WorkerPlanRewriteEventResponse::new(cache.wrap(event.plan)?))
                    },
                );
            }
            Ok(builder.build())
        }
    })
    .with_runtime_env(Arc::clone(&runtime));
    Ok((worker, runtime))
}

type CoordinatorClient = FlightServiceClient<Signed<Channel>>;

/// Asks the coordinator for the settings tables gave the store `key`.
async fn store_settings(
    client: &mut CoordinatorClient,
    key: String,
) -> Result<StoreOptions, String> {
    let unreachable = |e: tonic::Status| format!("settings of {key} from the coordinator: {e}");
    let mut answers = client
        .do_action(Action::new(STORE_ACTION, key.clone().into_bytes()))
        .await
        .map_err(unreachable)?
        .into_inner();
    let body = answers
        .message()
        .await
        .map_err(unreachable)?
        .map(|r| r.body)
        .unwrap_or_default();
    if body.is_empty() {
        return Ok(StoreOptions::new());
    }
    serde_json::from_slice(&body).map_err(|e| format!("settings of {key}: {e}"))
}

fn coordinator_client(options: &ExecutorOptions) -> Result<CoordinatorClient, ExecutorError> {
    let endpoint = Endpoint::from_shared(options.coordinator.to_string())
        .map_err(|_| ExecutorError::CoordinatorUrl(options.coordinator.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    Ok(FlightServiceClient::new(Signed::new(
        endpoint.connect_lazy(),
        options.secret.clone(),
    )))
}

async fn heartbeats(
    options: &ExecutorOptions,
    mut client: CoordinatorClient,
    running: &AtomicU64,
    data_cache: Option<&DataCache>,
    memory: &Memory,
    mut beat: Heartbeat,
) -> Result<(), ExecutorError> {
    let url = beat.url.clone();
    let mut last_ok = Instant::now();
    let mut registered = false;
    let mut tick = tokio::time::interval(options.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        beat.running_tasks = running.load(Ordering::Relaxed);
        beat.data_cache = data_cache.map(DataCache::stats);
        beat.memory = Some(crate::memory::MemoryStats::of(
            &memory.budget,
            memory.runtime.memory_pool.as_ref(),
            &memory.runtime.disk_manager,
        ));
        let body = serde_json::to_vec(&beat).unwrap_or_default();
        let answer = async {
            let mut stream = client
                .do_action(Action::new(HEARTBEAT_ACTION, body))
                .await?
                .into_inner();
            while let Some(item) = stream.next().await {
                item?;
            }
            Ok::<(), tonic::Status>(())
        };
        match answer.await {
            Ok(()) => {
                if !registered {
                    tracing::info!(%url, "registered with the coordinator");
                    registered = true;
                }
                last_ok = Instant::now();
            }
            Err(status) => {
                tracing::debug!(%status, "heartbeat not answered");
                if last_ok.elapsed() > options.coordinator_timeout {
                    return Err(ExecutorError::CoordinatorGone {
                        url: options.coordinator.to_string(),
                        secs: options.coordinator_timeout.as_secs(),
                    });
                }
            }
        }
    }
}

/// Counts the tasks an executor runs: each task is one open
/// `CoordinatorChannel` call from the coordinator, or `DoGet` of a direct
/// ticket from a client, from its request until its response stream is
/// dropped.
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    running: Arc<AtomicU64>,
}

impl<S: NamedService> NamedService for Counting<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for Counting<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let task = path.ends_with("/CoordinatorChannel") || path.ends_with("/DoGet");
        let guard = task.then(|| TaskGuard::new(Arc::clone(&self.running)));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => response.map(|body| {
                    Body::new(Guarded {
                        body,
                        _guard: guard,
                    })
                }),
                None => response,
            })
        })
    }
}

struct TaskGuard(Arc<AtomicU64>);

impl TaskGuard {
    fn new(counter: Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        TaskGuard(counter)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its task counted until it is dropped.
struct Guarded {
    body: Body,
    _guard: TaskGuard,
}

impl http_body::Body for Guarded {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
