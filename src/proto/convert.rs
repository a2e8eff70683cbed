//! The engine's report and its wire form, both ways: the service stores and sends the
//! protobuf, the CLI prints the spec's JSON from it.

use super as pb;
use crate::calendar::{Month, date_text, parse_date};
use crate::engine as en;
use crate::rules::{Path, RuleBook};
use std::sync::Arc;

/// Why a `PartnerScore` from the wire cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("malformed PartnerScore: {0}")]
pub struct MalformedScore(pub(super) String);

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v > 0 { i64::MAX } else { i64::MIN })
}

/// By value: the report's strings move into the message instead of being copied, and every
/// assessed partner is converted. The plans are shared, so they are copied; the service's
/// scoring takes them out first and splices in their kept encoding (see `encode_score`).
impl From<en::PartnerScore> for pb::PartnerScore {
    fn from(s: en::PartnerScore) -> Self {
        pb::PartnerScore {
            partner_id: s.partner_id,
            as_of: date_text(s.as_of),
            path: path_to_pb(s.path) as i32,
            ttm_acr_micros: saturate(s.ttm_acr_micros),
            path_explanation: Some(pb::PathExplanation {
                ttm_customers: s.path_explanation.ttm_customers,
                known_segment_customers: s.path_explanation.known_segment_customers,
                smb_or_smc_customers: s.path_explanation.smb_or_smc_customers,
            }),
            designations: s.designations.into_iter().map(designation_to_pb).collect(),
            qualification_windows: Vec::new(),
            forecast: None,
        }
    }
}

impl From<&en::QualificationWindow> for pb::QualificationWindow {
    fn from(w: &en::QualificationWindow) -> Self {
        pb::QualificationWindow {
            designation: w.designation.clone(),
            window_start: date_text(w.window_start),
            window_end: String::new(),
            qualified: w.qualified(),
            qualified_periods: w
                .qualified_periods
                .iter()
                .map(|(from, to)| pb::DateRange { from: date_text(*from), to: date_text(*to) })
                .collect(),
            qualified_days: w.qualified_days,
            last_qualified_on: w.last_qualified_on.map(date_text),
            in_window_until: w.in_window_until.map(date_text),
            days_left: w.days_left,
        }
    }
}

/// The windows of `history` as of `day`, in their wire form.
pub fn qualification_windows(history: &en::ScoreHistory, day: chrono::NaiveDate) -> Vec<pb::QualificationWindow> {
    history
        .windows(day)
        .iter()
        .map(|w| pb::QualificationWindow { window_end: date_text(day), ..pb::QualificationWindow::from(w) })
        .collect()
}

impl pb::ScoreWarning {
    pub fn of(partner_id: &str, w: &en::ScoreWarning) -> pb::ScoreWarning {
        pb::ScoreWarning {
            partner_id: partner_id.to_owned(),
            designation: w.designation.clone(),
            on: date_text(w.on),
            total: w.total,
            projected_total: w.projected_total,
            loses_qualification: w.loses_qualification,
            zeroed_subcategories: w.zeroed_subcategories.clone(),
            summary: w.summary.clone(),
        }
    }
}

impl pb::ScoreForecast {
    pub fn of(partner_id: &str, f: &en::Forecast, warnings: &[en::ScoreWarning]) -> pb::ScoreForecast {
        pb::ScoreForecast {
            on: date_text(f.on),
            days_elapsed: f.days_elapsed,
            days_in_month: f.days_in_month,
            month_so_far_micros: saturate(f.month_so_far_micros),
            same_month_last_year_micros: saturate(f.same_month_last_year_micros),
            designations: f
                .designations
                .iter()
                .map(|d| pb::DesignationForecast {
                    designation: d.designation.clone(),
                    total: d.total,
                    projected_total: d.projected_total,
                    qualified: d.qualified,
                    projected_qualified: d.projected_qualified,
                    subcategories: d
                        .subcategories
                        .iter()
                        .map(|s| pb::SubcategoryForecast {
                            name: s.name.clone(),
                            points: s.points,
                            projected_points: s.projected_points,
                            points_at_risk: s.points_at_risk(),
                        })
                        .collect(),
                })
                .collect(),
            warnings: warnings.iter().map(|w| pb::ScoreWarning::of(partner_id, w)).collect(),
        }
    }
}

impl pb::DaySnapshot {
    pub fn of(day: chrono::NaiveDate, s: &en::DaySnapshot) -> pb::DaySnapshot {
        pb::DaySnapshot {
            date: date_text(day),
            path: path_to_pb(s.path) as i32,
            designations: s
                .designations
                .iter()
                .map(|d| pb::DesignationSnapshot {
                    designation: d.designation.clone(),
                    total: d.total,
                    qualified: d.qualified,
                    subcategories: d
                        .points
                        .iter()
                        .map(|(name, points)| pb::SubcategoryPoints { name: name.clone(), points: *points })
                        .collect(),
                })
                .collect(),
        }
    }
}

pub(super) fn path_from_pb(path: i32) -> Option<Path> {
    match pb::Path::try_from(path) {
        Ok(pb::Path::Smb) => Some(Path::Smb),
        Ok(pb::Path::Enterprise) => Some(Path::Enterprise),
        _ => None,
    }
}

fn path_to_pb(path: Path) -> pb::Path {
    match path {
        Path::Smb => pb::Path::Smb,
        Path::Enterprise => pb::Path::Enterprise,
    }
}

fn designation_to_pb(d: en::DesignationScore) -> pb::DesignationScore {
    pb::DesignationScore {
        designation: d.designation,
        total: d.total,
        qualified: d.qualified,
        subcategories: d.subcategories.into_iter().map(subcategory_to_pb).collect(),
        shortfall: d.shortfall.as_deref().map(shortfall_to_pb),
    }
}

pub(super) fn shortfall_to_pb(f: &en::Shortfall) -> pb::Shortfall {
    pb::Shortfall {
        points_needed: f.points_needed,
        empty_subcategories: f.empty_subcategories.clone(),
        steps: f
            .steps
            .iter()
            .map(|s| pb::ShortfallStep {
                subcategory: s.subcategory.clone(),
                action: s.action.clone(),
                points: s.points,
            })
            .collect(),
        summary: f.summary.clone(),
    }
}

/// A score as stored (see [`super::encode_score`]), decoded and with its plans worked out again.
pub fn decode_stored(bytes: &[u8], rules: &RuleBook) -> Result<pb::PartnerScore, MalformedScore> {
    use prost::Message;
    let mut score = pb::PartnerScore::decode(bytes).map_err(|e| MalformedScore(e.to_string()))?;
    restore_shortfalls(&mut score, rules)?;
    Ok(score)
}

/// Works out again the plans a stored score is without, under the rule set in force on
/// the score's day: the plans `evaluate` gave. A score stored with its plans (before they
/// were taken out) keeps them.
pub fn restore_shortfalls(score: &mut pb::PartnerScore, rules: &RuleBook) -> Result<(), MalformedScore> {
    let bad = |what: &str| MalformedScore(format!("{what} of partner {}", score.partner_id));
    let as_of = parse_date(&score.as_of).ok_or_else(|| bad("as_of"))?;
    let path = path_from_pb(score.path).ok_or_else(|| bad("path"))?;
    for d in score.designations.iter_mut().filter(|d| !d.qualified && d.shortfall.is_none()) {
        let subcategories = d.subcategories.iter().map(subcategory_from_pb).collect::<Result<Vec<_>, _>>()?;
        d.shortfall =
            en::shortfall_of(&d.designation, &subcategories, path, as_of, rules).as_deref().map(shortfall_to_pb);
    }
    Ok(())
}

fn subcategory_to_pb(s: en::SubcategoryScore) -> pb::SubcategoryScore {
    use pb::subcategory_score::Explanation as X;
    let explanation = match s.explanation {
        en::Explanation::NetCustomerAdds { threshold_micros, baseline_months, recent_months, added, lost } => {
            let changes = |cs: Vec<en::CustomerChange>| -> Vec<pb::CustomerChange> {
                cs.into_iter()
                    .map(|c| pb::CustomerChange {
                        customer_id: c.customer_id,
                        baseline_micros: c.baseline_micros.iter().map(|v| saturate(*v)).collect(),
                        recent_micros: c.recent_micros.iter().map(|v| saturate(*v)).collect(),
                    })
                    .collect()
            };
            X::NetCustomerAdds(pb::NetCustomerAddsExplanation {
                threshold_micros,
                baseline_months: baseline_months.iter().map(|m| m.text()).collect(),
                recent_months: recent_months.iter().map(|m| m.text()).collect(),
                added: changes(added),
                lost: changes(lost),
            })
        }
        en::Explanation::Skilling {
            prerequisites,
            prerequisites_met,
            prerequisite_points,
            individuals,
            counted_individuals,
        } => X::Skilling(pb::SkillingExplanation {
            prerequisites: prerequisites
                .into_iter()
                .map(|p| pb::PrerequisiteStatus {
                    certification: p.certification,
                    held: p.held,
                    required: p.required,
                    points: p.points,
                })
                .collect(),
            prerequisites_met,
            prerequisite_points,
            individuals,
            counted_individuals,
        }),
        en::Explanation::UsageGrowth { current_month, current_micros, base_month, base_micros, min_current_micros } => {
            X::UsageGrowth(pb::UsageGrowthExplanation {
                current_month,
                current_micros: saturate(current_micros),
                base_month,
                base_micros: saturate(base_micros),
                min_current_micros,
            })
        }
        en::Explanation::Deployments { window_after, counted } => {
            X::Deployments(pb::DeploymentsExplanation { window_after: date_text(window_after), counted })
        }
    };
    pb::SubcategoryScore { name: s.name, points: s.points, max: s.max, value: s.value, explanation: Some(explanation) }
}

impl TryFrom<&pb::PartnerScore> for en::PartnerScore {
    type Error = MalformedScore;

    fn try_from(s: &pb::PartnerScore) -> Result<Self, MalformedScore> {
        let bad = |what: &str| MalformedScore(format!("{what} of partner {}", s.partner_id));
        let path = path_from_pb(s.path).ok_or_else(|| bad("path"))?;
        let p = s.path_explanation.clone().unwrap_or_default();
        Ok(en::PartnerScore {
            partner_id: s.partner_id.clone(),
            as_of: parse_date(&s.as_of).ok_or_else(|| bad("as_of"))?,
            path,
            ttm_acr_micros: i128::from(s.ttm_acr_micros),
            path_explanation: en::PathExplanation {
                ttm_customers: p.ttm_customers,
                known_segment_customers: p.known_segment_customers,
                smb_or_smc_customers: p.smb_or_smc_customers,
            },
            designations: s.designations.iter().map(designation_from_pb).collect::<Result<_, _>>()?,
        })
    }
}

fn designation_from_pb(d: &pb::DesignationScore) -> Result<en::DesignationScore, MalformedScore> {
    Ok(en::DesignationScore {
        designation: d.designation.clone(),
        total: d.total,
        qualified: d.qualified,
        subcategories: d.subcategories.iter().map(subcategory_from_pb).collect::<Result<_, _>>()?,
        shortfall: d.shortfall.as_ref().map(|f| {
            Arc::new(en::Shortfall {
                points_needed: f.points_needed,
                empty_subcategories: f.empty_subcategories.clone(),
                steps: f
                    .steps
                    .iter()
                    .map(|s| en::ShortfallStep {
                        subcategory: s.subcategory.clone(),
                        action: s.action.clone(),
                        points: s.points,
                    })
                    .collect(),
                summary: f.summary.clone(),
            })
        }),
    })
}

pub(super) fn subcategory_from_pb(s: &pb::SubcategoryScore) -> Result<en::SubcategoryScore, MalformedScore> {
    use pb::subcategory_score::Explanation as X;
    let bad = |what: &str| MalformedScore(format!("{what} of subcategory {}", s.name));
    let months = |ms: &[String]| -> Result<Vec<Month>, MalformedScore> {
        ms.iter().map(|m| Month::parse(m).ok_or_else(|| bad("month"))).collect()
    };
    let explanation = match s.explanation.as_ref().ok_or_else(|| bad("explanation"))? {
        X::NetCustomerAdds(x) => {
            let changes = |cs: &[pb::CustomerChange]| -> Vec<en::CustomerChange> {
                cs.iter()
                    .map(|c| en::CustomerChange {
                        customer_id: c.customer_id.clone(),
                        baseline_micros: c.baseline_micros.iter().map(|v| i128::from(*v)).collect(),
                        recent_micros: c.recent_micros.iter().map(|v| i128::from(*v)).collect(),
                    })
                    .collect()
            };
            en::Explanation::NetCustomerAdds {
                threshold_micros: x.threshold_micros,
                baseline_months: months(&x.baseline_months)?,
                recent_months: months(&x.recent_months)?,
                added: changes(&x.added),
                lost: changes(&x.lost),
            }
        }
        X::Skilling(x) => en::Explanation::Skilling {
            prerequisites: x
                .prerequisites
                .iter()
                .map(|p| en::PrerequisiteStatus {
                    certification: p.certification.clone(),
                    held: p.held,
                    required: p.required,
                    points: p.points,
                })
                .collect(),
            prerequisites_met: x.prerequisites_met,
            prerequisite_points: x.prerequisite_points,
            individuals: x.individuals.clone(),
            counted_individuals: x.counted_individuals,
        },
        X::UsageGrowth(x) => en::Explanation::UsageGrowth {
            current_month: x.current_month.clone(),
            current_micros: i128::from(x.current_micros),
            base_month: x.base_month.clone(),
            base_micros: i128::from(x.base_micros),
            min_current_micros: x.min_current_micros,
        },
        X::Deployments(x) => en::Explanation::Deployments {
            window_after: parse_date(&x.window_after).ok_or_else(|| bad("window_after"))?,
            counted: x.counted.clone(),
        },
    };
    Ok(en::SubcategoryScore { name: s.name.clone(), points: s.points, max: s.max, value: s.value, explanation })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Partners;
    use crate::events::JsonLines;
    use crate::rules::RuleBook;
    use std::io::BufReader;

    #[test]
    fn golden_reports_round_trip_through_protobuf() {
        let file = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden/random_1.events.jsonl"))
            .unwrap();
        let mut partners = Partners::default();
        for item in JsonLines::new(BufReader::new(file)) {
            if let (_, Ok(event)) = item.unwrap() {
                let _ = partners.apply(&event);
            }
        }
        let rules = RuleBook::embedded();
        let mut n = 0;
        for report in partners.evaluate(crate::calendar::parse_date("2024-07-10").unwrap(), &rules) {
            let wire = pb::PartnerScore::from(report.clone());
            assert_eq!(en::PartnerScore::try_from(&wire).unwrap(), report);
            n += 1;
        }
        assert!(n > 0);
    }
}
