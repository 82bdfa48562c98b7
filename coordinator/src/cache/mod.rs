//! The coordinator's result cache: whole query results kept in memory so
//! that a repeated query (a dashboard's refresh, a notebook cell run again)
//! is answered without running it, and never with stale data.
//!
//! - [`key`]: when a kept result may answer a query again (the key: user,
//!   settings, DDL epoch, plan, every file read), and which queries may be
//!   kept at all.
//! - [`result_cache`]: the cache itself, keeping results as the Flight
//!   messages that send them.

pub mod key;
pub mod result_cache;
