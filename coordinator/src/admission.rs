//! The admission queue: at most `--max-concurrent-queries` queries run at
//! once, the next `--max-queued-queries` wait in line (first come, first
//! served), the rest are refused at once with 53000. A role may have a
//! lower limit of its own (`ALTER ROLE r SET max_concurrent_queries = 2`);
//! a query waiting for its role's turn waits in the same line.
//!
//! A waiting query honours cancel and `statement_timeout`. Statements that
//! only read the catalog (`SET`, `SHOW`, `SELECT 1`, `pg_catalog` and
//! `information_schema` introspection) never wait: [`needs_admission`].
//!
//! **The fast lane.** A dashboard's point lookups must not wait behind a
//! handful of big queries. Every query's shape (its plan with the literals
//! taken out, [`fingerprint`]) is remembered with how long it ran; a query
//! whose shape last ran within `--fast-query-ms` ([`FAST`] by default)
//! takes a lane of its own, with four
//! times as many turns as the main line. A shape that turns slow goes back to the
//! main line from its next run. New shapes start in the main line. This is
//! the history-based flavour of what Databricks SQL calls intelligent
//! workload management: no cost model to be wrong, just what the same
//! query did last time.
//!
//! tokio's semaphore hands permits out in the order they were asked for,
//! which is the line's FIFO order.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::LochError;

/// By default, a query whose shape last ran at most this long takes the
/// fast lane (`--fast-query-ms`).
pub const FAST: Duration = Duration::from_millis(100);

/// A run slower than remembered moves the remembered time this fraction
/// of the way (a faster one replaces it).
const SLOW_STEPS: u64 = 8;

/// Turns of the fast lane for each turn of the main line: fast queries
/// hold theirs briefly.
const FAST_TURNS: usize = 4;

/// Query shapes remembered (least recently used forgotten first).
const SHAPES: u64 = 10_000;

/// Schemas whose tables are the catalog's, served from memory.
const CATALOG_SCHEMAS: &[&str] = &["information_schema", "pg_catalog", "system"];

/// The line queries wait in.
#[derive(Debug)]
pub struct Admission {
    max_running: usize,
    max_queued: usize,
    running: Arc<Semaphore>,
    queued: AtomicUsize,
    /// Per-role lines: the role's limit and its permits.
    roles: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    admitted: AtomicU64,
    refused: AtomicU64,
    /// The fast lane's turns, and what counts as fast (zero: no lane).
    fast: Arc<Semaphore>,
    fast_limit: Duration,
    fast_admitted: AtomicU64,
    /// How long each query shape ran (microseconds).
    history: moka::sync::Cache<u64, u64>,
}

/// A query's turn: it runs while this lives; when dropped, how long it
/// ran is remembered for its shape.
#[derive(Debug)]
pub struct Permit {
    _running: OwnedSemaphorePermit,
    _role: Option<OwnedSemaphorePermit>,
    shape: Option<Timing>,
}

/// When a query with a shape started, to remember how long it ran.
#[derive(Debug)]
struct Timing {
    shape: u64,
    started: Instant,
    history: moka::sync::Cache<u64, u64>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(t) = self.shape.take() else {
            return;
        };
        let micros = u64::try_from(t.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Quick to believe a shape is fast, slow to believe it is slow: one
        // run slowed by a busy machine must not send a dashboard's lookups
        // back behind the big queries.
        let kept = match t.history.get(&t.shape) {
            Some(before) if micros > before => before + (micros - before) / SLOW_STEPS,
            _ => micros,
        };
        t.history.insert(t.shape, kept);
    }
}

/// What `system.admission` shows.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionStats {
    pub max_running: usize,
    pub max_queued: usize,
    pub running: usize,
    pub queued: usize,
    pub admitted: u64,
    pub refused: u64,
    /// Of `admitted`, those that took the fast lane.
    pub fast_admitted: u64,
}

impl Admission {
    /// A line of `max_running` running and `max_queued` waiting queries,
    /// and a fast lane of [`FAST_TURNS`] times `max_running` more for
    /// shapes that ran at most `fast` (zero: no fast lane).
    pub fn new(max_running: usize, max_queued: usize, fast: Duration) -> Arc<Self> {
        let max_running = max_running.max(1);
        Arc::new(Admission {
            max_running,
            max_queued,
            running: Arc::new(Semaphore::new(max_running)),
            queued: AtomicUsize::new(0),
            roles: Mutex::new(HashMap::new()),
            admitted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            fast: Arc::new(Semaphore::new(max_running * FAST_TURNS)),
            fast_limit: fast,
            fast_admitted: AtomicU64::new(0),
            history: moka::sync::Cache::new(SHAPES),
        })
    }

    /// Waits for a query's turn: `role` with its own limit `role_limit`,
    /// stopped when `cancelled` resolves or at `deadline`
    /// (`statement_timeout`).
    ///
    /// `shape` is the query's [`fingerprint`]: a shape that last ran
    /// within the fast limit takes the fast lane.
    pub async fn admit(
        &self,
        role: &str,
        role_limit: Option<usize>,
        shape: Option<u64>,
        cancelled: impl Future<Output = ()>,
        deadline: Option<Instant>,
    ) -> Result<Permit, LochError> {
        let fast = shape
            .and_then(|s| self.history.get(&s))
            .is_some_and(|micros| {
                !self.fast_limit.is_zero() && micros <= self.fast_limit.as_micros() as u64
            });
        let mut permit = self
            .wait(role, role_limit, fast, cancelled, deadline)
            .await?;
        if fast {
            self.fast_admitted.fetch_add(1, Ordering::Relaxed);
        }
        permit.shape = shape.map(|shape| Timing {
            shape,
            started: Instant::now(),
            history: self.history.clone(),
        });
        Ok(permit)
    }

    async fn wait(
        &self,
        role: &str,
        role_limit: Option<usize>,
        fast: bool,
        cancelled: impl Future<Output = ()>,
        deadline: Option<Instant>,
    ) -> Result<Permit, LochError> {
        let lane = if fast { &self.fast } else { &self.running };
        let role_line = role_limit.map(|limit| self.role_line(role, limit));
        // Straight in when nobody waits and there is room.
        let role_permit = match &role_line {
            Some(line) => Arc::clone(line).try_acquire_owned().ok().map(Some),
            None => Some(None),
        };
        if let Some(role_permit) = role_permit
            && let Ok(running) = Arc::clone(lane).try_acquire_owned()
        {
            self.admitted.fetch_add(1, Ordering::Relaxed);
            return Ok(Permit {
                _running: running,
                _role: role_permit,
                shape: None,
            });
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(LochError::QueueFull(format!(
                "too many queries: {} run and {} wait (--max-concurrent-queries {}, \
                 --max-queued-queries {}); try again later",
                self.max_running, self.max_queued, self.max_running, self.max_queued
            )));
        }
        let _waiting = Waiting(&self.queued);
        let turn = async {
            let role = match role_line {
                Some(line) => Some(line.acquire_owned().await.map_err(closed)?),
                None => None,
            };
            let running = Arc::clone(lane).acquire_owned().await.map_err(closed)?;
            Ok::<_, LochError>(Permit {
                _running: running,
                _role: role,
                shape: None,
            })
        };
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let permit = tokio::select! {
            permit = turn => permit?,
            () = cancelled => return Err(LochError::Canceled),
            () = timeout => return Err(LochError::StatementTimeout),
        };
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(permit)
    }

    /// The line of `role` with `limit` running at once (a new line when
    /// the limit changed; queries holding the old one finish on it).
    fn role_line(&self, role: &str, limit: usize) -> Arc<Semaphore> {
        let limit = limit.max(1);
        let mut roles = self
            .roles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match roles.get(role) {
            Some((l, line)) if *l == limit => Arc::clone(line),
            _ => {
                let line = Arc::new(Semaphore::new(limit));
                roles.insert(role.to_string(), (limit, Arc::clone(&line)));
                line
            }
        }
    }

    /// The line now.
    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            max_running: self.max_running,
            max_queued: self.max_queued,
            running: self.max_running - self.running.available_permits().min(self.max_running),
            queued: self.queued.load(Ordering::SeqCst),
            admitted: self.admitted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            fast_admitted: self.fast_admitted.load(Ordering::Relaxed),
        }
    }
}

fn closed(_: tokio::sync::AcquireError) -> LochError {
    LochError::Internal("the admission queue was closed".into())
}

/// Counts a query as waiting until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether `plan` waits its turn: anything that reads or writes a table
/// other than the catalog's own (`pg_catalog`, `information_schema`,
/// `system`), except a plain `EXPLAIN`.
pub fn needs_admission(plan: &LogicalPlan) -> bool {
    if let LogicalPlan::Explain(_) = plan {
        return false;
    }
    let mut reads_data = false;
    let _ = plan.apply_with_subqueries(|node| {
        reads_data |= match node {
            LogicalPlan::TableScan(scan) => match scan.table_name.schema() {
                Some(schema) => !CATALOG_SCHEMAS.contains(&schema),
                // The pg_catalog tables clients name without their schema.
                None => !scan.table_name.table().starts_with("pg_"),
            },
            LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => true,
            _ => false,
        };
        Ok(if reads_data {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    reads_data
}

/// A query's shape: its plan with every literal taken out, hashed, so the
/// same dashboard query with other values has the same shape.
pub fn fingerprint(plan: &LogicalPlan) -> u64 {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::Expr;
    let shape = plan
        .clone()
        .transform_up(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::Literal(value, _) => Ok(Transformed::yes(Expr::Literal(
                        datafusion::scalar::ScalarValue::try_from(value.data_type())
                            .unwrap_or(datafusion::scalar::ScalarValue::Null),
                        None,
                    ))),
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| plan.clone());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    shape.display_indent().to_string().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_run_one_waits_the_rest_are_refused() {
        let line = Admission::new(2, 1, FAST);
        let a = line
            .admit("u", None, None, std::future::pending(), None)
            .await
            .unwrap();
        let _b = line
            .admit("u", None, None, std::future::pending(), None)
            .await
            .unwrap();
        let waiting = {
            let line = Arc::clone(&line);
            tokio::spawn(async move {
                line.admit("u", None, None, std::future::pending(), None)
                    .await
                    .map(|_| ())
            })
        };
        while line.stats().queued < 1 {
            tokio::task::yield_now().await;
        }
        let refused = line
            .admit("u", None, None, std::future::pending(), None)
            .await
            .unwrap_err();
        assert_eq!(refused.sqlstate(), "53000");
        drop(a);
        waiting.await.unwrap().unwrap();
        assert_eq!(line.stats().queued, 0);
        assert_eq!(line.stats().refused, 1);
    }

    #[tokio::test]
    async fn a_waiting_query_stops_at_its_deadline_and_on_cancel() {
        let line = Admission::new(1, 10, FAST);
        let _running = line
            .admit("u", None, None, std::future::pending(), None)
            .await
            .unwrap();
        let deadline = Instant::now() + std::time::Duration::from_millis(20);
        let timed_out = line
            .admit("u", None, None, std::future::pending(), Some(deadline))
            .await;
        assert!(matches!(timed_out, Err(LochError::StatementTimeout)));
        let cancelled = line
            .admit("u", None, None, std::future::ready(()), None)
            .await;
        assert!(matches!(cancelled, Err(LochError::Canceled)));
        assert_eq!(line.stats().queued, 0);
    }

    #[tokio::test]
    async fn a_role_limit_holds_its_own_queries_back() {
        let line = Admission::new(10, 10, FAST);
        let _first = line
            .admit("etl", Some(1), None, std::future::pending(), None)
            .await
            .unwrap();
        let deadline = Instant::now() + std::time::Duration::from_millis(20);
        let second = line
            .admit("etl", Some(1), None, std::future::pending(), Some(deadline))
            .await;
        assert!(matches!(second, Err(LochError::StatementTimeout)));
        line.admit("bi", Some(1), None, std::future::pending(), None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_shape_that_ran_fast_passes_a_full_line() {
        let line = Admission::new(1, 10, FAST);
        let shape = Some(7);
        // Unknown: the main line; it runs quickly and is remembered.
        drop(
            line.admit("u", None, shape, std::future::pending(), None)
                .await
                .unwrap(),
        );
        let _long = line
            .admit("u", None, None, std::future::pending(), None)
            .await
            .unwrap();
        let fast = line
            .admit("u", None, shape, std::future::pending(), None)
            .await;
        assert!(fast.is_ok());
        assert_eq!(line.stats().fast_admitted, 1);
        // An unknown shape waits behind the long one.
        let deadline = Instant::now() + std::time::Duration::from_millis(20);
        let other = line
            .admit("u", None, Some(8), std::future::pending(), Some(deadline))
            .await;
        assert!(matches!(other, Err(LochError::StatementTimeout)));
    }

    #[test]
    fn the_same_query_with_other_values_has_the_same_shape() {
        use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
        let plan = |key: i64| {
            LogicalPlanBuilder::empty(true)
                .project(vec![lit(key).alias("k")])
                .unwrap()
                .filter(col("k").eq(lit(key)))
                .unwrap()
                .build()
                .unwrap()
        };
        assert_eq!(fingerprint(&plan(1)), fingerprint(&plan(2)));
        let other = LogicalPlanBuilder::empty(true)
            .project(vec![lit("x").alias("k")])
            .unwrap()
            .build()
            .unwrap();
        assert_ne!(fingerprint(&plan(1)), fingerprint(&other));
    }
}
