//! Scoring: a partner's facts and a date in, a partner capability score with explanations out.
//!
//! Pure and synchronous: nothing here does IO, so the whole of spec §3–§7 is testable in
//! microseconds. One file per subcategory; `shortfall` says what a designation is missing,
//! `history` keeps a partner's score day by day, `forecast` projects the next month boundary.

mod acr_window;
mod deployments;
mod forecast;
mod history;
mod net_customer_adds;
mod partners;
mod path;
mod report;
mod schedule;
mod shortfall;
mod skilling;
mod state;
mod usage_growth;

pub use forecast::{
    DesignationForecast, Forecast, ScoreWarning, SubcategoryForecast, forecast, forecast_refresh_after,
    forecast_with_warnings,
};
pub use history::{DaySnapshot, DesignationSnapshot, HistoryError, QualificationWindow, ScoreHistory};
pub use partners::Partners;
pub use report::{
    CustomerChange, DesignationScore, Explanation, PartnerScore, PathExplanation, PrerequisiteStatus, Shortfall,
    ShortfallStep, SubcategoryScore,
};
pub use schedule::next_change_after;
pub use state::{Applied, PartnerState, StateError};

use crate::calendar::{Month, last_complete_month};
use crate::rules::{Designation, Path, QualificationRule, RuleBook, RuleSet, Subcategory};
use chrono::NaiveDate;
use smallvec::SmallVec;
use std::sync::Arc;

/// What every subcategory rule evaluates against: computed once per evaluation.
pub(crate) struct Context<'a> {
    pub state: &'a PartnerState,
    pub as_of: NaiveDate,
    /// The last complete month before `as_of` (spec §1).
    pub m: Month,
    pub path: Path,
    pub rules: &'a RuleSet,
    pub acr: acr_window::AcrWindow<'a>,
    pub holders: skilling::Holders<'a>,
}

/// Scores one partner on `as_of` under the rule set in force that day (spec §3–§7).
pub fn evaluate(partner_id: &str, state: &PartnerState, as_of: NaiveDate, rules: &RuleBook) -> PartnerScore {
    let (set, ctx, path) = context(state, as_of, rules);
    PartnerScore {
        partner_id: partner_id.to_owned(),
        as_of,
        path: path.path,
        ttm_acr_micros: path.ttm_acr_micros,
        path_explanation: path.explanation,
        designations: set.designations.iter().enumerate().map(|(i, d)| designation(i, d, &ctx)).collect(),
    }
}

/// The points [`evaluate`] gives on `as_of`, without the explanations and plans: what a
/// past day of a partner's history and a forecast read. A batch that brings a backfilled
/// partner's history up to date evaluates every day its score may have changed since the
/// oldest new fact, a dozen or more, and putting each day's explanations together (customer
/// ids, individuals, deployment ids, month names, then dropped) cost more than its points.
pub(crate) fn day_points<'a>(state: &PartnerState, as_of: NaiveDate, rules: &'a RuleBook) -> DayPoints<'a> {
    let (set, ctx, _) = context(state, as_of, rules);
    let points = set
        .designations
        .iter()
        .flat_map(|d| d.subcategories.iter().map(move |sub| (d.solution_area, sub)))
        .map(|(area, sub)| match sub {
            Subcategory::NetCustomerAdds(rule) => net_customer_adds::points(rule, area, &ctx),
            Subcategory::Skilling(rule) => skilling::points(rule, &ctx),
            Subcategory::UsageGrowth(rule) => usage_growth::points(rule, area, &ctx),
            Subcategory::Deployments(rule) => deployments::points(rule, area, &ctx),
        })
        .collect();
    DayPoints { set, path: ctx.path, points }
}

/// A day's points as numbers beside the rule set that names them. Most past days a history
/// evaluates score the same as the day before and are dropped, so the names of a
/// [`DaySnapshot`] (a String per designation and subcategory, the same for every partner)
/// are copied only for a day that is kept.
pub(crate) struct DayPoints<'a> {
    set: &'a RuleSet,
    path: Path,
    /// Every designation's subcategory points in rule order, one designation after another
    /// (inline up to 32: the default rule set has 14).
    points: SmallVec<[u32; 32]>,
}

/// One designation's points on a day, from [`DayPoints`].
pub(crate) struct DesignationPoints<'a> {
    pub rule: &'a Designation,
    /// The subcategories' points, in `rule`'s order.
    pub points: &'a [u32],
    pub total: u32,
    pub qualified: bool,
}

impl DayPoints<'_> {
    pub fn designations(&self) -> impl Iterator<Item = DesignationPoints<'_>> {
        let mut rest = &self.points[..];
        self.set.designations.iter().map(move |rule| {
            let (points, after) = rest.split_at(rule.subcategories.len());
            rest = after;
            let (total, qualified) = standing(points.iter().copied(), &self.set.qualification);
            DesignationPoints { rule, points, total, qualified }
        })
    }

    /// Whether `snapshot` holds the same day's score: names, points and standing (the
    /// total is the points' sum).
    pub fn matches(&self, snapshot: &DaySnapshot) -> bool {
        snapshot.path == self.path
            && snapshot.designations.len() == self.set.designations.len()
            && snapshot.designations.iter().zip(self.designations()).all(|(kept, day)| {
                kept.designation == day.rule.name
                    && kept.qualified == day.qualified
                    && kept.points.len() == day.points.len()
                    && kept
                        .points
                        .iter()
                        .zip(day.rule.subcategories.iter().zip(day.points))
                        .all(|((name, points), (sub, day_points))| name == sub.name() && points == day_points)
            })
    }

    pub fn snapshot(&self) -> DaySnapshot {
        DaySnapshot {
            path: self.path,
            designations: self
                .designations()
                .map(|d| DesignationSnapshot {
                    designation: d.rule.name.clone(),
                    total: d.total,
                    qualified: d.qualified,
                    points: d
                        .rule
                        .subcategories
                        .iter()
                        .map(|s| s.name().to_owned())
                        .zip(d.points.iter().copied())
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The rule set in force on `as_of`, what its subcategory rules evaluate against, and the
/// path decided (spec §4).
fn context<'s, 'r: 's>(
    state: &'s PartnerState,
    as_of: NaiveDate,
    rules: &'r RuleBook,
) -> (&'r RuleSet, Context<'s>, path::PathDecision) {
    let set = rules.for_date(as_of);
    let m = last_complete_month(as_of);
    let path = path::decide(state, m, &set.path);
    let ctx = Context {
        state,
        as_of,
        m,
        path: path.path,
        rules: set,
        acr: acr_window::AcrWindow::build(state, m, set),
        holders: skilling::Holders::at(state, as_of, set),
    };
    (set, ctx, path)
}

/// `index`: the designation's place in its rule set.
fn designation(index: usize, designation: &Designation, ctx: &Context) -> DesignationScore {
    let area = designation.solution_area;
    let subcategories: Vec<SubcategoryScore> = designation
        .subcategories
        .iter()
        .map(|sub| match sub {
            Subcategory::NetCustomerAdds(rule) => net_customer_adds::score(rule, area, ctx),
            Subcategory::Skilling(rule) => skilling::score(rule, ctx),
            Subcategory::UsageGrowth(rule) => usage_growth::score(rule, area, ctx),
            Subcategory::Deployments(rule) => deployments::score(rule, area, ctx),
        })
        .collect();
    let (total, qualified) = standing(subcategories.iter().map(|s| s.points), &ctx.rules.qualification);
    let shortfall = (!qualified).then(|| {
        let scene = shortfall::Scene { rules: ctx.rules, path: ctx.path, m: ctx.m };
        shortfall::plan(index, designation, &subcategories, total, &scene)
    });
    DesignationScore { designation: designation.name.clone(), total, qualified, subcategories, shortfall }
}

/// A designation's total and whether it qualifies, from its subcategories' points (spec §7:
/// a minimum total, and a minimum in every subcategory).
fn standing(mut points: impl Iterator<Item = u32> + Clone, q: &QualificationRule) -> (u32, bool) {
    let total = points.clone().sum();
    (total, total >= q.min_total && points.all(|p| p >= q.min_subcategory_points))
}

/// The shortfall plan [`evaluate`] gives designation `name` scored on `as_of` on `path` with
/// these subcategory scores, worked out again from a report stored without it. `None` when
/// it qualifies, or when the rule set in force that day has no such designation or other
/// subcategories (the rules changed since).
pub fn shortfall_of(
    name: &str,
    subcategories: &[SubcategoryScore],
    path: Path,
    as_of: NaiveDate,
    rules: &RuleBook,
) -> Option<Arc<Shortfall>> {
    let set = rules.for_date(as_of);
    let (index, designation) = set.designations.iter().enumerate().find(|(_, d)| d.name == name)?;
    let same_rules = designation.subcategories.len() == subcategories.len()
        && designation.subcategories.iter().zip(subcategories).all(|(rule, score)| {
            rule.name() == score.name
                && matches!(
                    (rule, &score.explanation),
                    (Subcategory::NetCustomerAdds(_), Explanation::NetCustomerAdds { .. })
                        | (Subcategory::Skilling(_), Explanation::Skilling { .. })
                        | (Subcategory::UsageGrowth(_), Explanation::UsageGrowth { .. })
                        | (Subcategory::Deployments(_), Explanation::Deployments { .. })
                )
        });
    let (total, qualified) = standing(subcategories.iter().map(|s| s.points), &set.qualification);
    (same_rules && !qualified).then(|| {
        let scene = shortfall::Scene { rules: set, path, m: last_complete_month(as_of) };
        shortfall::plan(index, designation, subcategories, total, &scene)
    })
}

#[cfg(test)]
mod tests;
