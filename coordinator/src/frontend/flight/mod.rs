//! The Arrow Flight SQL front door: Arrow results for Python (ADBC,
//! pyarrow) and other Arrow-native clients, on its own port.
//!
//! Built on `arrow-flight`'s `FlightSqlService`; sessions, planning and
//! errors are the same [`crate::session::Session`] code pg wire uses.

mod endpoints;
mod metadata;
mod params;
mod service;
mod sessions;
mod status;

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub use service::LochFlightSql;
pub use sessions::Sessions;
pub use status::{code_for, datafusion_status};

/// Largest single message Loch accepts from a client (DoPut); the rows one
/// bind may carry are capped separately.
const MAX_DECODING_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The gRPC server Flight SQL runs on, with TLS when `tls` is given; made
/// before serving so a bad certificate stops the start.
pub fn server(
    tls: Option<&crate::frontend::tls::TlsIdentity>,
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let builder = tonic::transport::Server::builder();
    match tls {
        Some(identity) => builder.tls_config(identity.flight_config()),
        None => Ok(builder),
    }
}

/// Serves Flight SQL on `listener` until the task is dropped; expired
/// sessions are swept in the background. `builder` is [`server`]'s: with TLS, the port speaks only TLS (gRPC in
/// clear text fails the handshake).
pub async fn serve(
    listener: TcpListener,
    service: LochFlightSql,
    sessions: Arc<Sessions>,
    builder: tonic::transport::Server,
) {
    let sweep_every =
        (sessions.ttl() / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
    // Stops the sweeper however `serve` ends (including being aborted).
    let _sweeper = loch_executor::cpu::AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_every);
        loop {
            tick.tick().await;
            let dropped = sessions.sweep();
            if dropped > 0 {
                tracing::debug!(dropped, "flight sql: expired sessions dropped");
            }
        }
    }));
    let server =
        FlightServiceServer::new(service).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = builder;
    if let Err(e) = builder
        .add_service(server)
        .serve_with_incoming(incoming)
        .await
    {
        tracing::error!(error = %e, "flight sql server stopped");
    }
}
