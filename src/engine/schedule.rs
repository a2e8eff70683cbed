//! When a partner's score can change with no new event: the month rolls over (ACR windows
//! move), a deployment enters or leaves its window, a certification starts, expires, is
//! removed or leaves its grace period, or another rule set takes effect. The service keeps
//! this day per partner so that a date change re-evaluates only the partners it affects.

use super::state::PartnerState;
use crate::calendar::Month;
use crate::rules::RuleBook;
use chrono::{Days, Months, NaiveDate};

/// The earliest day after `as_of` on which the partner's score may differ from its score on
/// `as_of` without any new event; `None` when it never will. The day may be early (a
/// re-evaluation that changes nothing is harmless) but is never late.
pub fn next_change_after(state: &PartnerState, as_of: NaiveDate, rules: &RuleBook) -> Option<NaiveDate> {
    let mut candidates: Vec<NaiveDate> = Vec::new();
    if !state.customers().is_empty() {
        candidates.push(Month::of(as_of).forward(1).first_day());
    }
    candidates.extend(rules.sets().iter().map(|s| s.effective_from));
    for set in rules.sets() {
        candidates.extend(
            set.catalogue.iter().filter_map(|c| c.eligible_until).filter_map(|d| d.checked_add_days(Days::new(1))),
        );
    }
    for facts in state.certifications().values() {
        for (earned_on, expires_on) in &facts.earned {
            candidates.push(*earned_on);
            candidates.extend(*expires_on);
        }
        candidates.extend(facts.removed.iter().copied());
    }
    let window = rules.sets().iter().map(|s| s.deployment_window_months()).max().unwrap_or(0);
    for deployment in state.deployments().values() {
        candidates.push(deployment.deployed_on);
        // It leaves the window on the first day d with d - window ≥ deployed_on; day-of-month
        // clamping makes that day deployed_on + window or the day after.
        if let Some(leaves) = deployment.deployed_on.checked_add_months(Months::new(window)) {
            candidates.push(leaves);
            candidates.extend(leaves.checked_add_days(Days::new(1)));
        }
    }
    candidates.into_iter().filter(|d| *d > as_of).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::evaluate;
    use crate::events::decode_json;

    /// The score's part of the digest the pipeline tells a changed score by.
    fn digest(score: &crate::engine::PartnerScore) -> u64 {
        let (mut message, plans) = crate::proto::split_plans(score.clone());
        crate::proto::encode_score(&mut message, &plans).digest
    }

    #[test]
    fn no_score_changes_before_the_next_change_day() {
        let lines = [
            r#"{"type":"acr","event_id":"a","partner_id":"P","customer_id":"C","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-05","amount_micros":"900000000"}"#,
            r#"{"type":"certification","event_id":"c","partner_id":"P","individual_id":"u","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","earned_on":"2024-01-10","expires_on":"2024-08-15"}"#,
            r#"{"type":"deployment","event_id":"d","partner_id":"P","deployment_id":"x","customer_id":"C","solution_area":"DATA_AI","service":"AKS","attribution":"PAL","deployed_on":"2023-07-20"}"#,
        ];
        let mut state = PartnerState::default();
        for l in lines {
            state.apply(&decode_json(l.as_bytes()).unwrap()).unwrap();
        }
        let rules = RuleBook::embedded();
        let mut day = NaiveDate::from_ymd_opt(2024, 7, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(2024, 10, 1).unwrap();
        let mut changes = Vec::new();
        while day < end {
            let next = next_change_after(&state, day, &rules).unwrap();
            let score = evaluate("P", &state, day, &rules);
            let mut d = day.succ_opt().unwrap();
            while d < next {
                let later = evaluate("P", &state, d, &rules);
                assert_eq!(digest(&later), digest(&score), "score changed on {d}, before the announced {next}");
                d = d.succ_opt().unwrap();
            }
            changes.push(next.to_string());
            day = next;
        }
        assert!(changes.contains(&"2024-07-20".to_string()), "deployment ages out: {changes:?}");
        assert!(changes.contains(&"2024-08-01".to_string()), "month rollover: {changes:?}");
        assert!(changes.contains(&"2024-08-15".to_string()), "certification expires: {changes:?}");
    }
}
