//! Publishes changed scores to the compacted scores topic (key: partner id), the durable
//! insights feed and the source of every instance's WatchScores streams. Once the broker
//! acknowledges a score, this instance's live watchers get it at once (see `feed::watch`).

use super::watch::{Acknowledged, WatchHub};
use crate::ingest::{IngestError, ScoreSink, ScoreUpdate};
use crate::telemetry::{metrics, trace_headers};
use prost::bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument;

/// The header carrying the partner's store version of the score.
pub const VERSION_HEADER: &str = "pcs-version";

/// Calls to `send` whose scores are not all handed over yet: one handing over, one waiting
/// its turn. A further call waits, so the applier scores at most a chunk ahead of the
/// producer's queue (under a backlog the queue fills, and scores piled up in tasks would
/// hold a batch's worth of memory).
const SENDS_IN_HAND: usize = 2;

#[derive(Clone)]
pub struct ScorePublisher {
    producer: FutureProducer,
    topic: String,
    /// Fires once the latest call so far has handed all its scores to the producer; the
    /// next call waits for it, so scores reach the topic in the order of the calls that
    /// handed them over. Shared by clones.
    latest_handed: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    in_hand: Arc<Semaphore>,
    /// This instance's live watchers, given each score as the broker acknowledges it.
    watchers: Option<Arc<WatchHub>>,
}

impl ScorePublisher {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        ScorePublisher {
            producer,
            topic,
            latest_handed: Arc::default(),
            in_hand: Arc::new(Semaphore::new(SENDS_IN_HAND)),
            watchers: None,
        }
    }

    /// Gives `hub`'s live watchers each score once the broker has acknowledged it, instead
    /// of once its reader has read it back. `hub` must read the topic this publisher writes.
    pub fn with_watchers(mut self, hub: Arc<WatchHub>) -> Self {
        self.watchers = Some(hub);
        self
    }

    /// Returns once every score is acknowledged by the broker.
    pub async fn publish(&self, updates: &[ScoreUpdate]) -> Result<(), IngestError> {
        if updates.is_empty() {
            return Ok(());
        }
        let span = self.span(updates.len());
        let turn = self.take_turn();
        let pending = self.hand_over(updates, turn, &span).instrument(span.clone()).await?;
        let watched = self.for_watchers(updates.iter().map(|u| (u.partner_id.clone(), u.score.clone(), u.version)));
        acknowledge(pending, oldest_events(updates), watched).instrument(span).await
    }

    /// Hands every score to the producer on a task of its own, after those of every earlier
    /// call, and returns once that task is started (or, with two calls' scores not yet
    /// handed over, once the earlier of them is). Handing a chunk of 2,000 scores over
    /// (headers, a copy of each 4 KB score into librdkafka's queue) takes tens of
    /// milliseconds, which the applier's task spent between chunks; now the next chunk is
    /// scored meanwhile. The consumer loop waits for the acknowledgements while it works on
    /// the next batch.
    pub async fn send(&self, updates: Vec<ScoreUpdate>) -> Deliveries {
        if updates.is_empty() {
            return Deliveries::default();
        }
        let permit: OwnedSemaphorePermit =
            self.in_hand.clone().acquire_owned().await.expect("the publisher never closes its semaphore");
        let span = self.span(updates.len());
        let turn = self.take_turn();
        let publisher = self.clone();
        // Awaited on a task of its own, so the metrics are taken when the broker answers: the
        // consumer loop looks at a batch's acknowledgements only after applying the next one.
        let task_span = span.clone();
        let acknowledged = tokio::spawn(
            async move {
                let pending = publisher.hand_over(&updates, turn, &span).await;
                drop(permit);
                // librdkafka holds its own copy of each score: only the event times are kept,
                // and the scores themselves while someone watches live.
                let oldest = oldest_events(&updates);
                let watched = publisher.for_watchers(updates.into_iter().map(|u| (u.partner_id, u.score, u.version)));
                acknowledge(pending?, oldest, watched).await
            }
            .instrument(task_span),
        );
        Deliveries { sends: vec![acknowledged] }
    }

    /// A sink for the scores of one batch, which hands each chunk's to the producer as the
    /// applier sends it and keeps their deliveries.
    pub fn for_batch(&self) -> BatchScores<'_> {
        BatchScores { publisher: self, deliveries: Deliveries::default(), handed: 0 }
    }

    /// The scores to give the live watchers as they are acknowledged, if anyone watches;
    /// else the hub is only told where they landed.
    fn for_watchers(&self, scores: impl Iterator<Item = (String, Bytes, u64)>) -> Option<ForWatchers> {
        let hub = self.watchers.as_ref()?;
        let scores = hub.watched().then(|| scores.collect::<Vec<_>>().into_iter());
        Some(ForWatchers { hub: Arc::clone(hub), scores })
    }

    fn span(&self, count: usize) -> tracing::Span {
        tracing::info_span!(
            "pcs.publish",
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.destination.name = %self.topic,
            messaging.batch.message_count = count,
        )
    }

    /// This call's place in the order of hand-overs: the signal of the call before it, to
    /// wait for, and its own, to give once its scores are handed over.
    fn take_turn(&self) -> Turn {
        let (done, next_waits) = oneshot::channel();
        let before = self.latest_handed.lock().expect("not poisoned").replace(next_waits);
        Turn { before, done }
    }

    /// Hands the scores to the producer once the call before has handed over its own
    /// (waiting for room in a full queue, see `kafka::enqueue`). Each message carries the
    /// trace context of `span` (`traceparent`), so the feed's consumers continue the trace.
    async fn hand_over(
        &self,
        updates: &[ScoreUpdate],
        turn: Turn,
        span: &tracing::Span,
    ) -> Result<Vec<DeliveryFuture>, IngestError> {
        if let Some(before) = turn.before {
            // An error means the call before ended without handing over (its task panicked or
            // the runtime is stopping): there is nothing left to wait for.
            let _ = before.await;
        }
        let trace = trace_headers(span);
        let mut pending = Vec::with_capacity(updates.len());
        for update in updates {
            let version = update.version.to_string();
            let headers = trace.iter().fold(
                OwnedHeaders::new_with_capacity(1 + trace.len())
                    .insert(Header { key: VERSION_HEADER, value: Some(&version) }),
                |h, (k, v)| h.insert(Header { key: k, value: Some(v) }),
            );
            let record =
                FutureRecord::to(&self.topic).key(&update.partner_id).payload(update.score.as_ref()).headers(headers);
            pending.push(crate::kafka::enqueue(&self.producer, record).await.map_err(IngestError::Produce)?);
        }
        // Dropped on an error too (above), which lets the next call go on.
        let _ = turn.done.send(());
        Ok(pending)
    }
}

/// Scores handed over, in the order of their deliveries, for the live watchers of `hub`.
struct ForWatchers {
    hub: Arc<WatchHub>,
    /// Partner id, encoded score and version, in the order handed over; none kept while
    /// nobody watches.
    scores: Option<std::vec::IntoIter<(String, Bytes, u64)>>,
}

/// Where a call to the publisher stands in the order of hand-overs.
struct Turn {
    before: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

/// The Kafka timestamps of the oldest events behind the scores that have one.
fn oldest_events(updates: &[ScoreUpdate]) -> Vec<i64> {
    updates.iter().filter_map(|u| u.oldest_event_ms).collect()
}

/// Waits for the broker to acknowledge every delivery, giving each score to the live
/// watchers as it is acknowledged (or telling the hub where it landed, while nobody
/// watches), then counts them.
async fn acknowledge(
    pending: Vec<DeliveryFuture>,
    oldest_event_ms: Vec<i64>,
    mut watched: Option<ForWatchers>,
) -> Result<(), IngestError> {
    let count = pending.len() as u64;
    for delivery in pending {
        let delivered = crate::kafka::await_delivery(delivery).await.map_err(IngestError::Produce)?;
        let Some(ForWatchers { hub, scores }) = &mut watched else { continue };
        match scores.as_mut().and_then(Iterator::next) {
            Some((partner_id, score, version)) => hub.acknowledged(Acknowledged {
                partner_id,
                score,
                version,
                partition: delivered.partition,
                offset: delivered.offset,
            }),
            None => hub.acknowledged_unwatched(delivered.partition, delivered.offset),
        }
    }
    record_published(count, &oldest_event_ms);
    Ok(())
}

/// Counts scores the broker acknowledged, and the age of the oldest event behind each.
/// A batch that fails after some of its scores were acknowledged publishes them again on
/// its retry, and they are counted again: the counter is of messages, not of changes.
fn record_published(count: u64, oldest_event_ms: &[i64]) {
    let m = metrics();
    m.score_changes.add(count, &[]);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    for oldest in oldest_event_ms {
        m.freshness.record((now_ms - oldest).max(0) as f64 / 1000.0, &[]);
    }
}

/// The scores of one batch handed to the producer so far.
pub struct BatchScores<'p> {
    publisher: &'p ScorePublisher,
    deliveries: Deliveries,
    handed: usize,
}

impl BatchScores<'_> {
    /// Scores handed over.
    pub fn handed(&self) -> usize {
        self.handed
    }

    /// Every score handed over, to await before the batch's offsets are committed.
    pub fn into_deliveries(self) -> Deliveries {
        self.deliveries
    }
}

impl ScoreSink for BatchScores<'_> {
    async fn send(&mut self, updates: Vec<ScoreUpdate>) -> Result<(), IngestError> {
        self.handed += updates.len();
        self.deliveries.append(self.publisher.send(updates).await);
        Ok(())
    }
}

/// Scores handed to the producer and not yet known to be acknowledged by the broker: one
/// task per call to `send`, which ends when the broker has answered for all of its scores.
#[derive(Default)]
pub struct Deliveries {
    sends: Vec<tokio::task::JoinHandle<Result<(), IngestError>>>,
}

impl Deliveries {
    /// Adds the scores of a later call to `send`.
    pub fn append(&mut self, later: Deliveries) {
        self.sends.extend(later.sends);
    }

    /// Waits until the broker has every score; an error for any of them fails the lot.
    pub async fn acknowledged(self) -> Result<(), IngestError> {
        for send in self.sends {
            match send.await {
                Ok(acknowledged) => acknowledged?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return Err(IngestError::Produce(rdkafka::error::KafkaError::Canceled)),
            }
        }
        Ok(())
    }
}
