//! Publishes changed scores to the compacted scores topic (key: partner id), the durable
//! insights feed and the source of every instance's WatchScores streams.

use crate::ingest::{IngestError, ScoreUpdate};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The header carrying the partner's store version of the score.
pub const VERSION_HEADER: &str = "pcs-version";

#[derive(Clone)]
pub struct ScorePublisher {
    pub producer: FutureProducer,
    pub topic: String,
}

impl ScorePublisher {
    /// Returns once every score is acknowledged by the broker.
    pub async fn publish(&self, updates: &[ScoreUpdate]) -> Result<(), IngestError> {
        let mut deliveries = Vec::with_capacity(updates.len());
        for update in updates {
            let version = update.version.to_string();
            let record = FutureRecord::to(&self.topic)
                .key(&update.partner_id)
                .payload(&update.score)
                .headers(OwnedHeaders::new().insert(Header { key: VERSION_HEADER, value: Some(&version) }));
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| IngestError::Produce(e))?);
        }
        for delivery in deliveries {
            crate::kafka::await_delivery(delivery).await.map_err(IngestError::Produce)?;
        }
        Ok(())
    }
}
