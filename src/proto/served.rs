//! Stored scores as GetScore and BatchGetScores send them: the stored bytes passed through,
//! with each plan the stored form is without spliced back in from its kept encoding.
//!
//! Serving a stored score used to decode it whole, convert every plan worked out again to
//! protobuf, and encode the whole score again for tonic, plans and all (three quarters of
//! its bytes). In a profile of GetScore at 5k requests a second that decoding and restoring
//! alone was a sixth of the benchmark process. Now only the designations that need a plan
//! are decoded, to work it out (from the engine's kept plans, mostly), and the response is
//! the stored bytes with the plan fields added: byte for byte what prost would encode for
//! the score `decode_stored` gives, so clients see no difference. The server's generated
//! code sends these types in place of `GetScoreResponse` and `BatchGetScoresResponse` (see
//! `build.rs`).

use super as pb;
use super::MalformedScore;
use super::convert::{path_from_pb, subcategory_from_pb};
use super::stored::{
    DESIGNATIONS, encode_field_header, encode_message_field, message_field_len, next_field, plan_field,
};
use crate::calendar::parse_date;
use crate::engine as en;
use crate::rules::{Path, RuleBook};
use chrono::NaiveDate;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, decode_varint, key_len};

/// `PartnerScore.as_of`, `.path` and `.qualification_windows`.
const AS_OF: u32 = 2;
const PATH: u32 = 3;
const WINDOWS: u32 = 7;

/// The day a stored score was evaluated for.
pub fn stored_as_of(stored: &[u8]) -> Result<NaiveDate, MalformedScore> {
    Ok(day_and_path(stored)?.0)
}

/// What a plan depends on besides the designation: the score's day and path. Read the way
/// prost reads them (the last occurrence wins, an absent path is unspecified), so that a
/// score that `decode_stored` rejects is rejected here too.
fn day_and_path(stored: &[u8]) -> Result<(NaiveDate, Path), MalformedScore> {
    let mut as_of: &[u8] = &[];
    let mut path = 0u64;
    let mut rest = stored;
    while !rest.is_empty() {
        let field = next_field(&mut rest)?;
        match (field.number, field.payload) {
            (AS_OF, Some(day)) => as_of = day,
            (PATH, None) => {
                let mut value = &field.bytes[key_len(PATH)..];
                path = decode_varint(&mut value).map_err(|e| MalformedScore(e.to_string()))?;
            }
            _ => {}
        }
    }
    let bad = |what: &str| MalformedScore(format!("{what} of a stored score"));
    let as_of = std::str::from_utf8(as_of).ok().and_then(parse_date).ok_or_else(|| bad("as_of"))?;
    let path = i32::try_from(path).ok().and_then(path_from_pb).ok_or_else(|| bad("path"))?;
    Ok((as_of, path))
}

/// The encoding of `stored` (a score stored without its plans) as served: with the plans
/// `decode_stored` would work out, and with `windows` in place of its stored qualification
/// windows when given (a score read on a later day than it was stored).
pub fn served_encoding(
    stored: &[u8],
    rules: &RuleBook,
    windows: Option<&[pb::QualificationWindow]>,
) -> Result<Vec<u8>, MalformedScore> {
    let (as_of, path) = day_and_path(stored)?;
    // Guessed, not measured: a plan encodes to a kilobyte at most.
    let mut served = Vec::with_capacity(stored.len() + 4096);
    let mut windows = windows;
    let mut rest = stored;
    while !rest.is_empty() {
        let field = next_field(&mut rest)?;
        // The new windows go where prost puts them: before the first field numbered after them.
        if field.number > WINDOWS
            && let Some(new) = windows.take()
        {
            encode_windows(new, &mut served);
        }
        match (field.number, field.payload) {
            (WINDOWS, _) if windows.is_some() => {}
            (DESIGNATIONS, Some(designation)) => match plan(designation, path, as_of, rules)? {
                Some(plan) => {
                    encode_field_header(DESIGNATIONS, designation.len() + plan.len(), &mut served);
                    served.extend_from_slice(designation);
                    served.extend_from_slice(&plan);
                }
                None => served.extend_from_slice(field.bytes),
            },
            _ => served.extend_from_slice(field.bytes),
        }
    }
    if let Some(new) = windows {
        encode_windows(new, &mut served);
    }
    Ok(served)
}

fn encode_windows(windows: &[pb::QualificationWindow], buf: &mut Vec<u8>) {
    for window in windows {
        prost::encoding::message::encode(WINDOWS, window, buf);
    }
}

/// The encoded shortfall field of an encoded designation that is not qualified and is
/// stored without its plan; `None` for any other.
fn plan(
    designation: &[u8],
    path: Path,
    as_of: NaiveDate,
    rules: &RuleBook,
) -> Result<Option<std::sync::Arc<[u8]>>, MalformedScore> {
    let d = pb::DesignationScore::decode(designation).map_err(|e| MalformedScore(e.to_string()))?;
    if d.qualified || d.shortfall.is_some() {
        return Ok(None);
    }
    let subcategories = d.subcategories.iter().map(subcategory_from_pb).collect::<Result<Vec<_>, _>>()?;
    Ok(en::shortfall_of(&d.designation, &subcategories, path, as_of, rules).map(|p| plan_field(&p)))
}

/// `GetScoreResponse` with its score already encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GetScoreResponseWire {
    /// An encoded `PartnerScore`.
    score: Vec<u8>,
    version: u64,
}

/// `GetScoreResponse.score` and `.version`.
const SCORE: u32 = 1;
const VERSION: u32 = 2;

impl GetScoreResponseWire {
    pub fn new(score: Vec<u8>, version: u64) -> Self {
        GetScoreResponseWire { score, version }
    }
}

impl Message for GetScoreResponseWire {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // A message field is sent whenever it is set, even empty: `score` always is.
        encode_message_field(SCORE, &self.score, buf);
        if self.version != 0 {
            prost::encoding::uint64::encode(VERSION, &self.version, buf);
        }
    }

    /// Only clients decode a `GetScoreResponse`, and they use the generated type; this keeps
    /// the fields anyway, so that the type reads back what it writes.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            SCORE => prost::encoding::bytes::merge(wire_type, &mut self.score, buf, ctx),
            VERSION => prost::encoding::uint64::merge(wire_type, &mut self.version, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let version = if self.version == 0 { 0 } else { prost::encoding::uint64::encoded_len(VERSION, &self.version) };
        message_field_len(SCORE, &self.score) + version
    }

    fn clear(&mut self) {
        *self = GetScoreResponseWire::default();
    }
}

/// `BatchGetScoresResponse` with its scores already encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchGetScoresResponseWire {
    /// Encoded `PartnerScore`s.
    scores: Vec<Vec<u8>>,
    not_found: Vec<String>,
}

/// `BatchGetScoresResponse.scores` and `.not_found`.
const SCORES: u32 = 1;
const NOT_FOUND: u32 = 2;

impl BatchGetScoresResponseWire {
    pub fn push_score(&mut self, score: Vec<u8>) {
        self.scores.push(score);
    }

    pub fn push_not_found(&mut self, partner_id: String) {
        self.not_found.push(partner_id);
    }
}

impl Message for BatchGetScoresResponseWire {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for score in &self.scores {
            encode_message_field(SCORES, score, buf);
        }
        prost::encoding::string::encode_repeated(NOT_FOUND, &self.not_found, buf);
    }

    /// As `GetScoreResponseWire::merge_field`: for the type to read back what it writes.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            SCORES => {
                let mut score = Vec::new();
                prost::encoding::bytes::merge(wire_type, &mut score, buf, ctx)?;
                self.scores.push(score);
                Ok(())
            }
            NOT_FOUND => prost::encoding::string::merge_repeated(wire_type, &mut self.not_found, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.scores.iter().map(|s| message_field_len(SCORES, s)).sum::<usize>()
            + prost::encoding::string::encoded_len_repeated(NOT_FOUND, &self.not_found)
    }

    fn clear(&mut self) {
        *self = BatchGetScoresResponseWire::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{BatchGetScoresResponse, GetScoreResponse, one_acr_line_score};

    /// The score stored (without plans) and as `decode_stored` serves it.
    fn stored_and_served(score: &pb::PartnerScore) -> (Vec<u8>, pb::PartnerScore) {
        let mut stored = score.clone();
        for d in &mut stored.designations {
            d.shortfall = None;
        }
        let stored = stored.encode_to_vec();
        let served = crate::proto::decode_stored(&stored, &RuleBook::embedded()).unwrap();
        (stored, served)
    }

    fn window(designation: &str) -> pb::QualificationWindow {
        pb::QualificationWindow {
            designation: designation.into(),
            window_end: "2024-07-20".into(),
            ..Default::default()
        }
    }

    #[test]
    fn serves_the_bytes_prost_encodes_for_the_restored_score() {
        let mut score = one_acr_line_score();
        score.qualification_windows = vec![window("DATA_AI")];
        score.forecast = Some(pb::ScoreForecast { on: "2024-08-01".into(), ..Default::default() });
        let (stored, served) = stored_and_served(&score);
        assert!(served.designations.iter().all(|d| d.shortfall.is_some()));
        assert_eq!(served_encoding(&stored, &RuleBook::embedded(), None).unwrap(), served.encode_to_vec());
    }

    /// New windows replace the stored ones in prost's place for them, with or without a
    /// forecast after them, and where none were stored.
    #[test]
    fn replaces_the_stored_windows_in_their_place() {
        let new = [window("INFRASTRUCTURE"), window("DATA_AI")];
        for (stored_windows, forecast) in [(vec![window("DATA_AI")], true), (vec![], true), (vec![window("X")], false)]
        {
            let mut score = one_acr_line_score();
            score.qualification_windows = stored_windows;
            score.forecast = forecast.then(|| pb::ScoreForecast { on: "2024-08-01".into(), ..Default::default() });
            let (stored, mut served) = stored_and_served(&score);
            served.qualification_windows = new.to_vec();
            let encoded = served_encoding(&stored, &RuleBook::embedded(), Some(&new)).unwrap();
            assert_eq!(encoded, served.encode_to_vec(), "forecast {forecast}");
        }
    }

    /// A plan stored with its score (before plans were taken out) is served as stored.
    #[test]
    fn keeps_a_stored_plan() {
        let mut score = one_acr_line_score();
        score.designations[0].shortfall.as_mut().unwrap().summary = "as stored".into();
        let stored = score.encode_to_vec();
        let mut expected = score.clone();
        for d in &mut expected.designations[1..] {
            d.shortfall = None;
        }
        let partly = expected.encode_to_vec();
        let served =
            pb::PartnerScore::decode(&*served_encoding(&partly, &RuleBook::embedded(), None).unwrap()).unwrap();
        assert_eq!(served, pb::PartnerScore::decode(&*stored).unwrap());
        assert_eq!(served.designations[0].shortfall.as_ref().unwrap().summary, "as stored");
    }

    #[test]
    fn rejects_what_decode_stored_rejects() {
        let (stored, _) = stored_and_served(&one_acr_line_score());
        let rules = RuleBook::embedded();
        assert!(served_encoding(&stored[..stored.len() - 1], &rules, None).is_err());
        let mut no_day = one_acr_line_score();
        no_day.as_of.clear();
        assert!(served_encoding(&no_day.encode_to_vec(), &rules, None).is_err());
        let mut no_path = one_acr_line_score();
        no_path.path = 0;
        assert!(served_encoding(&no_path.encode_to_vec(), &rules, None).is_err());
        assert_eq!(stored_as_of(&stored).unwrap(), parse_date("2024-07-10").unwrap());
    }

    #[test]
    fn responses_encode_as_the_generated_messages_do() {
        let score = one_acr_line_score();
        for version in [0, 7] {
            let wire = GetScoreResponseWire::new(score.encode_to_vec(), version);
            let expected = GetScoreResponse { score: Some(score.clone()), version }.encode_to_vec();
            assert_eq!(wire.encoded_len(), expected.len());
            assert_eq!(wire.encode_to_vec(), expected);
            assert_eq!(GetScoreResponseWire::decode(expected.as_slice()).unwrap(), wire);
        }
        let mut batch = BatchGetScoresResponseWire::default();
        batch.push_score(score.encode_to_vec());
        batch.push_score(pb::PartnerScore::default().encode_to_vec());
        batch.push_not_found("P9".into());
        batch.push_not_found("P8".into());
        let expected = BatchGetScoresResponse {
            scores: vec![score, pb::PartnerScore::default()],
            not_found: vec!["P9".into(), "P8".into()],
        }
        .encode_to_vec();
        assert_eq!(batch.encoded_len(), expected.len());
        assert_eq!(batch.encode_to_vec(), expected);
        assert_eq!(BatchGetScoresResponseWire::decode(expected.as_slice()).unwrap(), batch);
    }
}
