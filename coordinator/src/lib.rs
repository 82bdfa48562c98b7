//! Loch's coordinator: the front door of the warehouse.
//!
//! It accepts PostgreSQL wire protocol connections ([`pgwire`]) and Arrow
//! Flight SQL calls ([`flight`]), keeps one
//! [`session::Session`] per client, parses statements ([`statement`]), maps
//! every error to a SQLSTATE ([`error`]) and runs plans on the engine from
//! `loch-executor`, distributed over the executors of the [`cluster`].
//! [`local`] wires it all together for `loch local` and `loch coordinator`.

pub mod auth;
pub mod block;
pub mod cluster;
pub mod credentials;
pub mod databricks;
pub(crate) mod ddl;
pub mod error;
pub mod flight;
pub mod local;
pub mod pgcatalog;
pub mod pgwire;
pub mod policy;
pub mod results;
pub mod security;
pub mod session;
pub mod statement;
pub mod tls;

pub use error::LochError;
