//! Spec §5.1: customers newly above the threshold, minus customers newly below it.

use super::Context;
use super::report::{CustomerChange, Explanation, SubcategoryScore};
use crate::calendar::Month;
use crate::events::SolutionArea;
use crate::rules::NetCustomerAddsRule;

pub(crate) fn score(rule: &NetCustomerAddsRule, area: SolutionArea, ctx: &Context) -> SubcategoryScore {
    let threshold = i128::from(rule.threshold_micros(ctx.path));
    let months = |backs: &[u32]| -> Vec<Month> {
        let mut months: Vec<Month> = backs.iter().map(|b| ctx.m.back(*b)).collect();
        months.sort();
        months
    };
    let (baseline, recent) = (months(&rule.baseline_months_back), months(&rule.recent_months_back));
    let slots = |months: &[Month]| -> Vec<usize> { months.iter().map(|m| ctx.acr.slot(*m)).collect() };
    let (baseline_slots, recent_slots) = (slots(&baseline), slots(&recent));
    let (mut added, mut lost) = (Vec::new(), Vec::new());
    for (customer_id, by_slot) in ctx.acr.customers() {
        let acr = |slot: &usize| by_slot[*slot][area.index()];
        let gained = baseline_slots.iter().all(|s| acr(s) <= 0) && recent_slots.iter().any(|s| acr(s) >= threshold);
        let dropped =
            baseline_slots.iter().any(|s| acr(s) >= threshold) && recent_slots.iter().all(|s| acr(s) < threshold);
        if gained || dropped {
            let change = CustomerChange {
                customer_id: customer_id.clone(),
                baseline_micros: baseline_slots.iter().map(acr).collect(),
                recent_micros: recent_slots.iter().map(acr).collect(),
            };
            if gained { added.push(change) } else { lost.push(change) }
        }
    }
    let value = added.len() as i64 - lost.len() as i64;
    let counted_max = i64::from(rule.max / rule.points_per_customer);
    SubcategoryScore {
        name: rule.name.clone(),
        points: value.clamp(0, counted_max) as u32 * rule.points_per_customer,
        max: rule.max,
        value: Some(value),
        explanation: Explanation::NetCustomerAdds {
            threshold_micros: rule.threshold_micros(ctx.path),
            baseline_months: baseline,
            recent_months: recent,
            added,
            lost,
        },
    }
}
