//! Loch's executor: the process that runs plan stages for a coordinator.
//!
//! - [`worker`]: the executor process: datafusion-distributed's worker
//!   service running the stages the coordinator sends, exchanging Arrow
//!   data with other executors over Flight, registration and heartbeats.
//! - [`cluster`]: the cluster secret every internal call is signed with,
//!   and its check on every call an executor receives.
//! - [`direct`]: Flight SQL clients' direct endpoints: sealed one-time
//!   tickets redeemed at the executor that runs the scan.
//! - [`data_cache`]: decoded Parquet files kept for the next scans.
//! - [`cpu`]: the runtime CPU-bound work runs on, apart from network I/O.
//! - [`memory`]: how much memory a process may use, its query pool, the
//!   per-query limit and the spill directory (coordinator and executors).
//! - [`internal_flight`]: the one Flight service shape of the internal
//!   endpoints (direct tickets here, the coordinator's cluster endpoint).
//! - What the coordinator shares: [`wire`] (Arrow Flight encoding, used by
//!   direct endpoints and by the coordinator's Flight SQL service) and
//!   [`accounting`] (the caches' budget and counters).
//!
//! Nothing here knows about pg wire or sessions.

pub mod accounting;
pub mod cluster;
pub mod cpu;
pub mod data_cache;
pub mod direct;
pub mod internal_flight;
pub mod memory;
pub mod wire;
pub mod worker;
