//! Sending JSON Lines to a topic, one message per non-blank line keyed by its partner_id:
//! what `pcs produce`, the demo loader and the tests do.

use super::KafkaError;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::VecDeque;

/// Deliveries awaited at most at once: librdkafka's default queue. A file of any length is
/// sent without holding a future per line, and a failed delivery stops the send early.
const PENDING_DELIVERIES: usize = 100_000;

/// Sends every non-blank line (a trailing `\r` dropped) as it is; returns once all are
/// acknowledged. A line that is not JSON, or has no partner_id, is sent without a key (the
/// service dead-letters what it cannot read).
pub async fn send_lines(
    producer: &FutureProducer,
    topic: &str,
    lines: impl IntoIterator<Item = Vec<u8>>,
) -> Result<usize, KafkaError> {
    let failed = |e: RdKafkaError| KafkaError::Produce { topic: topic.to_owned(), source: e };
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut sent = 0;
    for mut line in lines {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let key = serde_json::from_slice::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("partner_id").and_then(|p| p.as_str()).map(str::to_owned));
        let mut record = FutureRecord::to(topic).payload(&line);
        if let Some(key) = &key {
            record = record.key(key);
        }
        pending.push_back(super::enqueue(producer, record).await.map_err(failed)?);
        if pending.len() > PENDING_DELIVERIES
            && let Some(oldest) = pending.pop_front()
        {
            await_delivery(oldest).await.map_err(failed)?;
        }
        sent += 1;
    }
    for delivery in pending {
        await_delivery(delivery).await.map_err(failed)?;
    }
    Ok(sent)
}

/// Waits for one delivery report; a producer that went away counts as a cancelled delivery.
pub async fn await_delivery(delivery: DeliveryFuture) -> Result<Delivery, RdKafkaError> {
    match delivery.await {
        Ok(Ok(delivered)) => Ok(delivered),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(RdKafkaError::Canceled),
    }
}
