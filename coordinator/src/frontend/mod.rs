//! The protocols clients speak: the PostgreSQL wire protocol ([`pgwire`])
//! and Arrow Flight SQL ([`flight`]), both over TLS when it is on
//! ([`tls`]). They translate messages to and from a session; neither
//! decides anything a session or the access module decides.

pub mod flight;
pub mod pgwire;
pub mod tls;

pub use crate::session::MAX_PREPARED_STATEMENTS;
