//! Loch's executor: the engine that runs query plans over lake tables.
//!
//! Two halves: the [`Engine`] (the session state the coordinator plans and
//! runs queries with: PostgreSQL dialect, `information_schema`, the Loch
//! catalog as the default database) and the executor process
//! ([`worker::run_executor`]): datafusion-distributed's worker service that
//! runs plan stages sent by the coordinator and exchanges Arrow data with
//! other executors over Flight, behind the cluster secret ([`cluster`]).
//! Nothing here knows about pg wire.

pub mod cluster;
pub mod cpu;
pub mod data_cache;
pub mod direct;
pub mod engine;
pub mod results;
pub mod wire;
pub mod worker;

pub use engine::{Engine, EngineOptions};
