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
//!
//! Each endpoint also lists the coordinator (Flight's "reuse connection"
//! location) after the executor: a client that cannot reach the executor
//! redeems the ticket there instead. The coordinator first claims the
//! ticket at its executor ([`CLAIM_ACTION`]), so a ticket the executor
//! already ran does not run again; when the executor cannot be reached,
//! the coordinator runs the task itself with the same [`DirectService`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{Action, FlightData, Ticket};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion_distributed::{DistributedCodec, DistributedExt};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::DeduplicatingProtoConverter;
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::{Request, Status};

use crate::cluster::{ClusterSecret, unix_ms};
pub use crate::internal_flight::Stream;
use crate::internal_flight::{Internal, InternalCalls};
use crate::wire::flight_data;

/// How long a direct ticket can be redeemed after the coordinator made it.
pub const TICKET_TTL: Duration = Duration::from_secs(600);
/// What a direct ticket's payload starts with (and its version).
const MAGIC: &[u8; 8] = b"LOCHDT2\0";
const NONCE_BYTES: usize = 16;
/// Magic, expiry, timeout, nonce and the length of the home location.
const HEADER_BYTES: usize = MAGIC.len() + 8 + 8 + NONCE_BYTES + 2;
/// The `type_url` of the protobuf `Any` a sealed ticket travels in, so a
/// Flight SQL server (the coordinator) routes it to its fallback `DoGet`.
pub const TICKET_TYPE: &str = "type.googleapis.com/loch.DirectTicket";

/// How the executor turns a query error into the status a client gets
/// (the coordinator's SQLSTATE mapping, passed in by the binary).
pub type StatusOf = fn(DataFusionError) -> Status;

/// What a direct ticket says: run `plan` once, before `expires_ms`, within
/// `timeout` (the session's `statement_timeout`), at `home`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectTicket {
    pub expires_ms: u64,
    pub timeout: Option<Duration>,
    pub nonce: [u8; NONCE_BYTES],
    /// The worker URL of the executor the task was placed on (where the
    /// coordinator claims or cancels the ticket).
    pub home: String,
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
    #[error("the query was cancelled")]
    Cancelled,
    #[error("no random numbers from the system")]
    NoRandom,
}

impl DirectTicket {
    /// A ticket for `plan` placed at `home`, valid for [`TICKET_TTL`] from
    /// now.
    pub fn new(
        plan: Vec<u8>,
        timeout: Option<Duration>,
        home: impl Into<String>,
    ) -> Result<Self, TicketError> {
        let mut nonce = [0u8; NONCE_BYTES];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| TicketError::NoRandom)?;
        Ok(DirectTicket {
            expires_ms: unix_ms().saturating_add(TICKET_TTL.as_millis() as u64),
            timeout,
            nonce,
            home: home.into(),
            plan,
        })
    }

    /// The ticket's bytes, sealed with `secret` (inside a protobuf `Any` of
    /// type [`TICKET_TYPE`]).
    pub fn seal(&self, secret: &ClusterSecret) -> Vec<u8> {
        let home = self.home.as_bytes();
        let home = &home[..home.len().min(usize::from(u16::MAX))];
        let mut payload = Vec::with_capacity(HEADER_BYTES + home.len() + self.plan.len());
        payload.extend_from_slice(MAGIC);
        payload.extend_from_slice(&self.expires_ms.to_le_bytes());
        let timeout = self.timeout.map_or(0, |t| t.as_millis().max(1) as u64);
        payload.extend_from_slice(&timeout.to_le_bytes());
        payload.extend_from_slice(&self.nonce);
        payload.extend_from_slice(&(home.len() as u16).to_le_bytes());
        payload.extend_from_slice(home);
        payload.extend_from_slice(&self.plan);
        arrow_flight::sql::Any {
            type_url: TICKET_TYPE.to_string(),
            value: secret.seal(&payload).into(),
        }
        .encode_to_vec()
    }

    /// The ticket in `bytes` if `secret` sealed it and it has not expired.
    pub fn open(secret: &ClusterSecret, bytes: &[u8]) -> Result<Self, TicketError> {
        let any = arrow_flight::sql::Any::decode(bytes).map_err(|_| TicketError::Forged)?;
        if any.type_url != TICKET_TYPE {
            return Err(TicketError::Forged);
        }
        let payload = secret.open(&any.value).ok_or(TicketError::Forged)?;
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
        nonce.copy_from_slice(&payload[MAGIC.len() + 16..MAGIC.len() + 16 + NONCE_BYTES]);
        let home_len = usize::from(u16::from_le_bytes([
            payload[HEADER_BYTES - 2],
            payload[HEADER_BYTES - 1],
        ]));
        let rest = &payload[HEADER_BYTES..];
        if rest.len() < home_len {
            return Err(TicketError::Forged);
        }
        let home = std::str::from_utf8(&rest[..home_len]).map_err(|_| TicketError::Forged)?;
        if unix_ms() > expires_ms {
            return Err(TicketError::Expired);
        }
        Ok(DirectTicket {
            expires_ms,
            timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
            nonce,
            home: home.to_string(),
            plan: rest[home_len..].to_vec(),
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

/// The plan of a direct ticket, decoded with the codecs of `task`'s
/// session (the twin of [`encode_plan`]).
fn decode_plan(
    bytes: &[u8],
    task: &datafusion::execution::TaskContext,
) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    let codec = DistributedCodec::new_combined_with_user(task.session_config());
    physical_plan_from_bytes_with_proto_converter(
        bytes,
        task,
        &codec,
        &DeduplicatingProtoConverter::default(),
    )
}

/// The executor's Flight service for direct tickets.
#[derive(Clone)]
pub struct DirectService {
    secret: ClusterSecret,
    runtime: Arc<RuntimeEnv>,
    /// Tickets redeemed or cancelled, by nonce, until after they expire.
    tickets: moka::sync::Cache<[u8; NONCE_BYTES], Arc<TicketState>>,
    status_of: StatusOf,
    /// Decoded Parquet files the tickets' scans read through.
    data_cache: Option<Arc<crate::data_cache::DataCache>>,
}

impl DirectService {
    /// A service running tickets `secret` sealed over `runtime` (the
    /// executor's object stores and memory pool).
    pub fn new(secret: ClusterSecret, runtime: Arc<RuntimeEnv>, status_of: StatusOf) -> Self {
        DirectService {
            secret,
            runtime,
            tickets: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(TICKET_TTL + Duration::from_secs(60))
                .build(),
            status_of,
            data_cache: None,
        }
    }

    /// Tickets' Parquet scans read through `cache` (the executor's).
    pub fn with_data_cache(mut self, cache: Option<Arc<crate::data_cache::DataCache>>) -> Self {
        self.data_cache = cache;
        self
    }

    /// The tonic service, with message limits for plans in tickets.
    pub fn into_server(self) -> FlightServiceServer<Internal<Self>> {
        FlightServiceServer::new(Internal(self))
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(usize::MAX)
    }

    /// Checks a ticket and streams its plan's rows as Flight data (what
    /// `DoGet` of the ticket answers, on an executor or the coordinator).
    pub fn redeem(&self, bytes: &[u8]) -> Result<Stream<FlightData>, Status> {
        let (ticket, state, stream) = self.start(bytes)?;
        let schema = stream.schema();
        let status_of = self.status_of;
        let batches = guarded(
            stream.map(move |batch| batch.map_err(status_of)).boxed(),
            ticket.timeout,
            state,
        );
        Ok(flight_data(schema, batches))
    }

    /// Whether this service has already redeemed or cancelled `ticket`.
    pub fn knows(&self, ticket: &DirectTicket) -> bool {
        self.tickets.contains_key(&ticket.nonce)
    }

    /// Checks a ticket and starts its plan.
    fn start(
        &self,
        bytes: &[u8],
    ) -> Result<(DirectTicket, Arc<TicketState>, SendableRecordBatchStream), Status> {
        let ticket = DirectTicket::open(&self.secret, bytes).map_err(refused)?;
        let (ticket_state, fresh) = self.remember(&ticket);
        if ticket_state.is_cancelled() {
            return Err(cancelled());
        }
        if !fresh {
            return Err(refused(TicketError::Redeemed));
        }
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_distributed_user_codec(loch_catalog::delta_write::DeltaWriteCodec)
            .build();
        let task = state.task_ctx();
        // A ticket that could not start here ran nothing: forget it, so the
        // coordinator, where the client goes next, can claim and run it
        // (and report its error itself if it fails there too).
        let not_started = |e: DataFusionError| {
            if !ticket_state.is_cancelled() {
                self.tickets.invalidate(&ticket.nonce);
            }
            (self.status_of)(e)
        };
        let mut plan = decode_plan(&ticket.plan, &task).map_err(not_started)?;
        if let Some(cache) = &self.data_cache {
            plan = cache.wrap(plan).map_err(not_started)?;
        }
        let stream = execute_stream(plan, task).map_err(not_started)?;
        Ok((ticket, ticket_state, stream))
    }

    /// Cancels the ticket in `bytes`: its stream ends with CANCELLED, or it
    /// never runs. Whoever holds a ticket may cancel it (the coordinator
    /// does, for `CancelFlightInfo`).
    pub fn cancel(&self, bytes: &[u8]) -> Result<(), Status> {
        let ticket = match DirectTicket::open(&self.secret, bytes) {
            Ok(ticket) => ticket,
            // It cannot run any more anyway.
            Err(TicketError::Expired) => return Ok(()),
            Err(e) => return Err(refused(e)),
        };
        self.remember(&ticket).0.cancel();
        Ok(())
    }

    /// Takes the ticket in `bytes` for someone else to run: whether it was
    /// still free (never redeemed nor cancelled here); it never runs here
    /// afterwards.
    fn claim(&self, bytes: &[u8]) -> Result<bool, Status> {
        let ticket = DirectTicket::open(&self.secret, bytes).map_err(refused)?;
        Ok(self.remember(&ticket).1)
    }

    /// The state of `ticket` here, remembered from now until after it would
    /// have expired anyway, and whether this call is the first to see it.
    fn remember(&self, ticket: &DirectTicket) -> (Arc<TicketState>, bool) {
        let entry = self
            .tickets
            .entry(ticket.nonce)
            .or_insert_with(|| Arc::new(TicketState::default()));
        (Arc::clone(entry.value()), entry.is_fresh())
    }
}

/// A redeemed or cancelled ticket.
#[derive(Debug, Default)]
pub struct TicketState {
    cancelled: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl TicketState {
    fn cancel(&self) {
        self.cancelled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once the ticket is cancelled.
    async fn cancelled(&self) {
        loop {
            let woken = self.wake.notified();
            if self.is_cancelled() {
                return;
            }
            woken.await;
        }
    }
}

/// DoAction type that cancels a direct ticket (body: the ticket).
pub const CANCEL_ACTION: &str = "loch.direct.cancel";
/// DoAction type that claims a direct ticket (body: the ticket); answers
/// [`CLAIMED`] when it was free, [`TAKEN`] when it had run or been
/// cancelled.
pub const CLAIM_ACTION: &str = "loch.direct.claim";
pub const CLAIMED: &[u8] = b"claimed";
pub const TAKEN: &[u8] = b"taken";

/// The status of a cancelled direct stream (PostgreSQL's 57014).
fn cancelled() -> Status {
    sqlstate_status(
        Status::cancelled("canceling statement due to user request (SQLSTATE 57014)"),
        "57014",
    )
}

fn sqlstate_status(mut status: Status, sqlstate: &'static str) -> Status {
    status.metadata_mut().insert(
        "x-loch-sqlstate",
        tonic::metadata::MetadataValue::from_static(sqlstate),
    );
    status
}

/// A refused ticket is UNAUTHENTICATED, like any call to an executor
/// without a valid cluster credential.
fn refused(e: TicketError) -> Status {
    match e {
        TicketError::NoRandom => Status::internal(e.to_string()),
        _ => Status::unauthenticated(format!("direct ticket refused: {e}")),
    }
}

#[tonic::async_trait]
impl InternalCalls for DirectService {
    const SERVES: &'static str =
        "an executor serves only DoGet of the direct tickets its coordinator hands out";

    async fn do_get(&self, request: Request<Ticket>) -> Result<Stream<FlightData>, Status> {
        self.redeem(&request.get_ref().ticket)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Stream<arrow_flight::Result>, Status> {
        let action = request.get_ref();
        let body: &'static [u8] = match action.r#type.as_str() {
            CANCEL_ACTION => {
                self.cancel(&action.body)?;
                b"cancelled"
            }
            CLAIM_ACTION => {
                if self.claim(&action.body)? {
                    CLAIMED
                } else {
                    TAKEN
                }
            }
            _ => return Err(Status::unimplemented(Self::SERVES)),
        };
        let done = arrow_flight::Result {
            body: body.to_vec().into(),
        };
        Ok(Box::pin(futures::stream::iter([Ok(done)])))
    }
}

/// `batches` ending with a 57014 error when the ticket is cancelled, or
/// when they are not done within `limit` (`statement_timeout`).
fn guarded<T: Send + 'static>(
    batches: BoxStream<'static, Result<T, Status>>,
    limit: Option<Duration>,
    state: Arc<TicketState>,
) -> BoxStream<'static, Result<T, Status>> {
    let deadline: Pin<Box<dyn Future<Output = ()> + Send>> = match limit {
        Some(limit) => Box::pin(tokio::time::sleep(limit)),
        None => Box::pin(futures::future::pending()),
    };
    futures::stream::unfold(Some((batches, deadline)), move |running| {
        let state = Arc::clone(&state);
        async move {
            let (mut batches, mut deadline) = running?;
            let stop = tokio::select! {
                biased;
                () = state.cancelled() => cancelled(),
                () = &mut deadline => sqlstate_status(
                    Status::cancelled(
                        "canceling statement due to statement timeout (SQLSTATE 57014)",
                    ),
                    "57014",
                ),
                item = batches.next() => {
                    return item.map(|item| (item, Some((batches, deadline))));
                }
            };
            Some((Err(stop), None))
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
        let ticket = DirectTicket::new(
            b"a plan".to_vec(),
            Some(Duration::from_secs(3)),
            "grpc+tcp://127.0.0.1:1",
        )
        .unwrap();
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
        // Sealed data of another kind (no magic) is not a ticket, nor is
        // a ticket that is not in its `Any`.
        let other_kind = arrow_flight::sql::Any {
            type_url: TICKET_TYPE.to_string(),
            value: secret.seal(b"something else entirely, long enough").into(),
        };
        assert_eq!(
            DirectTicket::open(&secret, &other_kind.encode_to_vec()),
            Err(TicketError::Forged)
        );
        let unwrapped = arrow_flight::sql::Any::decode(sealed.as_slice()).unwrap();
        assert_eq!(
            DirectTicket::open(&secret, &unwrapped.value),
            Err(TicketError::Forged)
        );
    }

    #[test]
    fn expired_tickets_are_refused() {
        let secret = ClusterSecret::generate().unwrap();
        let mut ticket = DirectTicket::new(Vec::new(), None, "").unwrap();
        ticket.expires_ms = unix_ms() - 1;
        assert_eq!(
            DirectTicket::open(&secret, &ticket.seal(&secret)),
            Err(TicketError::Expired)
        );
    }

    #[tokio::test]
    async fn a_cancelled_or_timed_out_stream_ends_with_57014() {
        let never = || futures::stream::pending::<Result<(), Status>>().boxed();
        let state = Arc::new(TicketState::default());
        let mut stream = guarded(never(), None, Arc::clone(&state));
        let waiting = tokio::spawn(async move { stream.next().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        state.cancel();
        let ended = waiting.await.unwrap();
        let Some(Err(status)) = ended else {
            panic!("{ended:?}")
        };
        assert_eq!(status.code(), tonic::Code::Cancelled);
        assert!(status.message().contains("user request"));

        let mut stream = guarded(
            never(),
            Some(Duration::from_millis(20)),
            Arc::new(TicketState::default()),
        );
        let Some(Err(status)) = stream.next().await else {
            panic!()
        };
        assert!(status.message().contains("statement timeout"));
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn a_cancelled_ticket_never_runs() {
        let secret = ClusterSecret::generate().unwrap();
        let service = DirectService::new(secret.clone(), Arc::new(RuntimeEnv::default()), |e| {
            Status::internal(e.to_string())
        });
        let plan: Arc<dyn ExecutionPlan> =
            Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::new(
                datafusion::arrow::datatypes::Schema::empty(),
            )));
        let bytes = encode_plan(plan, &datafusion::prelude::SessionConfig::new()).unwrap();
        let sealed = DirectTicket::new(bytes, None, "grpc+tcp://127.0.0.1:1")
            .unwrap()
            .seal(&secret);
        service.cancel(&sealed).unwrap();
        let refused = service.start(&sealed).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::Cancelled);
        // Only tickets of this cluster can be cancelled.
        let mut forged = sealed.clone();
        forged[20] ^= 1;
        assert_eq!(
            service.cancel(&forged).unwrap_err().code(),
            tonic::Code::Unauthenticated
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
        let sealed = DirectTicket::new(bytes, None, "grpc+tcp://127.0.0.1:1")
            .unwrap()
            .seal(&secret);
        assert!(service.start(&sealed).is_ok());
        let again = service.start(&sealed).err().unwrap();
        assert_eq!(again.code(), tonic::Code::Unauthenticated);
        assert!(again.message().contains("already redeemed"));
        // Run here: the coordinator cannot claim it any more.
        assert!(!service.claim(&sealed).unwrap());

        // Claimed first: it never runs here, and is claimed only once.
        let claimed = DirectTicket::new(encode_plan(empty(), &config).unwrap(), None, "x")
            .unwrap()
            .seal(&secret);
        assert!(service.claim(&claimed).unwrap());
        assert!(!service.claim(&claimed).unwrap());
        let refused = service.start(&claimed).err().unwrap();
        assert!(refused.message().contains("already redeemed"));
        let forged = DirectTicket::new(Vec::new(), None, "x")
            .unwrap()
            .seal(&ClusterSecret::generate().unwrap());
        assert_eq!(
            service.claim(&forged).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_ticket_that_cannot_start_stays_free_for_the_coordinator() {
        let secret = ClusterSecret::generate().unwrap();
        let service = DirectService::new(secret.clone(), Arc::new(RuntimeEnv::default()), |e| {
            Status::internal(e.to_string())
        });
        let sealed = DirectTicket::new(b"not a plan".to_vec(), None, "x")
            .unwrap()
            .seal(&secret);
        let failed = service.start(&sealed).err().unwrap();
        assert_eq!(failed.code(), tonic::Code::Internal, "{failed}");
        assert!(service.claim(&sealed).unwrap());
    }

    fn empty() -> Arc<dyn ExecutionPlan> {
        Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::new(
            datafusion::arrow::datatypes::Schema::empty(),
        )))
    }
}
