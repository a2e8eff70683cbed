//! Real servers for integration tests: a redis-server and a Kafka-protocol broker (tansu, or
//! the broker named by PCS_TEST_KAFKA), each on a free loopback port, stopped on drop; and a
//! pcs service running in-process against them.

#![allow(dead_code)]

use pcs::config::ServeConfig;
use pcs::proto::partner_score_service_client::PartnerScoreServiceClient;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Ports handed out below Linux's ephemeral range (32768 and up). A port the kernel picks
/// for `bind(0)` comes from that range, where any outgoing connection of the test's servers
/// and clients can take it before the server meant for it binds: one golden run, with 17
/// services starting at once, lost that race. A Redis Cluster node also listens on its
/// port + 10000, which stays below the range too. Consecutive per process, so two servers
/// of one test binary never get the same port; each process starts at its own offset.
const PORTS: std::ops::Range<u32> = 20_000..22_768;

pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = PORTS.start + (std::process::id().wrapping_mul(7919).wrapping_add(n)) % span;
        let port = u16::try_from(port).expect("the range is below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}");
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 20 s");
}

/// A redis-server of its own.
pub struct Redis {
    pub port: u16,
    child: Child,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts with extra arguments (e.g. `--appendonly yes`), in a fresh data directory.
    pub fn start_with(extra: &[&str]) -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pcs-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Redis::spawn(port, &dir, &extra);
        let redis = Redis { port, child, dir, extra };
        redis.wait_ready();
        redis
    }

    fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        wait_for_port(port, "redis-server", &mut child);
        child
    }

    /// Starts the server again on the same port and data directory (after `kill`).
    pub fn restart(&mut self) {
        self.child = Redis::spawn(self.port, &self.dir, &self.extra);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on {} never answered PING", self.port);
    }

    /// The redis-server's process id (the benchmark reads its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Points at a server another handle owns; only for building a config.
    pub fn external(url: &str) -> ExternalRedis {
        ExternalRedis(url.to_owned())
    }

    /// Stops the server (as a crash would), keeping its data directory.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct ExternalRedis(String);

/// A local Redis Cluster of three masters (no replicas), each a redis-server on a free port
/// with `--cluster-enabled yes`, joined with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| Redis::start_with(&["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]))
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed (scripts/test installs redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        // Every node must agree the cluster is up (all 16384 slots served) before use.
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info = Command::new("redis-cli").args(["-p", &node.port.to_string(), "cluster", "info"]).output();
                if info.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok")) {
                    break;
                }
                assert!(Instant::now() < deadline, "the Redis Cluster never reached cluster_state:ok");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster { nodes }
    }

    /// Seed URLs for `--redis-cluster-nodes`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }
}

/// Anything a test config can take its Redis URL from.
pub trait RedisUrl {
    fn redis_url(&self) -> String;
}

impl RedisUrl for Redis {
    fn redis_url(&self) -> String {
        self.url()
    }
}

impl RedisUrl for ExternalRedis {
    fn redis_url(&self) -> String {
        self.0.clone()
    }
}

/// A Kafka-protocol broker: tansu on a free port, or the broker in PCS_TEST_KAFKA.
pub struct Broker {
    pub bootstrap: String,
    child: Option<Child>,
}

pub fn tansu_path() -> PathBuf {
    std::env::var_os("PCS_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/tansu"))
}

impl Broker {
    /// A broker this handle does not own (not stopped on drop).
    pub fn external(bootstrap: &str) -> Broker {
        Broker { bootstrap: bootstrap.to_owned(), child: None }
    }

    /// The process id of the broker this handle started (none for an external one).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn start() -> Broker {
        if let Ok(bootstrap) = std::env::var("PCS_TEST_KAFKA") {
            return Broker { bootstrap, child: None };
        }
        Broker::start_on(free_port())
    }

    /// tansu on `port` (always, even with PCS_TEST_KAFKA set): a test that has clients
    /// waiting for a broker there starts it late.
    pub fn start_on(port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(tansu_path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start tansu at {}: {e} (scripts/test installs it)", tansu_path().display())
            });
        wait_for_port(port, "tansu", &mut child);
        Broker { bootstrap: format!("127.0.0.1:{port}"), child: Some(child) }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `pcs serve` as a process against `broker` and `redis`, listening on `port`, as of
/// 2024-07-10, with a short group session so a killed instance's partitions move quickly.
/// Output is discarded; add settings with `.env(…)` before spawning.
pub fn serve_command(broker: &Broker, redis: &Redis, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pcs"));
    command
        .arg("serve")
        .env("PCS_KAFKA_BROKERS", &broker.bootstrap)
        .env("PCS_KAFKA_CONFIG", "session.timeout.ms=6000")
        .env("PCS_REDIS_URL", redis.url())
        .env("PCS_LISTEN", format!("127.0.0.1:{port}"))
        .env("PCS_NOW", "2024-07-10")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// A configuration for one test's service: its own topics, group and Redis prefix.
pub fn config(broker: &Broker, redis: &impl RedisUrl, name: &str, now: &str) -> ServeConfig {
    ServeConfig {
        kafka_brokers: Some(broker.bootstrap.clone()),
        kafka_config: vec!["session.timeout.ms=6000".into()],
        redis_url: Some(redis.redis_url()),
        redis_cluster_nodes: Vec::new(),
        demo: false,
        redis_prefix: format!("t-{name}"),
        redis_timeout_ms: 1000,
        events_topic: format!("{name}.events"),
        dlq_topic: None,
        scores_topic: format!("{name}.scores"),
        group_id: format!("{name}-group"),
        events_partitions: 3,
        scores_partitions: 2,
        dlq_partitions: 1,
        replication_factor: -1,
        listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        health_listen: None,
        insecure: false,
        tls_cert: None,
        tls_key: None,
        tls_client_ca: None,
        jwks: None,
        jwt_issuer: None,
        jwt_audience: None,
        now: Some(pcs::calendar::parse_date(now).unwrap()),
        rules: Vec::new(),
        batch_max_events: 500,
        batch_max_wait_ms: pcs::config::DEFAULT_BATCH_MAX_WAIT_MS,
        scoring_nice: 0,
        history_days: 400,
        dedup_window_days: 7,
        watch_buffer: 1024,
        max_watchers: 256,
    }
}

/// `pcs serve` running in this process.
pub struct Service {
    pub config: ServeConfig,
    shutdown: broadcast::Sender<()>,
    task: Option<JoinHandle<()>>,
}

impl Service {
    /// Starts the service and waits until it reports SERVING.
    pub async fn start(config: ServeConfig) -> Service {
        let (shutdown, _) = broadcast::channel(1);
        let task = tokio::spawn({
            let config = config.clone();
            let shutdown = shutdown.clone();
            async move {
                if let Err(e) = pcs::service::serve(config, shutdown).await {
                    panic!("pcs serve failed: {e}");
                }
            }
        });
        let service = Service { config, shutdown, task: Some(task) };
        service.wait_serving().await;
        service
    }

    pub fn addr(&self) -> String {
        format!("http://{}", self.config.listen)
    }

    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(self.addr()).expect("a valid URI").connect().await
    }

    pub async fn client(&self) -> PartnerScoreServiceClient<Channel> {
        PartnerScoreServiceClient::connect(self.addr()).await.unwrap()
    }

    pub async fn wait_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(channel) = self.channel().await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
                if let Ok(r) = health.check(request).await
                    && r.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "service never reported SERVING");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(());
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("service stops within 15 s").unwrap();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.shutdown.send(());
    }
}

/// Sends each non-blank line as a message keyed by its partner_id, as `pcs produce` does;
/// returns once every message is acknowledged.
pub async fn produce_lines(bootstrap: &str, topic: &str, text: &str) -> usize {
    let producer: FutureProducer = pcs::kafka::Cluster::new(bootstrap).producer().create().unwrap();
    let lines: Vec<Vec<u8>> = text.split('\n').map(|l| l.as_bytes().to_vec()).collect();
    pcs::kafka::send_lines(&producer, topic, lines).await.unwrap()
}

/// A dead letter as read back: payload and headers.
pub struct Letter {
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Letter {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Reads every message of partition 0 of `topic` from the beginning, waiting up to `wait`
/// for at least `expected` of them.
pub fn read_topic(bootstrap: &str, topic: &str, expected: usize, wait: Duration) -> Vec<Letter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&list).unwrap();
    let deadline = Instant::now() + wait;
    let mut letters = Vec::new();
    while Instant::now() < deadline && letters.len() < expected {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            letters.push(Letter { payload: m.payload().unwrap_or_default().to_vec(), headers });
        }
    }
    letters
}

/// The spec §7 keys of a report, as `compare_reports.py` reads them.
pub fn spec_keys(report: &serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    let designations: Vec<serde_json::Value> = report["designations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let subcategories: Vec<serde_json::Value> = d["subcategories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| json!({"name": s["name"], "points": s["points"], "max": s["max"], "value": s["value"]}))
                .collect();
            json!({"designation": d["designation"], "total": d["total"], "qualified": d["qualified"], "subcategories": subcategories})
        })
        .collect();
    json!({
        "partner_id": report["partner_id"],
        "as_of": report["as_of"],
        "path": report["path"],
        "ttm_acr_micros": report["ttm_acr_micros"],
        "designations": designations,
    })
}

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

/// The reports `pcs score` computes for `lines` on `as_of`, by partner, on the spec keys.
pub fn expected_reports(lines: &[String], as_of: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut partners = pcs::engine::Partners::default();
    for line in lines {
        partners.apply(&pcs::events::decode_json(line.as_bytes()).unwrap()).unwrap();
    }
    let rules = pcs::rules::RuleBook::embedded();
    let as_of = pcs::calendar::parse_date(as_of).unwrap();
    partners
        .evaluate(as_of, &rules)
        .map(|r| (r.partner_id.clone(), spec_keys(&serde_json::to_value(&r).unwrap())))
        .collect()
}

/// A served score as the spec's JSON report.
pub fn as_json(score: &pcs::proto::PartnerScore) -> serde_json::Value {
    serde_json::to_value(pcs::engine::PartnerScore::try_from(score).unwrap()).unwrap()
}

/// Polls BatchGetScores until every expected report matches on the spec keys.
pub async fn wait_for_reports(
    service: &Service,
    expected: &std::collections::BTreeMap<String, serde_json::Value>,
    timeout: Duration,
) -> Result<(), String> {
    let mut client = service.client().await;
    let ids: Vec<String> = expected.keys().cloned().collect();
    let deadline = Instant::now() + timeout;
    loop {
        let response = client
            .batch_get_scores(pcs::proto::BatchGetScoresRequest { partner_ids: ids.clone() })
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let got: std::collections::BTreeMap<String, serde_json::Value> =
            response.scores.iter().map(|s| (s.partner_id.clone(), spec_keys(&as_json(s)))).collect();
        let mismatches: Vec<String> = expected
            .iter()
            .filter(|(id, want)| got.get(*id) != Some(*want))
            .map(|(id, want)| format!("{id}:\n  got      {:?}\n  expected {want}", got.get(id)))
            .collect();
        if mismatches.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(mismatches.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
