//! Queuing a message on a producer whose local queue may be full.

use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::time::Duration;
use tokio::time::Instant;

/// How long a message waits between tries while the queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// How long a message waits for room in all: the producer's `message.timeout.ms`, by which
/// every message queued before it has been delivered or has failed, so a queue still full
/// then is stuck, and the error goes to the caller (whose batch is retried).
const QUEUE_FULL_LIMIT: Duration = Duration::from_secs(30);

/// Hands `record` to the producer. librdkafka's local queue holds 100,000 messages by
/// default; a backlog's batch publishes up to that many scores, its dead letters share the
/// producer, and `pcs produce` sends files of any length. Failing on a full queue failed
/// the batch, whose retry met the same full queue, so the message waits for room instead.
pub async fn enqueue<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, RdKafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let give_up = Instant::now() + QUEUE_FULL_LIMIT;
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if Instant::now() < give_up => {
                record = back;
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
