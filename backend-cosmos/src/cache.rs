//! The ETag cache: the last `(ETag, item)` this process read or wrote per
//! key, so a conditional update can go straight to `replace` with
//! `If-Match` (one round trip) instead of reading first.
//!
//! An entry is a hint, never an answer: a write based on it is checked by the
//! service against the ETag, and a condition that fails on it is re-checked
//! on a fresh read before `ConditionFailed` is returned.

use std::collections::HashMap;
use std::sync::Arc;

use flowstate_core::store::Item;

/// `(container, partition key, id)`.
pub(crate) type CacheKey = (String, String, String);

/// One cached version.
#[derive(Clone, Debug)]
pub(crate) struct Cached {
    /// The version's ETag.
    pub etag: String,
    /// The item as of that version.
    pub item: Arc<Item>,
}

#[derive(Debug)]
struct Entry {
    cached: Cached,
    bytes: usize,
    used: u64,
}

/// A bounded map; when full, the least recently used half is dropped.
#[derive(Debug)]
pub(crate) struct EtagCache {
    entries: HashMap<CacheKey, Entry>,
    clock: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl EtagCache {
    /// A cache of at most `max_entries` items and `max_bytes` of encoded items.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self { entries: HashMap::new(), clock: 0, bytes: 0, max_entries: max_entries.max(1), max_bytes }
    }

    pub(crate) fn get(&mut self, key: &CacheKey) -> Option<Cached> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|e| {
            e.used = clock;
            e.cached.clone()
        })
    }

    /// Remember `item` at `etag`; `bytes` is its encoded size.
    pub(crate) fn put(&mut self, key: CacheKey, etag: String, item: Arc<Item>, bytes: usize) {
        if bytes > self.max_bytes / 4 {
            self.remove(&key);
            return;
        }
        self.clock += 1;
        let entry = Entry { cached: Cached { etag, item }, bytes, used: self.clock };
        self.bytes += bytes;
        if let Some(old) = self.entries.insert(key, entry) {
            self.bytes -= old.bytes;
        }
        if self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            self.evict();
        }
    }

    pub(crate) fn remove(&mut self, key: &CacheKey) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.bytes;
        }
    }

    fn evict(&mut self) {
        let mut ages: Vec<u64> = self.entries.values().map(|e| e.used).collect();
        ages.sort_unstable();
        let cutoff = ages[ages.len() / 2];
        self.entries.retain(|_, e| e.used > cutoff);
        self.bytes = self.entries.values().map(|e| e.bytes).sum();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> CacheKey {
        ("c".into(), "p".into(), format!("k{i}"))
    }

    #[test]
    fn bounded_by_entries_and_bytes_keeping_recent_ones() {
        let mut c = EtagCache::new(8, 1000);
        for i in 0..9 {
            c.put(key(i), format!("e{i}"), Arc::new(Item::new()), 10);
        }
        assert!(c.len() <= 8);
        assert_eq!(c.get(&key(8)).map(|x| x.etag), Some("e8".into()));
        assert!(c.get(&key(0)).is_none(), "the oldest entry is evicted first");
        c.put(key(100), "big".into(), Arc::new(Item::new()), 600);
        assert!(c.get(&key(100)).is_none(), "an entry over a quarter of the budget is not kept");
        c.remove(&key(8));
        assert!(c.get(&key(8)).is_none());
    }
}
