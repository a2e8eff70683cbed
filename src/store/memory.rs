//! The in-memory store of the playground: the same contract as the Redis store (the same
//! contract tests run against both), nothing kept across restarts.

use super::{PartnerWrite, SourcePartition, StateStore, StoreError, StoredPartner, StoredScore, WriteOutcome};
use crate::engine::PartnerState;
use chrono::NaiveDate;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    partners: BTreeMap<String, Partner>,
    due: HashMap<String, NaiveDate>,
    /// Partner id → when it was noted (Unix milliseconds).
    unpublished: HashMap<String, i64>,
}

#[derive(Default)]
struct Partner {
    state: Vec<u8>,
    score: Vec<u8>,
    fingerprint: u64,
    history: Option<Vec<u8>>,
    version: u64,
    offsets: HashMap<SourcePartition, i64>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("no code panics while holding the store lock")
    }
}

impl StateStore for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn load(&self, partners: &[(String, Vec<SourcePartition>)]) -> Result<Vec<StoredPartner>, StoreError> {
        let inner = self.lock();
        partners
            .iter()
            .map(|(partner_id, sources)| match inner.partners.get(partner_id) {
                None => Ok(StoredPartner { offsets: vec![None; sources.len()], ..StoredPartner::default() }),
                Some(p) => Ok(StoredPartner {
                    state: PartnerState::decode(&p.state)
                        .map_err(|source| StoreError::CorruptState { partner_id: partner_id.clone(), source })?,
                    history: StoredPartner::decode_history(partner_id, p.history.as_deref())?,
                    version: p.version,
                    offsets: sources.iter().map(|s| p.offsets.get(s).copied()).collect(),
                    score_fingerprint: Some(p.fingerprint),
                }),
            })
            .collect()
    }

    async fn write(&self, writes: &[PartnerWrite]) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut inner = self.lock();
        Ok(writes
            .iter()
            .map(|w| {
                if let Some(next) = w.next_change {
                    let due = inner.due.entry(w.partner_id.clone()).or_insert(next);
                    *due = (*due).min(next);
                }
                let partner = inner.partners.entry(w.partner_id.clone()).or_default();
                if partner.version != w.expected_version {
                    return WriteOutcome::Conflict;
                }
                partner.version += 1;
                partner.state = w.state.clone();
                partner.score = w.score.clone();
                partner.fingerprint = w.score_fingerprint;
                if let Some(history) = &w.history {
                    partner.history = Some(history.clone());
                }
                partner.offsets.extend(w.offsets.iter().cloned());
                WriteOutcome::Written { version: partner.version }
            })
            .collect())
    }

    async fn scores(&self, partners: &[String]) -> Result<Vec<Option<StoredScore>>, StoreError> {
        let inner = self.lock();
        Ok(partners
            .iter()
            .map(|id| {
                inner.partners.get(id).filter(|p| p.version > 0).map(|p| StoredScore {
                    score: p.score.clone(),
                    version: p.version,
                    history: p.history.clone(),
                })
            })
            .collect())
    }

    async fn list_partners(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let range = inner.partners.range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded));
        Ok(range.filter(|(_, p)| p.version > 0).take(limit).map(|(id, _)| id.clone()).collect())
    }

    async fn due(&self, day: NaiveDate, limit: usize) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let mut due: Vec<(&NaiveDate, &String)> =
            inner.due.iter().filter(|(_, d)| **d <= day).map(|(p, d)| (d, p)).collect();
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, p)| p.clone()).collect())
    }

    async fn reschedule(&self, today: NaiveDate, changes: &[(String, Option<NaiveDate>)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for (partner_id, next_change) in changes {
            let current = inner.due.get(partner_id).copied();
            match (*next_change, current) {
                (None, Some(c)) if c <= today => {
                    inner.due.remove(partner_id);
                }
                (Some(next), c) if c.is_none_or(|c| c <= today || next < c) => {
                    inner.due.insert(partner_id.clone(), next);
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn note_unpublished(&self, partners: &[String], noted_at: i64) -> Result<(), StoreError> {
        self.lock().unpublished.extend(partners.iter().map(|p| (p.clone(), noted_at)));
        Ok(())
    }

    async fn unpublished(&self, noted_before: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let mut noted: Vec<(i64, &String)> =
            inner.unpublished.iter().filter(|(_, at)| **at <= noted_before).map(|(p, at)| (*at, p)).collect();
        noted.sort();
        Ok(noted.into_iter().take(limit).map(|(_, p)| p.clone()).collect())
    }

    async fn forget_published(&self, partners: &[String]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for partner_id in partners {
            inner.unpublished.remove(partner_id);
        }
        Ok(())
    }
}
