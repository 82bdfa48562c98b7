//! `loch local`: the whole warehouse in one process on loopback, with the
//! TPC-H sample, for trying Loch and for tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use loch_executor::{Engine, EngineOptions};
use tokio::net::TcpListener;

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
}

/// Errors that stop `loch local` from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the catalog: {0}")]
    Catalog(#[from] loch_catalog::CatalogError),
    #[error("listening for pg wire on {addr}: {source}")]
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
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting connections.
    pub fn shutdown(self) {
        self.task.abort();
    }
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
    let listener =
        TcpListener::bind(options.pg_addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: options.pg_addr,
                source,
            })?;
    let pg_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: options.pg_addr,
        source,
    })?;
    let handlers = Arc::new(LochHandlers::new(engine));
    let task = tokio::spawn(serve(listener, handlers));
    Ok(Running { pg_addr, task })
}
