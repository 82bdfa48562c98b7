//! Loch's `FlightSqlService`: translates Flight SQL calls into [`Session`]
//! calls and back. Parsing, planning, settings, cancellation and the SQLSTATE
//! of every error are the session's, shared with pg wire.

use std::pin::Pin;
use std::sync::Arc;

use crate::engine::Engine;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
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
use futures::{Stream, StreamExt, TryStreamExt};
use loch_executor::wire::flight_data;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::endpoints::{
    DoGetStream, ENDPOINTS_SETTING, Endpoints, KEPT_ENDPOINTS, kept_parts, wants_direct,
};
use super::metadata::{to_wire, wire_schema};
use super::params::{bind_one, parameter_rows, parameter_schema};
use super::sessions::{FlightSession, Sessions, Work, bearer_token, strip_scheme};
use super::status::{sqlstate_status, status, unauthenticated};
use crate::access::authn::{LoginFailure, Users};
use crate::commands::Prepared;
use crate::error::LochError;
use crate::planning::FlightRows;
use crate::planning::params::bind_values;
use crate::session::{CancelState, Output, Session};

/// The Flight SQL front door.
pub struct LochFlightSql {
    engine: Engine,
    users: Users,
    sessions: Arc<Sessions>,
    sql_info: SqlInfoData,
    xdbc_info: XdbcTypeInfoData,
    /// Direct endpoints: tickets for the executors, and those a client
    /// brings back because their executor is out of reach.
    endpoints: Endpoints,
}

impl LochFlightSql {
    /// A service running sessions on `engine` for the users of the
    /// catalog, with tokens kept in `sessions`.
    pub fn new(engine: Engine, users: Users, sessions: Arc<Sessions>) -> Result<Self, LochError> {
        Ok(LochFlightSql {
            endpoints: Endpoints::new(engine.clone()),
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
                        if let Some(info) = self.endpoints.direct_info(
                            fs,
                            physical,
                            *state,
                            &schema,
                            descriptor.clone(),
                        )? {
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
            Work::Planned(planned) => fs.session.run_planned(*planned, cancel).await,
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
        let Ok(role) = verified else {
            tracing::info!(user, "flight sql: password authentication failed");
            return Err(unauthenticated(&LoginFailure::message(user)));
        };
        // A session counts as a connection under the role's CONNECTION
        // LIMIT, with the role's pg wire connections.
        let connection = self.users.open_connection(&role).map_err(|e| {
            tracing::info!(user, "flight sql: connection limit reached");
            sqlstate_status(e.sqlstate(), &e.message())
        })?;
        let session = Session::new(&self.engine, user, loch_catalog::DATABASE_NAME, &[])
            .map_err(|e| status(&e))?;
        let token = self
            .sessions
            .login(session, connection)
            .map_err(|e| status(&e))?;
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
        self.endpoints
            .redeem_direct(&request.get_ref().ticket)
            .await
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
        let bound = parameter_rows(request).await?;
        fs.bind(&handle, bound.rows, bound.bytes)
            .map_err(|e| status(&e))?;
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
        let rows = parameter_rows(request).await?.rows;
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
        let result = if self.endpoints.cancel_tickets(&fs, &info).await {
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
                Some(info) => self.endpoints.cancel_tickets(&fs, info).await,
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
    use crate::frontend::flight::endpoints::statement_handle;

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
