//! The coordinator's cluster endpoint: executors register and heartbeat
//! here with Flight `DoAction`, signed with the cluster secret (checked by an
//! interceptor before any of this runs). Nothing else is served on it.

use std::sync::Arc;

use arrow_flight::Action;
use arrow_flight::flight_service_server::FlightServiceServer;
use futures::stream;
use loch_catalog::object_stores::StoreRegistry;
use loch_executor::cluster::ClusterSecret;
use loch_executor::internal_flight::{Internal, InternalCalls, Stream};
use loch_executor::worker::{HEARTBEAT_ACTION, Heartbeat, LEAVE_ACTION, STORE_ACTION};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};

use super::registry::Registry;

/// Largest heartbeat accepted.
const MAX_MESSAGE: usize = 64 * 1024;

/// Serves the registry on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    stores: Arc<StoreRegistry>,
    secret: ClusterSecret,
) {
    let service = InterceptedService::new(
        FlightServiceServer::new(Internal(RegistryService { registry, stores }))
            .max_decoding_message_size(MAX_MESSAGE),
        secret.verifier().interceptor(),
    );
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(incoming)
        .await
    {
        tracing::error!(error = %e, "cluster endpoint stopped");
    }
}

struct RegistryService {
    registry: Arc<Registry>,
    stores: Arc<StoreRegistry>,
}

impl RegistryService {
    /// The settings tables gave an object store, for an executor about to
    /// read it (empty when none: the executor's environment applies).
    fn store_settings(&self, key: &[u8]) -> Result<Stream<arrow_flight::Result>, Status> {
        let key = std::str::from_utf8(key)
            .map_err(|_| Status::invalid_argument("store key is not UTF-8"))?;
        let settings = self.stores.settings(key).unwrap_or_default();
        let body = serde_json::to_vec(&settings)
            .map_err(|e| Status::internal(format!("store settings: {e}")))?;
        let answer = arrow_flight::Result { body: body.into() };
        Ok(Box::pin(stream::iter([Ok(answer)])))
    }
}

#[tonic::async_trait]
impl InternalCalls for RegistryService {
    const SERVES: &'static str = "the cluster endpoint serves executor registration only";

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Stream<arrow_flight::Result>, Status> {
        let action = request.into_inner();
        if action.r#type == STORE_ACTION {
            return self.store_settings(&action.body);
        }
        let beat: Heartbeat = serde_json::from_slice(&action.body)
            .map_err(|e| Status::invalid_argument(format!("bad heartbeat: {e}")))?;
        match action.r#type.as_str() {
            HEARTBEAT_ACTION => self
                .registry
                .heartbeat(beat)
                .map_err(Status::invalid_argument)?,
            LEAVE_ACTION => self.registry.leave(&beat.id),
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown cluster action {other:?}"
                )));
            }
        }
        Ok(Box::pin(stream::empty()))
    }
}
