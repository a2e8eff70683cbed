//! A score's fingerprint, taken from its encoding.
//!
//! Every scored partner is fingerprinted to tell whether its score changed and is published
//! again. The fingerprint used to serialise the whole report a second time, plans
//! included: 6 % of the service's time under a stream of new partners. The score is encoded
//! anyway, to publish and store it, so the digest is taken from those bytes, with the fields
//! that are not the score's or that move with the day left out.

use super::MalformedScore;
use super::stored::{DESIGNATIONS, FORECAST, next_field};
use std::ops::Range;

/// `PartnerScore.as_of` and `.qualification_windows`.
const AS_OF: u32 = 2;
const QUALIFICATION_WINDOWS: u32 = 7;
/// `DesignationScore.subcategories`.
const SUBCATEGORIES: u32 = 4;
/// `SubcategoryScore.deployments`.
const DEPLOYMENTS: u32 = 13;
/// `DeploymentsExplanation.window_after`.
const WINDOW_AFTER: u32 = 1;

/// A digest of the score in `score` (an encoded `PartnerScore`): its points, values and
/// explanations, without the dates that move with `as_of` itself (`as_of`, the deployment
/// window's start), so that a day passing alone is not a change. The qualification windows
/// and the forecast are left out too; the caller adds what of them counts as a change.
///
/// The bytes around the left-out fields are hashed as they are, lengths included: a
/// deployment window's start is a date, ten bytes for any year from 0 to 9999 (`as_of` is
/// kept within 2000–2100), so the lengths of the messages that hold it do not move with
/// the day; were they to, the cost would be a needless republish, never a missed change. Rewriting those lengths instead meant copying
/// each designation's bytes again and cost as much as the serialised report it replaced.
pub fn score_digest(score: &[u8]) -> Result<u64, MalformedScore> {
    let mut left_out = Vec::new();
    find_left_out(score, score, Level::Score, &mut left_out)?;
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    let mut from = 0;
    for range in left_out {
        digest.update(&score[from..range.start]);
        from = range.end;
    }
    digest.update(&score[from..]);
    Ok(digest.digest())
}

/// Which message a field belongs to, to know which of its fields to leave out or look into.
#[derive(Clone, Copy)]
enum Level {
    Score,
    Designation,
    Subcategory,
    Deployments,
}

enum Rule {
    LeaveOut,
    LookInto(Level),
}

impl Level {
    fn rule(self, number: u32) -> Option<Rule> {
        match (self, number) {
            (Level::Score, AS_OF | QUALIFICATION_WINDOWS | FORECAST) | (Level::Deployments, WINDOW_AFTER) => {
                Some(Rule::LeaveOut)
            }
            (Level::Score, DESIGNATIONS) => Some(Rule::LookInto(Level::Designation)),
            (Level::Designation, SUBCATEGORIES) => Some(Rule::LookInto(Level::Subcategory)),
            (Level::Subcategory, DEPLOYMENTS) => Some(Rule::LookInto(Level::Deployments)),
            _ => None,
        }
    }
}

/// Adds to `left_out`, in order, the byte ranges of `score` taken by `message`'s fields
/// that `level`'s rules leave out, looking into the messages they say to.
fn find_left_out(
    score: &[u8],
    message: &[u8],
    level: Level,
    left_out: &mut Vec<Range<usize>>,
) -> Result<(), MalformedScore> {
    let mut rest = message;
    while !rest.is_empty() {
        let field = next_field(&mut rest)?;
        match (level.rule(field.number), field.payload) {
            (Some(Rule::LeaveOut), _) => {
                let start = field.bytes.as_ptr() as usize - score.as_ptr() as usize;
                left_out.push(start..start + field.bytes.len());
            }
            (Some(Rule::LookInto(inner)), Some(payload)) => find_left_out(score, payload, inner, left_out)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        DeploymentsExplanation, PartnerScore, QualificationWindow, ScoreForecast, subcategory_score::Explanation,
    };
    use prost::Message;

    /// The days move nothing; every other part of the score does, so a wrong field number
    /// cannot pass unseen.
    #[test]
    fn only_the_days_and_what_the_caller_adds_are_left_out() {
        let whole = crate::proto::one_acr_line_score();
        let digest = |score: &PartnerScore| score_digest(&score.encode_to_vec()).unwrap();
        let mut moved = whole.clone();
        moved.as_of = "2024-07-11".into();
        moved.qualification_windows.push(QualificationWindow { designation: "DATA_AI".into(), ..Default::default() });
        moved.forecast = Some(ScoreForecast { on: "2024-08-01".into(), ..Default::default() });
        assert!(each_deployments(&mut moved, |d| d.window_after = "2023-07-11".into()) > 0);
        assert_ne!(moved.encode_to_vec(), whole.encode_to_vec());
        assert_eq!(digest(&moved), digest(&whole));

        let changes: [(&str, fn(&mut PartnerScore)); 6] = [
            ("partner", |s| s.partner_id.push('x')),
            ("path", |s| s.path = crate::proto::Path::Enterprise as i32),
            ("total", |s| s.designations[0].total += 1),
            ("points", |s| s.designations[1].subcategories[0].points += 1),
            ("plan", |s| s.designations[2].shortfall.as_mut().unwrap().summary.push('x')),
            ("counted", |s| {
                each_deployments(s, |d| d.counted.push("x".into()));
            }),
        ];
        for (what, change) in changes {
            let mut changed = whole.clone();
            change(&mut changed);
            assert_ne!(digest(&changed), digest(&whole), "{what}");
        }
    }

    /// Calls `change` on each deployments explanation of `score`; returns how many there are.
    fn each_deployments(score: &mut PartnerScore, mut change: impl FnMut(&mut DeploymentsExplanation)) -> usize {
        let mut found = 0;
        for s in score.designations.iter_mut().flat_map(|d| &mut d.subcategories) {
            if let Some(Explanation::Deployments(d)) = &mut s.explanation {
                change(d);
                found += 1;
            }
        }
        found
    }

    fn score_on(day: &str, deployed_on: &str) -> Vec<u8> {
        let line = format!(
            r#"{{"type":"deployment","event_id":"d","partner_id":"P","deployment_id":"x","customer_id":"C","solution_area":"DATA_AI","service":"AKS","attribution":"PAL","deployed_on":"{deployed_on}"}}"#
        );
        crate::proto::score_of_line(&line, day).encode_to_vec()
    }

    #[test]
    fn a_day_passing_alone_is_no_change_but_a_deployment_ageing_out_is() {
        let digest = |day| score_digest(&score_on(day, "2023-07-20")).unwrap();
        assert_eq!(digest("2024-07-10"), digest("2024-07-11"));
        assert_ne!(digest("2024-07-19"), digest("2024-07-20"), "the deployment left its window");
    }

    #[test]
    fn truncated_input_is_malformed() {
        let bytes = crate::proto::one_acr_line_score().encode_to_vec();
        assert!(score_digest(&bytes[..bytes.len() - 1]).is_err());
    }
}
