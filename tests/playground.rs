//! The first five minutes: `pcs serve --demo` with no Kafka and no Redis, then the README
//! tour (`list`, `get`, health over gRPC, produce one event and watch the score change).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::free_port;

fn pcs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pcs"))
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_playground_tour() {
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let mut child = pcs()
        .args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("PCS_KAFKA_BROKERS")
        .env_remove("PCS_REDIS_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let serve = Serve(child);
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    // The playground says where its broker listens, and that nothing survives a restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut bootstrap, mut warned) = (None, false);
    while bootstrap.is_none() || !warned {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("start-up log lines");
        warned |= line.contains("NOTHING SURVIVES A RESTART");
        if let Some(rest) = line.split("in-process Kafka broker serves at ").nth(1) {
            bootstrap = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    let bootstrap = bootstrap.unwrap();

    // `pcs list` shows the demo partners once they are applied.
    let listed = loop {
        let out = pcs().args(["list", "--addr", &addr]).output().unwrap();
        let n = String::from_utf8_lossy(&out.stdout).lines().count();
        if n >= 50 {
            break n;
        }
        assert!(Instant::now() < deadline, "only {n} demo partners listed");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(listed >= 50);

    // A generic gRPC client (grpcurl, via reflection) sees SERVING and the API.
    let grpcurl = std::env::var_os("PCS_GRPCURL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/grpcurl"));
    let target = format!("127.0.0.1:{port}");
    let run = |args: &[&str]| -> String {
        let out = Command::new(&grpcurl)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run grpcurl at {}: {e} (scripts/test installs it)", grpcurl.display()));
        assert!(out.status.success(), "grpcurl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["-plaintext", &target, "grpc.health.v1.Health/Check"]).contains("SERVING"));
    assert!(run(&["-plaintext", &target, "list"]).contains("pcs.v1.PartnerScoreService"));
    let got =
        run(&["-plaintext", "-d", r#"{"partner_id":"DEMO-004"}"#, &target, "pcs.v1.PartnerScoreService/GetScore"]);
    assert!(got.contains("\"designation\": \"DATA_AI\""), "{got}");

    let out = pcs().args(["get", "DEMO-001", "--addr", &addr]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["designations"].as_array().unwrap().len(), 3);
    assert_eq!(report["as_of"], "2024-07-10");

    // Watch DEMO-002, then produce one event for it: the change arrives live.
    let mut watch =
        pcs().args(["watch", "DEMO-002", "--count", "1", "--addr", &addr]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let event = r#"{"type":"deployment","event_id":"tour-1","partner_id":"DEMO-002","deployment_id":"tour-dep","customer_id":"C1","solution_area":"DATA_AI","service":"Azure SQL","attribution":"CSP","deployed_on":"2024-07-01"}"#;
    let mut produce = pcs()
        .args(["produce", "--file", "-", "--kafka-brokers", &bootstrap, "--topic", "pcs.partner-events"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    produce.stdin.take().unwrap().write_all(format!("{event}\n").as_bytes()).unwrap();
    assert!(produce.wait().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no live change within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let mut change = String::new();
    BufReader::new(watch.stdout.take().unwrap()).read_line(&mut change).unwrap();
    let change: serde_json::Value = serde_json::from_str(&change).unwrap();
    assert_eq!(change["score"]["partner_id"], "DEMO-002");
    let data_ai = &change["score"]["designations"][0]["subcategories"][3]["explanation"]["counted"];
    assert!(data_ai.as_array().unwrap().iter().any(|d| d == "tour-dep"), "{change}");
    drop(serve);
}
