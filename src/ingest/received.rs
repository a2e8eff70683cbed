//! From a Kafka message to an event, or to a dead letter that says why not.

use crate::events::{Event, EventError, decode_json, decode_protobuf};
use crate::store::SourcePartition;
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Larger payloads are refused before decoding: no partner event is anywhere near this.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// The header that marks a protobuf payload; without it the payload is JSON.
pub const CONTENT_TYPE: &str = "content-type";
pub const PROTOBUF: &[u8] = b"application/x-protobuf";

/// A consumed message as it came, kept so a dead letter carries the original bytes.
#[derive(Clone, Debug)]
pub struct RawMessage {
    pub source: SourcePartition,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The message's Kafka timestamp (ms since the epoch), for freshness.
    pub timestamp_ms: Option<i64>,
}

/// A decoded event and the message it came from (its source, offset and bytes). It borrows
/// the message rather than copying it: a batch holds each message once, however many
/// steps read it.
#[derive(Clone, Debug)]
pub struct Received<'a> {
    pub event: Event,
    pub raw: &'a RawMessage,
}

/// A rejected message and the reason, bound for the dead-letter topic.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub raw: RawMessage,
    pub reason: String,
}

impl DeadLetter {
    pub fn of(raw: &RawMessage, reason: String) -> DeadLetter {
        DeadLetter { raw: raw.clone(), reason }
    }

    /// The original headers plus `pcs-error`, `pcs-source-topic`, `pcs-source-partition`,
    /// `pcs-source-offset`.
    pub fn headers(&self) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new_with_capacity(self.raw.headers.len() + 4);
        for (key, value) in &self.raw.headers {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        let partition = self.raw.source.partition.to_string();
        let offset = self.raw.offset.to_string();
        headers
            .insert(Header { key: "pcs-error", value: Some(&self.reason) })
            .insert(Header { key: "pcs-source-topic", value: Some(&self.raw.source.topic) })
            .insert(Header { key: "pcs-source-partition", value: Some(&partition) })
            .insert(Header { key: "pcs-source-offset", value: Some(&offset) })
    }
}

/// Copies a consumed message out of the consumer's buffer.
pub fn raw_message<M: Message>(message: &M) -> RawMessage {
    let headers = message
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect())
        .unwrap_or_default();
    RawMessage {
        source: SourcePartition { topic: message.topic().to_owned(), partition: message.partition() },
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
        timestamp_ms: message.timestamp().to_millis(),
    }
}

/// Decodes a message by its content type; the error is the dead letter's reason.
pub fn decode(raw: &RawMessage) -> Result<Event, String> {
    if raw.payload.len() > MAX_EVENT_BYTES {
        Err(format!("message of {} bytes exceeds the {MAX_EVENT_BYTES}-byte limit", raw.payload.len()))
    } else if raw.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case(CONTENT_TYPE) && v == PROTOBUF) {
        decode_protobuf(&raw.payload).map_err(|e: EventError| e.to_string())
    } else {
        decode_json(&raw.payload).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(payload: Vec<u8>, headers: Vec<(String, Vec<u8>)>) -> RawMessage {
        RawMessage {
            source: SourcePartition { topic: "t".into(), partition: 0 },
            offset: 1,
            key: None,
            payload,
            headers,
            timestamp_ms: None,
        }
    }

    #[test]
    fn oversized_and_undecodable_messages_have_reasons() {
        let big = raw(vec![b' '; MAX_EVENT_BYTES + 1], Vec::new());
        assert!(decode(&big).unwrap_err().contains("exceeds the 1048576-byte limit"));
        let garbage = raw(vec![0xff, 0x00, 0x13], vec![(CONTENT_TYPE.into(), PROTOBUF.to_vec())]);
        assert!(decode(&garbage).unwrap_err().starts_with("not a valid protobuf PartnerEvent"));
        assert!(decode(&raw(vec![0xff, 0xfe], Vec::new())).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn dead_letters_carry_the_source() {
        let letter = DeadLetter::of(&raw(b"x".to_vec(), vec![("trace".into(), b"1".to_vec())]), "bad".into());
        let headers = letter.headers();
        let names: Vec<&str> = (0..headers.count()).map(|i| headers.get(i).key).collect();
        assert_eq!(names, ["trace", "pcs-error", "pcs-source-topic", "pcs-source-partition", "pcs-source-offset"]);
    }
}
