//! Applies a batch of events to partner state in the store, with an exactly-once effect.
//!
//! Per partner: read its facts, the store version and the highest offset applied from each
//! source partition; skip events at or below that offset (a replay after a crash or a
//! rebalance); merge the rest; evaluate; write facts, score and offsets in one conditional
//! step. A concurrent writer of the same partner (possible only when producers do not key
//! by partner) makes the write fail on the version, and the partner is read and applied again.

use super::{DeadLetter, DeadLetterSink, IngestError, Received, Workers};
use crate::engine::{
    Applied, PartnerState, ScoreHistory, StateError, forecast_refresh_after, forecast_with_warnings, next_change_after,
};
use crate::proto;
use crate::rules::RuleBook;
use crate::store::{PartnerWrite, SourcePartition, StateStore, StoreError, StoredPartner, WriteOutcome};
use chrono::{Days, NaiveDate};
use prost::Message;
use prost::bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// After a partner's first write, a concurrent writer can win it this many more times in a
/// row before the batch fails (and is retried as a whole).
const MAX_CONFLICT_ROUNDS: usize = 16;

/// Partners read, scored and written together: a few megabytes per store round trip, and
/// enough of them that both cores share the scoring.
const PARTNERS_PER_CHUNK: usize = 2_000;

/// A score that changed and is now stored: what the feed publishes.
#[derive(Clone, Debug)]
pub struct ScoreUpdate {
    pub partner_id: String,
    /// Protobuf `PartnerScore`, shared with the live watchers it is given to.
    pub score: Bytes,
    pub version: u64,
    /// The Kafka timestamp (ms) of the oldest event behind this change, for freshness.
    pub oldest_event_ms: Option<i64>,
}

/// Where the applier hands the scores that changed, chunk by chunk, each once its write
/// is durable in the store. `send` returns once the scores are on their way; whoever
/// commits the batch's offsets waits for them to arrive first.
pub trait ScoreSink: Send {
    fn send(&mut self, updates: Vec<ScoreUpdate>) -> impl std::future::Future<Output = Result<(), IngestError>> + Send;
}

/// Keeps the scores, in the order they were sent (tests read them after the batch).
impl ScoreSink for Vec<ScoreUpdate> {
    async fn send(&mut self, updates: Vec<ScoreUpdate>) -> Result<(), IngestError> {
        self.extend(updates);
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct BatchResult {
    /// Partners that had events replayed: their stored score may never have been published
    /// (a crash between the store write and the publish, or a batch that failed after this
    /// partner's chunk was handed to the producer but before the broker acknowledged it),
    /// so it is published again.
    pub replayed: Vec<String>,
    /// Events merged as new facts.
    pub applied: usize,
    /// The same, per event type (indexed like `Fact::KINDS`).
    pub applied_by_kind: [u64; 3],
}

pub struct Applier<S> {
    pub store: S,
    pub rules: Arc<RuleBook>,
    pub history_days: u32,
    /// Event ids are remembered at least this many days after they arrive.
    pub dedup_window_days: u32,
    /// The threads that decode and score a batch, and their CPU priority.
    pub workers: Workers,
}

/// A partner scored as of a day: what its write carries, and what to publish.
struct Assessed {
    /// Protobuf `PartnerScore` as stored: with windows and forecast, without shortfall plans.
    stored: Vec<u8>,
    /// The whole `PartnerScore`, plans included, when its fingerprint differs from the one
    /// stored before: the score to publish.
    changed: Option<Vec<u8>>,
    fingerprint: u64,
    next_change: Option<NaiveDate>,
    /// Encoded history, when it changed.
    history: Option<Vec<u8>>,
}

/// A partner and the indexes of its events in the batch, in order.
type PartnerEvents<'p> = (&'p str, &'p [usize]);

/// A chunk's writes under way, with the plans they came from.
struct ChunkWrite<'p, 'c> {
    partners: &'c [PartnerEvents<'p>],
    plans: Vec<Plan>,
    task: WriteTask,
}

/// One partner's share of a batch, worked out in memory.
struct Plan {
    write: Option<PartnerWrite>,
    applied_by_kind: [u64; 3],
    oldest_event_ms: Option<i64>,
    replayed: bool,
    applied: usize,
    /// The whole score to publish, when it changed.
    changed: Option<Vec<u8>>,
    rejected: Vec<(usize, StateError)>,
}

impl<S: StateStore> Applier<S> {
    /// The oldest day evaluations must stay right for: what is older is pruned.
    pub fn history_start(&self, today: NaiveDate) -> NaiveDate {
        today.checked_sub_days(Days::new(u64::from(self.history_days))).unwrap_or(today)
    }

    fn prune(&self, state: &mut PartnerState, today: NaiveDate) {
        let keep_ids_since = today.checked_sub_days(Days::new(u64::from(self.dedup_window_days))).unwrap_or(today);
        state.prune(self.history_start(today), keep_ids_since, &self.rules);
    }

    /// Applies `events` (already decoded) as of `today`. Events rejected by the partner's
    /// state (a reused id) go to `dead_letters` before anything is written, so a crash
    /// after the write cannot lose them. Changed scores go to `scores` chunk by chunk as
    /// their writes land: a batch of tens of thousands of partners takes seconds to apply,
    /// and its first chunk's scores waited for the last chunk's.
    pub async fn apply(
        &self,
        today: NaiveDate,
        events: &[Received<'_>],
        dead_letters: &impl DeadLetterSink,
        scores: &mut impl ScoreSink,
    ) -> Result<BatchResult, IngestError> {
        // Partners in the order their first event arrived: under a backlog a batch takes
        // seconds to apply, chunk by chunk, and each chunk's scores are published as it lands,
        // so the events that have waited longest go first. In partner id order, an event
        // from the start of a batch waited for the whole batch as often as not.
        let mut by_partner: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            by_partner.entry(e.event.partner_id.as_str()).or_default().push(i);
        }
        let mut partners: Vec<PartnerEvents> = by_partner.iter().map(|(p, i)| (*p, i.as_slice())).collect();
        partners.sort_unstable_by_key(|(_, indexes)| indexes[0]);
        let mut result = BatchResult::default();
        let mut rejections = Rejections { sink: dead_letters, sent: HashSet::new() };
        let mut conflicted: Vec<PartnerEvents> = Vec::new();
        // A batch's partners go to the store in chunks, as a pipeline: while the cores score
        // one chunk, Redis writes the one before and reads the one after. The next chunk's
        // read is sent before this chunk's write, so Redis answers it while this chunk is
        // scored and the next scoring starts at once; with the read queued behind the write,
        // the cores waited for every write. One chunk for the whole batch left the cores
        // idle during every round trip and made a catch-up batch one pipeline of hundreds
        // of megabytes.
        let mut chunks = partners.chunks(PARTNERS_PER_CHUNK);
        let mut reading = chunks.next().map(|chunk| (chunk, self.start_load(self.requests(chunk, events))));
        let mut writing: Option<ChunkWrite> = None;
        while let Some((chunk, load)) = reading.take() {
            let read = joined(load).await?;
            reading = chunks.next().map(|next| (next, self.start_load(self.requests(next, events))));
            let (plans, task) = self.score_and_write(read, chunk, events, today, &mut rejections).await?;
            if let Some(before) = writing.replace(ChunkWrite { partners: chunk, plans, task }) {
                conflicted.extend(settle(before, &mut result, scores).await?);
            }
        }
        if let Some(last) = writing {
            conflicted.extend(settle(last, &mut result, scores).await?);
        }
        self.apply_contended(today, events, conflicted, &mut rejections, &mut result, scores).await?;
        Ok(result)
    }

    /// Applies again, round after round with a growing pause, the partners whose write
    /// another writer got to first: each is read and scored afresh.
    async fn apply_contended<'p>(
        &self,
        today: NaiveDate,
        events: &[Received<'_>],
        mut pending: Vec<PartnerEvents<'p>>,
        rejections: &mut Rejections<'_, impl DeadLetterSink>,
        result: &mut BatchResult,
        scores: &mut impl ScoreSink,
    ) -> Result<(), IngestError> {
        for round in 0..MAX_CONFLICT_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            back_off(round).await;
            let read = joined(self.start_load(self.requests(&pending, events))).await?;
            let (plans, task) = self.score_and_write(read, &pending, events, today, rejections).await?;
            pending = settle(ChunkWrite { partners: &pending, plans, task }, result, scores).await?;
        }
        Err(IngestError::Contended(pending.iter().map(|(p, _)| (*p).to_owned()).collect()))
    }

    /// What to read for `partners`: each with the source partitions of its events.
    fn requests(&self, partners: &[PartnerEvents], events: &[Received<'_>]) -> Vec<(String, Vec<SourcePartition>)> {
        partners
            .iter()
            .map(|(partner, indexes)| {
                // Deduplicated before they are copied: a partner's events come from one or two
                // partitions, and each copy allocates the topic's name.
                let mut sources: Vec<&SourcePartition> = indexes.iter().map(|i| &events[*i].raw.source).collect();
                sources.sort();
                sources.dedup();
                ((*partner).to_owned(), sources.into_iter().cloned().collect())
            })
            .collect()
    }

    /// Starts the read on a task of its own, which runs while this task scores (scoring
    /// hands the worker's other tasks to another thread, see `Workers::map`), so Redis
    /// answers it meanwhile; the requests come back with the answer.
    fn start_load(&self, requests: Vec<(String, Vec<SourcePartition>)>) -> LoadTask {
        let store = self.store.clone();
        let span = tracing::info_span!("pcs.redis.read", db.system.name = "redis", db.operation.name = "HMGET");
        tokio::spawn(async move {
            // Scored in step with the requests: a missing answer would skip a partner's events
            // while their offsets are committed.
            let stored = timed(span, "HMGET", store.load(&requests)).await.and_then(|s| in_full(s, &requests, "read"));
            (requests, stored)
        })
    }

    /// Starts the writes on a task of its own; the writes come back with
    /// their outcomes. A write that lands after the batch failed anyway changes nothing
    /// twice: it carries the offsets it applied, so the batch's retry skips those events.
    fn start_write(&self, writes: Vec<PartnerWrite>) -> WriteTask {
        let store = self.store.clone();
        let span = tracing::info_span!("pcs.redis.write", db.system.name = "redis", db.operation.name = "EVALSHA");
        tokio::spawn(async move {
            let outcomes = if writes.is_empty() {
                Ok(Vec::new())
            } else {
                timed(span, "EVALSHA", store.write(&writes)).await.and_then(|o| in_full(o, &writes, "written"))
            };
            (writes, outcomes)
        })
    }

    /// Scores every partner of `partners` (as read: the requests and what the store
    /// answered) on all cores, dead-letters the events their state refused, and starts
    /// their writes. The plans keep what to count and publish once the writes land.
    async fn score_and_write(
        &self,
        (requests, stored): (Vec<(String, Vec<SourcePartition>)>, Vec<StoredPartner>),
        partners: &[PartnerEvents<'_>],
        events: &[Received<'_>],
        today: NaiveDate,
        rejections: &mut Rejections<'_, impl DeadLetterSink>,
    ) -> Result<(Vec<Plan>, WriteTask), IngestError> {
        let work: Vec<_> = requests.iter().zip(stored).zip(partners).collect();
        let mut plans = self.workers.map(work, |(((partner, sources), stored), (_, indexes))| {
            self.plan(partner, sources, stored, indexes, events, today)
        });
        rejections.send_new(&plans, events).await?;
        // Moved out, not copied: a write holds the partner's whole encoded state.
        let writes: Vec<PartnerWrite> = plans.iter_mut().filter_map(|p| p.write.take()).collect();
        Ok((plans, self.start_write(writes)))
    }

    fn plan(
        &self,
        partner_id: &str,
        sources: &[SourcePartition],
        stored: StoredPartner,
        indexes: &[usize],
        events: &[Received<'_>],
        today: NaiveDate,
    ) -> Plan {
        let StoredPartner { mut state, history, version, offsets: applied_offsets, score_fingerprint } = stored;
        let mut affected_from: Option<NaiveDate> = None;
        let mut highest: Vec<Option<i64>> = applied_offsets.clone();
        let mut plan = Plan {
            write: None,
            applied_by_kind: [0; 3],
            oldest_event_ms: None,
            replayed: false,
            applied: 0,
            changed: None,
            rejected: Vec::new(),
        };
        for &i in indexes {
            let event = &events[i];
            let slot = sources.iter().position(|s| *s == event.raw.source).expect("every event's source was requested");
            if applied_offsets[slot].is_some_and(|done| event.raw.offset <= done) {
                plan.replayed = true;
                continue;
            }
            match state.apply_received(&event.event, today) {
                Ok(Applied::New) => {
                    plan.applied += 1;
                    let from = event.event.fact.affects_from();
                    affected_from = Some(affected_from.map_or(from, |a| a.min(from)));
                    plan.applied_by_kind[event.event.fact.kind()] += 1;
                    if let Some(ts) = event.raw.timestamp_ms {
                        plan.oldest_event_ms = Some(plan.oldest_event_ms.map_or(ts, |o| o.min(ts)));
                    }
                }
                Ok(Applied::Redelivery) => {}
                Err(reason) => plan.rejected.push((i, reason)),
            }
            highest[slot] = Some(highest[slot].map_or(event.raw.offset, |h| h.max(event.raw.offset)));
        }
        if plan.applied == 0 {
            // Nothing new: the stored facts already hold every fact of these events.
            return plan;
        }
        self.prune(&mut state, today);
        let assessed = self.assess(partner_id, &state, history, affected_from, score_fingerprint, today);
        plan.changed = assessed.changed;
        plan.write = Some(PartnerWrite {
            partner_id: partner_id.to_owned(),
            expected_version: version,
            state: state.encode(),
            score: assessed.stored,
            score_fingerprint: assessed.fingerprint,
            history: assessed.history,
            offsets: sources.iter().cloned().zip(highest).filter_map(|(s, o)| o.map(|o| (s, o))).collect(),
            next_change: assessed.next_change,
        });
        plan
    }

    /// Scores a partner as of `today` from its (pruned) facts: brings its history up to date
    /// (from `affected_from` when late facts changed past days), adds its qualification
    /// windows and the forecast of the next month boundary.
    fn assess(
        &self,
        partner_id: &str,
        state: &PartnerState,
        mut history: ScoreHistory,
        affected_from: Option<NaiveDate>,
        previous_fingerprint: Option<u64>,
        today: NaiveDate,
    ) -> Assessed {
        let before = history.clone();
        let oldest = self.history_start(today);
        let score = history.record(partner_id, state, affected_from, oldest, today, &self.rules);
        history.prune(oldest);
        let (forecast, warnings) = forecast_with_warnings(state, &score, today, &self.rules);
        let (mut message, plans) = proto::split_plans(score);
        message.qualification_windows = proto::qualification_windows(&history, today);
        message.forecast = Some(proto::ScoreForecast::of(partner_id, &forecast, &warnings));
        // Encoded once, whole and as stored, and the score's digest taken from those bytes:
        // nearly every assessed score has changed and is published whole, and a second
        // encoding cost as much as the first.
        let proto::EncodedScore { whole, stored, digest: score_digest } = proto::encode_score(&mut message, &plans);
        // What makes a change worth publishing: the score itself, a warning appearing or
        // going, a window gaining or losing its qualification. Projected totals and days
        // left move daily and are read, not pushed.
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        digest.update(&score_digest.to_le_bytes());
        for w in &warnings {
            digest.update(w.designation.as_bytes());
            digest.update(&[u8::from(w.loses_qualification), 0xff]);
            for z in &w.zeroed_subcategories {
                digest.update(z.as_bytes());
                digest.update(&[0xfe]);
            }
        }
        for w in &message.qualification_windows {
            digest.update(w.designation.as_bytes());
            digest.update(&[u8::from(w.qualified), 0xfd]);
        }
        let next_change = [next_change_after(state, today, &self.rules), forecast_refresh_after(state, today)]
            .into_iter()
            .flatten()
            .min();
        let fingerprint = digest.digest();
        Assessed {
            stored,
            changed: (previous_fingerprint != Some(fingerprint)).then_some(whole),
            fingerprint,
            next_change,
            history: (history != before).then(|| history.encode()),
        }
    }

    /// Re-evaluates up to `batch` partners whose score may have changed by `today` with no
    /// new event (a month rollover, a deployment ageing out, a certification expiring), and
    /// returns the scores that changed; `None` when no partner is due. Partners whose score
    /// changes are noted in the store's outbox before it is written (see
    /// `StateStore::note_unpublished`), and added to `noted`: the caller publishes and then
    /// forgets them, so a crash or a failed publish in between leaves them noted, not lost.
    /// On an error, `noted` holds the partners noted so far, whose new scores may have been
    /// written: re-evaluating them would find nothing changed, so the caller publishes
    /// their stored scores.
    ///
    /// A month boundary makes most partners due at once, so they are read, written and
    /// rescheduled a batch at a time, one round trip each: a round trip per partner would
    /// bound the rollover by the network instead of the evaluation.
    pub async fn roll_over_batch(
        &self,
        today: NaiveDate,
        batch: usize,
        noted: &mut Vec<String>,
    ) -> Result<Option<Vec<ScoreUpdate>>, IngestError> {
        let due = self.store.due(today, batch).await?;
        if due.is_empty() {
            return Ok(None);
        }
        let mut changed = Vec::new();
        let requests: Vec<(String, Vec<SourcePartition>)> = due.into_iter().map(|p| (p, Vec::new())).collect();
        let stored = self.store.load(&requests).await?;
        // Indexed by a write that never landed: no partner to re-evaluate, only an entry
        // to clear.
        let mut rescheduled: Vec<(String, Option<NaiveDate>)> = Vec::new();
        let mut work = Vec::new();
        for ((partner_id, _), stored) in requests.into_iter().zip(stored) {
            if stored.version == 0 {
                rescheduled.push((partner_id, None));
            } else {
                work.push((partner_id, stored));
            }
        }
        let reevaluated = self.workers.map(work, |(partner_id, stored)| self.reevaluation(partner_id, stored, today));
        let (writes, published): (Vec<PartnerWrite>, Vec<Option<Vec<u8>>>) = reevaluated.into_iter().unzip();
        let changing: Vec<String> =
            writes.iter().zip(&published).filter(|(_, p)| p.is_some()).map(|(w, _)| w.partner_id.clone()).collect();
        self.store.note_unpublished(&changing, now_ms()).await?;
        noted.extend(changing);
        let outcomes = if writes.is_empty() { Vec::new() } else { self.store.write(&writes).await? };
        let mut contended = Vec::new();
        for ((write, published), outcome) in writes.into_iter().zip(published).zip(outcomes) {
            match outcome {
                WriteOutcome::Written { version } => {
                    rescheduled.push((write.partner_id.clone(), write.next_change));
                    if let Some(score) = published {
                        changed.push(ScoreUpdate {
                            partner_id: write.partner_id,
                            score: score.into(),
                            version,
                            oldest_event_ms: None,
                        });
                    }
                }
                WriteOutcome::Conflict => contended.push(write.partner_id),
            }
        }
        self.store.reschedule(today, &rescheduled).await?;
        // Partners an event wrote meanwhile: one at a time, with backoff.
        for partner_id in contended {
            changed.extend(self.reevaluate(&partner_id, today, noted).await?);
        }
        Ok(Some(changed))
    }

    /// Every due partner, batch after batch, and the scores that changed, published by
    /// nobody: what the benchmark times and the tests check.
    pub async fn roll_over(&self, today: NaiveDate, batch: usize) -> Result<Vec<ScoreUpdate>, IngestError> {
        let mut changed = Vec::new();
        while let Some(more) = self.roll_over_batch(today, batch, &mut Vec::new()).await? {
            changed.extend(more);
        }
        Ok(changed)
    }

    /// The stored scores of `partners` as they are published, with the shortfall plans a
    /// score is stored without; partners never written, or whose stored score cannot be
    /// read, are left out.
    pub async fn stored_updates(&self, partners: &[String]) -> Result<Vec<ScoreUpdate>, IngestError> {
        let stored = self.store.scores(partners).await?;
        let mut updates: Vec<ScoreUpdate> = Vec::with_capacity(partners.len());
        for (partner_id, stored) in partners.iter().zip(stored) {
            let Some(stored) = stored else { continue };
            // Skipped, not failed: one unreadable score failing the call would fail every
            // retry too, and hold back the partners after it for good.
            let score = match proto::decode_stored(&stored.score, &self.rules) {
                Ok(score) => score,
                Err(e) => {
                    tracing::error!(partner_id, error = %e, "stored score is unreadable; it is not published");
                    continue;
                }
            };
            updates.push(ScoreUpdate {
                partner_id: partner_id.clone(),
                score: score.encode_to_vec().into(),
                version: stored.version,
                oldest_event_ms: None,
            });
        }
        Ok(updates)
    }

    /// A partner's facts pruned and scored as of `today`, as a write conditional on the
    /// version read, and the whole score to publish if it changed.
    fn reevaluation(
        &self,
        partner_id: String,
        stored: StoredPartner,
        today: NaiveDate,
    ) -> (PartnerWrite, Option<Vec<u8>>) {
        let mut state: PartnerState = stored.state;
        self.prune(&mut state, today);
        let assessed = self.assess(&partner_id, &state, stored.history, None, stored.score_fingerprint, today);
        let write = PartnerWrite {
            expected_version: stored.version,
            state: state.encode(),
            score: assessed.stored,
            score_fingerprint: assessed.fingerprint,
            history: assessed.history,
            offsets: Vec::new(),
            next_change: assessed.next_change,
            partner_id,
        };
        (write, assessed.changed)
    }

    async fn reevaluate(
        &self,
        partner_id: &str,
        today: NaiveDate,
        noted: &mut Vec<String>,
    ) -> Result<Option<ScoreUpdate>, IngestError> {
        for round in 0..MAX_CONFLICT_ROUNDS {
            // Paused before a retry, as in `apply_contended`, so the last lost round returns at once.
            if round > 0 {
                back_off(round - 1).await;
            }
            let stored = self.store.load(&[(partner_id.to_owned(), Vec::new())]).await?.remove(0);
            if stored.version == 0 {
                self.store.reschedule(today, &[(partner_id.to_owned(), None)]).await?;
                return Ok(None);
            }
            let (write, published) = self.reevaluation(partner_id.to_owned(), stored, today);
            if published.is_some() {
                self.store.note_unpublished(&[partner_id.to_owned()], now_ms()).await?;
                noted.push(partner_id.to_owned());
            }
            if let Some(WriteOutcome::Written { version }) =
                self.store.write(std::slice::from_ref(&write)).await?.first()
            {
                self.store.reschedule(today, &[(partner_id.to_owned(), write.next_change)]).await?;
                return Ok(published.map(|score| ScoreUpdate {
                    partner_id: partner_id.to_owned(),
                    score: score.into(),
                    version: *version,
                    oldest_event_ms: None,
                }));
            }
        }
        Err(IngestError::Contended(vec![partner_id.to_owned()]))
    }
}

/// The wall-clock time in Unix milliseconds: when a rollover's change is noted, so that a
/// note left by an instance that stopped can be told from one still being published.
pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The batch's dead-letter sink, and the events already sent to it: an event its partner's
/// state refuses again in a later round (the partner lost its write to another writer) is
/// sent once.
struct Rejections<'d, D> {
    sink: &'d D,
    sent: HashSet<usize>,
}

impl<D: DeadLetterSink> Rejections<'_, D> {
    /// Sends the events the partners' state refused (a reused id) to the dead-letter topic,
    /// each once, before anything of theirs is written: a crash after the write cannot
    /// lose them.
    async fn send_new(&mut self, plans: &[Plan], events: &[Received<'_>]) -> Result<(), IngestError> {
        let fresh: Vec<(usize, String)> = plans
            .iter()
            .flat_map(|p| &p.rejected)
            .filter(|(i, _)| self.sent.insert(*i))
            .map(|(i, reason)| (*i, reason.to_string()))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        for (i, _) in &fresh {
            let kind = crate::events::Fact::KINDS[events[*i].event.fact.kind()];
            crate::telemetry::metrics().rejected(1, "reused_id", kind);
        }
        self.sink.send(fresh.into_iter().map(|(i, reason)| DeadLetter::of(events[i].raw, reason)).collect()).await
    }
}

/// A store round trip under way on a task of its own: what was sent comes back with the
/// answer.
type StoreTask<T, Sent> = tokio::task::JoinHandle<(Sent, Result<T, StoreError>)>;
type LoadTask = StoreTask<Vec<StoredPartner>, Vec<(String, Vec<SourcePartition>)>>;
type WriteTask = StoreTask<Vec<WriteOutcome>, Vec<PartnerWrite>>;

/// The store's answers, if there is one for each of the `asked`; otherwise a protocol error.
fn in_full<T, A>(answers: Vec<T>, asked: &[A], what: &str) -> Result<Vec<T>, StoreError> {
    if answers.len() == asked.len() {
        Ok(answers)
    } else {
        Err(StoreError::Protocol(format!("{} partners {what} for {} asked", answers.len(), asked.len())))
    }
}

/// Waits for a store round trip started with `start_load` or `start_write`.
async fn joined<T, Sent>(task: StoreTask<T, Sent>) -> Result<(Sent, T), IngestError> {
    match task.await {
        Ok((sent, answer)) => Ok((sent, answer?)),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Unavailable("store call cancelled: the runtime is shutting down".into()).into()),
    }
}

/// Waits for a chunk's writes, counts what the written partners applied and sends their
/// changed scores; returns the partners another writer got to first, to be applied again.
/// The writes are in the order of the plans, one per partner that had something to write.
async fn settle<'p>(
    ChunkWrite { partners, plans, task }: ChunkWrite<'p, '_>,
    result: &mut BatchResult,
    scores: &mut impl ScoreSink,
) -> Result<Vec<PartnerEvents<'p>>, IngestError> {
    let (writes, outcomes) = joined(task).await?;
    let mut outcomes = writes.into_iter().zip(outcomes).peekable();
    let mut conflicted = Vec::new();
    let mut changed = Vec::new();
    for (plan, partner) in plans.into_iter().zip(partners) {
        if plan.replayed {
            result.replayed.push(partner.0.to_owned());
        }
        let Some((write, outcome)) = outcomes.next_if(|(write, _)| write.partner_id == partner.0) else {
            continue;
        };
        match outcome {
            WriteOutcome::Written { version } => {
                result.applied += plan.applied;
                for (total, n) in result.applied_by_kind.iter_mut().zip(plan.applied_by_kind) {
                    *total += n;
                }
                if let Some(score) = plan.changed {
                    changed.push(ScoreUpdate {
                        partner_id: write.partner_id,
                        score: score.into(),
                        version,
                        oldest_event_ms: plan.oldest_event_ms,
                    });
                }
            }
            WriteOutcome::Conflict => conflicted.push(*partner),
        }
    }
    if !changed.is_empty() {
        scores.send(changed).await?;
    }
    Ok(conflicted)
}

/// A doubling, jittered pause after losing a partner to another writer, so two writers
/// contending for one partner do not keep colliding in lockstep. Round `r` waits between
/// half and all of 0.5 ms × 2^r, capped at 64 ms from the eighth round on, so the sixteen
/// rounds wait 0.32–0.64 s in all before the batch fails and is retried whole. Doubling
/// rather than growing by a step: the rounds have to outlast a rival that keeps writing
/// the partner, which sixteen linear steps (68–84 ms in all) did not always do on loaded
/// cores (`concurrent_writers_of_one_partner_both_count` in the store contract tests).
async fn back_off(round: usize) {
    let ceiling = 500u64 << round.min(7);
    // The clock's nanoseconds are jitter enough (Linux counts them): two writers do not read
    // the clock at the same instant, and no random source is needed for it.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let micros = ceiling / 2 + u64::from(nanos) % (ceiling / 2);
    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
}

/// A store round trip in `span`, with its duration in `pcs.redis.duration`.
async fn timed<T>(span: tracing::Span, operation: &'static str, call: impl std::future::Future<Output = T>) -> T {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let result = call.instrument(span).await;
    crate::telemetry::metrics()
        .redis_duration
        .record(started.elapsed().as_secs_f64(), &[opentelemetry::KeyValue::new("db.operation.name", operation)]);
    result
}
