//! Every worked vector in `../shared/golden/` (read in place, so a vector added there is
//! tested here at once) through the library: the reports on the keys spec §7 fixes, and the
//! rejected line numbers.

mod support;

use pcs::engine::Partners;
use pcs::events::JsonLines;
use pcs::rules::RuleBook;
use serde_json::{Value, json};
use std::fs::{self, File};
use std::io::BufReader;
use std::path::PathBuf;
use support::{golden_dir, spec_keys};

#[test]
fn every_golden_vector_matches() {
    let rules = RuleBook::embedded();
    let mut vectors: Vec<PathBuf> = fs::read_dir(golden_dir())
        .expect("../shared/golden must sit beside the project")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    vectors.sort();
    assert!(vectors.len() >= 17, "expected the golden vectors, found {}", vectors.len());

    let mut failures = Vec::new();
    for expected_path in &vectors {
        let name = expected_path.file_name().unwrap().to_string_lossy().replace(".expected.json", "");
        let expected: Value = serde_json::from_str(&fs::read_to_string(expected_path).unwrap()).unwrap();
        let as_of = pcs::calendar::parse_date(expected["as_of"].as_str().unwrap()).unwrap();

        let events = File::open(golden_dir().join(format!("{name}.events.jsonl"))).unwrap();
        let mut partners = Partners::default();
        let mut rejected = Vec::new();
        for item in JsonLines::new(BufReader::new(events)) {
            let (line, decoded) = item.unwrap();
            let ok = decoded.map_err(|e| e.to_string()).and_then(|e| partners.apply(&e).map_err(|e| e.to_string()));
            if ok.is_err() {
                rejected.push(json!(line));
            }
        }
        if Value::from(rejected.clone()) != expected["rejected_lines"] {
            failures.push(format!("{name}: rejected lines {rejected:?}, expected {}", expected["rejected_lines"]));
        }

        let actual: Vec<Value> =
            partners.evaluate(as_of, &rules).map(|r| spec_keys(&serde_json::to_value(r).unwrap())).collect();
        let mut wanted: Vec<Value> = expected["reports"].as_array().unwrap().iter().map(spec_keys).collect();
        wanted.sort_by(|a, b| {
            a["partner_id"].as_str().unwrap().as_bytes().cmp(b["partner_id"].as_str().unwrap().as_bytes())
        });
        if actual.len() != wanted.len() {
            failures.push(format!("{name}: {} reports, expected {}", actual.len(), wanted.len()));
        }
        for (a, w) in actual.iter().zip(&wanted) {
            if a != w {
                failures.push(format!("{name}: partner {}:\n  got      {a}\n  expected {w}", w["partner_id"]));
            }
        }
    }
    assert!(failures.is_empty(), "{} golden mismatches:\n{}", failures.len(), failures.join("\n"));
}
