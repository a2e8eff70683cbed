//! Spec §5.2: prerequisite holders and scoring individuals per skilling subcategory.

use super::Context;
use super::report::{Explanation, PrerequisiteStatus, SubcategoryScore};
use super::state::{CertificationFacts, PartnerState};
use crate::rules::{RuleSet, SkillingRule};
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
    fn individuals_holding(&self, certifications: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (individual, certification) in &self.held {
            if out.last().is_some_and(|last| last == individual) {
                continue;
            }
            if certifications.iter().any(|c| c == certification) {
                out.push((*individual).to_owned());
            }
        }
        out
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

pub(crate) fn score(rule: &SkillingRule, ctx: &Context) -> SubcategoryScore {
    let prerequisites: Vec<PrerequisiteStatus> = rule
        .prerequisites(ctx.path)
        .map(|p| {
            let held = ctx.holders.held(&p.certification);
            PrerequisiteStatus {
                certification: p.certification.clone(),
                held,
                required: p.required,
                points: p.points_each * held.min(p.required),
            }
        })
        .collect();
    let prerequisites_met = prerequisites.iter().all(|p| p.held >= p.required);
    let prerequisite_points: u32 = prerequisites.iter().map(|p| p.points).sum();
    let individuals = ctx.holders.individuals_holding(&rule.scoring_certifications);
    let value = individuals.len() as u32;
    let counted_individuals = if prerequisites_met { value.min(rule.max_individuals(ctx.path)) } else { 0 };
    SubcategoryScore {
        name: rule.name.clone(),
        points: rule.max.min(prerequisite_points + rule.points_per_individual * counted_individuals),
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
