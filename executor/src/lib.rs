//! Loch's executor: the engine that runs query plans over lake tables.
//!
//! Today every plan runs in the coordinator's process through the session
//! state built here: DataFusion configured the way Loch wants it (PostgreSQL
//! dialect, `information_schema`, the Loch catalog as the default database).
//! Distributed execution over Flight, with executors as separate processes,
//! is the distributed-execution issue; this crate is where the worker side of
//! it will live. Nothing here knows about pg wire.

pub mod cpu;
pub mod engine;

pub use engine::{Engine, EngineOptions};
