//! Unit tests per rule, at the boundaries the spec names.

use super::*;
use crate::events::{Event, decode_json};
use serde_json::json;

const USD: i64 = 1_000_000;

fn date(s: &str) -> NaiveDate {
    crate::calendar::parse_date(s).unwrap()
}

fn event(value: serde_json::Value) -> Event {
    decode_json(value.to_string().as_bytes()).unwrap()
}

fn acr(id: &str, customer: &str, segment: &str, area: &str, month: &str, usd: i64) -> Event {
    event(json!({"type":"acr","event_id":id,"partner_id":"P","customer_id":customer,"customer_segment":segment,
        "solution_area":area,"attribution":"PAL","month":month,"amount_micros":(usd * USD).to_string()}))
}

fn acr_micros(id: &str, customer: &str, month: &str, micros: i64) -> Event {
    event(json!({"type":"acr","event_id":id,"partner_id":"P","customer_id":customer,"customer_segment":"SMB",
        "solution_area":"DATA_AI","attribution":"PAL","month":month,"amount_micros":micros}))
}

fn earned(id: &str, who: &str, cert: &str, on: &str, expires: Option<&str>) -> Event {
    event(json!({"type":"certification","event_id":id,"partner_id":"P","individual_id":who,"certification":cert,
        "earned_on":on,"expires_on":expires}))
}

fn removed(id: &str, who: &str, cert: &str, on: &str) -> Event {
    event(json!({"type":"certification","event_id":id,"partner_id":"P","individual_id":who,"certification":cert,
        "status":"REMOVED","removed_on":on}))
}

fn deployment(id: &str, dep: &str, area: &str, service: &str, attribution: &str, on: &str) -> Event {
    event(json!({"type":"deployment","event_id":id,"partner_id":"P","deployment_id":dep,"customer_id":"C",
        "solution_area":area,"service":service,"attribution":attribution,"deployed_on":on}))
}

fn state(events: &[Event]) -> PartnerState {
    let mut s = PartnerState::default();
    for e in events {
        s.apply(e).unwrap();
    }
    s
}

fn score(events: &[Event], as_of: &str) -> PartnerScore {
    evaluate("P", &state(events), date(as_of), &RuleBook::embedded())
}

fn sub<'a>(report: &'a PartnerScore, designation: &str, name: &str) -> &'a SubcategoryScore {
    let d = report.designations.iter().find(|d| d.designation == designation).unwrap();
    d.subcategories.iter().find(|s| s.name == name).unwrap()
}

fn points_value(report: &PartnerScore, designation: &str, name: &str) -> (u32, Option<i64>) {
    let s = sub(report, designation, name);
    (s.points, s.value)
}

// ---- spec §2: duplicates ----

#[test]
fn redelivery_counts_once_and_reuse_is_rejected() {
    let mut s = PartnerState::default();
    let first = acr("a", "C1", "SMB", "DATA_AI", "2024-06", 700);
    assert_eq!(s.apply(&first), Ok(Applied::New));
    assert_eq!(s.apply(&first), Ok(Applied::Redelivery));
    let reused = acr("a", "C2", "SMB", "DATA_AI", "2024-06", 700);
    assert!(matches!(s.apply(&reused), Err(StateError::ReusedId(_))));
    let r = evaluate("P", &s, date("2024-07-10"), &RuleBook::embedded());
    assert_eq!(r.ttm_acr_micros, 700 * i128::from(USD));
}

#[test]
fn string_and_number_amounts_are_the_same_fact() {
    let mut s = PartnerState::default();
    s.apply(&acr_micros("a", "C1", "2024-06", 5)).unwrap();
    let as_string =
        event(json!({"type":"acr","event_id":"a","partner_id":"P","customer_id":"C1","customer_segment":"SMB",
        "solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"5"}));
    assert_eq!(s.apply(&as_string), Ok(Applied::Redelivery));
}

// ---- spec §4: path ----

#[test]
fn one_million_usd_is_enterprise() {
    let at = |usd| score(&[acr("a", "C1", "SMB", "DATA_AI", "2024-06", usd)], "2024-07-10").path;
    assert_eq!(at(1_000_000), Path::Enterprise);
    assert_eq!(at(999_999), Path::Smb);
}

#[test]
fn eighty_percent_smb_customers_is_smb() {
    let customers = |smb: usize, ent: usize| {
        let mut events = Vec::new();
        for i in 0..smb + ent {
            let segment = if i < smb { "SMC" } else { "ENTERPRISE" };
            events.push(acr(&format!("e{i}"), &format!("C{i}"), segment, "DATA_AI", "2024-01", 10));
        }
        score(&events, "2024-07-10").path
    };
    assert_eq!(customers(4, 1), Path::Smb);
    assert_eq!(customers(3, 1), Path::Enterprise);
    assert_eq!(customers(0, 0), Path::Smb);
}

#[test]
fn segment_is_the_latest_known_up_to_m_with_ties_to_the_larger() {
    let events = [
        acr("a", "C1", "ENTERPRISE", "DATA_AI", "2024-01", 10),
        acr("b", "C1", "SMB", "DATA_AI", "2024-05", 10),
        acr("c", "C1", "UNKNOWN", "DATA_AI", "2024-06", 10),
        // After M (2024-06): ignored.
        acr("d", "C1", "ENTERPRISE", "DATA_AI", "2024-07", 10),
    ];
    assert_eq!(score(&events, "2024-07-10").path, Path::Smb);
    let tie = [
        acr("a", "C1", "SMB", "DATA_AI", "2024-05", 10),
        acr("b", "C1", "ENTERPRISE", "INFRASTRUCTURE", "2024-05", 10),
    ];
    assert_eq!(score(&tie, "2024-07-10").path, Path::Enterprise);
}

#[test]
fn ineligible_attribution_counts_no_acr_but_sets_the_segment() {
    let csp_free =
        event(json!({"type":"acr","event_id":"x","partner_id":"P","customer_id":"C1","customer_segment":"ENTERPRISE",
        "solution_area":"DATA_AI","attribution":"RESELLER","month":"2024-06","amount_micros":"2000000000000"}));
    let events = [csp_free, acr("a", "C1", "UNKNOWN", "DATA_AI", "2024-06", 10)];
    let r = score(&events, "2024-07-10");
    assert_eq!(r.ttm_acr_micros, 10 * i128::from(USD));
    assert_eq!(r.path, Path::Enterprise, "the one known customer is ENTERPRISE");
}

// ---- spec §5.1: net customer adds ----

#[test]
fn net_adds_threshold_is_inclusive() {
    // SMB path: 500 USD. M = 2024-06; baseline 2023-05, 2023-06; recent 2024-05, 2024-06.
    let at = |micros| {
        points_value(&score(&[acr_micros("a", "C1", "2024-05", micros)], "2024-07-10"), "DATA_AI", "net_customer_adds")
    };
    assert_eq!(at(500 * USD), (10, Some(1)));
    assert_eq!(at(500 * USD - 1), (0, Some(0)));
}

#[test]
fn net_adds_baseline_must_be_zero_or_less() {
    let events = [acr_micros("a", "C1", "2023-06", -5), acr_micros("b", "C1", "2024-06", 500 * USD)];
    assert_eq!(points_value(&score(&events, "2024-07-10"), "DATA_AI", "net_customer_adds"), (10, Some(1)));
    let events = [acr_micros("a", "C1", "2023-05", 1), acr_micros("b", "C1", "2024-06", 500 * USD)];
    assert_eq!(points_value(&score(&events, "2024-07-10"), "DATA_AI", "net_customer_adds"), (0, Some(0)));
}

#[test]
fn net_adds_lost_customers_subtract_and_points_clamp() {
    let mut events = vec![acr_micros("lost", "L", "2023-05", 500 * USD)];
    let r = score(&events, "2024-07-10");
    assert_eq!(points_value(&r, "DATA_AI", "net_customer_adds"), (0, Some(-1)));
    for i in 0..5 {
        events.push(acr_micros(&format!("n{i}"), &format!("N{i}"), "2024-06", 600 * USD));
    }
    let r = score(&events, "2024-07-10");
    assert_eq!(points_value(&r, "DATA_AI", "net_customer_adds"), (30, Some(4)));
    let Explanation::NetCustomerAdds { added, lost, .. } = &sub(&r, "DATA_AI", "net_customer_adds").explanation else {
        panic!()
    };
    assert_eq!((added.len(), lost.len()), (5, 1));
    assert_eq!(lost[0].customer_id, "L");
}

#[test]
fn enterprise_threshold_is_1000_usd() {
    let big = acr("big", "B", "ENTERPRISE", "INFRASTRUCTURE", "2024-01", 1_000_000);
    let at = |usd| {
        let r = score(&[big.clone(), acr("a", "C1", "ENTERPRISE", "DATA_AI", "2024-06", usd)], "2024-07-10");
        assert_eq!(r.path, Path::Enterprise);
        points_value(&r, "DATA_AI", "net_customer_adds").0
    };
    assert_eq!(at(999), 0);
    assert_eq!(at(1000), 10);
}

// ---- spec §5.2: skilling ----

const AAA: &str = "AZURE_ADMINISTRATOR_ASSOCIATE";
const ASAE: &str = "AZURE_SOLUTIONS_ARCHITECT_EXPERT";
const DEV: &str = "AZURE_DEVELOPER_ASSOCIATE";
const IOT: &str = "AZURE_IOT_DEVELOPER_SPECIALTY";

#[test]
fn expiry_is_exclusive_and_removal_on_the_earning_day_wins() {
    let at = |events: &[Event], as_of| {
        points_value(&score(events, as_of), "DIGITAL_APP_INNOVATION", "intermediate_certifications").0
    };
    let e = [earned("c", "u", AAA, "2024-01-10", Some("2025-01-10"))];
    assert_eq!(at(&e, "2025-01-09"), 4);
    assert_eq!(at(&e, "2025-01-10"), 0);
    let same_day = [earned("c", "u", AAA, "2024-01-10", None), removed("r", "u", AAA, "2024-01-10")];
    assert_eq!(at(&same_day, "2024-06-01"), 0);
    let re_earned = [same_day[0].clone(), same_day[1].clone(), earned("c2", "u", AAA, "2024-02-01", None)];
    assert_eq!(at(&re_earned, "2024-06-01"), 4);
    assert_eq!(at(&re_earned, "2024-01-20"), 0, "before re-earning, the removal holds");
}

#[test]
fn retired_certifications_count_through_the_grace_date() {
    let events = [earned("p", "a", ASAE, "2023-01-01", None), earned("i", "b", IOT, "2023-01-01", None)];
    let at = |as_of| points_value(&score(&events, as_of), "DIGITAL_APP_INNOVATION", "advanced_certifications");
    assert_eq!(at("2024-07-31"), (8, Some(1)));
    assert_eq!(at("2024-08-01"), (4, Some(0)));
}

#[test]
fn smb_prerequisite_points_come_without_all_prerequisites() {
    // DATA_AI SMB: AAA x1 (4) and ASAE x1 (4); scoring individuals only count once both are met.
    let one =
        [earned("p", "a", AAA, "2023-01-01", None), earned("s", "b", "DATA_ANALYST_ASSOCIATE", "2023-01-01", None)];
    assert_eq!(points_value(&score(&one, "2024-07-10"), "DATA_AI", "intermediate_certifications"), (4, Some(1)));
    let both = [one[0].clone(), one[1].clone(), earned("q", "c", ASAE, "2023-01-01", None)];
    assert_eq!(points_value(&score(&both, "2024-07-10"), "DATA_AI", "intermediate_certifications"), (12, Some(1)));
}

#[test]
fn one_person_counts_once_per_subcategory_and_points_cap_at_max() {
    let mut events = vec![earned("p", "a", AAA, "2023-01-01", None)];
    for i in 0..6 {
        events.push(earned(&format!("d{i}"), &format!("u{i}"), DEV, "2023-01-01", None));
        events.push(earned(
            &format!("x{i}"),
            &format!("u{i}"),
            "POWER_PLATFORM_DEVELOPER_ASSOCIATE",
            "2023-01-01",
            None,
        ));
    }
    let r = score(&events, "2024-07-10");
    // 4 (prerequisite) + 4 × min(6, 4) = 20, the max.
    assert_eq!(points_value(&r, "DIGITAL_APP_INNOVATION", "intermediate_certifications"), (20, Some(6)));
}

#[test]
fn uncatalogued_certifications_earn_nothing() {
    let events = [earned("p", "a", "SOME_OTHER_CERT", "2023-01-01", None)];
    assert_eq!(
        points_value(&score(&events, "2024-07-10"), "INFRASTRUCTURE", "intermediate_certifications"),
        (0, Some(0))
    );
}

// ---- spec §5.3: usage growth ----

#[test]
fn usage_growth_floors_negative_growth() {
    // cur = 1990, base = 2000: -0.5% floors to -1.
    let events = [acr_micros("c", "C1", "2024-06", 1990 * USD), acr_micros("b", "C1", "2023-06", 2000 * USD)];
    assert_eq!(points_value(&score(&events, "2024-07-10"), "DATA_AI", "usage_growth"), (0, Some(-1)));
}

#[test]
fn usage_growth_needs_1000_usd_and_is_full_without_a_base() {
    let at = |micros| {
        points_value(&score(&[acr_micros("c", "C1", "2024-06", micros)], "2024-07-10"), "DATA_AI", "usage_growth")
    };
    assert_eq!(at(1000 * USD), (20, None));
    assert_eq!(at(1000 * USD - 1), (0, None));
    let events = [acr_micros("c", "C1", "2024-06", 1100 * USD), acr_micros("b", "C1", "2023-06", 1000 * USD)];
    assert_eq!(points_value(&score(&events, "2024-07-10"), "DATA_AI", "usage_growth"), (10, Some(10)));
}

// ---- spec §5.4: deployments ----

#[test]
fn deployment_window_excludes_the_day_twelve_months_back() {
    let at = |on| {
        points_value(
            &score(&[deployment("d", "x", "DATA_AI", "SQL", "PAL", on)], "2024-07-10"),
            "DATA_AI",
            "deployments",
        )
    };
    assert_eq!(at("2023-07-10"), (0, Some(0)));
    assert_eq!(at("2023-07-11"), (2, Some(1)));
    assert_eq!(at("2024-07-10"), (2, Some(1)), "a deployment counts the day it happens");
    assert_eq!(at("2024-07-11"), (0, Some(0)));
}

#[test]
fn leap_day_window_clamps() {
    let at = |on| {
        points_value(
            &score(&[deployment("d", "x", "DATA_AI", "SQL", "PAL", on)], "2024-02-29"),
            "DATA_AI",
            "deployments",
        )
        .0
    };
    assert_eq!(at("2023-02-28"), 0);
    assert_eq!(at("2023-03-01"), 2);
}

#[test]
fn virtual_machines_licenses_do_not_count() {
    let events = [
        deployment("a", "1", "DATA_AI", " virtual machines licenses ", "PAL", "2024-06-01"),
        deployment("b", "2", "DATA_AI", "Virtual Machines", "PAL", "2024-06-01"),
    ];
    assert_eq!(points_value(&score(&events, "2024-07-10"), "DATA_AI", "deployments"), (2, Some(1)));
}

#[test]
fn a_deployment_is_its_earliest_eligible_report() {
    let events = [
        deployment("a", "1", "INFRASTRUCTURE", "AKS", "PAL", "2024-06-01"),
        deployment("b", "1", "DATA_AI", "SQL", "PAL", "2023-01-01"),
        deployment("c", "1", "DATA_AI", "SQL", "RESELLER", "2022-01-01"),
    ];
    let r = score(&events, "2024-07-10");
    assert_eq!(points_value(&r, "INFRASTRUCTURE", "deployments").0, 0, "its representative is the 2023 report");
    assert_eq!(points_value(&r, "DATA_AI", "deployments").0, 0, "which is out of the window");
    // Same day: the smaller (area, service) wins.
    let tie = [
        deployment("a", "1", "INFRASTRUCTURE", "AKS", "PAL", "2024-06-01"),
        deployment("b", "1", "DATA_AI", "SQL", "CSP", "2024-06-01"),
    ];
    assert_eq!(points_value(&score(&tie, "2024-07-10"), "DATA_AI", "deployments").0, 2);
}

// ---- spec §7: qualification and the shortfall ----

#[test]
fn qualification_needs_70_and_a_point_everywhere() {
    let mut events = vec![earned("p", "a", AAA, "2023-01-01", None)];
    for i in 0..4 {
        events.push(earned(&format!("n{i}"), &format!("u{i}"), "AZURE_NETWORK_ENGINEER_ASSOCIATE", "2023-01-01", None));
        events.push(earned(&format!("v{i}"), &format!("v{i}"), "AZURE_VIRTUAL_DESKTOP_SPECIALTY", "2023-01-01", None));
        events.push(acr(&format!("c{i}"), &format!("C{i}"), "SMB", "INFRASTRUCTURE", "2024-06", 600));
    }
    events.push(earned("s", "s", ASAE, "2023-01-01", None));
    // net adds 30, intermediate 20, advanced 20, growth 20: 90, but no deployment.
    let r = score(&events, "2024-07-10");
    let infra = &r.designations[2];
    assert_eq!((infra.total, infra.qualified), (90, false));
    let shortfall = infra.shortfall.as_ref().unwrap();
    assert_eq!(shortfall.summary, "needs at least 1 point in deployments: 1 more deployment");
    events.push(deployment("d", "1", "INFRASTRUCTURE", "AKS", "PAL", "2024-06-01"));
    let r = score(&events, "2024-07-10");
    assert!(r.designations[2].qualified);
    assert!(r.designations[2].shortfall.is_none());
}

#[test]
fn shortfall_prefers_the_fewest_actions() {
    // INFRASTRUCTURE at 68 with every subcategory scoring: 2 points short.
    let mut events = vec![earned("p", "a", AAA, "2023-01-01", None), earned("s", "s", ASAE, "2023-01-01", None)];
    for i in 0..4 {
        events.push(earned(&format!("n{i}"), &format!("u{i}"), "AZURE_NETWORK_ENGINEER_ASSOCIATE", "2023-01-01", None));
        events.push(earned(&format!("v{i}"), &format!("v{i}"), "AZURE_VIRTUAL_DESKTOP_SPECIALTY", "2023-01-01", None));
    }
    // Growth: (20000 + 1200 - 20000) / 20000 = 6%.
    events.push(acr("c0", "C0", "SMB", "INFRASTRUCTURE", "2024-06", 20_000));
    events.push(acr("b0", "C0", "SMB", "INFRASTRUCTURE", "2023-06", 20_000));
    events.push(acr("acr-1", "C1", "SMB", "INFRASTRUCTURE", "2024-06", 600));
    events.push(acr("acr-2", "C2", "SMB", "INFRASTRUCTURE", "2024-06", 600));
    events.push(deployment("d", "1", "INFRASTRUCTURE", "AKS", "PAL", "2024-06-01"));
    let r = score(&events, "2024-07-10");
    let infra = &r.designations[2];
    let points: Vec<u32> = infra.subcategories.iter().map(|s| s.points).collect();
    assert_eq!(points, vec![20, 20, 20, 6, 2]);
    // 1 deployment (1 action, exact) beats 1 customer (overshoots) and 2% growth (2 actions).
    assert_eq!(infra.shortfall.as_ref().unwrap().summary, "needs 2 more points: 1 more deployment");
}

// ---- state: pruning and encoding ----

#[test]
fn encode_decode_round_trip() {
    let s = state(&[
        acr("a", "C1", "SMB", "DATA_AI", "2024-06", 7),
        earned("c", "u", AAA, "2024-01-10", Some("2025-01-10")),
        removed("r", "u", AAA, "2024-03-01"),
        deployment("d", "1", "DATA_AI", "SQL", "PAL", "2024-06-01"),
    ]);
    assert_eq!(PartnerState::decode(&s.encode()), Ok(s));
    assert_eq!(PartnerState::decode(&[9, 0]), Err(StateError::UnknownVersion(9)));
}

#[test]
fn prune_forgets_only_what_no_longer_counts() {
    let events = [
        acr("old", "C1", "ENTERPRISE", "DATA_AI", "2022-01", 900),
        acr("mid", "C1", "UNKNOWN", "DATA_AI", "2023-06", 900),
        acr("new", "C1", "UNKNOWN", "DATA_AI", "2024-06", 900),
        earned("x", "u", AAA, "2023-01-01", Some("2024-01-01")),
        earned("y", "v", AAA, "2023-01-01", None),
        removed("z", "v", AAA, "2023-02-01"),
        earned("w", "v", AAA, "2023-03-01", None),
    ];
    let mut s = state(&events);
    let rules = RuleBook::embedded();
    let horizon = date("2024-07-10");
    let before: Vec<_> =
        ["2024-07-10", "2024-08-01", "2025-07-31"].iter().map(|d| evaluate("P", &s, date(d), &rules)).collect();
    s.prune(horizon, NaiveDate::MAX, &rules);
    let after: Vec<_> =
        ["2024-07-10", "2024-08-01", "2025-07-31"].iter().map(|d| evaluate("P", &s, date(d), &rules)).collect();
    assert_eq!(before, after);
    assert_eq!(s.remembered_events(), 5, "the 2022 line and the expired certification are forgotten");
    assert_eq!(s.certifications().len(), 1, "u's only certification expired");
    // Ids received within the dedup window are kept even when their fact no longer counts.
    let mut windowed = state(&[]);
    windowed.apply_received(&events[0], date("2024-07-09")).unwrap();
    windowed.prune(horizon, date("2024-07-03"), &rules);
    assert_eq!(windowed.remembered_events(), 1);
    windowed.prune(horizon, date("2024-07-10"), &rules);
    assert_eq!(windowed.remembered_events(), 0);
    // The old segment (the only known one) is kept: it still decides C1's segment.
    assert_eq!(after[0].path, Path::Enterprise);
}

/// Shortfall plans are kept by what they depend on and shared between partners. Across many
/// small random partners (so that many share a key), every plan read from the shared rule
/// book's cache must equal the one worked out afresh under a new book, which no cached plan
/// can answer for.
#[test]
fn a_kept_shortfall_plan_is_the_one_worked_out_afresh() {
    const AREAS: [&str; 3] = ["DATA_AI", "DIGITAL_APP_INNOVATION", "INFRASTRUCTURE"];
    const CERTS: [&str; 4] = [
        "AZURE_ADMINISTRATOR_ASSOCIATE",
        "AZURE_SOLUTIONS_ARCHITECT_EXPERT",
        "AZURE_DATA_ENGINEER_ASSOCIATE",
        "AZURE_DEVELOPER_ASSOCIATE",
    ];
    let shared = RuleBook::embedded();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut plans = 0;
    for partner in 0..400 {
        let events: Vec<Event> = (0..next(8))
            .map(|i| {
                let id = format!("e{partner}.{i}");
                match next(6) {
                    0 => earned(&id, &format!("u{}", next(4)), CERTS[next(4) as usize], "2024-01-10", None),
                    1 => deployment(&id, &format!("d{}", next(5)), AREAS[next(3) as usize], "AKS", "CSP", "2024-05-10"),
                    _ => acr(
                        &id,
                        &format!("C{}", next(4)),
                        "SMB",
                        AREAS[next(3) as usize],
                        &format!("2024-{:02}", next(6) + 1),
                        [200, 1_500, 40_000][next(3) as usize],
                    ),
                }
            })
            .collect();
        let partner_state = state(&events);
        let as_of = date(["2024-07-10", "2024-08-02"][next(2) as usize]);
        let kept = evaluate("P", &partner_state, as_of, &shared);
        let afresh = evaluate("P", &partner_state, as_of, &RuleBook::embedded());
        for (k, a) in kept.designations.iter().zip(&afresh.designations) {
            assert_eq!(k.shortfall, a.shortfall, "partner {partner}, {}", k.designation);
            plans += usize::from(k.shortfall.is_some());
        }
    }
    assert!(plans > 500, "the partners must mostly not qualify, so that plans are compared: {plans}");
}
