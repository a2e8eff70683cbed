//! What a designation is missing to qualify, and a cheap way to get there.
//!
//! Every subcategory offers cumulative options ("1 more deployment", "2 more deployments",
//! ...) with the points each would add, derived from the rules. The plan takes at most one
//! option per subcategory: the combination with the fewest actions (customers, people,
//! deployments, growth points) that lifts every empty subcategory to its minimum and covers
//! the missing points, overshooting least among equals. A designation has a handful of
//! subcategories and at most 100 points, so an exact search over the points reached is
//! cheap: no greedy guess.

use super::report::{Explanation, Shortfall, ShortfallStep, SubcategoryScore};
use crate::calendar::Month;
use crate::rules::{Designation, Path, RuleSet, Subcategory};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// One way to add points to a subcategory: `actions` things to do, worth `gain` points.
struct Choice {
    actions: u32,
    gain: u32,
    action: Action,
}

/// What a choice asks for; put into words only for the choices a plan takes, as most
/// evaluations consider dozens of choices and use a few.
enum Action {
    Customers(u32),
    /// Missing prerequisite holders added (filling each prerequisite in rule order before
    /// the next, so a count says which), then more scoring individuals.
    Skilling {
        holders_added: u32,
        individuals: u32,
    },
    Growth {
        percent: u32,
        needs_minimum: bool,
    },
    Deployments(u32),
}

/// Plans already worked out, by everything a plan depends on (see [`PlanKey`]). Most
/// partners that qualify for nothing sit in a few small states (a customer or two, no
/// certifications, no growth yet), and each such state asks for the same plan. Working it
/// out and putting its steps into words was most of the cost of scoring such a partner
/// (a profile of the service under a stream of new partners: 17 % of its time), and the
/// plan makes up three quarters of the score's bytes. Bounded: emptied when full, since a
/// plan costs microseconds to work out again. foldhash: every unqualified designation of
/// every scored partner looks its key (two dozen integers) up, and std's SipHash of it was
/// 2 % of a new partner's instructions.
static PLANS: LazyLock<Mutex<foldhash::HashMap<PlanKey, Arc<Shortfall>>>> = LazyLock::new(Mutex::default);
const PLANS_KEPT: usize = 8192;

/// What a plan reads of an evaluation besides the designation's scores: the rule set in
/// force, the partner's path and the last complete month.
pub(crate) struct Scene<'a> {
    pub rules: &'a RuleSet,
    pub path: Path,
    pub m: Month,
}

/// What a designation's plan is a function of: the rule set (by id), the designation's place
/// in it, the path (prerequisites and caps), the month scored (a growth step names it), and
/// per subcategory its points, value, prerequisite holders and whether the ACR minimum for
/// growth is met (implied by growth's points and value under today's rule, and kept so that
/// a change there cannot serve a wrong plan). Customer ids, individuals and deployment ids
/// never enter a plan.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PlanKey(Vec<i64>);

impl PlanKey {
    fn of(index: usize, designation: &Designation, scores: &[SubcategoryScore], ctx: &Scene) -> PlanKey {
        let mut key = vec![ctx.rules.id() as i64, index as i64, ctx.path as i64, i64::from(ctx.m.index())];
        for (rule, score) in designation.subcategories.iter().zip(scores) {
            key.extend([i64::from(score.points), i64::from(score.value.is_some()), score.value.unwrap_or(0)]);
            match (rule, &score.explanation) {
                (Subcategory::Skilling(_), Explanation::Skilling { prerequisites, .. }) => {
                    key.push(prerequisites.len() as i64);
                    key.extend(prerequisites.iter().flat_map(|p| [i64::from(p.held), i64::from(p.required)]));
                }
                (Subcategory::UsageGrowth(r), Explanation::UsageGrowth { current_micros, .. }) => {
                    key.push(i64::from(*current_micros < i128::from(r.min_current_micros)));
                }
                _ => {}
            }
        }
        PlanKey(key)
    }
}

/// What `designation` (at `index` in its rule set) is missing, given its subcategory scores.
pub(crate) fn plan(
    index: usize,
    designation: &Designation,
    scores: &[SubcategoryScore],
    total: u32,
    ctx: &Scene,
) -> Arc<Shortfall> {
    let key = PlanKey::of(index, designation, scores, ctx);
    let known = PLANS.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
    if let Some(known) = known {
        return known;
    }
    let worked_out = Arc::new(work_out(designation, scores, total, ctx));
    let mut plans = PLANS.lock().unwrap_or_else(PoisonError::into_inner);
    if plans.len() >= PLANS_KEPT {
        plans.clear();
    }
    plans.insert(key, Arc::clone(&worked_out));
    worked_out
}

fn work_out(designation: &Designation, scores: &[SubcategoryScore], total: u32, ctx: &Scene) -> Shortfall {
    let q = &ctx.rules.qualification;
    let points_needed = q.min_total.saturating_sub(total);
    let empty_subcategories: Vec<String> =
        scores.iter().filter(|s| s.points < q.min_subcategory_points).map(|s| s.name.clone()).collect();
    let options: Vec<Vec<Choice>> =
        designation.subcategories.iter().zip(scores).map(|(rule, score)| options(rule, score, ctx)).collect();

    let chosen = cheapest(&options, scores, q.min_subcategory_points, points_needed);
    let reachable = chosen.is_some();
    let chosen = chosen.unwrap_or_default();
    let steps: Vec<ShortfallStep> = if reachable {
        chosen
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.map(|at| ShortfallStep {
                    subcategory: scores[i].name.clone(),
                    action: describe(
                        &options[i][at].action,
                        &designation.subcategories[i],
                        &scores[i].explanation,
                        ctx,
                    ),
                    points: options[i][at].gain,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let summary = summary(points_needed, &empty_subcategories, q.min_subcategory_points, &steps, reachable);
    Shortfall { points_needed, empty_subcategories, steps, summary }
}

/// The option per subcategory (`None`: leave it) of the cheapest qualifying combination, or
/// `None` when no combination qualifies. A knapsack by groups over the points gained: for
/// every total gain reachable with the first subcategories, the fewest actions reaching it
/// (then the least gain; the first found on full ties, so the plan is deterministic) and the
/// choice that got there.
///
/// Gains at or above `points_needed` share the table's last cell: the order "fewest
/// actions, then least gain" is kept by adding the same actions and gain to both sides, so
/// the best way past the target so far stays the best however it is extended. The table is
/// then as wide as the points missing, not the rule set's points: this runs on every
/// evaluation of an unqualified designation, and a nearly qualified one searches a few cells.
fn cheapest(
    options: &[Vec<Choice>],
    scores: &[SubcategoryScore],
    min_points: u32,
    points_needed: u32,
) -> Option<Vec<Option<usize>>> {
    /// How a cell was first reached most cheaply: actions, gain, and (cell before this
    /// subcategory, option taken).
    type Cell = Option<(u32, u32, usize, Option<usize>)>;
    let width = points_needed as usize + 1;
    let mut layers: Vec<Cell> = vec![None; width * (options.len() + 1)];
    layers[0] = Some((0, 0, 0, None));
    let mut fewest_above = vec![u32::MAX; width];
    for (i, (opts, score)) in options.iter().zip(scores).enumerate() {
        let lift = min_points.saturating_sub(score.points);
        let (done, rest) = layers.split_at_mut(width * (i + 1));
        let previous = &done[width * i..];
        let next = &mut rest[..width];
        // A cell reached with more actions than some higher cell cannot be on the best
        // path: whatever completes it completes the higher one too, with fewer actions.
        // Skipping such cells (strictly worse only, so ties resolve as before) leaves the
        // frontier of points against actions, a fraction of the cells.
        let mut fewest = u32::MAX;
        for at in (0..width).rev() {
            fewest_above[at] = fewest;
            if let Some((actions, ..)) = previous[at] {
                fewest = fewest.min(actions);
            }
        }
        for (at, cell) in previous.iter().enumerate() {
            let Some((actions, gain, _, _)) = *cell else { continue };
            if actions > fewest_above[at] {
                continue;
            }
            let leave = (lift == 0).then_some((0, 0, None));
            let take =
                opts.iter().enumerate().filter(|(_, o)| o.gain >= lift).map(|(k, o)| (o.gain, o.actions, Some(k)));
            for (g, a, pick) in leave.into_iter().chain(take) {
                let to = (at + g as usize).min(width - 1);
                let candidate = (actions + a, gain + g);
                if next[to].is_none_or(|(best_a, best_g, _, _)| candidate < (best_a, best_g)) {
                    next[to] = Some((candidate.0, candidate.1, at, pick));
                }
                // Options are cumulative (each asks for at least the actions and gives at
                // least the gain of the one before), so once one reaches the last cell every
                // later one lands there too at no lower cost: none can win. Without this the
                // search tried every growth percentage from every cell, and was most of the
                // time spent scoring a partner that qualifies for nothing.
                if to == width - 1 {
                    break;
                }
            }
        }
    }
    let mut at = width - 1;
    layers[width * options.len() + at]?;
    let mut picks = vec![None; options.len()];
    for i in (0..options.len()).rev() {
        let (_, _, before, pick) = layers[width * (i + 1) + at].expect("a reached cell has a way there");
        picks[i] = pick;
        at = before;
    }
    Some(picks)
}

fn summary(points_needed: u32, empty: &[String], min_points: u32, steps: &[ShortfallStep], reachable: bool) -> String {
    let mut needs = Vec::new();
    if points_needed > 0 {
        needs.push(format!("{points_needed} more point{}", plural(points_needed)));
    }
    if !empty.is_empty() {
        needs.push(format!("at least {min_points} point{} in {}", plural(min_points), empty.join(", ")));
    }
    let how = if reachable {
        steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>().join(", ")
    } else {
        "not reachable under the current rules".to_owned()
    };
    format!("needs {}: {how}", needs.join(" and "))
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// "1 more deployment", "2 more deployments"; `what` is singular, `plural_what` plural.
fn counted(n: u32, what: &str, plural_what: &str) -> String {
    format!("{n} more {}", if n == 1 { what } else { plural_what })
}

/// Puts a chosen action into words.
fn describe(action: &Action, rule: &Subcategory, explanation: &Explanation, ctx: &Scene) -> String {
    match (action, rule, explanation) {
        (Action::Customers(k), _, _) => counted(*k, "net new customer", "net new customers"),
        (Action::Deployments(k), _, _) => counted(*k, "deployment", "deployments"),
        (Action::Growth { percent, needs_minimum: false }, _, _) => format!("usage growth of {percent}%"),
        (Action::Growth { percent, needs_minimum: true }, Subcategory::UsageGrowth(r), _) => format!(
            "at least {} USD of ACR in {} and usage growth of {percent}%",
            r.min_current_micros / 1_000_000,
            ctx.m.back(r.current_months_back)
        ),
        (Action::Skilling { holders_added, individuals }, _, Explanation::Skilling { prerequisites, .. }) => {
            let mut left = *holders_added;
            let mut parts: Vec<String> = Vec::new();
            for p in prerequisites {
                let added = p.required.saturating_sub(p.held).min(left);
                left -= added;
                if added > 0 {
                    parts.push(format!("{} of {}", counted(added, "holder", "holders"), p.certification));
                }
            }
            if *individuals > 0 {
                parts.push(counted(
                    *individuals,
                    "individual with a scoring certification",
                    "individuals with a scoring certification",
                ));
            }
            parts.join(", ")
        }
        _ => unreachable!("an action always matches its subcategory"),
    }
}

/// The cumulative options of one subcategory, cheapest first.
fn options(rule: &Subcategory, score: &SubcategoryScore, ctx: &Scene) -> Vec<Choice> {
    let mut out = Vec::new();
    let value = score.value.unwrap_or(0);
    match (rule, &score.explanation) {
        (Subcategory::NetCustomerAdds(r), _) => {
            let cap = i64::from(r.max / r.points_per_customer);
            for k in 1..=(cap - value.min(cap)).max(0) as u32 {
                let points = (value + i64::from(k)).clamp(0, cap) as u32 * r.points_per_customer;
                if points > score.points {
                    out.push(Choice { actions: k, gain: points - score.points, action: Action::Customers(k) });
                }
            }
        }
        (Subcategory::Skilling(r), Explanation::Skilling { prerequisites, .. }) => {
            let max_individuals = r.max_individuals(ctx.path);
            let individuals = value as u32;
            let each: Vec<u32> = r.prerequisites(ctx.path).map(|p| p.points_each).collect();
            let points = |extra: &[u32], more: u32| -> u32 {
                let mut points = 0;
                let mut met = true;
                for ((p, each), e) in prerequisites.iter().zip(&each).zip(extra) {
                    points += each * (p.held + e).min(p.required);
                    met &= p.held + e >= p.required;
                }
                let scoring = if met { r.points_per_individual * (individuals + more).min(max_individuals) } else { 0 };
                r.max.min(points + scoring)
            };
            // First the missing prerequisite holders, one at a time, then more individuals.
            let mut extra = vec![0; prerequisites.len()];
            let mut actions = 0;
            for (i, p) in prerequisites.iter().enumerate() {
                while p.held + extra[i] < p.required {
                    extra[i] += 1;
                    actions += 1;
                    let gain = points(&extra, 0).saturating_sub(score.points);
                    if gain > 0 {
                        out.push(Choice {
                            actions,
                            gain,
                            action: Action::Skilling { holders_added: actions, individuals: 0 },
                        });
                    }
                }
            }
            for more in 1..=max_individuals.saturating_sub(individuals) {
                let gain = points(&extra, more).saturating_sub(score.points);
                if gain > 0 {
                    out.push(Choice {
                        actions: actions + more,
                        gain,
                        action: Action::Skilling { holders_added: actions, individuals: more },
                    });
                }
            }
        }
        (Subcategory::UsageGrowth(r), Explanation::UsageGrowth { current_micros, .. }) => {
            let needs_minimum = *current_micros < i128::from(r.min_current_micros);
            for percent in score.points + 1..=r.max {
                let gain = percent - score.points;
                out.push(Choice { actions: gain, gain, action: Action::Growth { percent, needs_minimum } });
            }
        }
        (Subcategory::Deployments(r), _) => {
            let cap = r.max / r.points_per_deployment;
            for k in 1..=cap.saturating_sub(value as u32) {
                out.push(Choice { actions: k, gain: k * r.points_per_deployment, action: Action::Deployments(k) });
            }
        }
        _ => unreachable!("a subcategory's explanation always matches its rule"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::report::Explanation;
    use proptest::prelude::*;

    fn score(points: u32) -> SubcategoryScore {
        SubcategoryScore {
            name: String::new(),
            points,
            max: 0,
            value: None,
            explanation: Explanation::Deployments { window_after: chrono::NaiveDate::MIN, counted: Vec::new() },
        }
    }

    /// The fewest actions, then the least gain, over every combination (one option or none
    /// per subcategory).
    fn exhaustive(options: &[Vec<Choice>], scores: &[SubcategoryScore], min: u32, needed: u32) -> Option<(u32, u32)> {
        let mut best: Option<(u32, u32)> = None;
        let mut picks = vec![0usize; options.len()];
        loop {
            let mut ok = true;
            let (mut actions, mut gain) = (0, 0);
            for ((pick, opts), s) in picks.iter().zip(options).zip(scores) {
                let (a, g) = if *pick == 0 { (0, 0) } else { (opts[pick - 1].actions, opts[pick - 1].gain) };
                ok &= s.points + g >= min;
                actions += a;
                gain += g;
            }
            if ok && gain >= needed {
                best = Some(best.map_or((actions, gain), |b| b.min((actions, gain))));
            }
            let mut i = 0;
            loop {
                if i == picks.len() {
                    return best;
                }
                picks[i] += 1;
                if picks[i] <= options[i].len() {
                    break;
                }
                picks[i] = 0;
                i += 1;
            }
        }
    }

    proptest! {
        #[test]
        fn the_plan_takes_the_fewest_actions_then_the_least_gain_of_any_combination(
            groups in prop::collection::vec(
                (0u32..3, prop::collection::vec((1u32..4, 1u32..15), 0..6)),
                1..5,
            ),
            needed in 0u32..60,
        ) {
            let scores: Vec<SubcategoryScore> = groups.iter().map(|(points, _)| score(*points)).collect();
            // Options are cumulative: each asks for more and gives more than the one before.
            let options: Vec<Vec<Choice>> = groups
                .iter()
                .map(|(_, steps)| {
                    let (mut actions, mut gain) = (0, 0);
                    steps
                        .iter()
                        .map(|(a, g)| {
                            actions += a;
                            gain += g;
                            Choice { actions, gain, action: Action::Deployments(actions) }
                        })
                        .collect()
                })
                .collect();
            let plan = cheapest(&options, &scores, 1, needed);
            let best = exhaustive(&options, &scores, 1, needed);
            prop_assert_eq!(plan.is_some(), best.is_some());
            if let Some(picks) = plan {
                let (mut actions, mut gain) = (0, 0);
                for ((pick, opts), s) in picks.iter().zip(&options).zip(&scores) {
                    let (a, g) = pick.map_or((0, 0), |at| (opts[at].actions, opts[at].gain));
                    prop_assert!(s.points + g >= 1, "an empty subcategory is lifted");
                    actions += a;
                    gain += g;
                }
                prop_assert!(gain >= needed);
                prop_assert_eq!(Some((actions, gain)), best);
            }
        }
    }
}
