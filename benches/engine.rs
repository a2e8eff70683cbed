//! Scoring-core speed: applying events to partner state, evaluating a large partner and a
//! small one (which qualifies for nothing, so every designation works out a shortfall),
//! encoding the small one's score, and bringing the large partner's history up to date
//! after a year-old fact.
//!   cargo bench --bench engine
//! Targets (issue 2): apply ≥ 2M events/s on one core; evaluate the large partner ≤ 20 µs.

use chrono::NaiveDate;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pcs::engine::{PartnerState, Partners, ScoreHistory, evaluate};
use pcs::events::{Event, decode_json};
use pcs::rules::RuleBook;
use serde_json::json;
use std::hint::black_box;

const AREAS: [&str; 3] = ["DATA_AI", "DIGITAL_APP_INNOVATION", "INFRASTRUCTURE"];
const CERTS: [&str; 6] = [
    "AZURE_ADMINISTRATOR_ASSOCIATE",
    "AZURE_SOLUTIONS_ARCHITECT_EXPERT",
    "AZURE_DATA_ENGINEER_ASSOCIATE",
    "AZURE_DEVELOPER_ASSOCIATE",
    "AZURE_NETWORK_ENGINEER_ASSOCIATE",
    "AZURE_VIRTUAL_DESKTOP_SPECIALTY",
];

fn decode(v: serde_json::Value) -> Event {
    decode_json(v.to_string().as_bytes()).unwrap()
}

/// A realistic mix: ~90 % ACR lines spread over partners, customers, areas and months.
fn mixed_events(n: usize, partners: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let partner = format!("P{}", i % partners);
            let id = format!("e{i}");
            match i % 10 {
                0 => decode(json!({"type":"certification","event_id":id,"partner_id":partner,"individual_id":format!("u{}", i % 37),
                    "certification":CERTS[i % CERTS.len()],"earned_on":"2023-05-01"})),
                1 if i % 20 == 1 => decode(json!({"type":"deployment","event_id":id,"partner_id":partner,"deployment_id":format!("d{}", i % 53),
                    "customer_id":"C1","solution_area":AREAS[i % 3],"service":"AKS","attribution":"CSP","deployed_on":"2024-03-15"})),
                _ => decode(json!({"type":"acr","event_id":id,"partner_id":partner,"customer_id":format!("C{}", i % 50),
                    "customer_segment":"SMB","solution_area":AREAS[i % 3],"attribution":"PAL",
                    "month":format!("2023-{:02}", i % 12 + 1),"amount_micros":((i % 997) as i64 * 1_000_000).to_string()})),
            }
        })
        .collect()
}

/// 50 customers × 3 areas × 24 months, 30 individuals, 20 deployments.
fn large_partner() -> PartnerState {
    let mut state = PartnerState::default();
    let mut n = 0;
    let mut add = |v: serde_json::Value, state: &mut PartnerState| {
        let mut v = v;
        v["event_id"] = json!(format!("e{n}"));
        v["partner_id"] = json!("P");
        n += 1;
        state.apply(&decode(v)).unwrap();
    };
    for c in 0..50 {
        for area in AREAS {
            for m in 0..24 {
                add(
                    json!({"type":"acr","customer_id":format!("C{c}"),"customer_segment":"SMB","solution_area":area,
                    "attribution":"PAL","month":format!("{}-{:02}", 2022 + (m + 6) / 12, (m + 6) % 12 + 1),
                    "amount_micros":((c * 37 + m * 11) % 1500 * 1_000_000).to_string()}),
                    &mut state,
                );
            }
        }
    }
    for u in 0..30 {
        add(
            json!({"type":"certification","individual_id":format!("u{u}"),"certification":CERTS[u % CERTS.len()],
            "earned_on":"2023-01-01"}),
            &mut state,
        );
    }
    for d in 0..20 {
        add(
            json!({"type":"deployment","deployment_id":format!("d{d}"),"customer_id":"C1","solution_area":AREAS[d % 3],
            "service":"AKS","attribution":"PAL","deployed_on":format!("2024-0{}-10", d % 6 + 1)}),
            &mut state,
        );
    }
    state
}

fn apply(c: &mut Criterion) {
    let events = mixed_events(200_000, 2_000);
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);
    group.bench_function("200k events, 2k partners", |b| {
        b.iter_batched(
            Partners::default,
            |mut partners| {
                for e in &events {
                    let _ = black_box(partners.apply(e));
                }
                partners
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn evaluate_large(c: &mut Criterion) {
    let state = large_partner();
    let rules = RuleBook::embedded();
    let as_of = NaiveDate::from_ymd_opt(2024, 7, 10).unwrap();
    c.bench_function("evaluate: 50 customers x 3 areas x 24 months, 30 people, 20 deployments", |b| {
        b.iter(|| evaluate(black_box("P"), black_box(&state), black_box(as_of), &rules))
    });
}

/// The service benchmark's typical partner: 20 events, qualified for no designation.
fn evaluate_small(c: &mut Criterion) {
    let mut partners = Partners::default();
    for e in mixed_events(20_000, 1_000).iter().filter(|e| e.partner_id == "P7") {
        partners.apply(e).unwrap();
    }
    let state = partners.get("P7").expect("P7 has events").clone();
    let rules = RuleBook::embedded();
    let as_of = NaiveDate::from_ymd_opt(2024, 7, 10).unwrap();
    c.bench_function("evaluate: 20 events, unqualified everywhere (shortfall plans)", |b| {
        b.iter(|| evaluate(black_box("P7"), black_box(&state), black_box(as_of), &rules))
    });
}

/// The small partner's score into its protobuf form and bytes, as the applier publishes and
/// stores it (plans spliced in from their kept encoding, the stored form beside), and,
/// for comparison, converted and encoded whole by prost alone.
fn encode_small(c: &mut Criterion) {
    let mut partners = Partners::default();
    for e in mixed_events(20_000, 1_000).iter().filter(|e| e.partner_id == "P7") {
        partners.apply(e).unwrap();
    }
    let rules = RuleBook::embedded();
    let as_of = NaiveDate::from_ymd_opt(2024, 7, 10).unwrap();
    let report = evaluate("P7", partners.get("P7").expect("P7 has events"), as_of, &rules);
    let mut group = c.benchmark_group("encode: 20 events, unqualified everywhere");
    group.bench_function("whole and as stored, plans spliced", |b| {
        b.iter_batched(
            || report.clone(),
            |mut report| {
                let plans: Vec<_> = report.designations.iter_mut().map(|d| d.shortfall.take()).collect();
                pcs::proto::encode_score(&mut pcs::proto::PartnerScore::from(report), &plans)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("whole, by prost", |b| {
        b.iter_batched(
            || report.clone(),
            |report| prost::Message::encode_to_vec(&pcs::proto::PartnerScore::from(report)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Bringing the large partner's history up to date from a year ago, as a fact of that age
/// makes the applier do: every day its score can change since then is evaluated, the past
/// ones for their points.
fn history_backfill(c: &mut Criterion) {
    let state = large_partner();
    let rules = RuleBook::embedded();
    let today = NaiveDate::from_ymd_opt(2024, 7, 10).unwrap();
    let oldest = NaiveDate::from_ymd_opt(2023, 7, 10).unwrap();
    c.bench_function("history: the large partner's year, after a year-old fact", |b| {
        b.iter(|| ScoreHistory::default().record("P", black_box(&state), Some(oldest), oldest, today, &rules))
    });
}

fn decode_json_line(c: &mut Criterion) {
    let line = br#"{"type":"acr","event_id":"a-1","partner_id":"P1","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-05","amount_micros":"600000000"}"#;
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json acr line", |b| b.iter(|| decode_json(black_box(line))));
    group.finish();
}

criterion_group!(benches, apply, evaluate_large, evaluate_small, encode_small, history_backfill, decode_json_line);
criterion_main!(benches);
