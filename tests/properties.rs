//! Properties of the scoring core over generated event streams (spec §2 "Order
//! independence"): order, duplicates, incremental application, encoding and pruning never
//! change a score.

use chrono::{Duration, NaiveDate};
use pcs::engine::{DaySnapshot, PartnerState, ScoreHistory, evaluate};
use pcs::events::{Event, decode_json};
use pcs::rules::RuleBook;
use proptest::prelude::*;
use prost::Message;
use serde_json::json;

const CERTS: [&str; 8] = [
    "AZURE_ADMINISTRATOR_ASSOCIATE",
    "AZURE_SOLUTIONS_ARCHITECT_EXPERT",
    "AZURE_DATA_ENGINEER_ASSOCIATE",
    "AZURE_DEVELOPER_ASSOCIATE",
    "AZURE_IOT_DEVELOPER_SPECIALTY",
    "AZURE_NETWORK_ENGINEER_ASSOCIATE",
    "AZURE_VIRTUAL_DESKTOP_SPECIALTY",
    "NOT_IN_CATALOGUE",
];
const AREAS: [&str; 3] = ["DATA_AI", "DIGITAL_APP_INNOVATION", "INFRASTRUCTURE"];

fn day(offset: i64) -> String {
    (NaiveDate::from_ymd_opt(2022, 6, 1).unwrap() + Duration::days(offset)).to_string()
}

/// One event body (without id) from a small domain, so facts collide and interact.
fn body() -> impl Strategy<Value = serde_json::Value> {
    let acr = (0..6u8, 0..5u8, 0..3usize, 0..5u8, 0..36i32, -300i64..3000).prop_map(|(c, seg, area, attr, m, usd)| {
        let segment = ["SMB", "SMC", "ENTERPRISE", "UNKNOWN", "SMB"][seg as usize];
        let attribution = ["PAL", "DPOR", "CSP", "OTHER", "PAL"][attr as usize];
        let month = format!("{}-{:02}", 2022 + m / 12, m % 12 + 1);
        json!({"type":"acr","customer_id":format!("C{c}"),"customer_segment":segment,"solution_area":AREAS[area],
               "attribution":attribution,"month":month,"amount_micros":(usd * 1_000_000 + 7).to_string()})
    });
    let earned = (0..6u8, 0..CERTS.len(), 0..900i64, proptest::option::of(1..700i64)).prop_map(|(u, c, on, len)| {
        json!({"type":"certification","individual_id":format!("u{u}"),"certification":CERTS[c],
               "earned_on":day(on),"expires_on":len.map(|l| day(on + l))})
    });
    let removed = (0..6u8, 0..CERTS.len(), 0..900i64).prop_map(|(u, c, on)| {
        json!({"type":"certification","individual_id":format!("u{u}"),"certification":CERTS[c],
               "status":"REMOVED","removed_on":day(on)})
    });
    let deployment = (0..6u8, 0..3usize, 0..3u8, 0..3u8, 0..900i64).prop_map(|(d, area, svc, attr, on)| {
        let service = ["AKS", "Virtual Machines", "Virtual Machines Licenses"][svc as usize];
        let attribution = ["PAL", "CSP", "RESELLER"][attr as usize];
        json!({"type":"deployment","deployment_id":format!("d{d}"),"customer_id":"C1","solution_area":AREAS[area],
               "service":service,"attribution":attribution,"deployed_on":day(on)})
    });
    prop_oneof![4 => acr, 2 => earned, 1 => removed, 2 => deployment]
}

/// A stream of events with distinct ids (spec §2's order independence is for input without
/// reused ids).
fn stream() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec(body(), 1..60).prop_map(|bodies| {
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, mut b)| {
                b["event_id"] = json!(format!("e{i}"));
                b["partner_id"] = json!("P");
                decode_json(b.to_string().as_bytes()).unwrap()
            })
            .collect()
    })
}

fn as_of() -> impl Strategy<Value = NaiveDate> {
    (0..1000i64).prop_map(|d| NaiveDate::from_ymd_opt(2022, 9, 1).unwrap() + Duration::days(d))
}

fn state_of(events: &[Event]) -> PartnerState {
    let mut state = PartnerState::default();
    for e in events {
        state.apply(e).unwrap();
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn order_and_redelivery_never_change_a_report(
        events in stream(),
        as_of in as_of(),
        seed in any::<u64>(),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let rules = RuleBook::embedded();
        let expected = evaluate("P", &state_of(&events), as_of, &rules);
        let mut shuffled = events.clone();
        shuffled.extend(dups.iter().map(|i| events[i.index(events.len())].clone()));
        // A deterministic Fisher–Yates shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(evaluate("P", &state_of(&shuffled), as_of, &rules), expected);
    }

    #[test]
    fn incremental_equals_batch(events in stream(), as_of in as_of()) {
        let rules = RuleBook::embedded();
        let mut incremental = PartnerState::default();
        for (n, e) in events.iter().enumerate() {
            incremental.apply(e).unwrap();
            let batch = state_of(&events[..=n]);
            prop_assert_eq!(&incremental, &batch);
            prop_assert_eq!(evaluate("P", &incremental, as_of, &rules), evaluate("P", &batch, as_of, &rules));
        }
    }

    /// Scores are encoded whole with their plans spliced in, and stored without them: both
    /// encodings must be prost's own. A stored score is served with plans worked out again
    /// from the subcategory scores (under a new rule book, so no kept plan answers): they
    /// must be the plans the evaluation gave, both decoded and passed through as GetScore
    /// sends it.
    #[test]
    fn a_score_stored_without_plans_is_served_with_the_same_plans(events in stream(), as_of in as_of()) {
        let mut report = evaluate("P", &state_of(&events), as_of, &RuleBook::embedded());
        let whole = pcs::proto::PartnerScore::from(report.clone());
        let plans: Vec<_> = report.designations.iter_mut().map(|d| d.shortfall.take()).collect();
        let encoded = pcs::proto::encode_score(&mut report.into(), &plans);
        prop_assert_eq!(&encoded.whole, &whole.encode_to_vec());
        let stored = encoded.stored;
        let mut cleared = whole.clone();
        for d in &mut cleared.designations {
            d.shortfall = None;
        }
        prop_assert_eq!(&stored, &cleared.encode_to_vec());
        let served = pcs::proto::decode_stored(&stored, &RuleBook::embedded()).unwrap();
        prop_assert_eq!(&served, &whole);
        let passed_through = pcs::proto::served_encoding(&stored, &RuleBook::embedded(), None).unwrap();
        prop_assert_eq!(passed_through, whole.encode_to_vec());
    }

    /// A history keeps only points for the days before today, worked out without the
    /// explanations: on days across the year before `as_of` (every seventh, the first and
    /// those around a month's end) it must hold what a full evaluation of that day gives.
    #[test]
    fn a_history_holds_the_points_of_every_past_day(events in stream(), as_of in as_of()) {
        let rules = RuleBook::embedded();
        let state = state_of(&events);
        let oldest = as_of - Duration::days(366);
        let mut history = ScoreHistory::default();
        history.record("P", &state, Some(oldest), oldest, as_of, &rules);
        for back in (0..=366).step_by(7).chain([1, 2, 30, 31, 365, 366]) {
            let day = as_of - Duration::days(back);
            let expected = DaySnapshot::of(&evaluate("P", &state, day, &rules));
            prop_assert_eq!(history.on(day), Some(&expected), "on {}", day);
        }
    }

    #[test]
    fn state_round_trips_through_its_encoding(events in stream()) {
        let state = state_of(&events);
        prop_assert_eq!(PartnerState::decode(&state.encode()).unwrap(), state);
    }

    #[test]
    fn pruning_never_changes_a_score_on_or_after_the_horizon(
        events in stream(),
        horizon in as_of(),
        later in proptest::collection::vec(0..500i64, 1..4),
    ) {
        let rules = RuleBook::embedded();
        let full = state_of(&events);
        let mut pruned = full.clone();
        pruned.prune(horizon, NaiveDate::MAX, &rules);
        for days in later {
            let as_of = horizon + Duration::days(days);
            prop_assert_eq!(evaluate("P", &pruned, as_of, &rules), evaluate("P", &full, as_of, &rules));
        }
        // A redelivery of anything forgotten still changes no score from the horizon on.
        let mut replayed = pruned.clone();
        for e in &events {
            replayed.apply(e).unwrap();
        }
        prop_assert_eq!(evaluate("P", &replayed, horizon, &rules), evaluate("P", &full, horizon, &rules));
    }
}
