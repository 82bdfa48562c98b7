//! The PostgreSQL wire protocol front door.
//!
//! Built on the `pgwire` crate (framing, startup, the extended-protocol state
//! machine) and `arrow-pg` (Arrow → PostgreSQL text/binary encoding). Loch
//! supplies its own handlers rather than `datafusion-postgres`'s because it
//! needs a session per connection (`search_path`, settings), its SQLSTATE
//! table, cancel and `statement_timeout` that stop a running stream, and (in
//! later issues) its own authentication and grants: see docs/architecture.md.

mod connection;
mod handler;
mod held;
mod response;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use connection::MAX_MESSAGE_BYTES;
pub use handler::LochHandlers;

/// Serves pg wire on `listener` until the process stops. Each connection runs
/// in its own task: a malformed or oversized message ([`MAX_MESSAGE_BYTES`])
/// or a failure on one connection closes only that connection.
/// With `tls`, clients may switch to TLS (`SSLRequest` or direct TLS); the
/// handlers decide whether a clear-text login is still accepted.
pub async fn serve(
    listener: TcpListener,
    handlers: Arc<LochHandlers>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accepting a pg wire connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let handlers = Arc::clone(&handlers);
        let tls = tls.clone();
        tokio::spawn(async move {
            serve_connection(socket, peer, handlers, tls).await;
        });
    }
}

async fn serve_connection(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    handlers: Arc<LochHandlers>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
    }
    tracing::debug!(%peer, "pg wire connection opened");
    if let Err(e) = connection::serve(socket, handlers, tls).await {
        tracing::debug!(%peer, error = %e, "pg wire connection ended with an error");
    }
    tracing::debug!(%peer, "pg wire connection closed");
}
