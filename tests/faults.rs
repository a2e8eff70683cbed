//! Faults production brings, each against a real redis-server and a real broker: crashes at
//! random moments, a Redis outage, an instance dying in a consumer group, SIGTERM under load,
//! hostile watchers. Every one ends with the exact scores `pcs score` computes.
//!
//! `PCS_CRASH_KILLS` sets the number of SIGKILLs in `crash_anywhere` (default 3;
//! `scripts/crash-soak` runs 30).

mod support;

use pcs::proto::{self, partner_score_service_client::PartnerScoreServiceClient};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::{Broker, Redis, RedisCluster, free_port, produce_lines, read_topic, spec_keys};
use tonic::Code;

const PARTNERS: usize = 150;

/// 12k events over 150 partners (ACR, certifications, deployments) and the reports the
/// library computes for them.
fn workload() -> (String, BTreeMap<String, Value>) {
    let mut lines = Vec::new();
    for i in 0..12_000usize {
        let partner = format!("F{}", i % PARTNERS);
        match i % 10 {
            0 => lines.push(format!(
                r#"{{"type":"certification","event_id":"c{i}","partner_id":"{partner}","individual_id":"u{}","certification":"{}","earned_on":"2023-0{}-01"}}"#,
                i % 13,
                ["AZURE_ADMINISTRATOR_ASSOCIATE", "AZURE_SOLUTIONS_ARCHITECT_EXPERT", "AZURE_NETWORK_ENGINEER_ASSOCIATE", "AZURE_DEVELOPER_ASSOCIATE"][i % 4],
                i % 9 + 1
            )),
            1 => lines.push(format!(
                r#"{{"type":"deployment","event_id":"d{i}","partner_id":"{partner}","deployment_id":"dep{}","customer_id":"C1","solution_area":"{}","service":"AKS","attribution":"CSP","deployed_on":"2024-0{}-15"}}"#,
                i % 11,
                ["DATA_AI", "DIGITAL_APP_INNOVATION", "INFRASTRUCTURE"][i % 3],
                i % 6 + 1
            )),
            _ => lines.push(format!(
                r#"{{"type":"acr","event_id":"a{i}","partner_id":"{partner}","customer_id":"C{}","customer_segment":"{}","solution_area":"{}","attribution":"PAL","month":"{}-{:02}","amount_micros":"{}"}}"#,
                i % 17,
                ["SMB", "SMC", "ENTERPRISE"][i % 3],
                ["DATA_AI", "DIGITAL_APP_INNOVATION", "INFRASTRUCTURE"][i % 3],
                2023 + (i / 7) % 2,
                (i / 3) % 12 + 1,
                ((i * 7919) % 1_500 + 50) * 1_000_000
            )),
        }
    }
    (lines.join("\n"), support::expected_reports(&lines, "2024-07-10"))
}

/// A deterministic sequence of pauses, so a failing run can be repeated.
struct Pauses(u64);

impl Pauses {
    fn next(&mut self, min_ms: u64, max_ms: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(min_ms + self.0 % (max_ms - min_ms))
    }
}

/// `pcs serve` as a process, killed on drop.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(broker: &Broker, redis: &Redis, group: &str, batch: usize) -> Serve {
        let port = free_port();
        let child = support::serve_command(broker, redis, port)
            .env("PCS_EVENTS_TOPIC", format!("{group}.events"))
            .env("PCS_SCORES_TOPIC", format!("{group}.scores"))
            .env("PCS_GROUP_ID", group)
            .env("PCS_BATCH_MAX_EVENTS", batch.to_string())
            .env("PCS_REDIS_TIMEOUT_MS", "1000")
            .spawn()
            .unwrap();
        Serve { child, addr: format!("http://127.0.0.1:{port}") }
    }

    /// An instance keeping its state in a Redis Cluster, reading a 12-partition topic, with
    /// its JSON log in `log`.
    fn start_on_cluster(broker: &Broker, cluster: &RedisCluster, group: &str, log: &std::path::Path) -> Serve {
        let port = free_port();
        let child = support::serve_command(broker, &cluster.nodes[0], port)
            .env_remove("PCS_REDIS_URL")
            .env("PCS_REDIS_CLUSTER_NODES", cluster.urls().join(","))
            .env("PCS_EVENTS_TOPIC", format!("{group}.events"))
            .env("PCS_SCORES_TOPIC", format!("{group}.scores"))
            .env("PCS_EVENTS_PARTITIONS", "12")
            .env("PCS_GROUP_ID", group)
            .env("PCS_BATCH_MAX_EVENTS", "200")
            .env("PCS_LOG_FORMAT", "json")
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Serve { child, addr: format!("http://127.0.0.1:{port}") }
    }

    async fn client(&self) -> PartnerScoreServiceClient<tonic::transport::Channel> {
        connect(&self.addr).await
    }

    async fn health(&self) -> Option<bool> {
        let channel = tonic::transport::Channel::from_shared(self.addr.clone()).unwrap().connect().await.ok()?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.ok()?;
        Some(r.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    }

    async fn wait_health(&self, serving: bool, within: Duration) {
        let deadline = Instant::now() + within;
        while self.health().await != Some(serving) {
            assert!(
                Instant::now() < deadline,
                "health did not become {} within {within:?}",
                if serving { "SERVING" } else { "NOT_SERVING" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; returns how long the process took to exit, and its status.
    fn terminate(&mut self) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (started.elapsed(), status);
            }
            assert!(started.elapsed() < Duration::from_secs(30), "did not exit 30 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn connect(addr: &str) -> PartnerScoreServiceClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = PartnerScoreServiceClient::connect(addr.to_owned()).await {
            return c;
        }
        assert!(Instant::now() < deadline, "pcs serve never listened on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every partner's score, read from the service at `addr`, equals the expected
/// report on the spec keys.
async fn assert_exact(addr: &str, expected: &BTreeMap<String, Value>, within: Duration) {
    let mut client = connect(addr).await;
    let ids: Vec<String> = expected.keys().cloned().collect();
    let deadline = Instant::now() + within;
    loop {
        let mismatch = match client.batch_get_scores(proto::BatchGetScoresRequest { partner_ids: ids.clone() }).await {
            Ok(r) => {
                let got: BTreeMap<String, Value> = r
                    .into_inner()
                    .scores
                    .iter()
                    .map(|s| {
                        (
                            s.partner_id.clone(),
                            spec_keys(&serde_json::to_value(pcs::engine::PartnerScore::try_from(s).unwrap()).unwrap()),
                        )
                    })
                    .collect();
                expected
                    .iter()
                    .find(|(id, want)| got.get(*id) != Some(*want))
                    .map(|(id, want)| format!("{id}: got {:?}, expected {want}", got.get(id)))
            }
            Err(s) => Some(s.to_string()),
        };
        match mismatch {
            None => return,
            Some(m) if Instant::now() > deadline => panic!("end state not exact after {within:?}: {m}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_anywhere() {
    let kills: usize = std::env::var("PCS_CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(3);
    let broker = Broker::start();
    let redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (text, expected) = workload();
    // The stream arrives in chunks, one before each kill, so every kill lands while events
    // are being applied (and some while a batch is being written).
    let lines: Vec<&str> = text.lines().collect();
    let chunks: Vec<String> = lines.chunks(lines.len().div_ceil(kills + 1)).map(|c| c.join("\n")).collect();
    let mut serve = Serve::start(&broker, &redis, "crash", 200);
    serve.wait_health(true, Duration::from_secs(60)).await;
    let mut pauses = Pauses(0x9E37_79B9_7F4A_7C15);
    for kill in 0..kills {
        produce_lines(&broker.bootstrap, "crash.events", &chunks[kill.min(chunks.len() - 1)]).await;
        tokio::time::sleep(pauses.next(50, 700)).await;
        serve.kill();
        eprintln!("crash_anywhere: SIGKILL {} of {kills}", kill + 1);
        serve = Serve::start(&broker, &redis, "crash", 200);
        serve.wait_health(true, Duration::from_secs(60)).await;
    }
    for chunk in chunks.iter().skip(kills) {
        produce_lines(&broker.bootstrap, "crash.events", chunk).await;
    }
    assert_exact(&serve.addr, &expected, Duration::from_secs(180)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_survived() {
    let broker = Broker::start();
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (text, expected) = workload();
    let serve = Serve::start(&broker, &redis, "outage", 200);
    serve.wait_health(true, Duration::from_secs(60)).await;
    let bootstrap = broker.bootstrap.clone();
    let producing = tokio::spawn(async move { produce_lines(&bootstrap, "outage.events", &text).await });
    tokio::time::sleep(Duration::from_millis(800)).await;

    redis.kill();
    serve.wait_health(false, Duration::from_secs(10)).await;
    let mut client = serve.client().await;
    let started = Instant::now();
    let status = client.get_score(proto::GetScoreRequest { partner_id: "F1".into(), as_of: None }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "a read took {:?} while Redis was down", started.elapsed());
    tokio::time::sleep(Duration::from_secs(10)).await;

    redis.restart();
    serve.wait_health(true, Duration::from_secs(30)).await;
    producing.await.unwrap();
    assert_exact(&serve.addr, &expected, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_dying_in_the_group_hands_over_its_partitions() {
    let broker = Broker::start();
    let redis = Redis::start();
    let (text, expected) = workload();
    let mut first = Serve::start(&broker, &redis, "group", 200);
    first.wait_health(true, Duration::from_secs(60)).await;
    let second = Serve::start(&broker, &redis, "group", 200);
    second.wait_health(true, Duration::from_secs(60)).await;

    // A watcher on the survivor, for every partner.
    let watched = watch_every_partner(&second).await;

    produce_lines(&broker.bootstrap, "group.events", &text).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.kill();
    assert_exact(&second.addr, &expected, Duration::from_secs(180)).await;
    assert_eq!(watched.await.unwrap(), PARTNERS, "the watcher on the survivor saw every partner change");
}

/// A watcher on `serve` for every partner; resolves to how many partners it saw change.
async fn watch_every_partner(serve: &Serve) -> tokio::task::JoinHandle<usize> {
    let mut client = serve.client().await;
    let mut watch = client
        .watch_scores(proto::WatchScoresRequest { partner_ids: Vec::new(), all: true, resume_cursor: String::new() })
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move {
        let mut partners = std::collections::BTreeSet::new();
        while partners.len() < PARTNERS {
            match tokio::time::timeout(Duration::from_secs(120), watch.message()).await {
                Ok(Ok(Some(change))) => {
                    partners.insert(change.score.unwrap().partner_id);
                }
                _ => break,
            }
        }
        partners.len()
    })
}

/// Scale-out (issue 9): three instances in one group on a 12-partition topic, state in a
/// three-master Redis Cluster; one instance is killed and another added mid-stream, then a
/// second one killed. Each instance got partitions; the end state is exact on every
/// surviving instance, for every partner; watchers on two instances see every partner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_partitions_and_come_and_go_with_nothing_lost() {
    let broker = Broker::start();
    let cluster = RedisCluster::start();
    let dir = std::env::temp_dir().join(format!("pcs-scale-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (text, expected) = workload();
    let lines: Vec<&str> = text.lines().collect();
    let (first_half, second_half) = lines.split_at(lines.len() / 2);
    let log = |name: &str| dir.join(format!("{name}.log"));

    let mut a = Serve::start_on_cluster(&broker, &cluster, "scale", &log("a"));
    a.wait_health(true, Duration::from_secs(60)).await;
    let mut b = Serve::start_on_cluster(&broker, &cluster, "scale", &log("b"));
    let c = Serve::start_on_cluster(&broker, &cluster, "scale", &log("c"));
    b.wait_health(true, Duration::from_secs(60)).await;
    c.wait_health(true, Duration::from_secs(60)).await;
    let watched_on_c = watch_every_partner(&c).await;

    produce_lines(&broker.bootstrap, "scale.events", &first_half.join("\n")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill();
    let d = Serve::start_on_cluster(&broker, &cluster, "scale", &log("d"));
    d.wait_health(true, Duration::from_secs(60)).await;
    let watched_on_d = watch_every_partner(&d).await;
    produce_lines(&broker.bootstrap, "scale.events", &second_half.join("\n")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.kill();

    for survivor in [&c, &d] {
        assert_exact(&survivor.addr, &expected, Duration::from_secs(180)).await;
    }
    assert_eq!(watched_on_c.await.unwrap(), PARTNERS, "the watcher on c saw every partner change");
    assert!(watched_on_d.await.unwrap() > 0, "the watcher on d, added mid-stream, saw changes");
    // Every instance owned partitions at some point: the group shared the load.
    for name in ["a", "b", "c", "d"] {
        let text = std::fs::read_to_string(log(name)).unwrap();
        let owned = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|l| {
            l["fields"]["message"] == "partitions assigned"
                && l["fields"]["partitions"].as_str().is_some_and(|p| p.contains("scale.events"))
        });
        assert!(owned, "instance {name} never owned a partition:\n{text}");
    }
    drop((c, d));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_promptly_and_loses_nothing() {
    let broker = Broker::start();
    let redis = Redis::start();
    let (text, expected) = workload();
    let mut serve = Serve::start(&broker, &redis, "term", 100);
    serve.wait_health(true, Duration::from_secs(60)).await;
    produce_lines(&broker.bootstrap, "term.events", &text).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (took, status) = serve.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "took {took:?} to exit after SIGTERM");
    let serve = Serve::start(&broker, &redis, "term", 100);
    assert_exact(&serve.addr, &expected, Duration::from_secs(180)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_is_survived() {
    // librdkafka's mock cluster can take its broker down and up again (tansu keeps its
    // data in memory, so a restarted tansu would be an empty broker).
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    for (topic, partitions) in
        [("outage-broker.events", 3), ("outage-broker.events.dlq", 1), ("outage-broker.scores", 2)]
    {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    let broker = Broker::external(&cluster.bootstrap_servers());
    let redis = Redis::start();
    let (text, expected) = workload();
    let lines: Vec<&str> = text.lines().collect();
    let (first_half, second_half) = lines.split_at(lines.len() / 2);
    let service = support::Service::start(support::config(&broker, &redis, "outage-broker", "2024-07-10")).await;
    produce_lines(&broker.bootstrap, "outage-broker.events", &first_half.join("\n")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.broker_up(1).unwrap();

    produce_lines(&broker.bootstrap, "outage-broker.events", &second_half.join("\n")).await;
    assert_exact(&service.addr(), &expected, Duration::from_secs(120)).await;
    service.stop().await;
}

/// A burst of 100k undecodable messages with good events among them: every bad one reaches
/// the dead-letter topic with its reason, every good one is applied, and the pipeline keeps
/// going. How much the burst slows the good events is a performance figure, so it is
/// measured by the benchmark (`scripts/bench`, "bad-event burst"), not asserted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bad_events_is_dead_lettered_and_the_good_ones_applied() {
    let broker = Broker::start();
    let redis = Redis::start();
    // The production batch size (the other tests use small batches to have many of them).
    let mut cfg = support::config(&broker, &redis, "burst", "2024-07-10");
    cfg.batch_max_events = 5000;
    let service = support::Service::start(cfg).await;
    // 2000 good events over 200 partners, each behind 50 bad ones: 100k bad events. The last
    // event of each partner brings it to 2 USD.
    let lines: Vec<String> = (0..2000)
        .flat_map(|i| {
            let good = format!(
                r#"{{"type":"acr","event_id":"B{i}","partner_id":"B{}","customer_id":"C{}","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"200000"}}"#,
                i % 200,
                i / 200
            );
            (0..50).map(move |j| format!("junk {i}.{j} is not an event")).chain(std::iter::once(good))
        })
        .collect();
    produce_lines(&broker.bootstrap, "burst.events", &lines.join("\n")).await;
    let mut client = connect(&service.addr()).await;
    let started = Instant::now();
    for p in 0..200 {
        loop {
            let request = proto::GetScoreRequest { partner_id: format!("B{p}"), as_of: None };
            if let Ok(r) = client.get_score(request).await
                && r.into_inner().score.unwrap().ttm_acr_micros == 2_000_000
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "partner B{p} incomplete after 120 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let letters = read_topic(&broker.bootstrap, "burst.events.dlq", 100_000, Duration::from_secs(120));
    assert_eq!(letters.len(), 100_000, "every bad event is dead-lettered exactly once here (no crash, no retry)");
    assert!(letters.iter().all(|l| l.header("pcs-error").is_some_and(|r| !r.is_empty())), "each with its reason");
    service.stop().await;
}
