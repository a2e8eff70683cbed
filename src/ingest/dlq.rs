//! The dead-letter topic: rejected messages with their original bytes and the reason.

use super::{DeadLetter, IngestError};
use rdkafka::message::Header;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::future::Future;

/// Where rejected messages go. `send` returns once every letter is durable.
pub trait DeadLetterSink: Send + Sync {
    fn send(&self, letters: Vec<DeadLetter>) -> impl Future<Output = Result<(), IngestError>> + Send;
}

/// Dead letters carry at most this much of the original payload: Kafka's default message
/// limit is 1 MB, and a dead letter the broker refuses would stall the pipeline. A longer
/// payload is cut, with its full size in the header `pcs-original-bytes`.
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 512 * 1024;

/// Dead letters logged one by one per batch; the rest of a batch's are counted in one line.
const LOGGED_PER_BATCH: usize = 10;

pub struct DeadLetterTopic {
    pub producer: FutureProducer,
    pub topic: String,
}

impl DeadLetterSink for DeadLetterTopic {
    async fn send(&self, letters: Vec<DeadLetter>) -> Result<(), IngestError> {
        let mut deliveries = Vec::with_capacity(letters.len());
        // One line per event would flood the log during a burst of bad input: the first
        // few are logged in full, the rest counted.
        for letter in letters.iter().take(LOGGED_PER_BATCH) {
            tracing::warn!(
                topic = %letter.raw.source.topic,
                partition = letter.raw.source.partition,
                offset = letter.raw.offset,
                reason = %letter.reason,
                "rejected event sent to the dead-letter topic"
            );
        }
        if letters.len() > LOGGED_PER_BATCH {
            tracing::warn!(
                more = letters.len() - LOGGED_PER_BATCH,
                "more rejected events in this batch sent to the dead-letter topic"
            );
        }
        for letter in &letters {
            let payload = &letter.raw.payload;
            let kept = &payload[..payload.len().min(MAX_DEAD_LETTER_PAYLOAD)];
            let mut headers = letter.headers();
            let original_bytes = payload.len().to_string();
            if kept.len() < payload.len() {
                headers = headers.insert(Header { key: "pcs-original-bytes", value: Some(&original_bytes) });
            }
            let mut record = FutureRecord::to(&self.topic).payload(kept).headers(headers);
            if let Some(key) = &letter.raw.key {
                record = record.key(key);
            }
            deliveries.push(crate::kafka::enqueue(&self.producer, record).await.map_err(IngestError::Produce)?);
        }
        for delivery in deliveries {
            crate::kafka::await_delivery(delivery).await.map_err(IngestError::Produce)?;
        }
        Ok(())
    }
}
