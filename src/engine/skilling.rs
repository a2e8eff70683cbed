//! Spec §5.2: prerequisite holders and scoring individuals per skilling subcategory.

use super::Context;
use super::report::{Explanation, PrerequisiteStatus, SubcategoryScore};
use super::state::{CertificationFacts, PartnerState};
use crate::rules::{Prerequisite, RuleSet, SkillingRule};
use chrono::NaiveDate;

/// Who holds what on one day: computed once per evaluation, shared by every skilling
/// subcategory of every designation.
pub(crate) struct Holders<'a> {
    /// `(individual, certification)` pairs held, active and eligible, sorted by individual.
    held: Vec<(&'a str, &'a str)>,
}

impl<'a> Holders<'a> {
    pub fn at(state: &'a PartnerState, as_of: NaiveDate, rules: &RuleSet) -> Holders<'a> {
        let held = state
            .certifications()
            .iter()
            .filter(|(_, facts)| is_active(facts, as_of))
            .filter(|((_, certification), _)| rules.is_eligible(certification, as_of))
            .map(|((individual, certification), _)| (individual.as_str(), certification.as_str()))
            .collect();
        Holders { held }
    }

    fn held(&self, certification: &str) -> u32 {
        self.held.iter().filter(|(_, c)| *c == certification).count() as u32
    }

    /// Individuals (sorted, once each) holding any of `certifications`.
    fn individuals_holding<'s>(&'s self, certifications: &'s [String]) -> impl Iterator<Item = &'a str> + 's {
        let mut last: Option<&str> = None;
        self.held.iter().filter_map(move |(individual, certification)| {
            if last == Some(*individual) || !certifications.iter().any(|c| c == certification) {
                return None;
            }
            last = Some(individual);
            Some(*individual)
        })
    }
}

/// Spec §3: among the earnings whose interval covers `as_of`, the latest must be later than
/// every removal on or before `as_of`.
fn is_active(facts: &CertificationFacts, as_of: NaiveDate) -> bool {
    let latest_earned = facts
        .earned
        .iter()
        .filter(|(earned_on, expires_on)| *earned_on <= as_of && expires_on.is_none_or(|e| as_of < e))
        .map(|(earned_on, _)| *earned_on)
        .max();
    let latest_removal = facts.removed.iter().filter(|r| **r <= as_of).max();
    latest_earned.is_some_and(|earned| latest_removal.is_none_or(|removed| earned > *removed))
}

/// Points for a subcategory's prerequisites and individuals: `prerequisite_points`, with
/// the individuals counted only once every prerequisite is met, capped at the maximum.
/// Returns the individuals counted and the points.
fn points_for(rule: &SkillingRule, ctx: &Context, met: bool, prerequisite_points: u32, individuals: u32) -> (u32, u32) {
    let counted = if met { individuals.min(rule.max_individuals(ctx.path)) } else { 0 };
    (counted, rule.max.min(prerequisite_points + rule.points_per_individual * counted))
}

/// A prerequisite's points with `held` holders.
fn prerequisite_points(p: &Prerequisite, held: u32) -> u32 {
    p.points_each * held.min(p.required)
}

/// [`score`]'s points alone.
pub(crate) fn points(rule: &SkillingRule, ctx: &Context) -> u32 {
    let (mut met, mut from_prerequisites) = (true, 0);
    for p in rule.prerequisites(ctx.path) {
        let held = ctx.holders.held(&p.certification);
        met &= held >= p.required;
        from_prerequisites += prerequisite_points(p, held);
    }
    let individuals = ctx.holders.individuals_holding(&rule.scoring_certifications).count() as u32;
    points_for(rule, ctx, met, from_prerequisites, individuals).1
}

pub(crate) fn score(rule: &SkillingRule, ctx: &Context) -> SubcategoryScore {
    let prerequisites: Vec<PrerequisiteStatus> = rule
        .prerequisites(ctx.path)
        .map(|p| {
            let held = ctx.holders.held(&p.certification);
            PrerequisiteStatus {
                certification: p.certification.clone(),
                held,
                required: p.required,
                points: prerequisite_points(p, held),
            }
        })
        .collect();
    let prerequisites_met = prerequisites.iter().all(|p| p.held >= p.required);
    let prerequisite_points: u32 = prerequisites.iter().map(|p| p.points).sum();
    let individuals: Vec<String> =
        ctx.holders.individuals_holding(&rule.scoring_certifications).map(str::to_owned).collect();
    let value = individuals.len() as u32;
    let (counted_individuals, points) = points_for(rule, ctx, prerequisites_met, prerequisite_points, value);
    SubcategoryScore {
        name: rule.name.clone(),
        points,
        max: rule.max,
        value: Some(i64::from(value)),
        explanation: Explanation::Skilling {
            prerequisites,
            prerequisites_met,
            prerequisite_points,
            individuals,
            counted_individuals,
        },
    }
}
