//! Loch's coordinator: the front door of the warehouse.
//!
//! The modules, from the client inwards (each uses only those below it):
//!
//! - [`server`]: starting a coordinator (`loch local`, `loch coordinator`):
//!   options, the data directory's secrets, executor children.
//! - [`frontend`]: the protocols: pg wire, Flight SQL, TLS.
//! - [`commands`]: runs each parsed statement where it belongs (DDL, Delta
//!   maintenance, roles and grants, storage credentials, prepared
//!   statements).
//! - [`planning`]: runs an authorized plan: the result cache,
//!   distributed or local, re-planning after a lost executor.
//! - [`session`]: one client's state: settings, transaction block and
//!   cursors, cancel and timeout.
//! - [`pgcatalog`]: the per-session `pg_catalog` clients browse.
//! - [`access`]: who may connect, and may this user do this.
//! - [`cluster`]: the executors: registry, heartbeats, placement.
//! - [`engine`]: the DataFusion runtime (memory pool, spill) and catalog
//!   every session plans on, and the [`admission`] queue queries wait in.
//! - [`cache`]: the result cache and what makes a kept result reusable.
//! - [`sql`]: SQL text parsed once into a typed [`sql::Command`] (the front
//!   doors call its parser; it uses only the error type).
//! - [`types`], [`error`]: PostgreSQL type facts; the error type and its
//!   SQLSTATE table.

pub mod access;
pub mod admission;
pub mod cache;
pub mod cluster;
pub mod commands;
pub mod engine;
pub mod error;
pub mod frontend;
pub mod pgcatalog;
pub mod planning;
pub mod server;
pub mod session;
pub mod sql;
pub mod types;

pub use error::LochError;
