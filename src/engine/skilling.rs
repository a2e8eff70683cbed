//! Spec §5.2: prerequisite holders and scoring individuals per skilling subcategory.

use super::Context;
use super::report::{Explanation, PrerequisiteStatus, SubcategoryScore};
use super::state::{CertificationFacts, PartnerState};
use crate::rules::{RuleSet, SkillingRule};
use chrono::NaiveDate;
use std::collections::HashMap;

/// Who holds what on one day: computed once per evaluation, shared by every skilling
/// subcategory of every designation.
pub(crate) struct Holders<'a> {
    /// Individuals (sorted) with the certifications they hold, active and eligible.
    by_individual: Vec<(&'a str, Vec<&'a str>)>,
    count: HashMap<&'a str, u32>,
}

impl<'a> Holders<'a> {
    pub fn at(state: &'a PartnerState, as_of: NaiveDate, rules: &RuleSet) -> Holders<'a> {
        let mut by_individual: Vec<(&'a str, Vec<&'a str>)> = Vec::new();
        let mut count = HashMap::new();
        for ((individual, certification), facts) in state.certifications() {
            if !(is_active(facts, as_of) && rules.is_eligible(certification, as_of)) {
                continue;
            }
            *count.entry(certification.as_str()).or_insert(0) += 1;
            match by_individual.last_mut() {
                Some((last, held)) if *last == individual.as_str() => held.push(certification),
                _ => by_individual.push((individual, vec![certification])),
            }
        }
        Holders { by_individual, count }
    }

    fn held(&self, certification: &str) -> u32 {
        self.count.get(certification).copied().unwrap_or(0)
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
    let individuals: Vec<String> = ctx
        .holders
        .by_individual
        .iter()
        .filter(|(_, held)| held.iter().any(|c| rule.scoring_certifications.iter().any(|s| s == c)))
        .map(|(individual, _)| (*individual).to_owned())
        .collect();
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
