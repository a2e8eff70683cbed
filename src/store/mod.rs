//! Where partner state lives between events: the `StateStore` contract and its Redis
//! implementation.
//!
//! Every key of one partner carries the hash tag `{partner_id}`, so one partner's data sits
//! in one Redis Cluster slot and no command ever spans two partners. A partner's facts, its
//! current score and the highest source offset applied per Kafka partition are one hash,
//! written by one Lua script: the effect of a batch and the offsets that record it become
//! durable together, or not at all.

mod memory;
mod packed;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

use crate::engine::{HistoryError, PartnerState, ScoreHistory, StateError};
use chrono::NaiveDate;
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store answered unexpectedly: {0}")]
    Protocol(String),
    #[error("stored state of partner {partner_id} is unreadable: {source}")]
    CorruptState { partner_id: String, source: StateError },
    #[error("stored score history of partner {partner_id} is unreadable: {source}")]
    CorruptHistory { partner_id: String, source: HistoryError },
}

/// A Kafka partition events come from; the store keeps the highest offset applied from each.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePartition {
    pub topic: String,
    pub partition: i32,
}

/// A partner as read for an update.
#[derive(Clone, Debug, Default)]
pub struct StoredPartner {
    pub state: PartnerState,
    /// Its daily scores so far.
    pub history: ScoreHistory,
    /// 0 for a partner never written.
    pub version: u64,
    /// Highest applied offset per requested source partition, in the order asked.
    pub offsets: Vec<Option<i64>>,
    /// Fingerprint of the stored score (without its days), to tell whether a score changed.
    pub score_fingerprint: Option<u64>,
}

/// A partner's new content, written only if its version is still `expected_version`.
#[derive(Clone, Debug)]
pub struct PartnerWrite {
    pub partner_id: String,
    pub expected_version: u64,
    pub state: Vec<u8>,
    pub score: Vec<u8>,
    pub score_fingerprint: u64,
    /// Encoded `ScoreHistory`; `None` when it did not change (most events of a day), which
    /// saves writing it again.
    pub history: Option<Vec<u8>>,
    pub offsets: Vec<(SourcePartition, i64)>,
    /// The next day the score may change without a new event (day-rollover index).
    pub next_change: Option<NaiveDate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Written {
        version: u64,
    },
    /// Another writer got there first: reload and apply again.
    Conflict,
}

/// A stored score: protobuf `PartnerScore` bytes, the partner's version and its encoded
/// `ScoreHistory` (for the qualification window, computed when read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredScore {
    pub score: Vec<u8>,
    pub version: u64,
    pub history: Option<Vec<u8>>,
}

impl StoredPartner {
    /// Decodes a stored history (absent: none yet).
    pub fn decode_history(partner_id: &str, bytes: Option<&[u8]>) -> Result<ScoreHistory, StoreError> {
        bytes.map_or(Ok(ScoreHistory::default()), |b| {
            ScoreHistory::decode(b)
                .map_err(|source| StoreError::CorruptHistory { partner_id: partner_id.to_owned(), source })
        })
    }
}

/// The store contract every implementation meets (and the contract tests check).
pub trait StateStore: Clone + Send + Sync + 'static {
    /// Answers when the store is reachable.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads partners for an update, with the offsets of the given source partitions.
    fn load(
        &self,
        partners: &[(String, Vec<SourcePartition>)],
    ) -> impl Future<Output = Result<Vec<StoredPartner>, StoreError>> + Send;

    /// Writes each partner atomically (conditional on its version); one outcome per write.
    fn write(&self, writes: &[PartnerWrite]) -> impl Future<Output = Result<Vec<WriteOutcome>, StoreError>> + Send;

    /// Current scores, `None` for unknown partners.
    fn scores(&self, partners: &[String]) -> impl Future<Output = Result<Vec<Option<StoredScore>>, StoreError>> + Send;

    /// Up to `limit` partner ids after `after` (exclusive), in byte order.
    fn list_partners(&self, after: &str, limit: usize) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Up to `limit` partners whose score may change on or before `day` without an event.
    fn due(&self, day: NaiveDate, limit: usize) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Sets (or clears) partners' next change days after they were re-evaluated for the
    /// rollover to `today`: `(partner_id, next_change)` pairs, in one round trip.
    fn reschedule(
        &self,
        today: NaiveDate,
        changes: &[(String, Option<NaiveDate>)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Notes partners whose changed scores the rollover is about to write, at `noted_at`
    /// (Unix milliseconds), to be forgotten once those scores are published: the rollover's
    /// outbox. Noted before the writes, so a partner is noted too early (and published
    /// again, unchanged), never too late.
    fn note_unpublished(
        &self,
        partners: &[String],
        noted_at: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` partners noted at or before `noted_before` (Unix milliseconds), the
    /// longest noted first.
    fn unpublished(
        &self,
        noted_before: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Forgets noted partners whose scores are published.
    fn forget_published(&self, partners: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send;
}
