//! Publishes changed scores to the compacted scores topic (key: partner id), the durable
//! insights feed and the source of every instance's WatchScores streams.

use crate::ingest::{IngestError, ScoreSink, ScoreUpdate};
use crate::telemetry::{inject_traceparent, metrics};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::Instrument;

/// The header carrying the partner's store version of the score.
pub const VERSION_HEADER: &str = "pcs-version";

#[derive(Clone)]
pub struct ScorePublisher {
    pub producer: FutureProducer,
    pub topic: String,
}

impl ScorePublisher {
    /// Returns once every score is acknowledged by the broker. Each message carries the
    /// trace context of the work that produced it (`traceparent`), so the feed's consumers
    /// continue the trace.
    pub async fn publish(&self, updates: &[ScoreUpdate]) -> Result<(), IngestError> {
        self.send(updates)?.acknowledged().await
    }

    /// Hands every score to the producer, in order, and returns without waiting for the
    /// broker: the consumer loop waits for the acknowledgements while it works on the next
    /// batch.
    pub fn send(&self, updates: &[ScoreUpdate]) -> Result<Deliveries, IngestError> {
        if updates.is_empty() {
            return Ok(Deliveries::default());
        }
        let span = tracing::info_span!(
            "pcs.publish",
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.destination.name = %self.topic,
            messaging.batch.message_count = updates.len(),
        );
        let mut pending = Vec::with_capacity(updates.len());
        for update in updates {
            let version = update.version.to_string();
            let headers = OwnedHeaders::new().insert(Header { key: VERSION_HEADER, value: Some(&version) });
            let record = FutureRecord::to(&self.topic)
                .key(&update.partner_id)
                .payload(&update.score)
                .headers(inject_traceparent(&span, headers));
            pending.push(self.producer.send_result(record).map_err(|(e, _)| IngestError::Produce(e))?);
        }
        let oldest_event_ms: Vec<i64> = updates.iter().filter_map(|u| u.oldest_event_ms).collect();
        // Awaited on a task of its own, so the metrics are taken when the broker answers: the
        // consumer loop looks at a batch's acknowledgements only after applying the next one.
        let acknowledged = tokio::spawn(
            async move {
                let count = pending.len() as u64;
                for delivery in pending {
                    crate::kafka::await_delivery(delivery).await.map_err(IngestError::Produce)?;
                }
                record_published(count, &oldest_event_ms);
                Ok(())
            }
            .instrument(span),
        );
        Ok(Deliveries { sends: vec![acknowledged] })
    }

    /// A sink for the scores of one batch, which hands each chunk's to the producer as the
    /// applier sends it and keeps their deliveries.
    pub fn for_batch(&self) -> BatchScores<'_> {
        BatchScores { publisher: self, deliveries: Deliveries::default(), handed: 0 }
    }
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
        let sent = self.publisher.send(&updates)?;
        self.deliveries.append(sent);
        self.handed += updates.len();
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
