//! Where a Flight SQL client reads a query's rows: the endpoints of its
//! FlightInfo. A kept result is served over several endpoints at once; a
//! select, filter or projection over files is read straight from the
//! executors that scan it (direct endpoints, one sealed one-time ticket
//! each), and an endpoint whose executor is gone is served by the
//! coordinator instead.

use std::pin::Pin;
use std::sync::Arc;

use crate::cache::result_cache::{CachedResult, ResultCache};
use arrow::datatypes::Schema;
use arrow_flight::FlightData;
use arrow_flight::sql::{Any, TicketStatementQuery};
use arrow_flight::{Action, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::execution::SessionState;
use datafusion::physical_plan::ExecutionPlan;
use loch_executor::direct::{DirectService, DirectTicket, TicketError, encode_plan};
use prost::Message;

use crate::engine::Engine;
use tonic::{Response, Status};

use super::metadata::wire_schema;
use super::sessions::{FlightSession, Work};
use super::status::{status, unauthenticated};
use crate::error::LochError;
use crate::session::Output;

/// Endpoints a kept result of a query without order is served over: the
/// client reads them at once, so the coordinator sends on more than one
/// core.
pub(super) const KEPT_ENDPOINTS: usize = 2;

/// The tickets' work for a kept result: its messages as they are, when
/// they are what Flight sends (no view types); else its batches,
/// converted as they are sent.
pub(super) fn kept_parts(result: Arc<CachedResult>) -> Vec<Work> {
    if *wire_schema(&result.wire_schema) == *result.wire_schema {
        return result
            .flight_parts(KEPT_ENDPOINTS)
            .into_iter()
            .map(Work::Encoded)
            .collect();
    }
    let schema = Arc::clone(&result.schema);
    ResultCache::split(result, KEPT_ENDPOINTS)
        .into_iter()
        .map(|stream| {
            Work::Ready(Output::Rows {
                schema: Arc::clone(&schema),
                stream,
            })
        })
        .collect()
}

/// The session setting that chooses where a distributed query's rows come
/// from: `direct` (the executors, when the query allows) or `coordinator`.
pub const ENDPOINTS_SETTING: &str = "loch.flight_endpoints";

/// Whether a session whose [`ENDPOINTS_SETTING`] is `value` gets direct
/// endpoints.
pub(super) fn wants_direct(value: &str) -> bool {
    match value.trim().to_ascii_lowercase().as_str() {
        "direct" => true,
        "coordinator" => false,
        _ => DIRECT_BY_DEFAULT,
    }
}

/// Direct endpoints unless a session asks otherwise (measured: see
/// benchmarks/README.md, "Direct endpoints").
pub(super) const DIRECT_BY_DEFAULT: bool = true;

/// The Flight location of an executor's URL (`http://h:p` →
/// `grpc+tcp://h:p`).
pub(super) fn flight_location(url: &url::Url) -> String {
    let scheme = if url.scheme() == "https" {
        "grpc+tls"
    } else {
        "grpc+tcp"
    };
    let host = url.host_str().unwrap_or("localhost");
    match url.port_or_known_default() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// The Flight location that sends a client back to the server it got
/// the FlightInfo from (Flight's "reuse connection").
pub(super) const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

/// Sends the DoAction `kind` about a direct ticket to the executor whose
/// worker service is at `url`: its answer (`None` if it gave none), or why it could not
/// be reached within a few seconds. An executor that refuses the call
/// answers `Ok(None)`.
pub(super) async fn direct_action(
    url: String,
    kind: &'static str,
    ticket: bytes::Bytes,
) -> Result<Option<bytes::Bytes>, String> {
    let call = async {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| e.to_string())?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut client = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
        let answers = match client.do_action(Action::new(kind, ticket)).await {
            Ok(answers) => answers,
            Err(e) if e.code() == tonic::Code::Unavailable => return Err(e.to_string()),
            Err(_) => return Ok(None),
        };
        match answers.into_inner().message().await {
            Ok(answer) => Ok(answer.map(|a| a.body)),
            Err(e) if e.code() == tonic::Code::Unavailable => Err(e.to_string()),
            Err(_) => Ok(None),
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), call)
        .await
        .unwrap_or_else(|_| Err("no answer within 3 s".to_string()))
}

/// A query's rows as a `DoGet` answers them.
pub(super) type DoGetStream =
    Pin<Box<dyn futures::Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The direct endpoints of a coordinator with executors.
pub(super) struct Endpoints {
    engine: Engine,
    /// Runs direct tickets a client brings back to the coordinator
    /// because their executor is out of reach (engines with direct
    /// endpoints only).
    direct: Option<DirectService>,
}

impl Endpoints {
    pub(super) fn new(engine: Engine) -> Self {
        let direct = engine.ticket_secret().map(|secret| {
            DirectService::new(
                secret.clone(),
                Arc::clone(engine.runtime()),
                super::status::datafusion_status,
            )
        });
        Endpoints { engine, direct }
    }

    /// A FlightInfo pointing the client at the executors, one endpoint per
    /// scan task of `physical` (planned with `state`, see
    /// [`Session::flight_rows`]), when the query can be read that way (see
    /// [`crate::cluster::placement::direct_tasks`]); `None` to stream it
    /// through the coordinator.
    pub(super) fn direct_info(
        &self,
        fs: &FlightSession,
        physical: Arc<dyn ExecutionPlan>,
        state: SessionState,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Option<FlightInfo>, Status> {
        let Some(secret) = self.engine.ticket_secret() else {
            return Ok(None);
        };
        // Executors send the plan's own batches: its types must already be
        // the ones Loch sends.
        let wire = wire_schema(schema);
        let sent = physical.schema();
        let same_types = sent.fields().len() == wire.fields().len()
            && sent
                .fields()
                .iter()
                .zip(wire.fields())
                .all(|(a, b)| a.data_type() == b.data_type());
        if !same_types {
            return Ok(None);
        }
        let urls = datafusion_distributed::DistributedGetterExt::get_distributed_worker_resolver(
            state.config(),
        )
        .and_then(|r| r.get_urls())
        .unwrap_or_default();
        let Some(tasks) = crate::cluster::placement::direct_tasks(&physical, &urls) else {
            return Ok(None);
        };
        // Where clients read each task: with TLS on, only at executors that
        // serve direct tickets over TLS (else the whole query streams
        // through the coordinator, encrypted).
        let mut located = Vec::with_capacity(tasks.len());
        for (url, plan) in tasks {
            let client_location = if self.engine.direct_over_tls() {
                let tls = self
                    .engine
                    .executor_check()
                    .and_then(|check| check.direct_tls(&url));
                let Some(tls) = tls else {
                    return Ok(None);
                };
                tls
            } else {
                flight_location(&url)
            };
            located.push((url.to_string(), client_location, plan));
        }
        let internal = |e: String| status(&LochError::Internal(e));
        let timeout = fs.session.statement_timeout();
        let mut info = FlightInfo::new()
            .try_with_schema(&sent)
            .map_err(|e| internal(e.to_string()))?
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_ordered(false);
        for (home, client_location, plan) in located {
            let bytes = encode_plan(plan, state.config()).map_err(|e| status(&e.into()))?;
            // `home` is where the coordinator reaches the executor to claim
            // or cancel the ticket; `client_location` where clients read it.
            let ticket = DirectTicket::new(bytes, timeout, home)
                .map_err(|e| internal(e.to_string()))?
                .seal(secret);
            // The executor first; the coordinator when it cannot be reached.
            info = info.with_endpoint(
                FlightEndpoint::new()
                    .with_ticket(Ticket::new(ticket))
                    .with_location(client_location)
                    .with_location(REUSE_CONNECTION),
            );
        }
        Ok(Some(info))
    }

    /// Cancels the queries of `info`'s tickets: the session's own, and
    /// direct tickets here and at their executors. Whether any was
    /// cancelled.
    pub(super) async fn cancel_tickets(&self, fs: &FlightSession, info: &FlightInfo) -> bool {
        let mut found = false;
        let mut direct = Vec::new();
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            if let Some(handle) = statement_handle(&ticket.ticket) {
                found |= fs.cancel_query(&handle);
            } else if let (Some(secret), Some(service)) =
                (self.engine.ticket_secret(), &self.direct)
            {
                // Only tickets this cluster sealed, sent only to the
                // executor the ticket names: a client cannot make the
                // coordinator call out anywhere else.
                if let Ok(opened) = DirectTicket::open(secret, &ticket.ticket) {
                    found |= service.cancel(&ticket.ticket).is_ok();
                    direct.push(direct_action(
                        opened.home,
                        loch_executor::direct::CANCEL_ACTION,
                        ticket.ticket.clone(),
                    ));
                }
            }
        }
        let answers = futures::future::join_all(direct).await;
        found || answers.iter().any(|answer| matches!(answer, Ok(Some(_))))
    }

    /// Runs a direct ticket a client brought to the coordinator: claimed
    /// at its executor first, so a ticket that ran there does not run
    /// again; run here when the executor took it or cannot be reached.
    pub(super) async fn redeem_direct(&self, raw: &[u8]) -> Result<Response<DoGetStream>, Status> {
        let (Some(secret), Some(service)) = (self.engine.ticket_secret(), &self.direct) else {
            return Err(unauthenticated("direct tickets are not served here"));
        };
        let refused = |e: TicketError| unauthenticated(&format!("direct ticket refused: {e}"));
        let ticket = DirectTicket::open(secret, raw).map_err(refused)?;
        if service.knows(&ticket) {
            return Err(refused(TicketError::Redeemed));
        }
        let claim = direct_action(
            ticket.home.clone(),
            loch_executor::direct::CLAIM_ACTION,
            bytes::Bytes::copy_from_slice(raw),
        )
        .await;
        match claim {
            Ok(Some(answer)) if answer.as_ref() == loch_executor::direct::CLAIMED => {
                tracing::info!(executor = %ticket.home, "direct ticket run on the coordinator");
            }
            Ok(_) => return Err(refused(TicketError::Redeemed)),
            Err(e) => {
                tracing::warn!(
                    executor = %ticket.home,
                    error = %e,
                    "direct ticket run on the coordinator: its executor is out of reach"
                );
            }
        }
        service.redeem(raw).map(Response::new)
    }
}

/// The handle in a `TicketStatementQuery` ticket.
pub(super) fn statement_handle(ticket: &[u8]) -> Option<String> {
    let any = Any::decode(ticket).ok()?;
    let ticket: TicketStatementQuery = any.unpack().ok()??;
    String::from_utf8(ticket.statement_handle.to_vec()).ok()
}
