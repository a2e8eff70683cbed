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
    let (mut added, mut lost) = (Vec::new(), Vec::new());
    for (customer_id, facts) in ctx.state.customers() {
        let acr_in = |months: &[Month]| -> Vec<i128> {
            months
                .iter()
                .map(|month| {
                    facts.acr.binary_search_by_key(month, |c| c.0).map_or(0, |i| facts.acr[i].1[area.index()])
                })
                .collect()
        };
        let (before, after) = (acr_in(&baseline), acr_in(&recent));
        let gained = before.iter().all(|v| *v <= 0) && after.iter().any(|v| *v >= threshold);
        let dropped = before.iter().any(|v| *v >= threshold) && after.iter().all(|v| *v < threshold);
        if gained || dropped {
            let change = CustomerChange { customer_id: customer_id.clone(), baseline_micros: before, recent_micros: after };
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
            baseline_months: baseline.iter().map(Month::to_string).collect(),
            recent_months: recent.iter().map(Month::to_string).collect(),
            added,
            lost,
        },
    }
}
