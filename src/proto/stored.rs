//! The score as stored: a `PartnerScore`'s encoding without its shortfall plans.
//!
//! A plan is three quarters of a score's bytes, and it follows from the subcategory scores
//! beside it (see `restore_shortfalls`), so Redis keeps scores without them. The plans are
//! cut out of the whole encoding, which is published anyway, field by field: encoding the
//! score a second time without them cost as much as the first encoding, and every scored
//! partner paid it.

use super::MalformedScore;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};

/// `PartnerScore.designations` and `.forecast`.
pub(super) const DESIGNATIONS: u32 = 6;
pub(super) const FORECAST: u32 = 8;
/// `DesignationScore.shortfall`.
const SHORTFALL: u32 = 5;

/// `score` (an encoded `PartnerScore`) with every designation's shortfall left out; every
/// other field is copied as it is, in its order.
pub fn without_shortfalls(score: &[u8]) -> Result<Vec<u8>, MalformedScore> {
    let mut out = Vec::with_capacity(score.len() / 2);
    let mut rest = score;
    while !rest.is_empty() {
        let field = next_field(&mut rest)?;
        match field.payload {
            Some(designation) if field.number == DESIGNATIONS => {
                let mut kept: Vec<&[u8]> = Vec::new();
                let mut inner = designation;
                while !inner.is_empty() {
                    let f = next_field(&mut inner)?;
                    if f.number != SHORTFALL {
                        kept.push(f.bytes);
                    }
                }
                encode_key(DESIGNATIONS, WireType::LengthDelimited, &mut out);
                encode_varint(kept.iter().map(|f| f.len() as u64).sum(), &mut out);
                for f in kept {
                    out.extend_from_slice(f);
                }
            }
            _ => out.extend_from_slice(field.bytes),
        }
    }
    Ok(out)
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
    use prost::Message;

    /// The bytes are those of the score encoded with its plans cleared, so a wrong field
    /// number cannot pass unseen.
    #[test]
    fn is_the_score_encoded_without_its_plans() {
        let whole = crate::proto::one_acr_line_score();
        assert!(whole.designations.iter().all(|d| d.shortfall.is_some()));
        let mut cleared = whole.clone();
        for d in &mut cleared.designations {
            d.shortfall = None;
        }
        assert_eq!(without_shortfalls(&whole.encode_to_vec()).unwrap(), cleared.encode_to_vec());
    }

    #[test]
    fn truncated_input_is_malformed() {
        let bytes = crate::proto::one_acr_line_score().encode_to_vec();
        assert!(without_shortfalls(&bytes[..bytes.len() - 1]).is_err());
    }
}
