//! `loch local`: the whole warehouse in one process on loopback, with the
//! TPC-H sample, for trying Loch and for tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loch_executor::{Engine, EngineOptions};
use tokio::net::TcpListener;

use crate::auth::{ADMIN_USER, AuthError, Credentials, PasswordSource, admin_password};
use crate::flight::{LochFlightSql, Sessions};
use crate::pgwire::{LochHandlers, serve};

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
}

/// Errors that stop `loch local` from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the catalog: {0}")]
    Catalog(#[from] loch_catalog::CatalogError),
    #[error("admin credentials: {0}")]
    Auth(#[from] AuthError),
    #[error("starting Flight SQL: {0}")]
    Flight(crate::LochError),
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
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting connections.
    pub fn shutdown(self) {
        for task in self.tasks {
            task.abort();
        }
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

/// Opens the engine (generating the sample data on first start) and starts
/// serving pg wire.
pub async fn start(options: &LocalOptions) -> Result<Running, StartError> {
    let engine = Engine::open(&EngineOptions {
        data_dir: options.data_dir.clone(),
        sample_scale: options.sample_scale,
        target_partitions: options.target_partitions,
    })
    .await?;
    let (password, password_source) =
        admin_password(&options.data_dir, options.admin_password.clone())?;
    let credentials = Arc::new(Credentials::new(ADMIN_USER, &password)?);
    drop(password);
    let (listener, pg_addr) = listen(options.pg_addr).await?;
    let mut tasks = Vec::new();
    let flight_addr = match options.flight_addr {
        Some(addr) => {
            let (flight_listener, flight_addr) = listen(addr).await?;
            let sessions = Arc::new(Sessions::new(options.flight_token_ttl));
            let service = LochFlightSql::new(engine.clone(), credentials, Arc::clone(&sessions))
                .map_err(StartError::Flight)?;
            tasks.push(tokio::spawn(crate::flight::serve(
                flight_listener,
                service,
                sessions,
            )));
            Some(flight_addr)
        }
        None => None,
    };
    let handlers = Arc::new(LochHandlers::new(engine));
    tasks.push(tokio::spawn(serve(listener, handlers)));
    Ok(Running {
        pg_addr,
        flight_addr,
        password_source,
        tasks,
    })
}
