//! The pgwire handler set: startup (one [`Session`] per connection), simple
//! and extended query, cancel requests, and error logging.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::DataType;
use futures::{Sink, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ErrorHandler, METADATA_DATABASE, METADATA_USER,
    PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;

use super::response::{error_info, fields, pg_error, to_response};
use crate::error::LochError;
use crate::session::{CancelState, Prepared, SERVER_VERSION, Session};
use crate::statement::{self, Command};
use loch_executor::Engine;

/// The user a connection runs as when the client names none.
pub const DEFAULT_USER: &str = "loch";

/// All pg wire handlers of one server; shared by every connection.
pub struct LochHandlers {
    engine: Engine,
    cancels: Arc<CancelRegistry>,
    /// One generator for the server, so backend pids are unique.
    keys: Arc<RandomPidSecretKeyGenerator>,
    parser: Arc<LochQueryParser>,
}

impl LochHandlers {
    /// Handlers that run every session on `engine`.
    pub fn new(engine: Engine) -> Self {
        LochHandlers {
            engine,
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
            cancels: Arc::clone(&self.cancels),
            keys: Arc::clone(&self.keys),
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

struct Startup {
    engine: Engine,
    cancels: Arc<CancelRegistry>,
    keys: Arc<RandomPidSecretKeyGenerator>,
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message,
    )))
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
        let PgWireFrontendMessage::Startup(startup) = message else {
            return Err(fatal("08P01", "expected a startup message".into()));
        };
        protocol_negotiation(client, &startup).await?;
        save_startup_parameters_to_metadata(client, &startup);
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_else(|| DEFAULT_USER.to_string());
        let params: Vec<(String, String)> = startup
            .parameters
            .iter()
            .filter(|(k, _)| k.as_str() != METADATA_USER && k.as_str() != METADATA_DATABASE)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Every database name a client asks for reaches the one Loch catalog.
        let session = Session::new(&self.engine, &user, loch_catalog::DATABASE_NAME, &params)
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
        parameters.is_superuser = true;
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
/// block runs; `COMMIT` then answers `ROLLBACK`.
fn in_failed_transaction(status: TransactionStatus, command: &Command) -> Option<Response> {
    if !matches!(status, TransactionStatus::Error) {
        return None;
    }
    Some(match command {
        Command::Rollback | Command::Commit => Response::TransactionEnd(Tag::new("ROLLBACK")),
        _ => Response::Error(Box::new(error_info(&LochError::InFailedTransaction))),
    })
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let commands = statement::parse(query).map_err(|e| pg_error(&e))?;
        if commands.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut status = client.transaction_status();
        let mut responses = Vec::with_capacity(commands.len());
        // responses[..complete] hold no row stream still running.
        let mut complete = 0;
        for command in commands {
            if let Some(response) = in_failed_transaction(status, &command) {
                let failed = matches!(response, Response::Error(_));
                responses.push(response);
                status = TransactionStatus::Idle;
                if failed {
                    break;
                }
                continue;
            }
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
            match session.run(command).await {
                Ok(output) => {
                    let response = to_response(output, &Format::UnifiedText, options.clone())?;
                    status = match &response {
                        Response::TransactionStart(_) => status.to_in_transaction_state(),
                        Response::TransactionEnd(_) => status.to_idle_state(),
                        _ => status,
                    };
                    responses.push(response);
                }
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
        if let Some(response) =
            in_failed_transaction(client.transaction_status(), &prepared.command)
        {
            return Ok(response);
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
        to_response(output, &portal.result_column_format, options)
    }
}
