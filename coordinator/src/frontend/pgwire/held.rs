//! What the extended query protocol makes a connection hold, bounded: the
//! named prepared statements (`Parse`) and named portals (`Bind`) pgwire
//! keeps until the client closes them.
//!
//! pgwire stores them per connection without a limit, and a client that
//! never sends `Close` (or one that prepares in a loop) would grow the
//! server without end. These are pgwire's own `Parse`, `Bind` and `Close`
//! steps with a count in front: past the bound the message fails with
//! 53400 and the connection goes on (the unnamed statement and portal,
//! which each new one replaces, are not counted).

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::{Sink, SinkExt};
use pgwire::api::portal::Portal;
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Parse, ParseComplete, TARGET_TYPE_BYTE_PORTAL,
    TARGET_TYPE_BYTE_STATEMENT,
};

use super::response::pg_error;
use crate::commands::Prepared;
use crate::error::LochError;
use crate::frontend::MAX_PREPARED_STATEMENTS;
use crate::session::block::MAX_CURSORS;

/// The names a connection holds in pgwire's store.
#[derive(Default)]
struct Held {
    statements: Mutex<HashSet<String>>,
    portals: Mutex<HashSet<String>>,
}

impl Held {
    fn of<C: ClientInfo + ?Sized>(client: &C) -> Arc<Held> {
        client
            .session_extensions()
            .get_or_insert_with(Held::default)
    }
}

/// Refuses a new name in `names` once `max` are held; a name already held
/// (replaced) or the unnamed one is always fine.
fn may_hold(
    names: &Mutex<HashSet<String>>,
    name: &str,
    max: usize,
    what: &str,
) -> PgWireResult<()> {
    if name == DEFAULT_NAME {
        return Ok(());
    }
    let names = names.lock().map_err(|_| {
        pg_error(&LochError::Internal(
            "portal bookkeeping lock poisoned".into(),
        ))
    })?;
    if names.len() >= max && !names.contains(name) {
        return Err(pg_error(&LochError::TooMany(format!(
            "a session may hold at most {max} {what}; close some (Close, DEALLOCATE or CLOSE) \
             before making more"
        ))));
    }
    Ok(())
}

fn hold(names: &Mutex<HashSet<String>>, name: &str) {
    if name != DEFAULT_NAME
        && let Ok(mut names) = names.lock()
    {
        names.insert(name.to_string());
    }
}

fn release(names: &Mutex<HashSet<String>>, name: &str) {
    if let Ok(mut names) = names.lock() {
        names.remove(name);
    }
}

/// `Parse`: plans the statement and keeps it under its name, unless the
/// connection holds [`MAX_PREPARED_STATEMENTS`] named ones already.
pub(super) async fn parse<C, Q>(client: &mut C, message: Parse, parser: Arc<Q>) -> PgWireResult<()>
where
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::PortalStore: PortalStore<Statement = Prepared>,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    Q: QueryParser<Statement = Prepared> + Send + Sync,
{
    let name = message.name.as_deref().unwrap_or(DEFAULT_NAME).to_string();
    let held = Held::of(client);
    may_hold(
        &held.statements,
        &name,
        MAX_PREPARED_STATEMENTS,
        "prepared statements",
    )?;
    match StoredStatement::parse(client, &message, parser).await? {
        Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
        None => client.portal_store().put_empty_statement(&name),
    }
    hold(&held.statements, &name);
    client
        .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
        .await?;
    Ok(())
}

/// `Bind`: a portal over a prepared statement and its parameters, unless
/// the connection holds [`MAX_CURSORS`] named portals already (a portal is
/// the protocol's cursor).
pub(super) async fn bind<C>(client: &mut C, message: Bind) -> PgWireResult<()>
where
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::PortalStore: PortalStore<Statement = Prepared>,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
    let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
    let held = Held::of(client);
    may_hold(&held.portals, portal_name, MAX_CURSORS, "open portals")?;
    match client.portal_store().get_statement(statement_name) {
        Some(Entry::Value(statement)) => {
            let portal = Portal::try_new(&message, statement)?;
            client.portal_store().put_portal(Arc::new(portal));
        }
        Some(Entry::Empty) => {
            if !message.parameters.is_empty() {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".to_owned(),
                    "08P01".to_owned(),
                    format!(
                        "bind message supplies {} parameters, but prepared statement \
                         {statement_name:?} requires 0",
                        message.parameters.len(),
                    ),
                ))));
            }
            client.portal_store().put_empty_portal(portal_name);
        }
        None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
    }
    hold(&held.portals, portal_name);
    client
        .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
        .await?;
    Ok(())
}

/// `Close` of a statement or a portal: its place is free again.
pub(super) async fn close<C>(client: &mut C, message: Close) -> PgWireResult<()>
where
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::PortalStore: PortalStore<Statement = Prepared>,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
    let held = Held::of(client);
    match message.target_type {
        TARGET_TYPE_BYTE_STATEMENT => {
            client.portal_store().rm_statement(name);
            release(&held.statements, name);
        }
        TARGET_TYPE_BYTE_PORTAL => {
            client.portal_store().rm_portal(name);
            release(&held.portals, name);
        }
        _ => {}
    }
    client
        .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
        .await?;
    Ok(())
}
