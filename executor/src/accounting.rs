//! What the caches count, shared by the coordinator's result cache and the
//! executors' data cache: the bytes held by what is being collected
//! ([`Budget`]), the hit/miss/insert counters ([`Counters`]) and what
//! `system.caches` shows of a cache ([`CacheStats`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What `system.caches` shows of a cache (the result cache, or an
/// executor's data cache, which sends it in its heartbeats).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    /// Results (or files) that grew past the entry limit and were not kept.
    pub too_big: u64,
}

/// A cache's lookup and insert counters.
#[derive(Debug, Default)]
pub struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    too_big: AtomicU64,
}

impl Counters {
    /// Counts a lookup: a hit when it `found` the entry, else a miss.
    pub fn lookup(&self, found: bool) {
        let counter = if found { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an entry kept.
    pub fn inserted(&self) {
        self.inserts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an entry that grew past the entry limit and was not kept.
    pub fn too_big(&self) {
        self.too_big.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters with the cache's size, as `system.caches` shows them.
    pub fn stats(&self, entries: u64, bytes: u64, capacity: u64) -> CacheStats {
        CacheStats {
            entries,
            bytes,
            capacity,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            too_big: self.too_big.load(Ordering::Relaxed),
        }
    }
}

/// Bytes held by what is being collected — results being kept, files
/// being recorded — all collections of one cache together, up to a limit.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget {
            held: AtomicUsize::new(0),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        }
    }

    /// Counts `bytes` more; false (and nothing counted) when that would
    /// pass the limit.
    pub fn reserve(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    pub fn release(&self, bytes: usize) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// What is counted now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}
