//! Flight SQL sessions: a bearer token per login, and what each session
//! keeps between calls (queries waiting for their `DoGet`, prepared
//! statements).
//!
//! gRPC calls carry no connection state, so the token is the session: the
//! handshake creates a [`Session`] and a token naming it; every later call
//! presents the token. A token unused for the configured time expires and
//! its session, with everything it still held, goes away.
//!
//! What a client can make a session hold is bounded: sessions per user and
//! in all, each counting as a connection under the role's `CONNECTION
//! LIMIT`; queries waiting for their `DoGet`; prepared statements; the
//! bytes of parameters bound to them (docs/operations.md lists the bounds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;

use crate::error::LochError;
use tonic::{Request, Status};

use super::status::unauthenticated;
use crate::access::authn::ConnectionSlot;
use crate::commands::Prepared;
use crate::frontend::MAX_PREPARED_STATEMENTS;
use crate::session::{CancelState, Output, Session};

/// How many queries a session may leave waiting for `DoGet`: a client that
/// asks for FlightInfos and never fetches them does not grow the server.
const MAX_PENDING_QUERIES: usize = 64;
/// How many Flight SQL sessions may be open at once.
const MAX_SESSIONS: usize = 10_000;
/// How many Flight SQL sessions one user may have open at once (a role's
/// `CONNECTION LIMIT`, when lower, refuses sooner).
pub const MAX_SESSIONS_PER_USER: usize = 256;
/// Most bytes of parameter values a session keeps bound, all its prepared
/// statements together (each bind is capped at
/// [`super::params::MAX_PARAMETER_BYTES`]).
pub const MAX_SESSION_PARAMETER_BYTES: usize = 4 * super::params::MAX_PARAMETER_BYTES;

/// The work a ticket stands for.
pub enum Work {
    /// A plan, executed when the ticket is redeemed.
    Plan { plan: LogicalPlan, tag: String },
    /// A query authorized and planned already, run when the ticket is
    /// redeemed.
    Planned(Box<crate::planning::PlannedRows>),
    /// Rows already computed: by the session itself (`SHOW`), or a kept
    /// result that must be converted as it is sent.
    Ready(Output),
    /// A kept result's messages, sent as they are (the schema first).
    Encoded(Vec<arrow_flight::FlightData>),
}

/// A query between `GetFlightInfo` and the end of its `DoGet`.
struct Query {
    /// Taken out by the `DoGet` that runs it.
    work: Option<Work>,
    /// A `DoGet` is streaming it.
    running: bool,
    cancel: Arc<CancelState>,
    created: Instant,
}

/// A prepared statement and the parameter rows bound to it.
pub struct PreparedStatement {
    pub prepared: Prepared,
    /// One entry per bound row; empty until a `DoPut` binds parameters.
    pub params: Vec<Vec<ScalarValue>>,
    /// What `params` take in memory.
    pub params_bytes: usize,
}

/// One Flight SQL client's session.
pub struct FlightSession {
    pub session: Session,
    last_used: Mutex<Instant>,
    queries: Mutex<HashMap<String, Query>>,
    prepared: Mutex<HashMap<String, PreparedStatement>>,
    /// Its place under the role's `CONNECTION LIMIT`, given back when the
    /// session goes.
    _connection: ConnectionSlot,
}

fn poisoned() -> LochError {
    LochError::Internal("flight session lock poisoned".into())
}

impl FlightSession {
    fn new(session: Session, connection: ConnectionSlot) -> Self {
        FlightSession {
            session,
            last_used: Mutex::new(Instant::now()),
            queries: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            _connection: connection,
        }
    }

    /// Keeps `work` until a `DoGet` redeems the returned handle.
    pub fn add_query(&self, work: Work) -> Result<String, LochError> {
        let handle =
            crate::access::authn::random_hex(16).map_err(|e| LochError::Internal(e.to_string()))?;
        let mut queries = self.queries.lock().map_err(|_| poisoned())?;
        // Waiting (or cancelled, not yet redeemed) queries are capped; the
        // oldest gives way. Running ones end with their stream.
        while queries.values().filter(|q| !q.running).count() >= MAX_PENDING_QUERIES {
            let Some(oldest) = queries
                .iter()
                .filter(|(_, q)| !q.running)
                .min_by_key(|(_, q)| q.created)
                .map(|(h, _)| h.clone())
            else {
                break;
            };
            queries.remove(&oldest);
        }
        queries.insert(
            handle.clone(),
            Query {
                work: Some(work),
                running: false,
                cancel: Arc::new(CancelState::default()),
                created: Instant::now(),
            },
        );
        Ok(handle)
    }

    /// Takes the work of `handle` to run it, with the flag that cancels it.
    /// A ticket is good for one `DoGet`: an unknown or used one is refused
    /// (34000), a cancelled one answers 57014 once.
    pub fn take_query(&self, handle: &str) -> Result<(Work, Arc<CancelState>), LochError> {
        let mut queries = self.queries.lock().map_err(|_| poisoned())?;
        let query = queries
            .get_mut(handle)
            .ok_or_else(|| LochError::UnknownTicket)?;
        if query.cancel.is_requested() {
            queries.remove(handle);
            return Err(LochError::Canceled);
        }
        let work = query.work.take().ok_or_else(|| LochError::UnknownTicket)?;
        query.running = true;
        let cancel = Arc::clone(&query.cancel);
        Ok((work, cancel))
    }

    /// Forgets a query whose `DoGet` ended; a long download counts as use
    /// of the session.
    pub fn finish_query(&self, handle: &str) {
        if let Ok(mut queries) = self.queries.lock() {
            queries.remove(handle);
        }
        if let Ok(mut last) = self.last_used.lock() {
            *last = Instant::now();
        }
    }

    /// Cancels the query of `handle`, running or not yet fetched. False
    /// when the session has no such query.
    pub fn cancel_query(&self, handle: &str) -> bool {
        let Ok(mut queries) = self.queries.lock() else {
            return false;
        };
        match queries.get_mut(handle) {
            Some(query) => {
                query.cancel.cancel();
                // Not fetched yet: it never runs.
                query.work = None;
                true
            }
            None => false,
        }
    }

    /// Keeps a prepared statement; returns its handle.
    pub fn add_prepared(&self, prepared: Prepared) -> Result<String, LochError> {
        let handle =
            crate::access::authn::random_hex(16).map_err(|e| LochError::Internal(e.to_string()))?;
        let mut map = self.prepared.lock().map_err(|_| poisoned())?;
        if map.len() >= MAX_PREPARED_STATEMENTS {
            return Err(LochError::TooMany(format!(
                "a session may hold at most {MAX_PREPARED_STATEMENTS} prepared statements; close some"
            )));
        }
        map.insert(
            handle.clone(),
            PreparedStatement {
                prepared,
                params: Vec::new(),
                params_bytes: 0,
            },
        );
        Ok(handle)
    }

    /// A copy of a prepared statement and its bound parameters.
    pub fn prepared(&self, handle: &str) -> Result<(Prepared, Vec<Vec<ScalarValue>>), LochError> {
        let map = self.prepared.lock().map_err(|_| poisoned())?;
        let statement = map
            .get(handle)
            .ok_or_else(|| LochError::UnknownPreparedStatement)?;
        Ok((statement.prepared.clone(), statement.params.clone()))
    }

    /// Binds parameter rows, taking `bytes` in memory, to a prepared
    /// statement (in place of those bound before), unless the session
    /// would then keep more than [`MAX_SESSION_PARAMETER_BYTES`] bound.
    pub fn bind(
        &self,
        handle: &str,
        params: Vec<Vec<ScalarValue>>,
        bytes: usize,
    ) -> Result<(), LochError> {
        let mut map = self.prepared.lock().map_err(|_| poisoned())?;
        if !map.contains_key(handle) {
            return Err(LochError::UnknownPreparedStatement);
        }
        let others: usize = map
            .iter()
            .filter(|(h, _)| h.as_str() != handle)
            .map(|(_, s)| s.params_bytes)
            .sum();
        if others.saturating_add(bytes) > MAX_SESSION_PARAMETER_BYTES {
            return Err(LochError::TooMany(format!(
                "a session may keep at most {} MiB of parameters bound (its other prepared \
                 statements hold {} MiB); close some or bind fewer rows",
                MAX_SESSION_PARAMETER_BYTES >> 20,
                others.div_ceil(1 << 20)
            )));
        }
        let statement = map
            .get_mut(handle)
            .ok_or_else(|| LochError::UnknownPreparedStatement)?;
        statement.params = params;
        statement.params_bytes = bytes;
        Ok(())
    }

    /// Closes a prepared statement (closing an unknown one is not an error).
    pub fn close_prepared(&self, handle: &str) {
        if let Ok(mut map) = self.prepared.lock() {
            map.remove(handle);
        }
    }
}

/// All live Flight SQL sessions, by token.
pub struct Sessions {
    by_token: Mutex<HashMap<String, Arc<FlightSession>>>,
    ttl: Duration,
}

impl Sessions {
    /// An empty registry whose tokens expire after `ttl` without use.
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            by_token: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Registers a new session holding `connection`, its place under the
    /// role's `CONNECTION LIMIT`; returns its token. Refused (53400) when
    /// the server has [`MAX_SESSIONS`] sessions, or the user
    /// [`MAX_SESSIONS_PER_USER`]; expired ones are dropped first.
    pub fn login(&self, session: Session, connection: ConnectionSlot) -> Result<String, LochError> {
        let token =
            crate::access::authn::random_hex(32).map_err(|e| LochError::Internal(e.to_string()))?;
        let mut map = self.by_token.lock().map_err(|_| poisoned())?;
        self.drop_expired(&mut map);
        if map.len() >= MAX_SESSIONS {
            return Err(LochError::TooMany(format!(
                "too many Flight SQL sessions (at most {MAX_SESSIONS}); close some"
            )));
        }
        let user = session.user();
        let of_user = map.values().filter(|s| s.session.user() == user).count();
        if of_user >= MAX_SESSIONS_PER_USER {
            return Err(LochError::TooMany(format!(
                "user \"{user}\" has {of_user} Flight SQL sessions open: at most \
                 {MAX_SESSIONS_PER_USER} per user; close some (CloseSession) or let them expire"
            )));
        }
        map.insert(
            token.clone(),
            Arc::new(FlightSession::new(session, connection)),
        );
        Ok(token)
    }

    /// Ends the session of `token` (Flight's `CloseSession`); its queries
    /// and prepared statements go with it.
    pub fn logout(&self, token: &str) -> bool {
        self.by_token
            .lock()
            .map(|mut map| map.remove(token).is_some())
            .unwrap_or(false)
    }

    /// The session of a token, if the token is known and not expired; using
    /// it keeps it alive.
    pub fn get(&self, token: &str) -> Option<Arc<FlightSession>> {
        let mut map = self.by_token.lock().ok()?;
        let session = map.get(token)?;
        let now = Instant::now();
        let expired = {
            let mut last = session.last_used.lock().ok()?;
            let expired = now.duration_since(*last) > self.ttl;
            if !expired {
                *last = now;
            }
            expired
        };
        if expired {
            map.remove(token);
            return None;
        }
        Some(Arc::clone(session))
    }

    /// Drops the sessions whose tokens expired; returns how many.
    pub fn sweep(&self) -> usize {
        match self.by_token.lock() {
            Ok(mut map) => self.drop_expired(&mut map),
            Err(_) => 0,
        }
    }

    fn drop_expired(&self, map: &mut HashMap<String, Arc<FlightSession>>) -> usize {
        let before = map.len();
        let now = Instant::now();
        let ttl = self.ttl;
        map.retain(|_, s| {
            s.last_used
                .lock()
                .map(|last| now.duration_since(*last) <= ttl)
                .unwrap_or(false)
        });
        before - map.len()
    }

    /// How long an unused token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}
/// The bearer token of a call.
pub(super) fn bearer_token<T>(request: &Request<T>) -> Result<&str, Status> {
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
pub(super) fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}
