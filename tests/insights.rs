//! Issue 10's insights end to end, against a real redis-server and a real Kafka-protocol
//! broker: daily history and qualification windows checked against `pcs score --as-of`,
//! what-if that changes nothing, and early warnings on the feed.

mod support;

use chrono::{Days, NaiveDate};
use pcs::calendar::parse_date;
use pcs::proto;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use support::{
    Broker, Redis, Service, as_json, config, expected_reports, golden_dir, produce_lines, spec_keys, wait_for_reports,
};

/// Waits until the service's score of every partner of `lines` is the one `pcs score`
/// computes on `as_of`.
async fn wait_until_consumed(service: &Service, lines: &[String], as_of: &str) {
    wait_for_reports(service, &expected_reports(lines, as_of), Duration::from_secs(90)).await.unwrap();
}

/// A day's snapshot from the report `pcs score --as-of` prints: (path, per designation
/// (name, total, qualified, [(subcategory, points)])).
type Day = (String, Vec<(String, u32, bool, Vec<(String, u32)>)>);

fn day_of_report(report: &Value) -> Day {
    let designations = report["designations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let points = d["subcategories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["name"].as_str().unwrap().to_owned(), s["points"].as_u64().unwrap() as u32))
                .collect();
            (
                d["designation"].as_str().unwrap().to_owned(),
                d["total"].as_u64().unwrap() as u32,
                d["qualified"].as_bool().unwrap(),
                points,
            )
        })
        .collect();
    (report["path"].as_str().unwrap().to_owned(), designations)
}

fn day_of_snapshot(day: &proto::DaySnapshot) -> Day {
    let path = if day.path == proto::Path::Enterprise as i32 { "ENTERPRISE" } else { "SMB" };
    let designations = day
        .designations
        .iter()
        .map(|d| {
            let points = d.subcategories.iter().map(|s| (s.name.clone(), s.points)).collect();
            (d.designation.clone(), d.total, d.qualified, points)
        })
        .collect();
    (path.to_owned(), designations)
}

/// `pcs score --as-of DAY FILE`, the binary itself, by partner.
fn pcs_score(file: &std::path::Path, day: NaiveDate) -> BTreeMap<String, Day> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pcs"))
        .args(["score", "--as-of", &day.to_string()])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let report: Value = serde_json::from_str(l).unwrap();
            (report["partner_id"].as_str().unwrap().to_owned(), day_of_report(&report))
        })
        .collect()
}

/// Multi-month vectors ingested in one go as of a day (a backfill): every partner's
/// history, day by day over the 400 days kept, is what the engine says for that day; the
/// qualification windows agree with the same day-by-day evaluation; a handful of days are
/// checked against the `pcs score --as-of` binary itself. `qualification` brings a partner
/// that qualifies inside the window, `random_0` a year of varied facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_windows_equal_the_engine_evaluated_day_by_day() {
    let redis = Redis::start();
    let broker = Broker::start();
    let text = ["random_0", "qualification"]
        .map(|name| std::fs::read_to_string(golden_dir().join(format!("{name}.events.jsonl"))).unwrap())
        .join("\n");
    let file = std::env::temp_dir().join(format!("pcs-insights-{}.jsonl", support::free_port()));
    std::fs::write(&file, &text).unwrap();
    let valid: Vec<String> =
        text.lines().filter(|l| pcs::events::decode_json(l.as_bytes()).is_ok()).map(str::to_owned).collect();
    let as_of = "2024-10-27";
    let today = parse_date(as_of).unwrap();
    let service = Service::start(config(&broker, &redis, "insights-history", as_of)).await;
    produce_lines(service.config.kafka_brokers.as_deref().unwrap(), &service.config.events_topic, &text).await;
    wait_until_consumed(&service, &valid, as_of).await;

    let mut client = service.client().await;
    let partners: Vec<String> = expected_reports(&valid, as_of).into_keys().collect();
    let first = today.checked_sub_days(Days::new(399)).unwrap();
    let mut histories: BTreeMap<String, BTreeMap<NaiveDate, Day>> = BTreeMap::new();
    for partner in &partners {
        let response = client
            .get_score_history(proto::GetScoreHistoryRequest {
                partner_id: partner.clone(),
                from: Some(first.to_string()),
                to: Some(as_of.to_owned()),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.history_start, today.checked_sub_days(Days::new(400)).unwrap().to_string());
        let days = response.days.iter().map(|d| (parse_date(&d.date).unwrap(), day_of_snapshot(d))).collect();
        histories.insert(partner.clone(), days);
    }

    // Every day, every partner: the library evaluation `pcs score` runs.
    let mut day = first;
    let mut expected_by_day: BTreeMap<NaiveDate, BTreeMap<String, Day>> = BTreeMap::new();
    while day <= today {
        let reports = expected_reports(&valid, &day.to_string());
        let mut by_partner = BTreeMap::new();
        for (partner, report) in reports {
            let want = day_of_report(&report);
            let got = histories[&partner].get(&day);
            assert_eq!(got, Some(&want), "{partner} on {day}");
            by_partner.insert(partner, want);
        }
        expected_by_day.insert(day, by_partner);
        day = day.succ_opt().unwrap();
    }
    // And the binary itself on month boundaries and the last day.
    for day in ["2023-10-01", "2024-01-31", "2024-02-01", "2024-07-01", as_of] {
        let day = parse_date(day).unwrap();
        for (partner, want) in pcs_score(&file, day) {
            assert_eq!(histories[&partner].get(&day), Some(&want), "pcs score --as-of {day}: {partner}");
        }
    }

    // The window: this month and the five before it, from the same evaluations.
    let window_start = parse_date("2024-05-01").unwrap();
    let mut qualified_somewhere = 0;
    let scores = client
        .batch_get_scores(proto::BatchGetScoresRequest { partner_ids: partners.clone() })
        .await
        .unwrap()
        .into_inner()
        .scores;
    for score in &scores {
        assert!(!score.qualification_windows.is_empty(), "{} has no windows", score.partner_id);
        for window in &score.qualification_windows {
            assert_eq!((window.window_start.as_str(), window.window_end.as_str()), ("2024-05-01", as_of));
            let qualified_days: Vec<NaiveDate> = expected_by_day
                .range(window_start..=today)
                .filter(|(_, partners)| partners[&score.partner_id].1.iter().any(|d| d.0 == window.designation && d.2))
                .map(|(day, _)| *day)
                .collect();
            let what = format!("{} {}", score.partner_id, window.designation);
            assert_eq!(window.qualified_days as usize, qualified_days.len(), "{what}");
            assert_eq!(window.qualified, !qualified_days.is_empty(), "{what}");
            assert_eq!(window.last_qualified_on, qualified_days.last().map(|d| d.to_string()), "{what}");
            let listed: usize = window
                .qualified_periods
                .iter()
                .map(|p| {
                    let (from, to) = (parse_date(&p.from).unwrap(), parse_date(&p.to).unwrap());
                    assert!(qualified_days.contains(&from) && qualified_days.contains(&to), "{what}: {p:?}");
                    (to.signed_duration_since(from).num_days() + 1) as usize
                })
                .sum();
            assert_eq!(listed, qualified_days.len(), "{what}");
            if window.qualified {
                qualified_somewhere += 1;
                // The last qualified day leaves the window when the window starts after its
                // month, five months on.
                let last = parse_date(window.last_qualified_on.as_deref().unwrap()).unwrap();
                let until = parse_date(window.in_window_until.as_deref().unwrap()).unwrap();
                assert!(until >= last && until.signed_duration_since(last).num_days() <= 6 * 31, "{what}");
                assert_eq!(window.days_left, Some(until.signed_duration_since(today).num_days() as u32), "{what}");
            }
        }
    }
    assert!(qualified_somewhere > 0, "the vectors qualify a partner in the window");
    std::fs::remove_file(&file).unwrap();
    service.stop().await;
}

/// A what-if is answered from the stored facts plus the hypothetical ones, and leaves the
/// stored state, the version, and the feed exactly as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_adds_hypothetical_facts_and_changes_nothing() {
    let redis = Redis::start();
    let broker = Broker::start();
    let as_of = "2024-07-10";
    let text = std::fs::read_to_string(golden_dir().join("qualification.events.jsonl")).unwrap();
    let valid: Vec<String> =
        text.lines().filter(|l| pcs::events::decode_json(l.as_bytes()).is_ok()).map(str::to_owned).collect();
    let service = Service::start(config(&broker, &redis, "insights-simulate", as_of)).await;
    produce_lines(service.config.kafka_brokers.as_deref().unwrap(), &service.config.events_topic, &text).await;
    wait_until_consumed(&service, &valid, as_of).await;
    let partner = expected_reports(&valid, as_of).into_keys().next().unwrap();

    let mut client = service.client().await;
    let mut watch = client
        .watch_scores(proto::WatchScoresRequest { partner_ids: Vec::new(), all: true, resume_cursor: String::new() })
        .await
        .unwrap()
        .into_inner();
    let before = client
        .get_score(proto::GetScoreRequest { partner_id: partner.clone(), as_of: None })
        .await
        .unwrap()
        .into_inner();
    let raw_before = redis_hash(&redis, &service, &partner);

    let hypothetical: Vec<String> = vec![
        format!(
            r#"{{"type":"certification","event_id":"what-if-1","partner_id":"{partner}","individual_id":"new-1","certification":"AZURE_DATA_ENGINEER_ASSOCIATE","earned_on":"2024-07-01"}}"#
        ),
        format!(
            r#"{{"type":"certification","event_id":"what-if-2","partner_id":"{partner}","individual_id":"new-2","certification":"AZURE_DATA_ENGINEER_ASSOCIATE","earned_on":"2024-07-01"}}"#
        ),
        format!(
            r#"{{"type":"deployment","event_id":"what-if-3","partner_id":"{partner}","deployment_id":"what-if-d","customer_id":"C","solution_area":"DATA_AI","service":"AKS","attribution":"PAL","deployed_on":"2024-07-05"}}"#
        ),
    ];
    let response = client
        .simulate_score(proto::SimulateScoreRequest {
            partner_id: partner.clone(),
            events: hypothetical.clone(),
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.applied, 3);
    let spec = |s: &proto::PartnerScore| spec_keys(&as_json(s));
    let with: Vec<String> = valid.iter().cloned().chain(hypothetical.iter().cloned()).collect();
    assert_eq!(spec(response.score.as_ref().unwrap()), expected_reports(&with, as_of)[&partner]);
    assert_eq!(spec(response.baseline.as_ref().unwrap()), expected_reports(&valid, as_of)[&partner]);
    assert_ne!(response.score, response.baseline, "the hypothetical facts count");

    // Bad hypothetical input is refused with the line at fault, and changes nothing either.
    let refused = client
        .simulate_score(proto::SimulateScoreRequest {
            partner_id: partner.clone(),
            events: vec![hypothetical[0].replace(&partner, "someone-else")],
            as_of: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("event 0"), "{}", refused.message());

    let after = client
        .get_score(proto::GetScoreRequest { partner_id: partner.clone(), as_of: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((after.version, &after.score), (before.version, &before.score));
    assert_eq!(redis_hash(&redis, &service, &partner), raw_before, "stored state untouched");
    let published = tokio::time::timeout(Duration::from_secs(3), watch.message()).await;
    assert!(published.is_err(), "a what-if published a change: {published:?}");
    service.stop().await;
}

/// Every field of the partner's Redis hash.
fn redis_hash(redis: &Redis, service: &Service, partner: &str) -> BTreeMap<String, Vec<u8>> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    redis::cmd("HGETALL").arg(format!("{}:{{{partner}}}", service.config.redis_prefix)).query(&mut c).unwrap()
}

/// A partner whose only deployment ages out before the month boundary is warned about on
/// the feed: its deployments subcategory is projected to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projected_zero_subcategory_is_a_warning_on_the_feed() {
    let redis = Redis::start();
    let broker = Broker::start();
    let service = Service::start(config(&broker, &redis, "insights-warning", "2024-07-10")).await;
    let mut client = service.client().await;
    let mut watch = client
        .watch_scores(proto::WatchScoresRequest {
            partner_ids: vec!["W1".into()],
            all: false,
            resume_cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let deployment = r#"{"type":"deployment","event_id":"w-d","partner_id":"W1","deployment_id":"old","customer_id":"C","solution_area":"DATA_AI","service":"AKS","attribution":"PAL","deployed_on":"2023-07-20"}"#;
    produce_lines(service.config.kafka_brokers.as_deref().unwrap(), &service.config.events_topic, deployment).await;
    let change = tokio::time::timeout(Duration::from_secs(60), watch.message()).await.unwrap().unwrap().unwrap();
    let warning = change.warnings.iter().find(|w| w.designation == "DATA_AI").expect("a DATA_AI warning");
    assert_eq!(warning.partner_id, "W1");
    assert_eq!(warning.on, "2024-08-01");
    assert_eq!(warning.zeroed_subcategories, vec!["deployments".to_owned()]);
    let forecast = change.score.unwrap().forecast.unwrap();
    let data_ai = forecast.designations.iter().find(|d| d.designation == "DATA_AI").unwrap();
    let deployments = data_ai.subcategories.iter().find(|s| s.name == "deployments").unwrap();
    assert_eq!((deployments.projected_points, deployments.points_at_risk), (0, deployments.points));
    assert!(deployments.points > 0);
    service.stop().await;
}
