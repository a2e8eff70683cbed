//! Publishes changed scores to the compacted scores topic (key: partner id), the durable
//! insights feed and the source of every instance's WatchScores streams.

use crate::ingest::{IngestError, ScoreSink, ScoreUpdate};
use crate::telemetry::{inject_traceparent, metrics};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
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
        let oldest_event_ms = updates.iter().filter_map(|u| u.oldest_event_ms).collect();
        Ok(Deliveries { sends: vec![Handed { pending, oldest_event_ms, span }] })
    }

    /// A sink for the scores of one batch, which hands each chunk's to the producer as the
    /// applier sends it and keeps their deliveries.
    pub fn for_batch(&self) -> BatchScores<'_> {
        BatchScores { publisher: self, deliveries: Deliveries::default() }
    }
}

/// The scores of one batch handed to the producer so far.
pub struct BatchScores<'p> {
    publisher: &'p ScorePublisher,
    deliveries: Deliveries,
}

impl BatchScores<'_> {
    pub fn into_deliveries(self) -> Deliveries {
        self.deliveries
    }
}

impl ScoreSink for BatchScores<'_> {
    async fn send(&mut self, updates: Vec<ScoreUpdate>) -> Result<(), IngestError> {
        let sent = self.publisher.send(&updates)?;
        self.deliveries.sends.extend(sent.sends);
        Ok(())
    }
}

/// Scores handed to the producer and not yet acknowledged by the broker, one entry per
/// call to `send`.
#[derive(Default)]
pub struct Deliveries {
    sends: Vec<Handed>,
}

/// The scores of one call to `send`, traced in its span.
struct Handed {
    pending: Vec<DeliveryFuture>,
    oldest_event_ms: Vec<i64>,
    span: tracing::Span,
}

impl Deliveries {
    /// Scores handed over.
    pub fn count(&self) -> usize {
        self.sends.iter().map(|s| s.pending.len()).sum()
    }

    /// Waits until the broker has every score; an error for any of them fails the lot.
    pub async fn acknowledged(self) -> Result<(), IngestError> {
        for Handed { pending, oldest_event_ms, span } in self.sends {
            let count = pending.len() as u64;
            async {
                for delivery in pending {
                    crate::kafka::await_delivery(delivery).await.map_err(IngestError::Produce)?;
                }
                Ok::<(), IngestError>(())
            }
            .instrument(span)
            .await?;
            let m = metrics();
            m.score_changes.add(count, &[]);
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            for oldest in oldest_event_ms {
                m.freshness.record((now_ms - oldest).max(0) as f64 / 1000.0, &[]);
            }
        }
        Ok(())
    }
}
