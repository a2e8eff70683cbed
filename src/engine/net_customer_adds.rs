//! Spec §5.1: customers newly above the threshold, minus customers newly below it.

use super::Context;
use super::report::{CustomerChange, Explanation, SubcategoryScore};
use crate::calendar::Month;
use crate::events::SolutionArea;
use crate::rules::NetCustomerAddsRule;
use smallvec::SmallVec;

/// The threshold and where the ACR window keeps the months compared, oldest first. Inline,
/// not on the heap: every day a new partner's history is brought up to date compares its
/// customers once per designation, and allocating the months and slots each time was
/// most of the comparison's cost. Only the explanation needs the months themselves.
struct Comparison {
    threshold: i128,
    baseline_slots: SmallVec<[usize; 4]>,
    recent_slots: SmallVec<[usize; 4]>,
}

enum Change {
    Added,
    Lost,
}

impl Comparison {
    fn of(rule: &NetCustomerAddsRule, ctx: &Context) -> Comparison {
        // The window's slots are in month order, so sorting the slots sorts the months.
        let slots = |backs: &[u32]| -> SmallVec<[usize; 4]> {
            let mut slots: SmallVec<[usize; 4]> = backs.iter().map(|b| ctx.acr.slot(ctx.m.back(*b))).collect();
            slots.sort_unstable();
            slots
        };
        Comparison {
            threshold: i128::from(rule.threshold_micros(ctx.path)),
            baseline_slots: slots(&rule.baseline_months_back),
            recent_slots: slots(&rule.recent_months_back),
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

/// The months `backs` before the month scored, oldest first.
fn months(backs: &[u32], ctx: &Context) -> Vec<Month> {
    let mut months: Vec<Month> = backs.iter().map(|b| ctx.m.back(*b)).collect();
    months.sort_unstable();
    months
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
            baseline_months: months(&rule.baseline_months_back, ctx),
            recent_months: months(&rule.recent_months_back, ctx),
            added,
            lost,
        },
    }
}
