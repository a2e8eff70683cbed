//! A score's two encodings, made in one pass: whole, as published, and as stored, without
//! its shortfall plans, with the digest of the first; and the reading of encoded fields
//! that served responses and the score change events use.
//!
//! A plan is three quarters of a score's bytes, and it follows from the subcategory scores
//! beside it (see `restore_shortfalls`), so Redis keeps scores without them. Plans are
//! shared between partners in the same standing (see `engine::shortfall::plan`), and so is
//! their encoding here: converting and encoding each partner's plans anew was a third of
//! the cost of encoding a score that qualifies for nothing, and cutting them out of the
//! whole encoding afterwards for the stored form another pass over it.

use super::MalformedScore;
use super::convert::shortfall_to_pb;
use super::digest::score_digest;
use super::subcategory_score::Explanation;
use crate::engine::Shortfall;
use prost::Message;
use prost::bytes::BufMut;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint, key_len};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// `PartnerScore.partner_id`, `.as_of`, `.designations` and `.forecast`.
const PARTNER_ID: u32 = 1;
const AS_OF: u32 = 2;
pub(super) const DESIGNATIONS: u32 = 6;
pub(super) const FORECAST: u32 = 8;
/// `DesignationScore.subcategories` and `.shortfall`.
const SUBCATEGORIES: u32 = 4;
const SHORTFALL: u32 = 5;
/// `DeploymentsExplanation.window_after`.
const WINDOW_AFTER: u32 = 1;

/// Each plan encoded as a `DesignationScore.shortfall` field (key, length, message), by the
/// address of the plan it encodes. The entry holds the plan, so the address is not reused
/// while it is kept. Bounded like the engine's plans (8192 of them, each encoding about a
/// kilobyte at most), and emptied when full. foldhash, as for the plans themselves (see
/// `engine::shortfall`): it is looked up as often.
static PLAN_FIELDS: LazyLock<Mutex<foldhash::HashMap<usize, (Arc<Shortfall>, Arc<[u8]>)>>> =
    LazyLock::new(Mutex::default);
const PLAN_FIELDS_KEPT: usize = 8192;

/// A score encoded whole (published) and without its plans (stored), and its digest.
pub struct EncodedScore {
    pub whole: Vec<u8>,
    pub stored: Vec<u8>,
    /// `whole`'s digest without the fields that move with the day (see `score_digest`).
    pub digest: u64,
}

/// Encodes `score`, whose designations carry no shortfall, with `plans[i]` as the shortfall
/// of designation `i`, and takes its digest. The bytes are prost's own: fields in number
/// order, the shortfall (`DesignationScore`'s last field) at the end of its designation.
/// `PartnerScore`'s fields up to `designations` go first, then the designations, then the
/// fields after them; `score` is left as it was.
///
/// The designations are written a subcategory at a time, so that the encoder knows where
/// each field the digest leaves out lies: finding them afterwards walked every field of the
/// 4 KB encoding, 8 % of a new partner's instructions. Each subcategory's length is worked
/// out once here, where prost's own encoding of a designation works it out again for the
/// subcategory's header.
pub fn encode_score(score: &mut super::PartnerScore, plans: &[Option<Arc<Shortfall>>]) -> EncodedScore {
    // Every field named: a field added to the message fails to compile here instead of
    // being encoded out of its place.
    let super::PartnerScore {
        partner_id,
        as_of,
        path,
        ttm_acr_micros,
        path_explanation,
        mut designations,
        qualification_windows,
        forecast,
    } = std::mem::take(score);
    debug_assert_eq!(plans.len(), designations.len(), "a plan (or none) per designation");
    // `as_of` follows `partner_id`, the first field.
    let as_of_at = string_field_len(PARTNER_ID, &partner_id);
    let as_of_len = string_field_len(AS_OF, &as_of);
    let before =
        super::PartnerScore { partner_id, as_of, path, ttm_acr_micros, path_explanation, ..Default::default() };
    let after = super::PartnerScore { qualification_windows, forecast, ..Default::default() };
    // Each designation's length (needed for its header anyway) and plan, worked out before
    // anything is written so that both buffers are allocated at their final size; the only
    // extra walk is over the fields before and after the designations. The published
    // buffer used to start from a guess (1 KB, and 1 KB per designation) that a new
    // partner's score just outgrew, and copying it into a larger one was about a fifth of
    // this function's time under a stream of new partners.
    let mut subcategory_lens = Vec::with_capacity(designations.iter().map(|d| d.subcategories.len()).sum());
    let parts: Vec<(usize, Option<Arc<[u8]>>)> = designations
        .iter_mut()
        .enumerate()
        .map(|(i, designation)| {
            debug_assert!(designation.shortfall.is_none(), "plans are spliced in, not encoded");
            let first = subcategory_lens.len();
            subcategory_lens.extend(designation.subcategories.iter().map(Message::encoded_len));
            let subcategories: usize = subcategory_lens[first..].iter().map(|len| field_len(SUBCATEGORIES, *len)).sum();
            let len = without_subcategories(designation, |d| d.encoded_len()) + subcategories;
            (len, plans.get(i).and_then(Option::as_ref).map(plan_field))
        })
        .collect();
    let ends = before.encoded_len() + after.encoded_len();
    let plan_len = |plan: &Option<Arc<[u8]>>| plan.as_ref().map_or(0, |p| p.len());
    let whole_len = parts.iter().map(|(len, plan)| field_len(DESIGNATIONS, len + plan_len(plan))).sum::<usize>();
    let stored_len = parts.iter().map(|(len, _)| field_len(DESIGNATIONS, *len)).sum::<usize>();
    let mut whole = Vec::with_capacity(ends + whole_len);
    let mut stored = Vec::with_capacity(ends + stored_len);
    // Ranges of `whole` the digest leaves out, in order: `as_of`, each deployment window's
    // start, and every field after the designations.
    let mut left_out = Vec::with_capacity(designations.len() + 2);
    left_out.push(as_of_at..as_of_at + as_of_len);
    before.encode_raw(&mut whole);
    stored.extend_from_slice(&whole);
    let mut subcategory_lens = subcategory_lens.into_iter();
    for (designation, (len, plan)) in designations.iter_mut().zip(&parts) {
        encode_field_header(DESIGNATIONS, len + plan_len(plan), &mut whole);
        let at = whole.len();
        without_subcategories(designation, |d| d.encode_raw(&mut whole));
        for (subcategory, len) in designation.subcategories.iter().zip(&mut subcategory_lens) {
            encode_field_header(SUBCATEGORIES, len, &mut whole);
            subcategory.encode_raw(&mut whole);
            if let Some(Explanation::Deployments(deployments)) = &subcategory.explanation {
                // The explanation is the subcategory's last field, and the window's start
                // the explanation's first.
                let start = whole.len() - deployments.encoded_len();
                left_out.push(start..start + string_field_len(WINDOW_AFTER, &deployments.window_after));
            }
        }
        encode_field_header(DESIGNATIONS, *len, &mut stored);
        stored.extend_from_slice(&whole[at..]);
        if let Some(plan) = plan {
            whole.extend_from_slice(plan);
        }
    }
    let at = whole.len();
    after.encode_raw(&mut whole);
    stored.extend_from_slice(&whole[at..]);
    left_out.push(at..whole.len());
    let digest = score_digest(&whole, &left_out);
    let super::PartnerScore { qualification_windows, forecast, .. } = after;
    *score = super::PartnerScore { designations, qualification_windows, forecast, ..before };
    EncodedScore { whole, stored, digest }
}

/// `report` converted without its shortfall plans, and the plans: what [`encode_score`]
/// takes. The plans are shared and their encoding kept, so they are spliced in, not
/// converted and encoded.
pub fn split_plans(mut report: crate::engine::PartnerScore) -> (super::PartnerScore, Vec<Option<Arc<Shortfall>>>) {
    let plans = report.designations.iter_mut().map(|d| d.shortfall.take()).collect();
    (report.into(), plans)
}

/// Calls `f` on `designation` with its subcategories taken out, to encode or measure the
/// fields around them.
fn without_subcategories<T>(
    designation: &mut super::DesignationScore,
    f: impl FnOnce(&super::DesignationScore) -> T,
) -> T {
    let subcategories = std::mem::take(&mut designation.subcategories);
    let out = f(designation);
    designation.subcategories = subcategories;
    out
}

/// The length of string field `number` holding `value`: none when it is empty, as proto3
/// leaves an empty string out.
fn string_field_len(number: u32, value: &str) -> usize {
    if value.is_empty() { 0 } else { field_len(number, value.len()) }
}

/// The key and length of a length-delimited field `number` whose `len` bytes follow: for
/// a field written from parts, or from bytes already encoded.
pub(super) fn encode_field_header(number: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(number, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Appends `message` (an encoded message) as field `number`.
pub(super) fn encode_message_field(number: u32, message: &[u8], buf: &mut impl BufMut) {
    encode_field_header(number, message.len(), buf);
    buf.put_slice(message);
}

/// The length of [`encode_message_field`]'s output.
pub(super) fn message_field_len(number: u32, message: &[u8]) -> usize {
    field_len(number, message.len())
}

/// The length of a length-delimited field `number` with `len` bytes of payload.
fn field_len(number: u32, len: usize) -> usize {
    key_len(number) + encoded_len_varint(len as u64) + len
}

/// `plan` encoded as a shortfall field, from the kept encodings or encoded and kept.
pub(super) fn plan_field(plan: &Arc<Shortfall>) -> Arc<[u8]> {
    let address = Arc::as_ptr(plan) as usize;
    if let Some((_, field)) = PLAN_FIELDS.lock().unwrap_or_else(PoisonError::into_inner).get(&address) {
        return Arc::clone(field);
    }
    let mut field = Vec::new();
    prost::encoding::message::encode(SHORTFALL, &shortfall_to_pb(plan), &mut field);
    let field: Arc<[u8]> = field.into();
    let mut kept = PLAN_FIELDS.lock().unwrap_or_else(PoisonError::into_inner);
    if kept.len() >= PLAN_FIELDS_KEPT {
        kept.clear();
    }
    kept.insert(address, (Arc::clone(plan), Arc::clone(&field)));
    field
}

/// One encoded field.
pub(super) struct Field<'a> {
    pub(super) number: u32,
    /// The whole field: key, length if any, payload.
    pub(super) bytes: &'a [u8],
    /// The payload of a length-delimited field.
    pub(super) payload: Option<&'a [u8]>,
}

/// Splits the next field off the front of `rest`.
pub(super) fn next_field<'a>(rest: &mut &'a [u8]) -> Result<Field<'a>, MalformedScore> {
    let start: &'a [u8] = rest;
    let malformed = |e: prost::DecodeError| MalformedScore(e.to_string());
    let (number, wire_type) = decode_key(rest).map_err(malformed)?;
    let take = |rest: &mut &'a [u8], n: usize| -> Result<&'a [u8], MalformedScore> {
        if rest.len() < n {
            return Err(MalformedScore(format!("field {number} runs past the end")));
        }
        let (taken, after) = rest.split_at(n);
        *rest = after;
        Ok(taken)
    };
    let payload = match wire_type {
        WireType::Varint => {
            decode_varint(rest).map_err(malformed)?;
            None
        }
        WireType::SixtyFourBit => {
            take(rest, 8)?;
            None
        }
        WireType::ThirtyTwoBit => {
            take(rest, 4)?;
            None
        }
        WireType::LengthDelimited => {
            let len = decode_varint(rest).map_err(malformed)?;
            let len = usize::try_from(len).map_err(|_| MalformedScore(format!("field {number} is too long")))?;
            Some(take(rest, len)?)
        }
        WireType::StartGroup | WireType::EndGroup => {
            return Err(MalformedScore(format!("field {number} is a group, which PartnerScore has none of")));
        }
    };
    Ok(Field { number, bytes: &start[..start.len() - rest.len()], payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PartnerState, evaluate};
    use crate::rules::RuleBook;

    /// Both encodings are prost's own of the score with and without its plans, with a
    /// designation that has none, and with plans whose encoding is already kept (the second
    /// round): a wrong field number or length cannot pass unseen.
    #[test]
    fn encodes_as_prost_does_with_and_without_the_plans() {
        let rules = RuleBook::embedded();
        let as_of = crate::calendar::parse_date("2024-07-15").unwrap();
        let lines = [
            r#"{"type":"acr","event_id":"a","partner_id":"P","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"900000000"}"#,
            r#"{"type":"deployment","event_id":"d","partner_id":"P","deployment_id":"x","customer_id":"C1","solution_area":"INFRASTRUCTURE","service":"AKS","attribution":"PAL","deployed_on":"2024-05-20"}"#,
        ];
        let mut state = PartnerState::default();
        for round in 0..2 {
            for line in lines {
                state.apply(&crate::events::decode_json(line.as_bytes()).unwrap()).unwrap();
                let report = evaluate("P", &state, as_of, &rules);
                let mut whole = super::super::PartnerScore::from(report.clone());
                whole.forecast = Some(super::super::ScoreForecast { on: "2024-08-01".into(), ..Default::default() });
                whole.qualification_windows =
                    vec![super::super::QualificationWindow { designation: "DATA_AI".into(), ..Default::default() }];
                assert!(whole.designations.iter().all(|d| d.shortfall.is_some()), "round {round}");
                // A designation without a plan, as a qualified one is.
                whole.designations[1].shortfall = None;
                let mut cleared = whole.clone();
                for d in &mut cleared.designations {
                    d.shortfall = None;
                }
                let (mut message, mut plans) = split_plans(report);
                plans[1] = None;
                message.forecast = whole.forecast.clone();
                message.qualification_windows = whole.qualification_windows.clone();
                let encoded = encode_score(&mut message, &plans);
                assert_eq!(encoded.whole, whole.encode_to_vec(), "round {round}");
                assert_eq!(encoded.stored, cleared.encode_to_vec(), "round {round}");
                // Allocated at their final size, never grown: std promises at least the
                // capacity asked for and gives exactly that for `Vec<u8>`, so a larger one
                // means the buffer grew.
                assert_eq!(encoded.whole.capacity(), encoded.whole.len(), "round {round}");
                assert_eq!(encoded.stored.capacity(), encoded.stored.len(), "round {round}");
            }
            state = PartnerState::default();
        }
    }
}
