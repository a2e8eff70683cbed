//! The `pcs` binary as an operator runs it: `serve` configured by environment variables,
//! `produce`, `get` and `list` against it, and SIGTERM.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Broker, Redis, free_port, golden_dir};

fn pcs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pcs"))
}

#[test]
fn serve_produce_get_list_and_sigterm() {
    let broker = Broker::start();
    let redis = Redis::start();
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let mut serve = pcs()
        .arg("serve")
        .env("PCS_KAFKA_BROKERS", &broker.bootstrap)
        .env("PCS_REDIS_URL", redis.url())
        .env("PCS_LISTEN", format!("127.0.0.1:{port}"))
        .env("PCS_NOW", "2024-07-10")
        .env("PCS_EVENTS_TOPIC", "cli.events")
        .env("PCS_SCORES_TOPIC", "cli.scores")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let produced = pcs()
        .args(["produce", "--file"])
        .arg(golden_dir().join("qualification.events.jsonl"))
        .args(["--kafka-brokers", &broker.bootstrap, "--topic", "cli.events"])
        .output()
        .unwrap();
    assert!(produced.status.success(), "{}", String::from_utf8_lossy(&produced.stderr));

    // `get` prints spec §7 JSON once the events are applied.
    let deadline = Instant::now() + Duration::from_secs(90);
    let report = loop {
        let out = pcs().args(["get", "P-Q-YES", "--addr", &addr]).output().unwrap();
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "P-Q-YES never appeared: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(report["partner_id"], "P-Q-YES");
    assert_eq!(report["designations"][2]["qualified"], true);

    let unknown = pcs().args(["get", "NOBODY", "--addr", &addr]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("NOBODY"));

    let listed = pcs().args(["list", "--addr", &addr]).output().unwrap();
    assert!(listed.status.success());
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["partner_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["P-Q-NODEP", "P-Q-YES"]);
    let qualified =
        pcs().args(["list", "--addr", &addr, "--designation", "INFRASTRUCTURE", "--qualified"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&qualified.stdout).lines().count(), 1);

    // SIGTERM: exit 0 within 10 s.
    let stopped = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &serve.id().to_string()]).status().unwrap().success());
    loop {
        if let Some(status) = serve.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(stopped.elapsed() < Duration::from_secs(10), "pcs serve did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_refuses_a_bad_configuration() {
    let out = pcs().args(["serve", "--kafka-brokers", "127.0.0.1:1", "--events-partitions", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--events-partitions must be at least 1"));
}
