//! The executor registry: which executors exist, which are alive.
//!
//! Executors register with their first heartbeat and stay live while
//! heartbeats keep coming; one silent for longer than the heartbeat timeout
//! is `lost` and gets no new work; its next heartbeat makes it `alive`
//! again. A clean stop removes it at once. One that a query failed to call
//! and that then refuses a connection is `lost` at once
//! ([`ExecutorCheck`]), so the query can be planned again without it. Lost
//! entries are forgotten after [`FORGET_AFTER`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::engine::ExecutorCheck;
use datafusion::error::DataFusionError;
use datafusion_distributed::WorkerResolver;
use loch_executor::accounting::CacheStats;
use loch_executor::worker::Heartbeat;
use tokio::sync::watch;
use url::Url;

/// How long a lost executor stays listed in `system.executors`.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Most executors one coordinator tracks (a bound on what heartbeats can add).
const MAX_EXECUTORS: usize = 4096;

#[derive(Debug, Clone)]
struct Entry {
    url: Url,
    version: String,
    pid: u32,
    registered_at: SystemTime,
    last_seen: Instant,
    last_seen_at: SystemTime,
    running_tasks: u64,
    /// Found unreachable after a failed call; cleared by its next heartbeat.
    unreachable: bool,
    /// Its TLS location for direct tickets (`grpc+tls://…`), if any.
    direct_tls: Option<String>,
    /// Its data cache's counters, as of its last heartbeat.
    data_cache: Option<CacheStats>,
    /// Its memory, as of its last heartbeat.
    memory: Option<loch_executor::memory::MemoryStats>,
}

/// One row of `system.executors`.
#[derive(Debug, Clone)]
pub struct ExecutorInfo {
    pub id: String,
    pub url: Url,
    pub alive: bool,
    pub version: String,
    pub pid: u32,
    pub registered_at: SystemTime,
    pub last_heartbeat: SystemTime,
    pub running_tasks: u64,
    /// Its data cache's counters, when it keeps one.
    pub data_cache: Option<CacheStats>,
    /// Its memory, as of its last heartbeat.
    pub memory: Option<loch_executor::memory::MemoryStats>,
}

/// The registry; shared by the registry service, planning and `system.executors`.
#[derive(Debug)]
pub struct Registry {
    entries: RwLock<HashMap<String, Entry>>,
    timeout: Duration,
    /// Bumped on every membership change, for whoever waits for one.
    changes: watch::Sender<u64>,
}

impl Registry {
    pub fn new(heartbeat_timeout: Duration) -> Arc<Self> {
        Arc::new(Registry {
            entries: RwLock::new(HashMap::new()),
            timeout: heartbeat_timeout,
            changes: watch::channel(0).0,
        })
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        self.timeout
    }

    /// The one definition of live: heard from within the heartbeat timeout,
    /// and not found unreachable since.
    fn is_alive(&self, entry: &Entry, now: Instant) -> bool {
        !entry.unreachable && now.duration_since(entry.last_seen) <= self.timeout
    }

    /// Records a heartbeat; the first one registers the executor.
    pub fn heartbeat(&self, beat: Heartbeat) -> Result<(), String> {
        let url = Url::parse(&beat.url).map_err(|e| format!("bad executor url: {e}"))?;
        let direct_tls = match beat.direct_tls {
            Some(location) => {
                let parsed =
                    Url::parse(&location).map_err(|e| format!("bad direct TLS location: {e}"))?;
                if parsed.scheme() != "grpc+tls" || parsed.host().is_none() || location.len() > 512
                {
                    return Err(format!("bad direct TLS location {location}"));
                }
                Some(location)
            }
            None => None,
        };
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("bad executor url {url}"));
        }
        if beat.id.is_empty() || beat.id.len() > 256 {
            return Err("bad executor id".into());
        }
        let now = Instant::now();
        let mut changed = false;
        {
            let Ok(mut entries) = self.entries.write() else {
                return Err("registry unavailable".into());
            };
            // Another id at the same address is an earlier process there.
            entries.retain(|id, e| *id == beat.id || e.url != url);
            match entries.get_mut(&beat.id) {
                Some(entry) => {
                    changed |= !self.is_alive(entry, now);
                    changed |= entry.url != url;
                    entry.url = url;
                    entry.last_seen = now;
                    entry.last_seen_at = SystemTime::now();
                    entry.running_tasks = beat.running_tasks;
                    entry.unreachable = false;
                    entry.version = beat.version;
                    entry.pid = beat.pid;
                    entry.direct_tls = direct_tls;
                    entry.data_cache = beat.data_cache;
                    entry.memory = beat.memory.clone();
                }
                None => {
                    if entries.len() >= MAX_EXECUTORS {
                        let forget = self.timeout.max(FORGET_AFTER);
                        entries.retain(|_, e| now.duration_since(e.last_seen) <= forget);
                        if entries.len() >= MAX_EXECUTORS {
                            return Err("too many executors".into());
                        }
                    }
                    tracing::info!(id = %beat.id, %url, "executor joined");
                    entries.insert(
                        beat.id,
                        Entry {
                            url,
                            version: beat.version,
                            pid: beat.pid,
                            registered_at: SystemTime::now(),
                            last_seen: now,
                            last_seen_at: SystemTime::now(),
                            running_tasks: beat.running_tasks,
                            unreachable: false,
                            direct_tls,
                            data_cache: beat.data_cache,
                            memory: beat.memory.clone(),
                        },
                    );
                    changed = true;
                }
            }
        }
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// An executor stopping cleanly.
    pub fn leave(&self, id: &str) {
        let removed = self
            .entries
            .write()
            .map(|mut entries| entries.remove(id).is_some())
            .unwrap_or(false);
        if removed {
            tracing::info!(id, "executor left");
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// URLs of the live executors, sorted (so every caller sees one order).
    pub fn live_urls(&self) -> Vec<Url> {
        let now = Instant::now();
        let mut urls: Vec<Url> = self
            .entries
            .read()
            .map(|entries| {
                entries
                    .values()
                    .filter(|e| self.is_alive(e, now))
                    .map(|e| e.url.clone())
                    .collect()
            })
            .unwrap_or_default();
        urls.sort();
        urls
    }

    /// Every known executor, live or lost, ordered by URL.
    pub fn snapshot(&self) -> Vec<ExecutorInfo> {
        let now = Instant::now();
        let mut rows: Vec<ExecutorInfo> = self
            .entries
            .read()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|(_, e)| now.duration_since(e.last_seen) <= FORGET_AFTER)
                    .map(|(id, e)| ExecutorInfo {
                        id: id.clone(),
                        url: e.url.clone(),
                        alive: self.is_alive(e, now),
                        version: e.version.clone(),
                        pid: e.pid,
                        registered_at: e.registered_at,
                        last_heartbeat: e.last_seen_at,
                        running_tasks: e.running_tasks,
                        data_cache: e.data_cache.clone(),
                        memory: e.memory.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by(|a, b| a.url.cmp(&b.url));
        rows
    }

    /// Waits until at least `count` executors are live, or `limit` passes.
    pub async fn wait_for_live(&self, count: usize, limit: Duration) -> bool {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.live_urls().len() >= count {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.live_urls().len() >= count,
            }
        }
    }
}

/// How long a live executor has to answer when a query failed calling one.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// An HTTP/2 client preface followed by an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
/// The frame type of SETTINGS, the first frame an HTTP/2 server sends.
const H2_SETTINGS: u8 = 0x04;

/// Whether the executor at `url` answers within [`PROBE_TIMEOUT`]: it must
/// send its SETTINGS frame after our preface. Accepting the connection is
/// not enough: the kernel completes handshakes for a process that is being
/// killed until its listening socket is closed, which can come after the
/// connections that broke the query.
async fn answers(url: &Url) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return true;
    };
    let host = host.trim_matches(['[', ']']);
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        if url.scheme() != "http" {
            // A TLS endpoint: accepting is all this probe can ask.
            return Ok(true);
        }
        stream.write_all(H2_PREFACE).await?;
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await?;
        Ok::<_, std::io::Error>(header[3] == H2_SETTINGS)
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Ok(true))
    )
}

#[async_trait::async_trait]
impl ExecutorCheck for Registry {
    fn live(&self) -> Vec<String> {
        let now = Instant::now();
        self.entries
            .read()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|(_, e)| self.is_alive(e, now))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn direct_tls(&self, url: &Url) -> Option<String> {
        let entries = self.entries.read().ok()?;
        entries
            .values()
            .find(|e| &e.url == url)
            .and_then(|e| e.direct_tls.clone())
    }

    /// Asks every live executor for an HTTP/2 handshake; those that refuse
    /// or do not answer within [`PROBE_TIMEOUT`] are lost from now on (until
    /// they send a heartbeat again).
    async fn drop_unreachable(&self) -> usize {
        let probes = self
            .live_urls()
            .into_iter()
            .map(|url| async move { (answers(&url).await, url) });
        let lost: Vec<Url> = futures::future::join_all(probes)
            .await
            .into_iter()
            .filter_map(|(reachable, url)| (!reachable).then_some(url))
            .collect();
        if lost.is_empty() {
            return 0;
        }
        if let Ok(mut entries) = self.entries.write() {
            for entry in entries.values_mut().filter(|e| lost.contains(&e.url)) {
                tracing::warn!(url = %entry.url, "executor unreachable; planning without it");
                entry.unreachable = true;
            }
        }
        self.changes.send_modify(|n| *n += 1);
        lost.len()
    }
}

/// datafusion-distributed asks this where the workers are.
#[derive(Debug, Clone)]
pub struct RegistryResolver(pub Arc<Registry>);

impl WorkerResolver for RegistryResolver {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.live_urls())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, port: u16) -> Heartbeat {
        Heartbeat {
            id: id.into(),
            url: format!("http://127.0.0.1:{port}"),
            running_tasks: 0,
            version: "t".into(),
            pid: 1,
            direct_tls: None,
            data_cache: None,
            memory: None,
        }
    }

    #[test]
    fn direct_tls_locations_come_from_heartbeats() {
        let registry = Registry::new(Duration::from_secs(10));
        let mut with_tls = beat("a", 1);
        with_tls.direct_tls = Some("grpc+tls://127.0.0.1:7".into());
        registry.heartbeat(with_tls).unwrap();
        registry.heartbeat(beat("b", 2)).unwrap();
        let url = |port: u16| Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        assert_eq!(
            registry.direct_tls(&url(1)).as_deref(),
            Some("grpc+tls://127.0.0.1:7")
        );
        assert_eq!(registry.direct_tls(&url(2)), None);
        // Only TLS locations are handed to clients.
        let mut clear = beat("c", 3);
        clear.direct_tls = Some("grpc+tcp://127.0.0.1:8".into());
        assert!(registry.heartbeat(clear).is_err());
    }

    #[tokio::test]
    async fn join_lose_return_leave() {
        let registry = Registry::new(Duration::from_millis(100));
        registry.heartbeat(beat("a", 1)).unwrap();
        registry.heartbeat(beat("b", 2)).unwrap();
        assert!(registry.wait_for_live(2, Duration::from_secs(1)).await);
        assert_eq!(registry.live_urls().len(), 2);
        tokio::time::sleep(Duration::from_millis(150)).await;
        registry.heartbeat(beat("a", 1)).unwrap();
        assert_eq!(
            registry.live_urls(),
            vec![Url::parse("http://127.0.0.1:1").unwrap()]
        );
        let rows = registry.snapshot();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].alive && !rows[1].alive);
        registry.leave("a");
        assert!(registry.live_urls().is_empty());
        // A new process at an old address replaces the old entry.
        registry.heartbeat(beat("c", 2)).unwrap();
        assert_eq!(registry.snapshot().len(), 1);
        assert!(
            registry
                .heartbeat(beat("d", 0).tap_url("not a url"))
                .is_err()
        );
    }

    #[tokio::test]
    async fn unreachable_executors_are_dropped_until_they_beat_again() {
        let registry = Registry::new(Duration::from_secs(60));
        // A gRPC server, as executors run.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        // A port nobody listens on: bound, then closed.
        let closed = {
            let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap().port()
        };
        // A socket the kernel accepts connections on but nobody answers, as
        // for a process being killed or a stopped one.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mute_port = mute.local_addr().unwrap().port();
        registry.heartbeat(beat("up", open)).unwrap();
        registry.heartbeat(beat("down", closed)).unwrap();
        registry.heartbeat(beat("mute", mute_port)).unwrap();
        assert_eq!(registry.drop_unreachable().await, 2);
        let up = Url::parse(&format!("http://127.0.0.1:{open}")).unwrap();
        assert_eq!(registry.live_urls(), vec![up]);
        assert_eq!(registry.live(), vec!["up".to_string()]);
        assert!(
            registry
                .snapshot()
                .iter()
                .any(|e| e.id == "down" && !e.alive)
        );
        // Nothing more to drop; a heartbeat brings the other one back.
        assert_eq!(registry.drop_unreachable().await, 0);
        registry.heartbeat(beat("down", closed)).unwrap();
        assert_eq!(registry.live_urls().len(), 2);
        drop(mute);
    }

    trait TapUrl {
        fn tap_url(self, url: &str) -> Self;
    }
    impl TapUrl for Heartbeat {
        fn tap_url(mut self, url: &str) -> Self {
            self.url = url.into();
            self
        }
    }
}
