//! What a designation is missing to qualify, and a cheap way to get there.
//!
//! Every subcategory offers cumulative options ("1 more deployment", "2 more deployments",
//! ...) with the points each would add, derived from the rules. The plan first lifts every
//! empty subcategory to its minimum, then covers the remaining points with the option that
//! needs the fewest actions and overshoots least.

use super::Context;
use super::report::{Explanation, Shortfall, ShortfallStep, SubcategoryScore};
use crate::rules::{Designation, Subcategory};

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

pub(crate) fn plan(designation: &Designation, scores: &[SubcategoryScore], total: u32, ctx: &Context) -> Shortfall {
    let q = &ctx.rules.qualification;
    let points_needed = q.min_total.saturating_sub(total);
    let empty_subcategories: Vec<String> =
        scores.iter().filter(|s| s.points < q.min_subcategory_points).map(|s| s.name.clone()).collect();
    let options: Vec<Vec<Choice>> =
        designation.subcategories.iter().zip(scores).map(|(rule, score)| options(rule, score, ctx)).collect();

    // chosen[i]: index into options[i] of the option taken for subcategory i.
    let mut chosen: Vec<Option<usize>> = vec![None; scores.len()];
    let mut reachable = true;
    for (i, score) in scores.iter().enumerate() {
        if score.points < q.min_subcategory_points {
            let lift = q.min_subcategory_points - score.points;
            match options[i].iter().position(|o| o.gain >= lift) {
                Some(at) => chosen[i] = Some(at),
                None => reachable = false,
            }
        }
    }
    let gained = |chosen: &[Option<usize>]| -> u32 {
        chosen.iter().zip(&options).map(|(c, o)| c.map_or(0, |at| o[at].gain)).sum()
    };
    while reachable && gained(&chosen) < points_needed {
        let rest = points_needed - gained(&chosen);
        // (actions, overshoot, subcategory, option): covering options first, fewest actions.
        let mut best: Option<(bool, u32, i64, usize, usize)> = None;
        for (i, opts) in options.iter().enumerate() {
            let (base_actions, base_gain) = chosen[i].map_or((0, 0), |at| (opts[at].actions, opts[at].gain));
            for (at, o) in opts.iter().enumerate().skip(chosen[i].map_or(0, |c| c + 1)) {
                let extra = o.gain.saturating_sub(base_gain);
                if extra == 0 {
                    continue;
                }
                let covers = extra >= rest;
                let key = if covers {
                    (true, o.actions.saturating_sub(base_actions), i64::from(extra - rest), i, at)
                } else {
                    (false, 0, -i64::from(extra), i, at)
                };
                let better = match &best {
                    None => true,
                    Some(b) => (!key.0, key.1, key.2) < (!b.0, b.1, b.2),
                };
                if better {
                    best = Some(key);
                }
            }
        }
        match best {
            Some((_, _, _, i, at)) => chosen[i] = Some(at),
            None => reachable = false,
        }
    }

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
fn describe(action: &Action, rule: &Subcategory, explanation: &Explanation, ctx: &Context) -> String {
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
fn options(rule: &Subcategory, score: &SubcategoryScore, ctx: &Context) -> Vec<Choice> {
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
