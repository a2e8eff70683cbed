//! Spec §5.4: distinct deployments in the area over the trailing twelve months to as_of.

use super::Context;
use super::report::{Explanation, SubcategoryScore};
use crate::calendar::months_before;
use crate::events::SolutionArea;
use crate::rules::DeploymentsRule;
use chrono::NaiveDate;

/// The ids of the deployments that count, deployed after `window_after`.
fn counted<'s>(
    rule: &'s DeploymentsRule,
    area: SolutionArea,
    window_after: NaiveDate,
    ctx: &Context<'s>,
) -> impl Iterator<Item = &'s String> {
    let as_of = ctx.as_of;
    ctx.state
        .deployments()
        .iter()
        .filter(move |(_, d)| {
            d.area == area && window_after < d.deployed_on && d.deployed_on <= as_of && rule.counts_service(&d.service)
        })
        .map(|(id, _)| id)
}

fn points_for(rule: &DeploymentsRule, value: u32) -> u32 {
    value.min(rule.max / rule.points_per_deployment) * rule.points_per_deployment
}

/// [`score`]'s points alone.
pub(crate) fn points(rule: &DeploymentsRule, area: SolutionArea, ctx: &Context) -> u32 {
    let window_after = months_before(ctx.as_of, rule.window_months);
    points_for(rule, counted(rule, area, window_after, ctx).count() as u32)
}

pub(crate) fn score(rule: &DeploymentsRule, area: SolutionArea, ctx: &Context) -> SubcategoryScore {
    let window_after = months_before(ctx.as_of, rule.window_months);
    let counted: Vec<String> = counted(rule, area, window_after, ctx).cloned().collect();
    let value = counted.len() as u32;
    SubcategoryScore {
        name: rule.name.clone(),
        points: points_for(rule, value),
        max: rule.max,
        value: Some(i64::from(value)),
        explanation: Explanation::Deployments { window_after, counted },
    }
}
