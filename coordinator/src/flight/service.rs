//! Loch's `FlightSqlService`: translates Flight SQL calls into [`Session`]
//! calls and back. Parsing, planning, settings, cancellation and the SQLSTATE
//! of every error are the session's, shared with pg wire.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, XdbcTypeInfoData,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::execution::SessionState;
use datafusion::physical_plan::ExecutionPlan;
use futures::{Stream, StreamExt, TryStreamExt};
use loch_executor::Engine;
use loch_executor::direct::{DirectService, DirectTicket, TicketError, encode_plan};
use loch_executor::results::{CachedResult, ResultCache};
use loch_executor::wire::flight_data;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::metadata::{to_wire, wire_schema};
use super::sessions::{FlightSession, Sessions, Work};
use super::status::{status, unauthenticated};
use crate::auth::{LoginFailure, Users};
use crate::error::LochError;
use crate::session::{CancelState, FlightRows, Output, Prepared, Session, bind_values};

type DoGetStream = <LochFlightSql as FlightService>::DoGetStream;

/// The Flight SQL front door.
pub struct LochFlightSql {
    engine: Engine,
    users: Users,
    sessions: Arc<Sessions>,
    sql_info: SqlInfoData,
    xdbc_info: XdbcTypeInfoData,
    /// Runs direct tickets a client brings back to the coordinator
    /// because their executor is out of reach (engines with direct
    /// endpoints only).
    direct: Option<DirectService>,
}

impl LochFlightSql {
    /// A service running sessions on `engine` for the users of the
    /// catalog, with tokens kept in `sessions`.
    pub fn new(engine: Engine, users: Users, sessions: Arc<Sessions>) -> Result<Self, LochError> {
        let direct = engine.ticket_secret().map(|secret| {
            DirectService::new(
                secret.clone(),
                Arc::clone(engine.runtime()),
                super::status::datafusion_status,
            )
        });
        Ok(LochFlightSql {
            direct,
            engine,
            users,
            sessions,
            sql_info: super::metadata::sql_info()?,
            xdbc_info: super::metadata::xdbc_type_info()?,
        })
    }

    /// The session of the bearer token a call carries.
    fn session<T>(&self, request: &Request<T>) -> Result<Arc<FlightSession>, Status> {
        let token = bearer_token(request)?;
        self.sessions
            .get(token)
            .ok_or_else(|| unauthenticated("invalid or expired token: log in again"))
    }

    /// A FlightInfo with one endpoint per handle, each ticket redeeming
    /// its handle; with several, their rows are in no particular order.
    fn query_info(
        &self,
        schema: &Schema,
        handles: Vec<String>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let ordered = handles.len() == 1;
        let mut info = FlightInfo::new()
            .try_with_schema(&wire_schema(schema))
            .map_err(|e| status(&LochError::Internal(e.to_string())))?
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_ordered(ordered);
        for handle in handles {
            let ticket = TicketStatementQuery {
                statement_handle: handle.into_bytes().into(),
            };
            info = info.with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            );
        }
        Ok(info)
    }

    /// A FlightInfo for a metadata command: its ticket is the command itself.
    fn metadata_info(
        schema: &Schema,
        command: Any,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(command.encode_to_vec()));
        Ok(Response::new(
            FlightInfo::new()
                .try_with_schema(schema)
                .map_err(|e| status(&LochError::Internal(e.to_string())))?
                .with_endpoint(endpoint)
                .with_descriptor(descriptor)
                .with_total_records(-1),
        ))
    }

    /// Runs what a query statement or prepared statement asks: rows wait for
    /// the ticket's `DoGet`; anything else runs now and answers with no
    /// endpoints (so `cursor.execute("CREATE …")` works through the query
    /// path, as ADBC's DB-API sends it).
    async fn plan_query(
        &self,
        fs: &FlightSession,
        prepared: Prepared,
        params: Vec<Vec<ScalarValue>>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let prepared = bind_one(prepared, params).map_err(|e| status(&e))?;
        let schema = prepared.result_schema();
        let work = match (&prepared.plan, schema) {
            (Some(plan), Some(schema)) => {
                let direct = self.engine.ticket_secret().is_some()
                    && wants_direct(&fs.session.setting(ENDPOINTS_SETTING));
                let rows = fs
                    .session
                    .flight_rows(super::metadata::wire_plan(plan.clone()), direct)
                    .await
                    .map_err(|e| status(&e))?;
                match rows {
                    // A kept result: read from the coordinator's memory
                    // over several endpoints at once.
                    FlightRows::Kept(result) => {
                        let mut handles = Vec::with_capacity(KEPT_ENDPOINTS);
                        for work in kept_parts(result) {
                            handles.push(fs.add_query(work).map_err(|e| status(&e))?);
                        }
                        return self.query_info(&schema, handles, descriptor);
                    }
                    FlightRows::Planned(physical, state) => {
                        if let Some(info) =
                            self.direct_info(fs, physical, *state, &schema, descriptor.clone())?
                        {
                            return Ok(info);
                        }
                    }
                    FlightRows::Ready(planned) => {
                        let handle = fs
                            .add_query(Work::Planned(planned))
                            .map_err(|e| status(&e))?;
                        return self.query_info(&schema, vec![handle], descriptor);
                    }
                    FlightRows::Coordinator => {}
                }
                (
                    Work::Plan {
                        plan: plan.clone(),
                        tag: prepared.command.tag(),
                    },
                    schema,
                )
            }
            (None, Some(schema)) => {
                let output = fs
                    .session
                    .run_prepared(&prepared, None, Arc::new(CancelState::default()))
                    .await
                    .map_err(|e| status(&e))?;
                (Work::Ready(output), schema)
            }
            (_, None) => {
                fs.session
                    .run_prepared(&prepared, None, Arc::new(CancelState::default()))
                    .await
                    .map_err(|e| status(&e))?;
                return FlightInfo::new()
                    .try_with_schema(&Schema::empty())
                    .map(|info| info.with_descriptor(descriptor).with_total_records(0))
                    .map_err(|e| status(&LochError::Internal(e.to_string())));
            }
        };
        let (work, schema) = work;
        let handle = fs.add_query(work).map_err(|e| status(&e))?;
        self.query_info(&schema, vec![handle], descriptor)
    }

    /// A FlightInfo pointing the client at the executors, one endpoint per
    /// scan task of `physical` (planned with `state`, see
    /// [`Session::flight_rows`]), when the query can be read that way (see
    /// [`crate::cluster::placement::direct_tasks`]); `None` to stream it
    /// through the coordinator.
    fn direct_info(
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

    /// Runs a statement that answers with a count (DDL and DML) once per
    /// bound parameter row; the total count, or -1 when not known.
    async fn run_update(
        &self,
        fs: &FlightSession,
        prepared: Prepared,
        params: Vec<Vec<ScalarValue>>,
    ) -> Result<i64, Status> {
        let rows: Vec<Option<Vec<ScalarValue>>> = if params.is_empty() {
            vec![None]
        } else {
            params.into_iter().map(Some).collect()
        };
        let mut total: Option<i64> = None;
        for row in rows {
            let values = match row {
                Some(values) => {
                    Some(bind_values(&prepared.param_types, values).map_err(|e| status(&e))?)
                }
                None => None,
            };
            let output = fs
                .session
                .run_prepared(&prepared, values, Arc::new(CancelState::default()))
                .await
                .map_err(|e| status(&e))?;
            match output {
                Output::Command {
                    rows: Some(count), ..
                } => total = Some(total.unwrap_or(0) + count as i64),
                Output::Rows { mut stream, .. } => {
                    // A query sent as an update: run it, count its rows.
                    let mut count = 0i64;
                    while let Some(batch) = stream.next().await {
                        count += batch.map_err(|e| status(&e.into()))?.num_rows() as i64;
                    }
                    total = Some(total.unwrap_or(0) + count);
                }
                _ => {}
            }
        }
        Ok(total.unwrap_or(-1))
    }

    /// Streams a redeemed ticket's rows as Flight data.
    async fn stream_query(
        &self,
        fs: Arc<FlightSession>,
        handle: String,
    ) -> Result<Response<DoGetStream>, Status> {
        let (work, cancel) = fs.take_query(&handle).map_err(|e| status(&e))?;
        // From here on, however this call ends (error, client gone while
        // planning, end of stream), the query is forgotten.
        let guard = QueryGuard {
            session: Arc::clone(&fs),
            handle,
        };
        let output = match work {
            Work::Encoded(messages) => {
                return Ok(Response::new(Box::pin(Finishing {
                    inner: futures::stream::iter(messages.into_iter().map(Ok)).boxed(),
                    _guard: guard,
                })));
            }
            Work::Plan { plan, tag } => {
                fs.session
                    .execute_with(super::metadata::wire_plan(plan), tag, cancel)
                    .await
            }
            Work::Planned(planned) => Ok(fs.session.run_planned(*planned, cancel)),
            Work::Ready(output) => Ok(output),
        }
        .map_err(|e| status(&e))?;
        let Output::Rows { schema, stream } = output else {
            return Err(status(&LochError::Internal(
                "a ticket's statement returned no rows".into(),
            )));
        };
        let wire = wire_schema(&schema);
        let batch_schema = Arc::clone(&wire);
        let batches = stream.map(move |batch| {
            batch
                .map_err(LochError::from)
                .and_then(|b| to_wire(b, &batch_schema))
                .map_err(|e| status(&e))
        });
        Ok(Response::new(Box::pin(Finishing {
            inner: flight_data(wire, batches),
            _guard: guard,
        })))
    }

    fn batch_stream(batch: RecordBatch) -> Response<DoGetStream> {
        let schema = batch.schema();
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(Status::from);
        Response::new(Box::pin(data))
    }

    /// Cancels the queries of `info`'s tickets: the session's own, and
    /// direct tickets here and at their executors. Whether any was
    /// cancelled.
    async fn cancel_tickets(&self, fs: &FlightSession, info: &FlightInfo) -> bool {
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
    async fn redeem_direct(&self, raw: &[u8]) -> Result<Response<DoGetStream>, Status> {
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

/// Endpoints a kept result of a query without order is served over: the
/// client reads them at once, so the coordinator sends on more than one
/// core.
const KEPT_ENDPOINTS: usize = 2;

/// The tickets' work for a kept result: its messages as they are, when
/// they are what Flight sends (no view types); else its batches,
/// converted as they are sent.
fn kept_parts(result: Arc<CachedResult>) -> Vec<Work> {
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
fn wants_direct(value: &str) -> bool {
    match value.trim().to_ascii_lowercase().as_str() {
        "direct" => true,
        "coordinator" => false,
        _ => DIRECT_BY_DEFAULT,
    }
}

/// Direct endpoints unless a session asks otherwise (measured: see
/// benchmarks/README.md, "Direct endpoints").
const DIRECT_BY_DEFAULT: bool = true;

/// The Flight location of an executor's URL (`http://h:p` →
/// `grpc+tcp://h:p`).
fn flight_location(url: &url::Url) -> String {
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
const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

/// Sends the DoAction `kind` about a direct ticket to the executor whose
/// worker service is at `url`: its answer (`None` if it gave none), or why it could not
/// be reached within a few seconds. An executor that refuses the call
/// answers `Ok(None)`.
async fn direct_action(
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

/// The bearer token of a call.
fn bearer_token<T>(request: &Request<T>) -> Result<&str, Status> {
    let header = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| unauthenticated("no authorization header: log in with a handshake"))?;
    let value = header
        .to_str()
        .map_err(|_| unauthenticated("authorization header is not text"))?;
    strip_scheme(value, "bearer")
        .ok_or_else(|| unauthenticated("authorization header is not a bearer token"))
}

/// `value` without its auth scheme prefix (`Basic `, `Bearer `), any case.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// The handle in a `TicketStatementQuery` ticket.
fn statement_handle(ticket: &[u8]) -> Option<String> {
    let any = Any::decode(ticket).ok()?;
    let ticket: TicketStatementQuery = any.unpack().ok()??;
    String::from_utf8(ticket.statement_handle.to_vec()).ok()
}

/// A prepared statement with one bound parameter row applied (queries take
/// one row: several would be several result sets).
fn bind_one(prepared: Prepared, params: Vec<Vec<ScalarValue>>) -> Result<Prepared, LochError> {
    let mut rows = params.into_iter();
    let (Some(row), None) = (rows.next(), rows.next()) else {
        if prepared.param_types.is_empty() {
            return Ok(prepared);
        }
        return Err(LochError::InvalidParameter(format!(
            "the statement takes {} parameters: bind exactly one row of them",
            prepared.param_types.len()
        )));
    };
    let values = bind_values(&prepared.param_types, row)?;
    let plan = match prepared.plan {
        Some(plan) => Some(plan.replace_params_with_values(&values)?),
        None => None,
    };
    Ok(Prepared {
        command: prepared.command,
        plan,
        param_types: Vec::new(),
        rows_schema: prepared.rows_schema,
    })
}

/// The parameter schema of a prepared statement: `$1..$n`, of the types the
/// plan fixes; a parameter whose type is open takes any value (declared as
/// text, like PostgreSQL's unknown parameters).
fn parameter_schema(prepared: &Prepared) -> SchemaRef {
    wire_schema(&Schema::new(
        prepared
            .param_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Field::new(
                    format!("${}", i + 1),
                    t.clone().unwrap_or(DataType::Utf8),
                    true,
                )
            })
            .collect::<Vec<_>>(),
    ))
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| status(&LochError::Internal(e.to_string())))?;
    Ok(message.0)
}

/// Forgets a redeemed query when dropped.
struct QueryGuard {
    session: Arc<FlightSession>,
    handle: String,
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        self.session.finish_query(&self.handle);
    }
}

/// A `DoGet` stream that forgets its query when it ends or the client goes
/// away; dropping it drops the plan, which stops the work.
struct Finishing {
    inner: Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>,
    _guard: QueryGuard,
}

impl Stream for Finishing {
    type Item = Result<arrow_flight::FlightData, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// Most parameter rows one `DoPut` may bind (each row runs the statement).
const MAX_PARAMETER_ROWS: usize = 100_000;

/// Parameter rows from a `DoPut` bind: one `Vec` of values per row. Reading
/// stops once the stream holds more rows than a bind may.
async fn parameter_rows(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<Vec<ScalarValue>>, Status> {
    let stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        request.into_inner().map_err(FlightError::from),
    );
    let mut stream = std::pin::pin!(stream);
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut total = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| {
            status(&LochError::InvalidParameter(format!(
                "cannot read the bound parameters: {e}"
            )))
        })?;
        total += batch.num_rows();
        if total > MAX_PARAMETER_ROWS {
            return Err(status(&LochError::TooMany(format!(
                "at most {MAX_PARAMETER_ROWS} parameter rows may be bound at once"
            ))));
        }
        batches.push(batch);
    }
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| status(&LochError::from(e)))?;
            rows.push(values);
        }
    }
    Ok(rows)
}

#[tonic::async_trait]
impl FlightSqlService for LochFlightSql {
    type FlightService = LochFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthenticated("the handshake needs basic authorization"))?;
        let encoded = strip_scheme(header, "basic")
            .ok_or_else(|| unauthenticated("the handshake needs basic authorization"))?;
        // Padding is optional: Go's Flight client (ADBC) sends none.
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = engine
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unauthenticated("malformed basic authorization"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| unauthenticated("malformed basic authorization"))?;
        // PBKDF2 is deliberately slow: off the async workers. One message
        // for an unknown user and a wrong password.
        let users = self.users.clone();
        let (u, p) = (user.to_string(), password.to_string());
        let verified = tokio::task::spawn_blocking(move || users.check_password(&u, &p))
            .await
            .unwrap_or(Err(LoginFailure::UnknownUser));
        if verified.is_err() {
            tracing::info!(user, "flight sql: password authentication failed");
            return Err(unauthenticated(&LoginFailure::message(user)));
        }
        let session = Session::new(&self.engine, user, loch_catalog::DATABASE_NAME, &[])
            .map_err(|e| status(&e))?;
        let token = self.sessions.login(session).map_err(|e| status(&e))?;
        let bearer: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| status(&LochError::Internal("token is not a header value".into())))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let fs = self.session(&request)?;
        let prepared = fs
            .session
            .prepare(&query.query)
            .await
            .map_err(|e| status(&e))?
            .ok_or_else(|| status(&LochError::Syntax("empty query".into())))?;
        let info = self
            .plan_query(&fs, prepared, Vec::new(), request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let fs = self.session(&request)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        let (prepared, params) = fs.prepared(&handle).map_err(|e| status(&e))?;
        let info = self
            .plan_query(&fs, prepared, params, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        let schema = query.into_builder().schema();
        Self::metadata_info(&schema, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        let schema = query.clone().into_builder().schema();
        Self::metadata_info(&schema, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        let schema = query.clone().into_builder().schema();
        Self::metadata_info(&schema, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        let schema = query.into_builder().schema();
        Self::metadata_info(&schema, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        Self::metadata_info(&schema, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        Self::metadata_info(&primary_keys_schema(), query.as_any(), request.into_inner())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        let schema = query.into_builder(&self.xdbc_info).schema();
        Self::metadata_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let fs = self.session(&request)?;
        let handle = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| status(&LochError::UnknownTicket))?;
        self.stream_query(fs, handle).await
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<DoGetStream>, Status> {
        if message.type_url != loch_executor::direct::TICKET_TYPE {
            return Err(status(&LochError::UnknownTicket));
        }
        self.session(&request)?;
        self.redeem_direct(&request.get_ref().ticket).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let fs = self.session(&request)?;
        let mut builder: GetCatalogsBuilder = query.into_builder();
        let mut catalogs: Vec<String> = fs.session.schemas().into_iter().map(|(c, _)| c).collect();
        catalogs.dedup();
        for catalog in catalogs {
            builder.append(catalog);
        }
        let batch = builder
            .build()
            .map_err(|e| status(&LochError::Internal(e.to_string())))?;
        Ok(Self::batch_stream(batch))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let fs = self.session(&request)?;
        let mut builder: GetDbSchemasBuilder = query.into_builder();
        for (catalog, schema) in fs.session.schemas() {
            builder.append(catalog, schema);
        }
        let batch = builder
            .build()
            .map_err(|e| status(&LochError::Internal(e.to_string())))?;
        Ok(Self::batch_stream(batch))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let fs = self.session(&request)?;
        let mut builder: GetTablesBuilder = query.into_builder();
        for table in fs.session.tables().await {
            builder
                .append(
                    &table.catalog,
                    &table.schema,
                    &table.name,
                    table_type_name(table.table_type),
                    &wire_schema(&table.arrow_schema),
                )
                .map_err(|e| status(&LochError::Internal(e.to_string())))?;
        }
        let batch = builder
            .build()
            .map_err(|e| status(&LochError::Internal(e.to_string())))?;
        Ok(Self::batch_stream(batch))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        let mut builder = query.into_builder();
        for t in ["LOCAL TEMPORARY", "TABLE", "VIEW"] {
            builder.append(t);
        }
        let batch = builder
            .build()
            .map_err(|e| status(&LochError::Internal(e.to_string())))?;
        Ok(Self::batch_stream(batch))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        let batch = query
            .into_builder(&self.sql_info)
            .build()
            .map_err(|e| status(&LochError::Internal(e.to_string())))?;
        Ok(Self::batch_stream(batch))
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        // Lake tables declare no primary keys.
        Ok(Self::batch_stream(RecordBatch::new_empty(Arc::new(
            primary_keys_schema(),
        ))))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        let batch = query
            .into_builder(&self.xdbc_info)
            .build()
            .map_err(|e| status(&LochError::Internal(e.to_string())))?;
        Ok(Self::batch_stream(batch))
    }

    async fn do_put_statement_update(
        &self,
        ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let fs = self.session(&request)?;
        let prepared = fs
            .session
            .prepare(&ticket.query)
            .await
            .map_err(|e| status(&e))?
            .ok_or_else(|| status(&LochError::Syntax("empty statement".into())))?;
        self.run_update(&fs, prepared, Vec::new()).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let fs = self.session(&request)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        fs.prepared(&handle).map_err(|e| status(&e))?;
        let rows = parameter_rows(request).await?;
        fs.bind(&handle, rows).map_err(|e| status(&e))?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let fs = self.session(&request)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        let (prepared, bound) = fs.prepared(&handle).map_err(|e| status(&e))?;
        // Parameters may come with the update itself or from an earlier bind.
        let rows = parameter_rows(request).await?;
        let rows = if rows.is_empty() { bound } else { rows };
        self.run_update(&fs, prepared, rows).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let fs = self.session(&request)?;
        let prepared = fs
            .session
            .prepare(&query.query)
            .await
            .map_err(|e| status(&e))?
            .ok_or_else(|| status(&LochError::Syntax("empty statement".into())))?;
        let dataset_schema = match prepared.result_schema() {
            Some(schema) => ipc_schema(&wire_schema(&schema))?,
            None => ipc_schema(&Schema::empty())?,
        };
        let parameter_schema = ipc_schema(&parameter_schema(&prepared))?;
        let handle = fs.add_prepared(prepared).map_err(|e| status(&e))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let fs = self.session(&request)?;
        fs.close_prepared(&String::from_utf8_lossy(&query.prepared_statement_handle));
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        // `action_cancel_query_result::CancelResult`, which arrow-flight
        // does not re-export: 1 = CANCELLED, 3 = NOT_CANCELLABLE.
        const CANCELLED: i32 = 1;
        const NOT_CANCELLABLE: i32 = 3;
        let fs = self.session(&request)?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| status(&LochError::InvalidParameter(format!("bad FlightInfo: {e}"))))?;
        let result = if self.cancel_tickets(&fs, &info).await {
            CANCELLED
        } else {
            NOT_CANCELLABLE
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        // Flight's own CancelFlightInfo (what newer clients send).
        if request.get_ref().r#type == "CancelFlightInfo" {
            let fs = self.session(&request)?;
            let cancel =
                CancelFlightInfoRequest::decode(request.get_ref().body.clone()).map_err(|e| {
                    status(&LochError::InvalidParameter(format!(
                        "bad CancelFlightInfoRequest: {e}"
                    )))
                })?;
            let found = match &cancel.info {
                Some(info) => self.cancel_tickets(&fs, info).await,
                None => false,
            };
            let result = CancelFlightInfoResult {
                status: if found {
                    CancelStatus::Cancelled as i32
                } else {
                    // Finished, unknown, or a metadata ticket.
                    CancelStatus::NotCancellable as i32
                },
            };
            let body = arrow_flight::Result {
                body: result.encode_to_vec().into(),
            };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))));
        }
        // Flight's CloseSession (ADBC sends it when a connection closes).
        if request.get_ref().r#type == "CloseSession" {
            let token = bearer_token(&request)?;
            let closed = self.sessions.logout(token);
            // CloseSessionResult { status = 1 (CLOSED) }, which arrow-flight
            // 59 does not define; 3 = NOT_CLOSEABLE for an unknown token.
            let body = arrow_flight::Result {
                body: vec![0x08, if closed { 1 } else { 3 }].into(),
            };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))));
        }
        Err(Status::invalid_argument(format!(
            "unknown action {:?}",
            request.get_ref().r#type
        )))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![
            Ok(ActionType {
                r#type: "CancelFlightInfo".into(),
                description: "Cancels the query of a FlightInfo".into(),
            }),
            Ok(ActionType {
                r#type: "CloseSession".into(),
                description: "Ends the session of the bearer token".into(),
            }),
        ])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The columns of `GetPrimaryKeys`, as the Flight SQL spec lists them.
fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_schemes_are_case_insensitive() {
        assert_eq!(strip_scheme("Bearer abc", "bearer"), Some("abc"));
        assert_eq!(strip_scheme("bearer  abc ", "bearer"), Some("abc"));
        assert_eq!(strip_scheme("Basic abc", "bearer"), None);
        assert_eq!(strip_scheme("Bearer ", "bearer"), None);
        assert_eq!(strip_scheme("Bearer", "bearer"), None);
    }

    #[test]
    fn forged_tickets_have_no_handle() {
        assert_eq!(statement_handle(b"not a protobuf"), None);
        let ticket = TicketStatementQuery {
            statement_handle: "abc".as_bytes().to_vec().into(),
        };
        assert_eq!(
            statement_handle(&ticket.as_any().encode_to_vec()),
            Some("abc".to_string())
        );
    }
}
