//! A score's fingerprint, taken from its encoding.
//!
//! Every scored partner is fingerprinted to tell whether its score changed and is published
//! again. The fingerprint used to serialise the whole report a second time, plans
//! included: 6 % of the service's time under a stream of new partners. The score is encoded
//! anyway, to publish and store it, so the digest is taken from those bytes, with the fields
//! that are not the score's or that move with the day left out. The encoder says where
//! those lie as it writes them (see `encode_score`).

use std::ops::Range;

/// A digest of the score in `score` (an encoded `PartnerScore`) without the byte ranges
/// `left_out` (in order, apart): its points, values and explanations, without the dates
/// that move with `as_of` itself (`as_of`, the deployment window's start), so that a day
/// passing alone is not a change. The qualification windows and the forecast are left out
/// too; the caller adds what of them counts as a change.
///
/// The bytes around the left-out fields are hashed as they are, lengths included: a
/// deployment window's start is a date, ten bytes for any year from 0 to 9999 (`as_of` is
/// kept within 2000–2100), so the lengths of the messages that hold it do not move with
/// the day; were they to, the cost would be a needless republish, never a missed change.
/// Rewriting those lengths instead meant copying each designation's bytes again and cost as
/// much as the serialised report it replaced.
pub(super) fn score_digest(score: &[u8], left_out: &[Range<usize>]) -> u64 {
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    let mut from = 0;
    for range in left_out {
        digest.update(&score[from..range.start]);
        from = range.end;
    }
    digest.update(&score[from..]);
    digest.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Partners;
    use crate::proto::stored::next_field;
    use crate::proto::{
        DeploymentsExplanation, MalformedScore, PartnerScore, QualificationWindow, ScoreForecast, encode_score,
        split_plans, subcategory_score::Explanation,
    };
    use crate::rules::RuleBook;
    use prost::Message;

    /// The digest `encode_score` takes of `score`, its plans taken out and spliced in as
    /// scoring does.
    fn digest(score: &PartnerScore) -> u64 {
        let (mut message, plans) = split_plans(crate::engine::PartnerScore::try_from(score).unwrap());
        message.qualification_windows = score.qualification_windows.clone();
        message.forecast = score.forecast.clone();
        assert_eq!(message.designations.len(), score.designations.len());
        encode_score(&mut message, &plans).digest
    }

    /// The days move nothing; every other part of the score does, so a wrong field number
    /// cannot pass unseen.
    #[test]
    fn only_the_days_and_what_the_caller_adds_are_left_out() {
        let whole = crate::proto::one_acr_line_score();
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

    fn score_on(day: &str, deployed_on: &str) -> PartnerScore {
        let line = format!(
            r#"{{"type":"deployment","event_id":"d","partner_id":"P","deployment_id":"x","customer_id":"C","solution_area":"DATA_AI","service":"AKS","attribution":"PAL","deployed_on":"{deployed_on}"}}"#
        );
        crate::proto::score_of_line(&line, day)
    }

    #[test]
    fn a_day_passing_alone_is_no_change_but_a_deployment_ageing_out_is() {
        let digest = |day| digest(&score_on(day, "2023-07-20"));
        assert_eq!(digest("2024-07-10"), digest("2024-07-11"));
        assert_ne!(digest("2024-07-19"), digest("2024-07-20"), "the deployment left its window");
    }

    /// The ranges the encoder leaves out are those a walk over every field of its output
    /// finds, for every golden vector's partners on two days a year apart, with the plans
    /// spliced in as scoring does, and with windows and a forecast after them.
    #[test]
    fn the_encoder_leaves_out_what_a_walk_over_its_output_finds() {
        let rules = RuleBook::embedded();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
        let (mut scores, mut windows) = (0, 0);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with(".events.jsonl") {
                continue;
            }
            let mut partners = Partners::default();
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if let Ok(event) = crate::events::decode_json(line.as_bytes()) {
                    let _ = partners.apply(&event);
                }
            }
            for day in ["2024-07-10", "2025-07-10"] {
                for report in partners.evaluate(crate::calendar::parse_date(day).unwrap(), &rules) {
                    let (mut message, plans) = split_plans(report);
                    windows += each_deployments(&mut message, |_| {});
                    message.qualification_windows =
                        vec![QualificationWindow { designation: "DATA_AI".into(), ..Default::default() }];
                    message.forecast = Some(ScoreForecast { on: "2024-08-01".into(), ..Default::default() });
                    let encoded = encode_score(&mut message, &plans);
                    let walked = walked_digest(&encoded.whole).unwrap();
                    assert_eq!(encoded.digest, walked, "{} {} on {day}", path.display(), message.partner_id);
                    scores += 1;
                }
            }
        }
        assert!(scores >= 40 && windows >= 40, "only {scores} scores, {windows} deployment windows");
    }

    /// `PartnerScore.as_of`, `.designations`, `.qualification_windows` and `.forecast`;
    /// `DesignationScore.subcategories`; `SubcategoryScore.deployments`;
    /// `DeploymentsExplanation.window_after`. Written out again here rather than taken from
    /// the encoder, so that a wrong number there cannot agree with itself.
    const AS_OF: u32 = 2;
    const DESIGNATIONS: u32 = 6;
    const QUALIFICATION_WINDOWS: u32 = 7;
    const FORECAST: u32 = 8;
    const SUBCATEGORIES: u32 = 4;
    const DEPLOYMENTS: u32 = 13;
    const WINDOW_AFTER: u32 = 1;

    /// The digest of `score` without the fields a walk over all of them finds to leave out:
    /// what the service took before the encoder said where they lie.
    fn walked_digest(score: &[u8]) -> Result<u64, MalformedScore> {
        let mut left_out = Vec::new();
        find_left_out(score, score, Level::Score, &mut left_out)?;
        Ok(score_digest(score, &left_out))
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
}
