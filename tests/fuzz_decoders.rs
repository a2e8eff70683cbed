//! The event decoders on hostile input: arbitrary bytes, and valid events with fields
//! deleted, retyped or replaced. Nothing panics; everything is either an event or a reason.
//! `PCS_FUZZ_CASES` sets the cases per property (default 5000; `scripts/fuzz` runs 1M).

use pcs::events::{decode_json, decode_protobuf};
use proptest::prelude::*;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("PCS_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(5000)
}

const VALID: [&str; 3] = [
    r#"{"type":"acr","event_id":"a-1","partner_id":"P1","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-05","amount_micros":"600000000"}"#,
    r#"{"type":"certification","event_id":"c-1","partner_id":"P1","individual_id":"u1","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","earned_on":"2024-01-10","expires_on":"2025-01-10"}"#,
    r#"{"type":"deployment","event_id":"d-1","partner_id":"P1","deployment_id":"dep-1","customer_id":"C1","solution_area":"INFRASTRUCTURE","service":"Virtual Machines","attribution":"CSP","deployed_on":"2024-03-15"}"#,
];

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,200}".prop_map(Value::from),
        "[0-9-]{0,25}".prop_map(Value::from),
        Just(json!([1, 2])),
        Just(json!({"nested": true})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_json(&bytes);
        let _ = decode_protobuf(&bytes);
    }

    #[test]
    fn mutated_events_never_panic_and_rejections_have_reasons(
        which in 0..3usize,
        field in 0..12usize,
        value in any_value(),
        delete in any::<bool>(),
    ) {
        let mut event: Value = serde_json::from_str(VALID[which]).unwrap();
        let object = event.as_object_mut().unwrap();
        let key = object.keys().nth(field % object.len()).unwrap().clone();
        if delete { object.remove(&key); } else { object.insert(key, value); }
        let bytes = event.to_string().into_bytes();
        if let Err(reason) = decode_json(&bytes) {
            prop_assert!(!reason.to_string().is_empty());
        }
    }
}
