//! `ScoreChanged` as the server sends it: the score is the `PartnerScore` bytes read from
//! the scores topic, passed through.
//!
//! Decoding each score from the feed only for tonic to encode it again cost a sixth of the
//! service's time under a stream of new partners (a score is about 4 KB of strings). The
//! server's generated code sends this type in place of `ScoreChanged` (see `build.rs`); its
//! encoding is byte for byte that of the `ScoreChanged` it stands for, so clients see no
//! difference.

use super::MalformedScore;
use super::stored::{FORECAST, encode_message_field, message_field_len, next_field};
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};

/// `ScoreChanged.score`, `.version`, `.cursor`, `.warnings`.
const SCORE: u32 = 1;
const VERSION: u32 = 2;
const CURSOR: u32 = 3;
const WARNINGS: u32 = 4;
/// `ScoreForecast.warnings`, within `PartnerScore.forecast`.
const FORECAST_WARNINGS: u32 = 7;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreChangedWire {
    /// An encoded `PartnerScore`.
    score: Bytes,
    version: u64,
    cursor: String,
    /// Every `ScoreWarning`, each framed as field 4 (key, length, message).
    warnings: Vec<u8>,
}

impl ScoreChangedWire {
    /// The change carrying `score` (an encoded `PartnerScore`); its warnings are copied
    /// from the score's forecast, as `ScoreChanged.warnings` promises.
    pub fn new(score: Bytes, version: u64, cursor: String) -> Result<Self, MalformedScore> {
        let mut warnings = Vec::new();
        let mut rest: &[u8] = &score;
        while !rest.is_empty() {
            let field = next_field(&mut rest)?;
            if let (FORECAST, Some(mut forecast)) = (field.number, field.payload) {
                while !forecast.is_empty() {
                    let inner = next_field(&mut forecast)?;
                    if let (FORECAST_WARNINGS, Some(warning)) = (inner.number, inner.payload) {
                        push_warning(&mut warnings, warning);
                    }
                }
            }
        }
        Ok(ScoreChangedWire { score, version, cursor, warnings })
    }
}

/// Appends an encoded `ScoreWarning` framed as `ScoreChanged` field 4.
fn push_warning(warnings: &mut Vec<u8>, warning: &[u8]) {
    encode_message_field(WARNINGS, warning, warnings);
}

impl prost::Message for ScoreChangedWire {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // A message field is sent whenever it is set, even empty: `score` always is.
        encode_message_field(SCORE, &self.score, buf);
        if self.version != 0 {
            prost::encoding::uint64::encode(VERSION, &self.version, buf);
        }
        if !self.cursor.is_empty() {
            prost::encoding::string::encode(CURSOR, &self.cursor, buf);
        }
        buf.put_slice(&self.warnings);
    }

    /// Only clients decode a `ScoreChanged`, and they use the generated type; this keeps the
    /// fields anyway, so that the type reads back what it writes.
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
            CURSOR => prost::encoding::string::merge(wire_type, &mut self.cursor, buf, ctx),
            WARNINGS => {
                let mut warning = Vec::new();
                prost::encoding::bytes::merge(wire_type, &mut warning, buf, ctx)?;
                push_warning(&mut self.warnings, &warning);
                Ok(())
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let version = if self.version == 0 { 0 } else { prost::encoding::uint64::encoded_len(VERSION, &self.version) };
        let cursor =
            if self.cursor.is_empty() { 0 } else { prost::encoding::string::encoded_len(CURSOR, &self.cursor) };
        message_field_len(SCORE, &self.score) + version + cursor + self.warnings.len()
    }

    fn clear(&mut self) {
        *self = ScoreChangedWire::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ScoreChanged, ScoreWarning, one_acr_line_score};
    use prost::Message;

    /// What the server sent before passing scores through: the decoded score, its warnings
    /// copied beside it.
    fn generated(score: &crate::proto::PartnerScore, version: u64, cursor: &str) -> ScoreChanged {
        ScoreChanged {
            warnings: score.forecast.as_ref().map(|f| f.warnings.clone()).unwrap_or_default(),
            score: Some(score.clone()),
            version,
            cursor: cursor.to_owned(),
        }
    }

    fn with_warnings() -> crate::proto::PartnerScore {
        let mut score = one_acr_line_score();
        let forecast = score.forecast.get_or_insert_with(Default::default);
        for (designation, loses) in [("DATA_AI", true), ("INFRASTRUCTURE", false)] {
            forecast.warnings.push(ScoreWarning {
                designation: designation.into(),
                loses_qualification: loses,
                zeroed_subcategories: vec!["skilling".into()],
                ..Default::default()
            });
        }
        score
    }

    #[test]
    fn encodes_as_the_generated_message_does() {
        for (score, version, cursor) in
            [(with_warnings(), 7, "0:17,1:4"), (one_acr_line_score(), 0, ""), (Default::default(), 1, "0:1")]
        {
            let bytes = Bytes::from(score.encode_to_vec());
            let wire = ScoreChangedWire::new(bytes, version, cursor.into()).unwrap();
            let expected = generated(&score, version, cursor).encode_to_vec();
            assert_eq!(wire.encoded_len(), expected.len());
            assert_eq!(wire.encode_to_vec(), expected);
            assert_eq!(ScoreChangedWire::decode(expected.as_slice()).unwrap(), wire);
        }
    }

    #[test]
    fn carries_every_warning_of_the_forecast() {
        let score = with_warnings();
        let wire = ScoreChangedWire::new(Bytes::from(score.encode_to_vec()), 3, "0:1".into()).unwrap();
        let sent = ScoreChanged::decode(wire.encode_to_vec().as_slice()).unwrap();
        assert_eq!(sent.warnings.len(), 2);
        assert_eq!(sent.warnings, score.forecast.unwrap().warnings);
    }

    #[test]
    fn truncated_score_is_malformed() {
        let bytes = with_warnings().encode_to_vec();
        assert!(ScoreChangedWire::new(Bytes::copy_from_slice(&bytes[..bytes.len() - 1]), 1, String::new()).is_err());
    }
}
