//! Spec §5.4: distinct deployments in the area over the trailing twelve months to as_of.

use super::Context;
use super::report::{Explanation, SubcategoryScore};
use crate::calendar::months_before;
use crate::events::SolutionArea;
use crate::rules::DeploymentsRule;

pub(crate) fn score(rule: &DeploymentsRule, area: SolutionArea, ctx: &Context) -> SubcategoryScore {
    let window_after = months_before(ctx.as_of, rule.window_months);
    let counted: Vec<String> = ctx
        .state
        .deployments()
        .iter()
        .filter(|(_, d)| {
            d.area == area
                && window_after < d.deployed_on
                && d.deployed_on <= ctx.as_of
                && rule.counts_service(&d.service)
        })
        .map(|(id, _)| id.clone())
        .collect();
    let value = counted.len() as u32;
    SubcategoryScore {
        name: rule.name.clone(),
        points: value.min(rule.max / rule.points_per_deployment) * rule.points_per_deployment,
        max: rule.max,
        value: Some(i64::from(value)),
        explanation: Explanation::Deployments { window_after, counted },
    }
}
