//! The dead-letter topic: rejected messages with their original bytes and the reason.

use super::{DeadLetter, IngestError};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::future::Future;

/// Where rejected messages go. `send` returns once every letter is durable.
pub trait DeadLetterSink: Send + Sync {
    fn send(&self, letters: Vec<DeadLetter>) -> impl Future<Output = Result<(), IngestError>> + Send;
}

pub struct DeadLetterTopic {
    pub producer: FutureProducer,
    pub topic: String,
}

impl DeadLetterSink for DeadLetterTopic {
    async fn send(&self, letters: Vec<DeadLetter>) -> Result<(), IngestError> {
        let mut deliveries = Vec::with_capacity(letters.len());
        for letter in &letters {
            tracing::warn!(
                topic = %letter.raw.source.topic,
                partition = letter.raw.source.partition,
                offset = letter.raw.offset,
                reason = %letter.reason,
                "rejected event sent to the dead-letter topic"
            );
            let mut record = FutureRecord::to(&self.topic).payload(&letter.raw.payload).headers(letter.headers());
            if let Some(key) = &letter.raw.key {
                record = record.key(key);
            }
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| IngestError::Produce(e))?);
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(IngestError::Produce(e)),
                Err(_) => return Err(IngestError::ProducerGone),
            }
        }
        Ok(())
    }
}
