//! The generated protobuf and gRPC code (package `pcs.v1`) and its descriptor set.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("pcs.v1");

/// The gRPC server, generated apart from the messages and the client: it sends
/// `ScoreChangedWire`, `GetScoreResponseWire` and `BatchGetScoresResponseWire` where the
/// service definition says `ScoreChanged`, `GetScoreResponse` and `BatchGetScoresResponse`
/// (see `build.rs`).
pub mod server {
    include!(concat!(env!("OUT_DIR"), "/server/pcs.v1.rs"));
}

/// Every message and service of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pcs_descriptor.bin"));

mod convert;
mod digest;
mod qualified;
mod score_changed;
mod served;
mod stored;

pub use convert::{MalformedScore, decode_stored, qualification_windows, restore_shortfalls};
pub use qualified::{DesignationQualified, QualifiedView};
pub use score_changed::ScoreChangedWire;
pub use served::{BatchGetScoresResponseWire, GetScoreResponseWire, served_encoding, stored_as_of};
pub use stored::{EncodedScore, encode_score, split_plans};

/// A real evaluation of a partner with one $5,000 ACR line, as of 2024-07-10: it qualifies
/// for nothing, so every designation carries a shortfall plan.
#[cfg(test)]
fn one_acr_line_score() -> PartnerScore {
    let line = r#"{"type":"acr","event_id":"e","partner_id":"P","customer_id":"C","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"5000000000"}"#;
    score_of_line(line, "2024-07-10")
}

/// The score, as of `day`, of partner P with the one event `line` (JSON).
#[cfg(test)]
fn score_of_line(line: &str, day: &str) -> PartnerScore {
    let mut state = crate::engine::PartnerState::default();
    state.apply(&crate::events::decode_json(line.as_bytes()).unwrap()).unwrap();
    let today = crate::calendar::parse_date(day).unwrap();
    PartnerScore::from(crate::engine::evaluate("P", &state, today, &crate::rules::RuleBook::embedded()))
}
