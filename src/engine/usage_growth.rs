//! Spec §5.3: growth of the area's ACR in M over the same month a year before.

use super::Context;
use super::report::{Explanation, SubcategoryScore};
use crate::calendar::Month;
use crate::events::SolutionArea;
use crate::rules::UsageGrowthRule;

/// The two months compared, their ACR, and what that scores.
struct Growth {
    current_month: Month,
    base_month: Month,
    current: i128,
    base: i128,
    points: u32,
    value: Option<i64>,
}

fn growth(rule: &UsageGrowthRule, area: SolutionArea, ctx: &Context) -> Growth {
    let current_month = ctx.m.back(rule.current_months_back);
    let base_month = ctx.m.back(rule.base_months_back);
    let total = |month: Month| -> i128 {
        let slot = ctx.acr.slot(month);
        ctx.acr.customers().map(|(_, by_slot)| by_slot[slot][area.index()]).sum()
    };
    let (current, base) = (total(current_month), total(base_month));
    let (points, value) = if current < i128::from(rule.min_current_micros) {
        (0, None)
    } else if base <= 0 {
        // Nothing last year: growth is unbounded (spec §9.6).
        (rule.max, None)
    } else {
        // An exact floor, also for negative growth: div_euclid rounds toward −∞ for a
        // positive divisor, where `/` would round toward zero.
        let percent = ((current - base) * 100).div_euclid(base);
        let value = i64::try_from(percent).unwrap_or(if percent > 0 { i64::MAX } else { i64::MIN });
        (value.clamp(0, i64::from(rule.max)) as u32, Some(value))
    };
    Growth { current_month, base_month, current, base, points, value }
}

/// [`score`]'s points alone.
pub(crate) fn points(rule: &UsageGrowthRule, area: SolutionArea, ctx: &Context) -> u32 {
    growth(rule, area, ctx).points
}

pub(crate) fn score(rule: &UsageGrowthRule, area: SolutionArea, ctx: &Context) -> SubcategoryScore {
    let g = growth(rule, area, ctx);
    SubcategoryScore {
        name: rule.name.clone(),
        points: g.points,
        max: rule.max,
        value: g.value,
        explanation: Explanation::UsageGrowth {
            current_month: g.current_month.text(),
            current_micros: g.current,
            base_month: g.base_month.text(),
            base_micros: g.base,
            min_current_micros: rule.min_current_micros,
        },
    }
}
