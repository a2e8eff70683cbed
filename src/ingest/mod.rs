//! The consumer loop: Kafka events in, durable partner state out, offsets committed last.
//!
//! A cycle: collect a bounded batch (size and time), decode it (bad messages become dead
//! letters), apply it to the store (see `apply`), which hands each chunk's changed scores
//! to the producer as the chunk's writes land, then commit the consumed offsets once the
//! broker has acknowledged all of the batch's scores. The acknowledgements of one batch are
//! awaited while the next batch is collected and applied, so the broker's round trip does
//! not add to every cycle; offsets are still committed in batch order, and only after both
//! the store write and the scores are durable. The store records per partner the highest
//! offset applied, so a crash anywhere in the cycle leads to a replay that changes nothing
//! twice (and publishes the stored scores again).
//!
//! Rebalances run inside the consumer's poll, which happens only while a batch is being
//! collected. Messages collected from a partition that is revoked meanwhile are dropped
//! (the new owner reads them from the committed offset), and offsets are committed only for
//! partitions still assigned.

mod apply;
mod dlq;
mod parallel;
mod received;

pub use apply::{Applier, BatchResult, ScoreSink, ScoreUpdate};
pub use dlq::{DeadLetterSink, DeadLetterTopic, MAX_DEAD_LETTER_PAYLOAD};
pub use parallel::{PriorityError, Workers};
pub use received::{CONTENT_TYPE, DeadLetter, MAX_EVENT_BYTES, PROTOBUF, RawMessage, Received, decode, raw_message};

use crate::clock::Clock;
use crate::feed::{Deliveries, ScorePublisher};
use crate::store::{StateStore, StoreError};
use crate::telemetry::{continue_trace, metrics, record_trace_id};
use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot produce to Kafka: {0}")]
    Produce(rdkafka::error::KafkaError),
    #[error("partners written concurrently too often: {0:?}")]
    Contended(Vec<String>),
}

/// What the health check and operators need to know about ingestion.
#[derive(Default)]
pub struct IngestStatus {
    /// The consumer joined its group and got an assignment (possibly empty).
    pub assigned: AtomicBool,
    /// The last batch reached the store (false while retrying an outage).
    pub store_ok: AtomicBool,
    pub events_applied: AtomicU64,
    pub events_rejected: AtomicU64,
}

/// Tracks the partitions this instance owns; rdkafka calls it during polls.
pub struct IngestContext {
    owned: Mutex<HashSet<(String, i32)>>,
    status: Arc<IngestStatus>,
}

impl IngestContext {
    pub fn new(status: Arc<IngestStatus>) -> Self {
        IngestContext { owned: Mutex::new(HashSet::new()), status }
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        self.owned.lock().expect("not poisoned").contains(&(topic.to_owned(), partition))
    }
}

impl ClientContext for IngestContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the consumer lag per partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics().consumer_lag.record(
                        p.consumer_lag,
                        &[
                            opentelemetry::KeyValue::new("messaging.destination.name", topic.clone()),
                            opentelemetry::KeyValue::new("messaging.destination.partition.id", partition.to_string()),
                        ],
                    );
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut owned = self.owned.lock().expect("not poisoned");
            for e in list.elements() {
                owned.remove(&(e.topic().to_owned(), e.partition()));
            }
            tracing::info!(
                partitions = list.count(),
                "partitions revoked; their uncommitted events are left to the next owner"
            );
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let mut owned = self.owned.lock().expect("not poisoned");
                owned.clear();
                owned.extend(list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())));
                self.status.assigned.store(true, Ordering::Release);
                tracing::info!(partitions = ?owned, "partitions assigned");
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

pub struct Ingest<S> {
    pub consumer: StreamConsumer<IngestContext>,
    pub applier: Applier<S>,
    pub dead_letters: DeadLetterTopic,
    pub publisher: ScorePublisher,
    pub clock: Clock,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    pub status: Arc<IngestStatus>,
}

/// A batch applied to the store whose scores the broker has not acknowledged yet.
struct InFlight {
    batch: Vec<RawMessage>,
    acknowledged: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), IngestError>> + Send>>,
}

impl<S: StateStore> Ingest<S> {
    /// Consumes until `shutdown` fires, then commits what is durable and returns.
    pub async fn run(self, mut shutdown: broadcast::Receiver<()>) {
        let mut in_flight: Option<InFlight> = None;
        loop {
            let Some(batch) = self.collect(&mut shutdown, &mut in_flight).await else { break };
            let batch: Vec<RawMessage> = batch
                .into_iter()
                .filter(|m| self.consumer.context().owns(&m.source.topic, m.source.partition))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let Some(deliveries) = self.process_with_retry(&batch, &mut shutdown).await else { break };
            if let Some(previous) = in_flight.take() {
                let acknowledged = previous.acknowledged.await;
                if !self.settle(previous.batch, acknowledged, &mut shutdown).await {
                    break;
                }
            }
            in_flight = Some(InFlight { batch, acknowledged: Box::pin(deliveries.acknowledged()) });
        }
        // The last batch's scores are already on their way: wait for them, then commit
        // synchronously, as an asynchronous commit may still be in flight when the consumer
        // closes. If they fail, the batch stays uncommitted and is replayed.
        if let Some(last) = in_flight.take() {
            match last.acknowledged.await {
                Ok(()) => self.commit(&last.batch, CommitMode::Sync),
                Err(e) => tracing::warn!(error = %e, "last batch's scores not acknowledged; it is left to a replay"),
            }
        }
        tracing::info!("event consumer stopped");
    }

    /// Commits a batch whose scores were handed to the producer, once the broker has them.
    /// If any failed, the batch is processed again: its events are all applied already, so
    /// that publishes the partners' stored scores again, until they are acknowledged.
    /// Returns false when shutdown interrupted that (nothing is committed for the batch).
    async fn settle(
        &self,
        batch: Vec<RawMessage>,
        mut acknowledged: Result<(), IngestError>,
        shutdown: &mut broadcast::Receiver<()>,
    ) -> bool {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = acknowledged {
            let what = "scores not acknowledged; publishing the batch's stored scores again (nothing is committed until they are)";
            if !self.pause_after(&e, what, &batch, &mut backoff, shutdown).await {
                return false;
            }
            let Some(deliveries) = self.process_with_retry(&batch, shutdown).await else { return false };
            acknowledged = deliveries.acknowledged().await;
        }
        self.commit(&batch, CommitMode::Async);
        true
    }

    /// Takes the events already queued, if any; otherwise waits for a first message, then
    /// fills the batch until it is full or its time is up. `None` when shutting down.
    async fn collect(
        &self,
        shutdown: &mut broadcast::Receiver<()>,
        in_flight: &mut Option<InFlight>,
    ) -> Option<Vec<RawMessage>> {
        let mut batch = Vec::new();
        // Events queued before the batch begins arrived while the last one was applied, and
        // have waited for it already: the batch takes what is queued and goes. Waiting for
        // company as well added the batch wait to every cycle under a steady load, and to
        // the latency of every event in it (at 20k events/s the cycles of 40–100 ms
        // spent 5–7 ms collecting, and with the wait skipped the median and the p99 from
        // produce to WatchScores fell by about a fifth).
        let (first, waited) = match self.consumer.recv().now_or_never() {
            // A steady backlog never reaches `first_arrival`, where shutdown is watched.
            Some(_) if stopping(shutdown) => return None,
            Some(queued) => (queued, false),
            None => (self.first_arrival(shutdown, in_flight).await?, true),
        };
        match first {
            Ok(m) => batch.push(raw_message(&m)),
            Err(e) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                return Some(batch);
            }
        }
        // The wait bounds how long a sparse stream waits for company, not how much of a
        // backlog one batch takes: past the deadline, `timeout_at` still yields a message
        // that is ready at once (one librdkafka has already fetched), so the batch fills up
        // to the size limit. Cut off by time alone, a catch-up ran in batches of what
        // arrived in the wait, and every partner's facts were read, scored and rewritten
        // several times over where one pass would do.
        let deadline = if waited { Instant::now() + self.batch_max_wait } else { Instant::now() };
        while batch.len() < self.batch_max_events {
            match timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(raw_message(&m)),
                Ok(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
                Err(_elapsed) => break,
            }
        }
        Some(batch)
    }

    /// Waits for a message. Meanwhile the batch in flight is settled when its scores are
    /// acknowledged, so that its offsets are committed without waiting for more input.
    /// `None` when shutting down.
    async fn first_arrival(
        &self,
        shutdown: &mut broadcast::Receiver<()>,
        in_flight: &mut Option<InFlight>,
    ) -> Option<KafkaResult<BorrowedMessage<'_>>> {
        loop {
            let settled = async {
                match in_flight.as_mut() {
                    Some(f) => f.acknowledged.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.recv() => return None,
                m = self.consumer.recv() => return Some(m),
                acknowledged = settled => {
                    let previous = in_flight.take().expect("only an in-flight batch settles");
                    if !self.settle(previous.batch, acknowledged, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Processes a batch, retrying with backoff until it succeeds, and returns its scores'
    /// deliveries. `None` when shutdown interrupted the retries (nothing was committed for
    /// the batch).
    async fn process_with_retry(
        &self,
        batch: &[RawMessage],
        shutdown: &mut broadcast::Receiver<()>,
    ) -> Option<Deliveries> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.process(batch).await {
                Ok(deliveries) => {
                    self.status.store_ok.store(true, Ordering::Release);
                    return Some(deliveries);
                }
                Err(e) => {
                    if matches!(e, IngestError::Store(_)) {
                        self.status.store_ok.store(false, Ordering::Release);
                    }
                    let what = "batch failed; retrying (no offset is committed until it succeeds)";
                    if !self.pause_after(&e, what, batch, &mut backoff, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Logs a failed step with the batch's coordinates, then waits `backoff` (doubled for
    /// next time, up to 5 s). Returns false when shutdown came first.
    async fn pause_after(
        &self,
        error: &IngestError,
        what: &str,
        batch: &[RawMessage],
        backoff: &mut Duration,
        shutdown: &mut broadcast::Receiver<()>,
    ) -> bool {
        let first = batch.first().expect("batches are not empty");
        tracing::error!(
            error = %error,
            topic = %first.source.topic,
            partition = first.source.partition,
            offset = first.offset,
            events = batch.len(),
            retry_in_ms = backoff.as_millis() as u64,
            "{what}"
        );
        tokio::select! {
            _ = shutdown.recv() => return false,
            _ = sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        true
    }

    async fn process(&self, batch: &[RawMessage]) -> Result<Deliveries, IngestError> {
        let first = &batch[0];
        let span = tracing::info_span!(
            "pcs.batch",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %first.source.topic,
            messaging.batch.message_count = batch.len(),
            trace_id = tracing::field::Empty,
        );
        continue_trace(&span, batch.iter().map(|m| m.headers.as_slice()));
        record_trace_id(&span);
        self.process_traced(batch).instrument(span).await
    }

    async fn process_traced(&self, batch: &[RawMessage]) -> Result<Deliveries, IngestError> {
        let m = metrics();
        m.events_consumed.add(batch.len() as u64, &[]);
        m.batch_size.record(batch.len() as u64, &[]);
        let (events, letters) = tracing::info_span!("pcs.decode", messaging.batch.message_count = batch.len())
            .in_scope(|| {
                // On every core: decoding a catch-up batch of 100k JSON events on the consumer
                // task alone took a tenth of the service's time, with the other core idle.
                let decoded = self.applier.workers.map(batch.iter().collect(), |raw| (raw, decode(raw)));
                let mut events = Vec::with_capacity(batch.len());
                let mut letters = Vec::new();
                for (raw, decoded) in decoded {
                    match decoded {
                        Ok(event) => events.push(Received { event, raw }),
                        Err(reason) => letters.push(DeadLetter::of(raw, reason)),
                    }
                }
                (events, letters)
            });
        let rejected_at_decode = letters.len();
        let today = self.clock.today();
        let started = std::time::Instant::now();
        // Undecodable messages touch no partner state, so their dead letters are delivered
        // while the good events are applied: a burst of bad input then costs the good events
        // little. Both finish before the offsets are committed (the caller commits after this
        // returns), so a crash in between replays the batch; nothing is lost.
        let dead_lettered = async { if letters.is_empty() { Ok(()) } else { self.dead_letters.send(letters).await } };
        let mut scores = self.publisher.for_batch();
        let applied = self
            .applier
            .apply(today, &events, &self.dead_letters, &mut scores)
            .instrument(tracing::info_span!("pcs.apply", events = events.len()));
        let (dead_lettered, applied) = tokio::join!(dead_lettered, applied);
        dead_lettered?;
        let result = applied?;
        m.apply_duration.record(started.elapsed().as_secs_f64(), &[]);
        let changed = scores.handed();
        let deliveries = scores.into_deliveries();
        if !result.replayed.is_empty() {
            self.republish(&result.replayed).await?;
        }
        for (kind, n) in crate::events::Fact::KINDS.iter().zip(result.applied_by_kind) {
            if n > 0 {
                m.events_applied.add(n, &[opentelemetry::KeyValue::new("event.type", *kind)]);
            }
        }
        m.rejected(rejected_at_decode as u64, "decode", "unknown");
        self.status.events_applied.fetch_add(result.applied as u64, Ordering::Relaxed);
        self.status.events_rejected.fetch_add(rejected_at_decode as u64, Ordering::Relaxed);
        tracing::debug!(events = batch.len(), applied = result.applied, changed, "batch done");
        Ok(deliveries)
    }

    /// Publishes the stored scores of replayed partners again (at-least-once feed).
    async fn republish(&self, partners: &[String]) -> Result<(), IngestError> {
        self.publisher.publish(&self.applier.stored_updates(partners).await?).await
    }

    /// Commits the next offset of every owned partition in the batch.
    fn commit(&self, batch: &[RawMessage], mode: CommitMode) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in batch {
            let slot = next.entry((m.source.topic.as_str(), m.source.partition)).or_insert(0);
            *slot = (*slot).max(m.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if self.consumer.context().owns(topic, partition)
                && let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(offset))
            {
                tracing::warn!(error = %e, "cannot build the offset commit");
            }
        }
        if list.count() > 0
            && let Err(e) = self.consumer.commit(&list, mode)
        {
            tracing::warn!(error = %e, "offset commit failed; the batch will be replayed without effect");
        }
    }
}

/// Whether shutdown was signalled (or its sender is gone), without waiting.
fn stopping(shutdown: &mut broadcast::Receiver<()>) -> bool {
    !matches!(shutdown.try_recv(), Err(broadcast::error::TryRecvError::Empty))
}

/// Partners of the rollover's outbox published at a time.
const NOTED_PAGE: usize = 1000;

/// Partners a rollover re-evaluates, writes and publishes at a time.
const ROLLOVER_BATCH: usize = 500;

/// When the rollover task acts.
#[derive(Clone, Copy, Debug)]
pub struct RolloverTiming {
    /// How often it looks at the date, retries the scores it could not publish, and sweeps
    /// the outbox for changes noted longer than `stale_after` ago.
    pub tick: Duration,
    /// How long a change may stay noted in the outbox before any instance publishes it:
    /// longer than a rollover takes to write and publish a batch, so instances do not
    /// publish the changes of each other's rollovers in flight. A note this old was left by
    /// an instance that stopped between its write and its publish.
    pub stale_after: Duration,
}

/// Re-evaluates partners whose scores change with the date, at start-up and whenever the
/// date changes, and publishes the changes, a batch at a time: each change is noted in the
/// store's outbox, written, published, then forgotten. Changes this task could not publish
/// are published again on its next tick, and changes left noted by any instance for longer
/// than `stale_after` on every tick, from what the store holds then rather than from a
/// score kept: an event may have changed such a partner meanwhile, and ingest published
/// that newer score, which an older one would follow onto the compacted topic. A batch's
/// scores are published right after its writes, and a retry's right after its read, so
/// that can still happen to a partner an event changes within that moment; consumers tell
/// by the `pcs-version` header.
pub async fn run_rollover<S: StateStore>(
    applier: Arc<Applier<S>>,
    publisher: ScorePublisher,
    clock: Clock,
    timing: RolloverTiming,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut done_for = None;
    let mut to_retry: BTreeSet<String> = BTreeSet::new();
    loop {
        while !to_retry.is_empty() {
            let page: Vec<String> = to_retry.iter().take(NOTED_PAGE).cloned().collect();
            if let Err(e) = publish_stored(&applier, &publisher, &page).await {
                tracing::error!(error = %e, "publishing rollover scores failed; will retry");
                break;
            }
            for partner_id in &page {
                to_retry.remove(partner_id);
            }
        }
        if let Err(e) = publish_stale(&applier, &publisher, timing.stale_after).await {
            tracing::error!(error = %e, "publishing rollover scores left unpublished failed; will retry");
        }
        let today = clock.today();
        if done_for != Some(today) {
            match roll_over_and_publish(&applier, &publisher, today, &mut to_retry).await {
                Ok(changed) => {
                    if changed > 0 {
                        tracing::info!(%today, changed, "date rollover re-evaluated partners");
                    }
                    done_for = Some(today);
                }
                Err(e) => tracing::error!(error = %e, "date rollover failed; will retry"),
            }
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = sleep(timing.tick) => {}
        }
    }
}

/// Rolls over to `today` batch by batch, publishing each batch's changes and forgetting them
/// in the outbox before the next: a change reaches the topic within a batch's time of its
/// write, memory holds one batch's scores, and a note is as old as one batch. Returns how
/// many scores changed. On an error, the batch's noted partners are added to `to_retry`
/// (published from the store on the next tick) and the rest of the rollover waits for the
/// next tick: its partners are still due.
async fn roll_over_and_publish<S: StateStore>(
    applier: &Applier<S>,
    publisher: &ScorePublisher,
    today: chrono::NaiveDate,
    to_retry: &mut BTreeSet<String>,
) -> Result<usize, IngestError> {
    let mut changed = 0;
    loop {
        let mut noted = Vec::new();
        let updates = match applier.roll_over_batch(today, ROLLOVER_BATCH, &mut noted).await {
            Ok(Some(updates)) => updates,
            Ok(None) => return Ok(changed),
            Err(e) => {
                to_retry.extend(noted);
                return Err(e);
            }
        };
        changed += updates.len();
        if let Err(e) = publisher.publish(&updates).await {
            tracing::error!(error = %e, "publishing rollover scores failed; will retry from the store");
            to_retry.extend(noted);
            return Err(e);
        }
        if let Err(e) = applier.store.forget_published(&noted).await {
            tracing::warn!(error = %e, "published rollover scores stay noted; they will be published again");
        }
    }
}

/// Publishes the stored scores of `partners` and forgets them in the outbox.
async fn publish_stored<S: StateStore>(
    applier: &Applier<S>,
    publisher: &ScorePublisher,
    partners: &[String],
) -> Result<(), IngestError> {
    publisher.publish(&applier.stored_updates(partners).await?).await?;
    applier.store.forget_published(partners).await?;
    Ok(())
}

/// Publishes, from the store, the changes noted more than `stale_after` ago.
async fn publish_stale<S: StateStore>(
    applier: &Applier<S>,
    publisher: &ScorePublisher,
    stale_after: Duration,
) -> Result<(), IngestError> {
    let noted_before = apply::now_ms().saturating_sub(i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX));
    loop {
        let noted = applier.store.unpublished(noted_before, NOTED_PAGE).await?;
        if noted.is_empty() {
            return Ok(());
        }
        publish_stored(applier, publisher, &noted).await?;
    }
}
