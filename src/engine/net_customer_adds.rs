//! Spec §5.1: customers newly above the threshold, minus customers newly below it.

use super::Context;
use super::report::{CustomerChange, Explanation, SubcategoryScore};
use crate::calendar::Month;
use crate::events::SolutionArea;
use crate::rules::NetCustomerAddsRule;

/// The months compared, oldest first, and where the ACR window keeps each.
struct Comparison {
    threshold: i128,
    baseline: Vec<Month>,
    recent: Vec<Month>,
    baseline_slots: Vec<usize>,
    recent_slots: Vec<usize>,
}

enum Change {
    Added,
    Lost,
}

impl Comparison {
    fn of(rule: &NetCustomerAddsRule, ctx: &Context) -> Comparison {
        let months = |backs: &[u32]| -> Vec<Month> {
            let mut months: Vec<Month> = backs.iter().map(|b| ctx.m.back(*b)).collect();
            months.sort();
            months
        };
        let (baseline, recent) = (months(&rule.baseline_months_back), months(&rule.recent_months_back));
        let slots = |months: &[Month]| -> Vec<usize> { months.iter().map(|m| ctx.acr.slot(*m)).collect() };
        let (baseline_slots, recent_slots) = (slots(&baseline), slots(&recent));
        Comparison {
            threshold: i128::from(rule.threshold_micros(ctx.path)),
            baseline,
            recent,
            baseline_slots,
            recent_slots,
        }
    }

    /// Whether the customer whose ACR per slot is `acr` was gained or lost.
    fn change(&self, acr: impl Fn(&usize) -> i128) -> Option<Change> {
        let t = self.threshold;
        if self.baseline_slots.iter().all(|s| acr(s) <= 0) && self.recent_slots.iter().any(|s| acr(s) >= t) {
            Some(Change::Added)
        } else if self.baseline_slots.iter().any(|s| acr(s) >= t) && self.recent_slots.iter().all(|s| acr(s) < t) {
            Some(Change::Lost)
        } else {
            None
        }
    }
}

fn points_for(rule: &NetCustomerAddsRule, value: i64) -> u32 {
    let counted_max = i64::from(rule.max / rule.points_per_customer);
    value.clamp(0, counted_max) as u32 * rule.points_per_customer
}

/// [`score`]'s points alone.
pub(crate) fn points(rule: &NetCustomerAddsRule, area: SolutionArea, ctx: &Context) -> u32 {
    let comparison = Comparison::of(rule, ctx);
    let value = ctx
        .acr
        .customers()
        .map(|(_, by_slot)| match comparison.change(|slot| by_slot[*slot][area.index()]) {
            Some(Change::Added) => 1,
            Some(Change::Lost) => -1,
            None => 0,
        })
        .sum();
    points_for(rule, value)
}

pub(crate) fn score(rule: &NetCustomerAddsRule, area: SolutionArea, ctx: &Context) -> SubcategoryScore {
    let comparison = Comparison::of(rule, ctx);
    let (mut added, mut lost) = (Vec::new(), Vec::new());
    for (customer_id, by_slot) in ctx.acr.customers() {
        let acr = |slot: &usize| by_slot[*slot][area.index()];
        let Some(change) = comparison.change(acr) else { continue };
        let details = CustomerChange {
            customer_id: customer_id.clone(),
            baseline_micros: comparison.baseline_slots.iter().map(acr).collect(),
            recent_micros: comparison.recent_slots.iter().map(acr).collect(),
        };
        match change {
            Change::Added => added.push(details),
            Change::Lost => lost.push(details),
        }
    }
    let value = added.len() as i64 - lost.len() as i64;
    SubcategoryScore {
        name: rule.name.clone(),
        points: points_for(rule, value),
        max: rule.max,
        value: Some(value),
        explanation: Explanation::NetCustomerAdds {
            threshold_micros: rule.threshold_micros(ctx.path),
            baseline_months: comparison.baseline,
            recent_months: comparison.recent,
            added,
            lost,
        },
    }
}
