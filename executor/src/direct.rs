//! Direct endpoints: Flight SQL clients read a query's rows straight from
//! the executors that produce them, instead of through the coordinator.
//!
//! For a query whose work is one stage of scan tasks (a select, filter or
//! projection over files), the coordinator plans it, cuts it into one plan
//! per task, and answers `GetFlightInfo` with one endpoint per task: the
//! executor's address and a ticket holding that task's plan, sealed with
//! the cluster secret ([`ClusterSecret::seal`]). The executor's
//! [`DirectService`] runs a ticket's plan on `DoGet` and streams its rows.
//!
//! A ticket is the whole permission: the coordinator authorized the query
//! (grants, row filters and column masks are inside the plan) before it
//! sealed it. So an executor runs only plans its coordinator sealed, each
//! once, before the ticket expires ([`TICKET_TTL`]); a changed or forged
//! ticket fails the HMAC check and runs nothing (UNAUTHENTICATED). Every other Flight call on
//! this service is refused.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion_distributed::{DistributedCodec, DistributedExt};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::DeduplicatingProtoConverter;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use ring::rand::{SecureRandom, SystemRandom};
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::ClusterSecret;
use crate::wire::wire_pieces;

/// How long a direct ticket can be redeemed after the coordinator made it.
pub const TICKET_TTL: Duration = Duration::from_secs(600);
/// What a direct ticket's payload starts with (and its version).
const MAGIC: &[u8; 8] = b"LOCHDT1\0";
const NONCE_BYTES: usize = 16;
const HEADER_BYTES: usize = MAGIC.len() + 8 + 8 + NONCE_BYTES;

/// How the executor turns a query error into the status a client gets
/// (the coordinator's SQLSTATE mapping, passed in by the binary).
pub type StatusOf = fn(DataFusionError) -> Status;

/// What a direct ticket says: run `plan` once, before `expires_ms`, within
/// `timeout` (the session's `statement_timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectTicket {
    pub expires_ms: u64,
    pub timeout: Option<Duration>,
    pub nonce: [u8; NONCE_BYTES],
    /// The task's physical plan, as datafusion-proto bytes.
    pub plan: Vec<u8>,
}

/// Why a ticket is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("not a ticket of this cluster, or changed since it was issued")]
    Forged,
    #[error("the ticket has expired: run the query again")]
    Expired,
    #[error("the ticket was already redeemed: run the query again")]
    Redeemed,
    #[error("no random numbers from the system")]
    NoRandom,
}

impl DirectTicket {
    /// A ticket for `plan`, valid for [`TICKET_TTL`] from now.
    pub fn new(plan: Vec<u8>, timeout: Option<Duration>) -> Result<Self, TicketError> {
        let mut nonce = [0u8; NONCE_BYTES];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| TicketError::NoRandom)?;
        Ok(DirectTicket {
            expires_ms: unix_ms().saturating_add(TICKET_TTL.as_millis() as u64),
            timeout,
            nonce,
            plan,
        })
    }

    /// The ticket's bytes, sealed with `secret`.
    pub fn seal(&self, secret: &ClusterSecret) -> Vec<u8> {
        let mut payload = Vec::with_capacity(HEADER_BYTES + self.plan.len());
        payload.extend_from_slice(MAGIC);
        payload.extend_from_slice(&self.expires_ms.to_le_bytes());
        let timeout = self.timeout.map_or(0, |t| t.as_millis().max(1) as u64);
        payload.extend_from_slice(&timeout.to_le_bytes());
        payload.extend_from_slice(&self.nonce);
        payload.extend_from_slice(&self.plan);
        secret.seal(&payload)
    }

    /// The ticket in `bytes` if `secret` sealed it and it has not expired.
    pub fn open(secret: &ClusterSecret, bytes: &[u8]) -> Result<Self, TicketError> {
        let payload = secret.open(bytes).ok_or(TicketError::Forged)?;
        if payload.len() < HEADER_BYTES || !payload.starts_with(MAGIC) {
            return Err(TicketError::Forged);
        }
        let u64_at = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&payload[at..at + 8]);
            u64::from_le_bytes(raw)
        };
        let expires_ms = u64_at(MAGIC.len());
        let timeout_ms = u64_at(MAGIC.len() + 8);
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&payload[MAGIC.len() + 16..HEADER_BYTES]);
        if unix_ms() > expires_ms {
            return Err(TicketError::Expired);
        }
        Ok(DirectTicket {
            expires_ms,
            timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
            nonce,
            plan: payload[HEADER_BYTES..].to_vec(),
        })
    }
}

/// A physical plan as a direct ticket carries it, encoded with the codecs
/// of `config` (datafusion-distributed's and the ones Loch registers).
pub fn encode_plan(
    plan: Arc<dyn ExecutionPlan>,
    config: &datafusion::prelude::SessionConfig,
) -> Result<Vec<u8>, DataFusionError> {
    let codec = DistributedCodec::new_combined_with_user(config);
    physical_plan_to_bytes_with_proto_converter(
        plan,
        &codec,
        &DeduplicatingProtoConverter::default(),
    )
    .map(|bytes| bytes.to_vec())
}

/// The executor's Flight service for direct tickets.
#[derive(Clone)]
pub struct DirectService {
    secret: ClusterSecret,
    runtime: Arc<RuntimeEnv>,
    redeemed: moka::sync::Cache<[u8; NONCE_BYTES], ()>,
    status_of: StatusOf,
}

impl DirectService {
    /// A service running tickets `secret` sealed over `runtime` (the
    /// executor's object stores and memory pool).
    pub fn new(secret: ClusterSecret, runtime: Arc<RuntimeEnv>, status_of: StatusOf) -> Self {
        DirectService {
            secret,
            runtime,
            redeemed: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(TICKET_TTL + Duration::from_secs(60))
                .build(),
            status_of,
        }
    }

    /// The tonic service, with message limits for plans in tickets.
    pub fn into_server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(usize::MAX)
    }

    /// Checks a ticket and starts its plan.
    fn start(&self, bytes: &[u8]) -> Result<(DirectTicket, SendableRecordBatchStream), Status> {
        let ticket = DirectTicket::open(&self.secret, bytes).map_err(refused)?;
        // Remembered until after it would have expired anyway.
        if !self.redeemed.entry(ticket.nonce).or_insert(()).is_fresh() {
            return Err(refused(TicketError::Redeemed));
        }
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_distributed_user_codec(loch_catalog::delta_write::DeltaWriteCodec)
            .build();
        let task = state.task_ctx();
        let codec = DistributedCodec::new_combined_with_user(task.session_config());
        let plan = physical_plan_from_bytes_with_proto_converter(
            &ticket.plan,
            &task,
            &codec,
            &DeduplicatingProtoConverter::default(),
        )
        .map_err(self.status_of)?;
        let stream = execute_stream(plan, task).map_err(self.status_of)?;
        Ok((ticket, stream))
    }
}

/// A refused ticket is UNAUTHENTICATED, like any call to an executor
/// without a valid cluster credential.
fn refused(e: TicketError) -> Status {
    match e {
        TicketError::NoRandom => Status::internal(e.to_string()),
        _ => Status::unauthenticated(format!("direct ticket refused: {e}")),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn only_do_get<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "an executor serves only DoGet of the direct tickets its coordinator hands out",
    ))
}

#[tonic::async_trait]
impl FlightService for DirectService {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;
    type DoExchangeStream = Stream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let (ticket, stream) = self.start(&request.get_ref().ticket)?;
        let schema = stream.schema();
        let status_of = self.status_of;
        let batches: BoxStream<'static, Result<_, FlightError>> = stream
            .flat_map(move |batch| {
                let pieces: Vec<Result<_, FlightError>> = match batch {
                    Ok(batch) => wire_pieces(batch).into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(FlightError::Tonic(Box::new(status_of(e))))],
                };
                futures::stream::iter(pieces)
            })
            .boxed();
        let batches = match ticket.timeout {
            Some(limit) => within(batches, limit),
            None => batches,
        };
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            // `wire_pieces` cut the batches; see there.
            .with_max_flight_data_size(usize::MAX)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(data)))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        only_do_get()
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        only_do_get()
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        only_do_get()
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        only_do_get()
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        only_do_get()
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        only_do_get()
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        only_do_get()
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        only_do_get()
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        only_do_get()
    }
}

/// `batches` ending with a 57014 error (PostgreSQL's "statement timeout")
/// when they are not done within `limit`.
fn within<T: Send + 'static>(
    batches: BoxStream<'static, Result<T, FlightError>>,
    limit: Duration,
) -> BoxStream<'static, Result<T, FlightError>> {
    let deadline = Box::pin(tokio::time::sleep(limit));
    futures::stream::unfold(Some((batches, deadline)), |state| async move {
        let (mut batches, mut deadline) = state?;
        tokio::select! {
            item = batches.next() => item.map(|item| (item, Some((batches, deadline)))),
            () = &mut deadline => {
                let mut status = Status::cancelled(
                    "canceling statement due to statement timeout (SQLSTATE 57014)",
                );
                status.metadata_mut().insert(
                    "x-loch-sqlstate",
                    tonic::metadata::MetadataValue::from_static("57014"),
                );
                Some((Err(FlightError::Tonic(Box::new(status))), None))
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_open_only_as_sealed() {
        let secret = ClusterSecret::generate().unwrap();
        let ticket = DirectTicket::new(b"a plan".to_vec(), Some(Duration::from_secs(3))).unwrap();
        let sealed = ticket.seal(&secret);
        assert_eq!(DirectTicket::open(&secret, &sealed), Ok(ticket.clone()));
        // Another cluster's secret, any changed byte, or a cut ticket: forged.
        let other = ClusterSecret::generate().unwrap();
        assert_eq!(
            DirectTicket::open(&other, &sealed),
            Err(TicketError::Forged)
        );
        for at in [0, 9, HEADER_BYTES, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 1;
            assert_eq!(
                DirectTicket::open(&secret, &changed),
                Err(TicketError::Forged),
                "byte {at}"
            );
        }
        assert_eq!(
            DirectTicket::open(&secret, &sealed[..sealed.len() - 1]),
            Err(TicketError::Forged)
        );
        assert_eq!(DirectTicket::open(&secret, b""), Err(TicketError::Forged));
        // Sealed data of another kind (no magic) is not a ticket.
        assert_eq!(
            DirectTicket::open(
                &secret,
                &secret.seal(b"something else entirely, long enough")
            ),
            Err(TicketError::Forged)
        );
    }

    #[test]
    fn expired_tickets_are_refused() {
        let secret = ClusterSecret::generate().unwrap();
        let mut ticket = DirectTicket::new(Vec::new(), None).unwrap();
        ticket.expires_ms = unix_ms() - 1;
        assert_eq!(
            DirectTicket::open(&secret, &ticket.seal(&secret)),
            Err(TicketError::Expired)
        );
    }

    #[test]
    fn a_ticket_runs_once() {
        let secret = ClusterSecret::generate().unwrap();
        let service = DirectService::new(secret.clone(), Arc::new(RuntimeEnv::default()), |e| {
            Status::internal(e.to_string())
        });
        let plan: Arc<dyn ExecutionPlan> =
            Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::new(
                datafusion::arrow::datatypes::Schema::empty(),
            )));
        let config = datafusion::prelude::SessionConfig::new();
        let bytes = encode_plan(plan, &config).unwrap();
        let sealed = DirectTicket::new(bytes, None).unwrap().seal(&secret);
        assert!(service.start(&sealed).is_ok());
        let again = service.start(&sealed).err().unwrap();
        assert_eq!(again.code(), tonic::Code::Unauthenticated);
        assert!(again.message().contains("already redeemed"));
    }
}
