//! Where the engine keeps things in a [`StateStore`](crate::store::StateStore):
//! table names, key encodings and attribute names. Every name Flowstate derives
//! from user input is length-prefixed or kept in its own key part, so user
//! strings may contain any character (Beldi broke on its `-` separator).

use std::fmt;
use std::sync::LazyLock;

use crate::error::{Error, Result};
use crate::store::{Key, TableName};

/// Data rows of the linked DAAL: partition = [`data_partition`], sort = row id.
pub static DATA: LazyLock<TableName> = LazyLock::new(|| TableName::new("daal").expect("valid"));
/// Operation log: partition = instance id, sort = step number (big-endian).
pub static OPLOG: LazyLock<TableName> = LazyLock::new(|| TableName::new("oplog").expect("valid"));
/// Intents: partition = shard, sort = instance id.
pub static INTENTS: LazyLock<TableName> = LazyLock::new(|| TableName::new("intents").expect("valid"));
/// Instance index (stores with atomic batches): the running set, sharded
/// (`r‖u16 shard` → instance id), and the finished queue by finish minute
/// (`d‖u64 minute` → instance id). Kept in the same batches as the intent.
pub static INDEX: LazyLock<TableName> = LazyLock::new(|| TableName::new("idx").expect("valid"));
/// Engine bookkeeping: the GC lease and the queue of unlinked rows.
pub static META: LazyLock<TableName> = LazyLock::new(|| TableName::new("meta").expect("valid"));

/// Sort key of the head row of every DAAL chain.
pub const HEAD_ROW: &str = "h";

/// Longest user table name, in bytes.
pub const MAX_TABLE_LEN: usize = 255;
/// Longest user key, in bytes (DynamoDB allows 2048 for a partition key, with our prefix).
pub const MAX_KEY_LEN: usize = 1024;
/// Longest instance id, in bytes.
pub const MAX_INSTANCE_ID_LEN: usize = 512;
/// Separator between a parent instance id and a child's step number. Reserved:
/// caller-supplied instance ids may not contain it, so child ids never collide.
pub const CHILD_SEPARATOR: char = '\u{1f}';

/// DAAL row attributes.
pub mod row {
    /// The current value (JSON); absent until first written.
    pub const VALUE: &str = "v";
    /// The write log: map from [`entry_name`](super::entry_name) to the outcome.
    pub const LOG: &str = "log";
    /// Log entries ever added to this row (the row is full at capacity).
    pub const COUNT: &str = "n";
    /// Log entries removed by GC.
    pub const COLLECTED: &str = "gc";
    /// Row id of the next row; present once the row is sealed and linked.
    pub const NEXT: &str = "next";
    /// When the row was created (ms since epoch).
    pub const BORN: &str = "born";
    /// When GC unlinked the row from its chain.
    pub const UNLINKED_AT: &str = "unlinked_at";
}

/// A validated instance id: the caller's idempotency key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// Validate a caller-supplied id: non-empty, at most
    /// [`MAX_INSTANCE_ID_LEN`] bytes, without [`CHILD_SEPARATOR`].
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN {
            return Err(Error::InvalidInput(format!(
                "instance id must be 1 to {MAX_INSTANCE_ID_LEN} bytes, got {}",
                id.len()
            )));
        }
        if id.contains(CHILD_SEPARATOR) {
            return Err(Error::InvalidInput("instance id may not contain U+001F (reserved for child ids)".into()));
        }
        Ok(Self(id))
    }

    /// A fresh random id.
    pub fn mint() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The deterministic id of the instance this one calls at `step`.
    pub fn child(&self, step: u32) -> Self {
        Self(format!("{}{CHILD_SEPARATOR}{step}", self.0))
    }

    /// Re-wrap an id read back from the store (child ids included).
    pub(crate) fn from_stored(id: String) -> Self {
        Self(id)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Show child separators readably.
        f.write_str(&self.0.replace(CHILD_SEPARATOR, "/"))
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

/// Check a user table name and key before they reach the store.
pub fn check_user_key(table: &str, key: &str) -> Result<()> {
    if table.is_empty() || table.len() > MAX_TABLE_LEN {
        return Err(Error::InvalidInput(format!("table name must be 1 to {MAX_TABLE_LEN} bytes")));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidInput(format!("key must be at most {MAX_KEY_LEN} bytes, got {}", key.len())));
    }
    Ok(())
}

/// Partition of a user key's DAAL chain: `len(table) as u16 BE ‖ table ‖ key`.
pub fn data_partition(table: &str, key: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(2 + table.len() + key.len());
    p.extend_from_slice(&(table.len() as u16).to_be_bytes());
    p.extend_from_slice(table.as_bytes());
    p.extend_from_slice(key.as_bytes());
    p
}

/// Inverse of [`data_partition`], for inspection and GC.
pub fn split_data_partition(p: &[u8]) -> Option<(String, String)> {
    let len = u16::from_be_bytes(p.get(..2)?.try_into().ok()?) as usize;
    let table = std::str::from_utf8(p.get(2..2 + len)?).ok()?;
    let key = std::str::from_utf8(p.get(2 + len..)?).ok()?;
    Some((table.to_string(), key.to_string()))
}

/// Key of one DAAL row.
pub fn row_key(partition: &[u8], row_id: &str) -> Key {
    Key::new(DATA.clone(), partition.to_vec(), row_id.as_bytes().to_vec())
}

/// A fresh id for a non-head row.
pub fn new_row_id() -> String {
    format!("r{}", uuid::Uuid::new_v4().simple())
}

/// Name of the write-log entry of `(instance, step)` in a row: `step:instance`.
/// The step has no `:`, so the name is unambiguous whatever the id holds.
pub fn entry_name(instance: &InstanceId, step: u32) -> String {
    format!("{step}:{}", instance.0)
}

/// Key of the operation-log entry of `(instance, step)`.
pub fn oplog_key(instance: &InstanceId, step: u32) -> Key {
    Key::new(OPLOG.clone(), instance.0.as_bytes().to_vec(), step.to_be_bytes().to_vec())
}

/// Decode an operation-log sort key.
pub fn oplog_step(sort: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(sort.try_into().ok()?))
}

/// Shard of an instance's intent (FNV-1a of the id, stable across releases).
pub fn intent_shard(instance: &InstanceId, shards: u16) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in instance.0.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(shards.max(1))) as u16
}

/// Partition of intent shard `shard`.
pub fn intent_partition(shard: u16) -> Vec<u8> {
    let mut p = b"s".to_vec();
    p.extend_from_slice(&shard.to_be_bytes());
    p
}

/// Key of an instance's intent.
pub fn intent_key(instance: &InstanceId, shards: u16) -> Key {
    Key::new(INTENTS.clone(), intent_partition(intent_shard(instance, shards)), instance.0.as_bytes().to_vec())
}

/// Width of one bucket of the finished queue.
pub const FINISHED_BUCKET_MS: u64 = 60_000;

/// Partition of running-set shard `shard`.
pub fn running_partition(shard: u16) -> Vec<u8> {
    let mut p = b"r".to_vec();
    p.extend_from_slice(&shard.to_be_bytes());
    p
}

/// An instance's entry in the running set.
pub fn running_key(instance: &InstanceId, shards: u16) -> Key {
    Key::new(INDEX.clone(), running_partition(intent_shard(instance, shards)), instance.0.as_bytes().to_vec())
}

/// Partition of the finished-queue bucket `bucket` (minutes since the epoch).
pub fn finished_partition(bucket: u64) -> Vec<u8> {
    let mut p = b"d".to_vec();
    p.extend_from_slice(&bucket.to_be_bytes());
    p
}

/// An instance's entry in the finished queue.
pub fn finished_key(instance: &InstanceId, finished_at_ms: u64) -> Key {
    Key::new(INDEX.clone(), finished_partition(finished_at_ms / FINISHED_BUCKET_MS), instance.0.as_bytes().to_vec())
}

/// Key of a GC cursor (the last finished-queue bucket fully processed).
pub fn gc_cursor_key(name: &str) -> Key {
    Key::new(META.clone(), b"gc".to_vec(), format!("cursor-{name}").into_bytes())
}

/// Key of the GC lease.
pub fn gc_lease_key() -> Key {
    Key::new(META.clone(), b"gc".to_vec(), b"lease".to_vec())
}

/// Partition of the queue of unlinked rows awaiting deletion.
pub const UNLINKED_QUEUE: &[u8] = b"unlinked";

/// Lowercase hex of bytes (partitions inside JSON attributes).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Inverse of [`hex`].
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_round_trip_with_any_characters() {
        for (t, k) in [("accounts", "a-b:c/d#e\u{0}ü🦀"), ("t", ""), ("x-y", "-")] {
            assert_eq!(split_data_partition(&data_partition(t, k)), Some((t.to_string(), k.to_string())));
        }
        // Different splits of the same characters never collide.
        assert_ne!(data_partition("ab", "c"), data_partition("a", "bc"));
    }

    #[test]
    fn instance_ids_reject_the_child_separator() {
        assert!(InstanceId::new("order-1:x/y").is_ok());
        assert!(InstanceId::new("").is_err());
        assert!(InstanceId::new(format!("a{CHILD_SEPARATOR}1")).is_err());
        let parent = InstanceId::new("p").unwrap();
        assert_ne!(parent.child(1), parent.child(11));
        assert_eq!(unhex(&hex(b"\x00\xffab")).unwrap(), b"\x00\xffab");
    }
}
