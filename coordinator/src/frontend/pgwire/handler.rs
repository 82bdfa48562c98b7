//! The pgwire handler set: startup (one [`Session`] per connection), simple
//! and extended query, cancel requests, and error logging.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::DataType;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ErrorHandler, METADATA_DATABASE, METADATA_USER,
    PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;

use super::response::{error_info, fields, pg_error, to_response};
use crate::access::authn::{LoginFailure, ScramExchange, Users};
use crate::commands::Prepared;
use crate::engine::Engine;
use crate::error::LochError;
use crate::session::{CancelState, SERVER_VERSION, Session};
use crate::sql::{self, Command};

/// The user a connection runs as when the client names none.
pub const DEFAULT_USER: &str = "loch";

/// All pg wire handlers of one server; shared by every connection.
pub struct LochHandlers {
    engine: Engine,
    users: Users,
    cancels: Arc<CancelRegistry>,
    /// One generator for the server, so backend pids are unique.
    keys: Arc<RandomPidSecretKeyGenerator>,
    parser: Arc<LochQueryParser>,
    tls_required: bool,
    end_point: Option<Arc<[u8]>>,
}

impl LochHandlers {
    /// Handlers that log `users` in and run their sessions on `engine`.
    /// With `tls_required`, only connections that switched to TLS;
    /// `end_point` (the TLS certificate's hash) offers SCRAM-SHA-256-PLUS on
    /// TLS connections.
    pub fn new(
        engine: Engine,
        users: Users,
        tls_required: bool,
        end_point: Option<Arc<[u8]>>,
    ) -> Self {
        LochHandlers {
            engine,
            users,
            tls_required,
            end_point,
            cancels: Arc::new(CancelRegistry::default()),
            keys: Arc::new(RandomPidSecretKeyGenerator::default()),
            parser: Arc::new(LochQueryParser),
        }
    }
}

impl PgWireServerHandlers for LochHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(QueryHandler {
            parser: Arc::clone(&self.parser),
        })
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(QueryHandler {
            parser: Arc::clone(&self.parser),
        })
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup {
            engine: self.engine.clone(),
            users: self.users.clone(),
            cancels: Arc::clone(&self.cancels),
            keys: Arc::clone(&self.keys),
            tls_required: self.tls_required,
            end_point: self.end_point.clone(),
            login: Default::default(),
        })
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(Canceller {
            cancels: Arc::clone(&self.cancels),
        })
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
}

// ---------------------------------------------------------------- startup

/// The startup handler of one connection (pgwire asks for one per
/// connection): it runs the SCRAM-SHA-256 login.
struct Startup {
    engine: Engine,
    users: Users,
    cancels: Arc<CancelRegistry>,
    keys: Arc<RandomPidSecretKeyGenerator>,
    tls_required: bool,
    end_point: Option<Arc<[u8]>>,
    login: tokio::sync::Mutex<Login>,
}

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// With channel binding: offered on TLS connections.
const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Startup parameters other than user and database.
type Params = Vec<(String, String)>;

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message,
    )))
}

/// Where a connection's login stands.
#[derive(Default)]
enum Login {
    /// The startup message has not come yet.
    #[default]
    AwaitingStartup,
    /// `AuthenticationSASL` was sent: waiting for the client-first message.
    /// Holds the startup parameters to apply to the session.
    AwaitingClientFirst(Params),
    /// The server-first message was sent.
    AwaitingClientFinal(Box<ScramExchange>, Params),
    /// Logged in or failed: nothing more to read.
    Done,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = std::mem::take(&mut *self.login.lock().await);
        let next = match (state, message) {
            (Login::AwaitingStartup, PgWireFrontendMessage::Startup(startup)) => {
                if self.tls_required && !client.is_secure() {
                    // Before any password exchange: nothing crosses in clear.
                    tracing::info!(peer = %client.socket_addr(), "pg wire: clear-text connection refused");
                    return Err(fatal(
                        "28000",
                        "this server accepts only TLS connections: connect with sslmode=require \
                         (or verify-full)"
                            .into(),
                    ));
                }
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let params: Params = startup
                    .parameters
                    .iter()
                    .filter(|(k, _)| k.as_str() != METADATA_USER && k.as_str() != METADATA_DATABASE)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let mut mechanisms = vec![SCRAM_SHA_256.to_string()];
                if self.end_point(client).is_some() {
                    mechanisms.insert(0, SCRAM_SHA_256_PLUS.to_string());
                }
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        mechanisms,
                    )))
                    .await?;
                Login::AwaitingClientFirst(params)
            }
            (
                Login::AwaitingClientFirst(params),
                PgWireFrontendMessage::PasswordMessageFamily(msg),
            ) => {
                let initial = msg.into_sasl_initial_response()?;
                let end_point = self.end_point(client);
                let plus = initial.auth_method == SCRAM_SHA_256_PLUS && end_point.is_some();
                if initial.auth_method != SCRAM_SHA_256 && !plus {
                    return Err(fatal(
                        "28000",
                        format!(
                            "SASL mechanism {:?} is not offered: use {SCRAM_SHA_256}",
                            initial.auth_method
                        ),
                    ));
                }
                let user = user_of(client);
                let users = self.users.clone();
                // The verifier lookup touches the store: off the async workers.
                let (role, verifier) =
                    tokio::task::spawn_blocking(move || users.scram_verifier(&user))
                        .await
                        .map_err(|e| fatal("XX000", format!("login task failed: {e}")))?;
                let data = initial.data.unwrap_or_default();
                let (exchange, server_first) = ScramExchange::start(
                    &data,
                    verifier,
                    role.is_some(),
                    plus,
                    end_point.as_deref(),
                )
                .map_err(|e| fatal("08P01", e.to_string()))?;
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLContinue(Bytes::from(server_first)),
                    ))
                    .await?;
                Login::AwaitingClientFinal(Box::new(exchange), params)
            }
            (
                Login::AwaitingClientFinal(exchange, params),
                PgWireFrontendMessage::PasswordMessageFamily(msg),
            ) => {
                let response = msg.into_sasl_response()?;
                let user = user_of(client);
                match exchange
                    .finish(&response.data)
                    .map_err(|e| fatal("08P01", e.to_string()))?
                {
                    Ok(server_final) => {
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(Bytes::from(server_final)),
                            ))
                            .await?;
                        self.open_session(client, &user, &params).await?;
                    }
                    Err(failure) => {
                        tracing::info!(user, peer = %client.socket_addr(), "pg wire: password authentication failed");
                        return Err(fatal(failure.sqlstate(), LoginFailure::message(&user)));
                    }
                }
                Login::Done
            }
            _ => {
                return Err(fatal(
                    "08P01",
                    "unexpected message during authentication".into(),
                ));
            }
        };
        *self.login.lock().await = next;
        Ok(())
    }
}

impl Startup {
    /// The channel binding data of this connection: the server
    /// certificate's hash, when the connection runs over TLS.
    fn end_point<C: ClientInfo + ?Sized>(&self, client: &C) -> Option<Arc<[u8]>> {
        self.end_point
            .as_ref()
            .filter(|_| client.is_secure())
            .cloned()
    }
}

/// The user a connection logs in as (the startup message's `user`).
fn user_of<C: ClientInfo + ?Sized>(client: &C) -> String {
    client
        .metadata()
        .get(METADATA_USER)
        .cloned()
        .unwrap_or_else(|| DEFAULT_USER.to_string())
}

impl Startup {
    /// After a successful login: the connection limit, the session, the
    /// cancel key, and the parameters clients read.
    async fn open_session<C>(&self, client: &mut C, user: &str, params: &Params) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let role = self
            .users
            .login_role(user)
            .map(|(role, _)| role)
            .ok_or_else(|| fatal("28000", LoginFailure::message(user)))?;
        // pg wire connections and Flight SQL sessions count together.
        let slot = self
            .users
            .open_connection(&role)
            .map_err(|e| fatal(e.sqlstate(), e.message()))?;
        client.session_extensions().insert(slot);
        // Every database name a client asks for reaches the one Loch catalog.
        let session = Session::new(&self.engine, user, loch_catalog::DATABASE_NAME, params)
            .map_err(|e| fatal(e.sqlstate(), e.message()))?;
        let (pid, secret) = self.keys.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        let guard = self
            .cancels
            .register(pid, secret.to_bytes(), session.cancel_state());
        client.session_extensions().insert(guard);
        client.session_extensions().insert(session);

        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        parameters.date_style = "ISO, MDY".to_string();
        parameters.time_zone = "UTC".to_string();
        parameters.is_superuser = role.superuser;
        parameters.search_path = session_of(client)
            .map(|s| s.setting("search_path"))
            .unwrap_or_default();
        finish_authentication(client, &parameters).await
    }
}

/// The session of a connection (created at startup).
fn session_of<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<Arc<Session>> {
    client
        .session_extensions()
        .get::<Session>()
        .ok_or_else(|| pg_error(&LochError::Internal("connection has no session".into())))
}

// ---------------------------------------------------------------- cancel

/// Maps a connection's (pid, secret key) to its session's cancel flag.
#[derive(Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<(i32, Bytes), Weak<CancelState>>>,
}

impl CancelRegistry {
    fn register(
        self: &Arc<Self>,
        pid: i32,
        secret: Bytes,
        state: Arc<CancelState>,
    ) -> CancelRegistration {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert((pid, secret.clone()), Arc::downgrade(&state));
        }
        CancelRegistration {
            registry: Arc::clone(self),
            key: (pid, secret),
        }
    }

    fn cancel(&self, pid: i32, secret: &Bytes) -> bool {
        let state = self
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.get(&(pid, secret.clone())).and_then(Weak::upgrade));
        match state {
            Some(state) => {
                state.cancel();
                true
            }
            None => false,
        }
    }
}

/// Unregisters a connection from the [`CancelRegistry`] when it closes.
struct CancelRegistration {
    registry: Arc<CancelRegistry>,
    key: (i32, Bytes),
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.registry.sessions.lock() {
            sessions.remove(&self.key);
        }
    }
}

struct Canceller {
    cancels: Arc<CancelRegistry>,
}

#[async_trait]
impl CancelHandler for Canceller {
    async fn on_cancel_request(&self, request: CancelRequest) {
        // A wrong key matches nothing and changes nothing, as in PostgreSQL.
        let found = self
            .cancels
            .cancel(request.pid, &request.secret_key.to_bytes());
        tracing::debug!(pid = request.pid, found, "cancel request");
    }
}

// ---------------------------------------------------------------- errors

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        match error {
            PgWireError::UserError(info) if info.code != "XX000" => {
                tracing::debug!(peer = %client.socket_addr(), code = %info.code, message = %info.message, "statement failed");
            }
            other => {
                tracing::warn!(peer = %client.socket_addr(), error = %other, "pg wire error");
            }
        }
    }
}

// ---------------------------------------------------------------- queries

/// Parses and plans statements for the extended protocol.
pub struct LochQueryParser;

#[async_trait]
impl QueryParser for LochQueryParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        session_of(client)?
            .prepare(sql)
            .await
            .map_err(|e| pg_error(&e))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        // A parameter whose type the plan does not fix (`select $1`) is
        // text, as in PostgreSQL; it is decoded as a string at Bind.
        stmt.param_types
            .iter()
            .map(|t| match t {
                Some(t) => arrow_pg::datatypes::into_pg_type(t),
                None => Ok(Type::TEXT),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = column_format.unwrap_or(&Format::UnifiedText);
        match stmt.result_schema() {
            Some(schema) => fields(&schema, format, None),
            None => Ok(Vec::new()),
        }
    }
}

/// Answers both protocols; the per-connection state lives in the [`Session`].
pub struct QueryHandler {
    parser: Arc<LochQueryParser>,
}

/// PostgreSQL's rule inside a failed transaction block: only the end of the
/// block or `ROLLBACK TO` a savepoint runs, and `COMMIT` then is a
/// `ROLLBACK`. `Err` holds the answer to a statement that does not run;
/// `Ok(Some(..))` what runs instead of the statement.
fn in_failed_transaction(
    status: TransactionStatus,
    command: &Command,
) -> Result<Option<Command>, Response> {
    if !matches!(status, TransactionStatus::Error) {
        return Ok(None);
    }
    match command {
        Command::RollbackTo(_) | Command::Rollback => Ok(None),
        Command::Commit => Ok(Some(Command::Rollback)),
        _ => Err(Response::Error(Box::new(error_info(
            &LochError::InFailedTransaction,
        )))),
    }
}

/// Whether the connection's transaction block had failed when the current
/// message arrived.
///
/// pgwire derives the status it reports from the responses and never moves
/// it from failed (`E`) back to in-transaction (`T`), which `ROLLBACK TO
/// SAVEPOINT` must do. So while a message is handled the connection's
/// status reads `T` and this flag holds the failure: a response that is an
/// error makes pgwire report `E` again, a successful `ROLLBACK TO` leaves
/// `T`, and `COMMIT`/`ROLLBACK` leave idle.
#[derive(Default)]
struct FailedBlock(std::sync::atomic::AtomicBool);

impl FailedBlock {
    fn of<C: ClientInfo + ?Sized>(client: &C) -> Arc<FailedBlock> {
        client
            .session_extensions()
            .get_or_insert_with(FailedBlock::default)
    }

    /// Before a message: moves a failed status into the flag.
    fn hold<C: ClientInfo + ?Sized>(client: &mut C) {
        if matches!(client.transaction_status(), TransactionStatus::Error) {
            FailedBlock::of(client)
                .0
                .store(true, std::sync::atomic::Ordering::SeqCst);
            client.set_transaction_status(TransactionStatus::Transaction);
        }
    }

    /// In the handler: the status the message arrived in.
    fn take<C: ClientInfo + ?Sized>(client: &C) -> TransactionStatus {
        if FailedBlock::of(client)
            .0
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            TransactionStatus::Error
        } else {
            client.transaction_status()
        }
    }

    /// After a message: a failure no handler took (the message never
    /// reached one) is the connection's status again.
    fn restore<C: ClientInfo + ?Sized>(client: &mut C) {
        if FailedBlock::of(client)
            .0
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            client.set_transaction_status(TransactionStatus::Error);
        }
    }
}

/// A `FETCH` answers with its rows under the tag `FETCH n`.
fn tag_fetch(command: &Command, response: &mut Response) {
    if let (Command::Fetch { .. }, Response::Query(query)) = (command, response) {
        query.set_command_tag("FETCH");
    }
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn on_query<C>(
        &self,
        client: &mut C,
        query: pgwire::messages::simplequery::Query,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        FailedBlock::hold(client);
        let result = self._on_query(client, query).await;
        FailedBlock::restore(client);
        result
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let commands = sql::parse(query).map_err(|e| pg_error(&e))?;
        if commands.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut status = FailedBlock::take(client);
        let mut responses = Vec::with_capacity(commands.len());
        // responses[..complete] hold no row stream still running.
        let mut complete = 0;
        for command in commands {
            let command = match in_failed_transaction(status, &command) {
                Ok(replacement) => replacement.unwrap_or(command),
                Err(response) => {
                    responses.push(response);
                    break;
                }
            };
            // A statement that changes state runs only after the earlier
            // statements' rows are complete: if one of them fails while
            // streaming, PostgreSQL never runs the rest of the string.
            if !command.is_read_only() {
                if let Some(failed) = finish_pending(&mut responses[complete..]).await {
                    responses.truncate(complete + failed + 1);
                    break;
                }
                complete = responses.len();
            }
            let rollback_to = matches!(command, Command::RollbackTo(_));
            let fetch = matches!(command, Command::Fetch { .. }).then(|| command.clone());
            match session.run(command).await {
                Ok(output) => {
                    let mut response = to_response(output, &Format::UnifiedText, options.clone())?;
                    if let Some(fetch) = &fetch {
                        tag_fetch(fetch, &mut response);
                    }
                    status = match &response {
                        Response::TransactionStart(_) => status.to_in_transaction_state(),
                        Response::TransactionEnd(_) => status.to_idle_state(),
                        _ if rollback_to => TransactionStatus::Transaction,
                        _ => status,
                    };
                    responses.push(response);
                }
                // A dropped role's session ends: FATAL closes the connection.
                Err(e @ LochError::SessionRoleGone(_)) => return Err(pg_error(&e)),
                Err(e) => {
                    // Earlier statements' results still reach the client; the
                    // rest of the query string is skipped, as in PostgreSQL.
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// Runs the row streams of `responses` to completion, keeping their rows
/// to send. Returns the index of the first that failed: its response then
/// ends with that error after the rows it produced.
async fn finish_pending(responses: &mut [Response]) -> Option<usize> {
    for (i, response) in responses.iter_mut().enumerate() {
        let Response::Query(query) = response else {
            continue;
        };
        let mut rows = Vec::new();
        let mut failed = false;
        while let Some(row) = query.data_rows().next().await {
            failed = row.is_err();
            rows.push(row);
            if failed {
                break;
            }
        }
        let mut done = QueryResponse::new(query.row_schema(), futures::stream::iter(rows));
        done.set_command_tag(query.command_tag());
        *response = Response::Query(done);
        if failed {
            return Some(i);
        }
    }
    None
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Prepared;
    type QueryParser = LochQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn on_parse<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Parse,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        super::held::parse(client, message, self.query_parser()).await
    }

    async fn on_bind<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Bind,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        super::held::bind(client, message).await
    }

    async fn on_close<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Close,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        super::held::close(client, message).await
    }

    async fn on_execute<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Execute,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        FailedBlock::hold(client);
        let result = self._on_execute(client, message).await;
        FailedBlock::restore(client);
        result
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let prepared = &portal.statement.statement;
        let replacement = match in_failed_transaction(FailedBlock::take(client), &prepared.command)
        {
            Ok(replacement) => replacement,
            Err(response) => return Ok(response),
        };
        if let Some(command) = replacement {
            let output = session.run(command).await.map_err(|e| pg_error(&e))?;
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            return to_response(output, &portal.result_column_format, options);
        }
        let values = if portal.parameter_len() == 0 && prepared.param_types.is_empty() {
            None
        } else {
            let types: Vec<Option<&DataType>> =
                prepared.param_types.iter().map(Option::as_ref).collect();
            Some(arrow_pg::datatypes::df::deserialize_parameters(
                portal, &types,
            )?)
        };
        session.cancel_state().reset();
        let output = session
            .run_prepared(prepared, values, session.cancel_state())
            .await
            .map_err(|e| pg_error(&e))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut response = to_response(output, &portal.result_column_format, options)?;
        tag_fetch(&prepared.command, &mut response);
        Ok(response)
    }
}
