//! `pcs score` as a user runs it: output shape, rejected lines on stderr, exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn pcs(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pcs"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

const EVENTS: &str = r#"{"type":"acr","event_id":"a-1","partner_id":"P2","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-05","amount_micros":"600000000"}
{"type":"acr","event_id":"a-2","partner_id":"P1","customer_id":"C1","solution_area":"DATA_AI","attribution":"PAL","month":"2024-13","amount_micros":"1"}

{"type":"deployment","event_id":"d-1","partner_id":"P1","deployment_id":"dep-1","customer_id":"C1","solution_area":"INFRASTRUCTURE","service":"Virtual Machines","attribution":"CSP","deployed_on":"2024-03-15"}
"#;

#[test]
fn prints_one_report_per_partner_sorted_and_rejections_by_line() {
    let out = pcs(&["score", "--events", "-", "--as-of", "2024-07-10"], EVENTS);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["partner_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["P1", "P2"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim(), "line 2: month \"2024-13\" is not a valid YYYY-MM month (years 2000-2100)");
}

#[test]
fn partner_filter() {
    let out = pcs(&["score", "--events", "-", "--as-of", "2024-07-10", "--partner", "P2"], EVENTS);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let out = pcs(&["score", "--events", "-", "--as-of", "2024-07-10", "--partner", "P9"], EVENTS);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("partner P9 has no accepted event"));
}

#[test]
fn unreadable_file_and_bad_arguments_fail_clearly() {
    let out = pcs(&["score", "--events", "/nonexistent/events.jsonl", "--as-of", "2024-07-10"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot open /nonexistent/events.jsonl"));
    let out = pcs(&["score", "--events", "-", "--as-of", "2024-02-30"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("is not a YYYY-MM-DD date"));
    let out = pcs(&["score", "--events", "-", "--as-of", "2024-07-10", "--rules", "/nonexistent.toml"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot read rule file"));
}

#[test]
fn another_rule_file_changes_the_scores() {
    let dir = std::env::temp_dir().join(format!("pcs-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rules.toml");
    // Deployments worth 5 points each (max 10): one deployment scores 5.
    let text = pcs::rules::DEFAULT_RULES.replace("points_per_deployment = 2", "points_per_deployment = 5");
    std::fs::write(&path, text).unwrap();
    let out = pcs(
        &["score", "--events", "-", "--as-of", "2024-07-10", "--partner", "P1", "--rules", path.to_str().unwrap()],
        EVENTS,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["designations"][2]["subcategories"][4]["points"], 5);
}
