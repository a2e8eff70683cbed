//! The service end to end against a real redis-server and a real Kafka-protocol broker.

mod support;

use pcs::proto;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{
    Broker, Redis, RedisCluster, Service, config, golden_dir, produce_lines, read_topic, spec_keys, wait_for_reports,
};
use tokio::task::JoinSet;
use tonic::Code;

/// Where a test service keeps its state.
#[derive(Clone)]
enum StateAt {
    Redis(String),
    Cluster(Vec<String>),
}

async fn golden_vector(broker_bootstrap: String, state: StateAt, name: String) -> Result<(), String> {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join(format!("{name}.expected.json"))).unwrap())
            .unwrap();
    let text = std::fs::read_to_string(golden_dir().join(format!("{name}.events.jsonl"))).unwrap();
    let as_of = expected["as_of"].as_str().unwrap();
    let topic_name = format!("golden-{}", name.replace('_', "-"));
    let broker = Broker::external(&broker_bootstrap);
    let mut cfg = match &state {
        StateAt::Redis(url) => config(&broker, &Redis::external(url), &topic_name, as_of),
        StateAt::Cluster(nodes) => {
            let mut cfg = config(&broker, &Redis::external("unused"), &format!("{topic_name}-cluster"), as_of);
            cfg.redis_url = None;
            cfg.redis_cluster_nodes = nodes.clone();
            cfg
        }
    };
    cfg.events_partitions = 3;
    let service = Service::start(cfg).await;
    produce_lines(service.config.kafka_brokers.as_deref().unwrap(), &service.config.events_topic, &text).await;

    let reports: BTreeMap<String, Value> = expected["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["partner_id"].as_str().unwrap().to_owned(), spec_keys(r)))
        .collect();
    wait_for_reports(&service, &reports, Duration::from_secs(90)).await.map_err(|e| format!("{name}: {e}"))?;

    // Every rejected line is on the dead-letter topic, with its original bytes and a reason.
    let lines: Vec<&str> = text.split('\n').collect();
    let rejected: Vec<String> = expected["rejected_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| lines[n.as_u64().unwrap() as usize - 1].trim_end_matches('\r').to_owned())
        .collect();
    let dlq = service.config.dlq_topic();
    let bootstrap = service.config.kafka_brokers.clone().unwrap();
    let want = rejected.len();
    let letters =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, &dlq, want, Duration::from_secs(30))).await.unwrap();
    let mut got: Vec<String> = letters.iter().map(|l| String::from_utf8_lossy(&l.payload).into_owned()).collect();
    let mut want_payloads = rejected.clone();
    got.sort();
    want_payloads.sort();
    if got != want_payloads {
        return Err(format!("{name}: dead letters {got:?}, expected {want_payloads:?}"));
    }
    for letter in &letters {
        for header in ["pcs-error", "pcs-source-topic", "pcs-source-partition", "pcs-source-offset"] {
            if letter.header(header).is_none_or(str::is_empty) {
                return Err(format!("{name}: a dead letter lacks {header}"));
            }
        }
    }
    service.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_golden_vector_end_to_end() {
    let redis = Redis::start();
    every_golden_vector(StateAt::Redis(redis.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_golden_vector_end_to_end_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    every_golden_vector(StateAt::Cluster(cluster.urls())).await;
    // The partners really are spread over the shards.
    for node in &cluster.nodes {
        let keys =
            std::process::Command::new("redis-cli").args(["-p", &node.port.to_string(), "dbsize"]).output().unwrap();
        let keys: u64 = String::from_utf8_lossy(&keys.stdout).trim().parse().unwrap();
        assert!(keys > 0, "a master holds no keys");
    }
}

async fn every_golden_vector(state: StateAt) {
    let broker = Broker::start();
    let mut names: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".expected.json").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 17);
    let mut tasks = JoinSet::new();
    for name in names {
        tasks.spawn(golden_vector(broker.bootstrap.clone(), state.clone(), name));
    }
    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn acr(id: &str, partner: &str, customer: &str, month: &str, usd: i64) -> String {
    format!(
        r#"{{"type":"acr","event_id":"{id}","partner_id":"{partner}","customer_id":"{customer}","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"{month}","amount_micros":"{}"}}"#,
        usd * 1_000_000
    )
}

async fn ttm(service: &Service, partner: &str) -> Option<i64> {
    let mut client = service.client().await;
    match client.get_score(proto::GetScoreRequest { partner_id: partner.into(), as_of: None }).await {
        Ok(r) => Some(r.into_inner().score.unwrap().ttm_acr_micros),
        Err(s) if s.code() == Code::NotFound => None,
        Err(s) => panic!("GetScore: {s}"),
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_id_counts_once() {
    let broker = Broker::start();
    let redis = Redis::start();
    let service = Service::start(config(&broker, &redis, "dedup", "2024-07-10")).await;
    let line = acr("a-1", "P1", "C1", "2024-06", 700);
    // The same event three times (new offsets each time), then another fact.
    let text = format!("{line}\n{line}\n{line}\n{}\n", acr("a-2", "P1", "C2", "2024-06", 100));
    produce_lines(&broker.bootstrap, &service.config.events_topic, &text).await;
    wait_until("both facts", Duration::from_secs(60), || async { ttm(&service, "P1").await == Some(800_000_000) })
        .await;
    // And later again, after it was applied.
    produce_lines(
        &broker.bootstrap,
        &service.config.events_topic,
        &format!("{line}\n{}\n", acr("a-3", "P1", "C3", "2024-06", 1)),
    )
    .await;
    wait_until("the third fact", Duration::from_secs(60), || async { ttm(&service, "P1").await == Some(801_000_000) })
        .await;
    service.stop().await;
}

/// Events queued when a batch begins (they arrived while the batch before was applied) are
/// taken at once: the batch wait is for a first event that had to be waited for. Three
/// events on one partition, batches of two and a batch wait of 30 s: the first batch waits
/// for its first event and is full at once; the second finds the third event queued, and
/// would sit out the 30 s waiting for company if every batch waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_takes_the_events_already_queued_without_waiting() {
    let broker = Broker::start();
    let redis = Redis::start();
    let mut cfg = config(&broker, &redis, "queued", "2024-07-10");
    cfg.events_partitions = 1;
    cfg.batch_max_events = 2;
    cfg.batch_max_wait_ms = 30_000;
    create_topic(&broker.bootstrap, &cfg.events_topic).await;
    let lines: Vec<String> = (1..=3).map(|p| acr(&format!("q-{p}"), &format!("P{p}"), "C1", "2024-06", 100)).collect();
    produce_lines(&broker.bootstrap, &cfg.events_topic, &lines.join("\n")).await;
    let service = Service::start(cfg).await;
    wait_until("the first batch", Duration::from_secs(60), || async { ttm(&service, "P1").await.is_some() }).await;
    wait_until("the third event, queued behind the first batch", Duration::from_secs(10), || async {
        ttm(&service, "P3").await.is_some()
    })
    .await;
    service.stop().await;
}

/// Reads go over connections of their own. Redis answers a connection's commands in order,
/// so a read sent on the applier's connection would wait behind every commit pipelined before
/// it. Here Redis holds the applier's commit (`CLIENT PAUSE … WRITE` stops a client at its
/// first write, with everything it sent after it): GetScore must still answer, and once Redis
/// lets go, the held event is applied as usual. On one shared connection the read waits out
/// the store's 1 s timeout and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_answered_while_redis_holds_the_applier() {
    let broker = Broker::start();
    let redis = Redis::start();
    let service = Service::start(config(&broker, &redis, "apart", "2024-07-10")).await;
    let topic = service.config.events_topic.clone();
    produce_lines(&broker.bootstrap, &topic, &acr("h-1", "P1", "C1", "2024-06", 100)).await;
    wait_until("the first event", Duration::from_secs(60), || async { ttm(&service, "P1").await.is_some() }).await;
    let mut admin = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let redis_says = async |admin: &mut redis::aio::MultiplexedConnection, args: &[&str]| -> String {
        redis::cmd(args[0]).arg(&args[1..]).query_async(admin).await.unwrap()
    };
    redis_says(&mut admin, &["CLIENT", "PAUSE", "10000", "WRITE"]).await;
    produce_lines(&broker.bootstrap, &topic, &acr("h-2", "P2", "C1", "2024-06", 200)).await;
    let deadline = Instant::now() + Duration::from_secs(8);
    while !redis_says(&mut admin, &["INFO", "clients"]).await.contains("blocked_clients:1") {
        assert!(Instant::now() < deadline, "the applier's commit never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ttm(&service, "P1").await, Some(100_000_000), "a read while the applier is held");
    assert_eq!(ttm(&service, "P2").await, None, "the held event is not applied before Redis lets go");
    assert!(redis_says(&mut admin, &["INFO", "clients"]).await.contains("blocked_clients:1"), "still held");
    redis_says(&mut admin, &["CLIENT", "UNPAUSE"]).await;
    wait_until("the held event", Duration::from_secs(60), || async { ttm(&service, "P2").await == Some(200_000_000) })
        .await;
    service.stop().await;
}

/// A stream of events over many partners, its expected reports computed by the library.
fn stream(partners: usize, events: usize) -> (String, BTreeMap<String, Value>) {
    let mut lines = Vec::new();
    for i in 0..events {
        let partner = format!("P{}", i % partners);
        let month = format!("2024-{:02}", i % 6 + 1);
        lines.push(acr(&format!("e{i}"), &partner, &format!("C{}", i % 7), &month, (i % 900) as i64 + 100));
        if i % 5 == 0 {
            lines.push(format!(
                r#"{{"type":"deployment","event_id":"d{i}","partner_id":"{partner}","deployment_id":"dep{}","customer_id":"C1","solution_area":"DATA_AI","service":"AKS","attribution":"CSP","deployed_on":"2024-0{}-15"}}"#,
                i % 9,
                i % 6 + 1
            ));
        }
    }
    (lines.join("\n"), support::expected_reports(&lines, "2024-07-10"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_mid_stream_and_restarting_loses_and_doubles_nothing() {
    let broker = Broker::start();
    let redis = Redis::start();
    let cfg = config(&broker, &redis, "restart", "2024-07-10");
    let (text, expected) = stream(40, 3000);
    let service = Service::start(cfg.clone()).await;
    let topic = cfg.events_topic.clone();
    let bootstrap = broker.bootstrap.clone();
    let producing = tokio::spawn(async move { produce_lines(&bootstrap, &topic, &text).await });
    // Stop while events are still being applied.
    wait_until("some progress", Duration::from_secs(60), || async { ttm(&service, "P0").await.is_some() }).await;
    service.stop().await;
    producing.await.unwrap();
    let mut restarted = cfg.clone();
    restarted.listen = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let service = Service::start(restarted).await;
    wait_for_reports(&service, &expected, Duration::from_secs(120)).await.unwrap();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_change_in_order_and_can_resume() {
    let broker = Broker::start();
    let redis = Redis::start();
    let service = Service::start(config(&broker, &redis, "watch", "2024-07-10")).await;
    let mut client = service.client().await;
    let mut watch = client
        .watch_scores(proto::WatchScoresRequest {
            partner_ids: vec!["W1".into(), "W2".into()],
            all: false,
            resume_cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    for i in 0..20 {
        lines.push(acr(&format!("w{i}"), if i % 2 == 0 { "W1" } else { "W2" }, "C1", "2024-06", 10));
        lines.push(acr(&format!("x{i}"), "OTHER", "C1", "2024-06", 10));
    }
    produce_lines(&broker.bootstrap, &service.config.events_topic, &lines.join("\n")).await;

    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut latest_ttm: BTreeMap<String, i64> = BTreeMap::new();
    let mut latest: BTreeMap<String, proto::PartnerScore> = BTreeMap::new();
    let mut cursors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Each partner ends at 10 × 10 USD; batches may merge several events into one change.
    while latest_ttm.len() < 2 || latest_ttm.values().any(|t| *t != 100_000_000) {
        let change =
            tokio::time::timeout_at(deadline.into(), watch.message()).await.expect("changes in time").unwrap().unwrap();
        let score = change.score.unwrap();
        assert_ne!(score.partner_id, "OTHER", "only the partners asked for");
        let seen = versions.entry(score.partner_id.clone()).or_default();
        assert!(seen.last().is_none_or(|v| change.version > *v), "in order");
        seen.push(change.version);
        latest_ttm.insert(score.partner_id.clone(), score.ttm_acr_micros);
        cursors.push((change.cursor, score.partner_id.clone(), change.version));
        latest.insert(score.partner_id.clone(), score);
    }
    // Every stored change was seen: versions run 1, 2, ... without a gap.
    for seen in versions.values() {
        assert_eq!(*seen, (1..=seen.len() as u64).collect::<Vec<_>>());
    }
    assert_eq!(ttm(&service, "W1").await, Some(100_000_000));
    // A score is stored without its shortfall plans and served with them worked out again:
    // the same score the watchers were sent, plans included.
    let watched = latest.remove("W1").unwrap();
    assert!(watched.designations.iter().any(|d| d.shortfall.is_some()), "W1 qualifies for nothing: {watched:?}");
    let served = client.get_score(proto::GetScoreRequest { partner_id: "W1".into(), as_of: None }).await.unwrap();
    assert_eq!(served.into_inner().score, Some(watched));

    // Resuming from the first change's cursor replays everything after it.
    let (cursor, _, _) = cursors[0].clone();
    let mut resumed = client
        .watch_scores(proto::WatchScoresRequest {
            partner_ids: vec!["W1".into(), "W2".into()],
            all: false,
            resume_cursor: cursor,
        })
        .await
        .unwrap()
        .into_inner();
    for (_, partner, version) in &cursors[1..] {
        let change = tokio::time::timeout(Duration::from_secs(30), resumed.message()).await.unwrap().unwrap().unwrap();
        assert_eq!((&change.score.unwrap().partner_id, change.version), (partner, *version));
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_proper_grpc_codes() {
    let broker = Broker::start();
    let mut redis = Redis::start();
    let service = Service::start(config(&broker, &redis, "errors", "2024-07-10")).await;
    let mut client = service.client().await;
    let get = |id: &str| proto::GetScoreRequest { partner_id: id.into(), as_of: None };
    let status = client.get_score(get("NOPE")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client.get_score(get("bad id")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("partner_id"), "{}", status.message());
    let status = client
        .batch_get_scores(proto::BatchGetScoresRequest { partner_ids: (0..1001).map(|i| format!("P{i}")).collect() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("1000"));
    let status = client
        .get_score(proto::GetScoreRequest { partner_id: "P1".into(), as_of: Some("2024-13-01".into()) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("as_of"));

    // Reflection lists the service, so grpcurl needs no proto files.
    let mut reflection = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        service.channel().await.unwrap(),
    );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses =
        reflection.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let listed = format!("{:?}", responses.message().await.unwrap().unwrap());
    assert!(listed.contains("pcs.v1.PartnerScoreService"), "{listed}");

    // Redis down: reads answer UNAVAILABLE promptly.
    redis.kill();
    let started = Instant::now();
    let status = client.get_score(get("P1")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_events_and_watchers_on_another_instance() {
    use prost::Message;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let broker = Broker::start();
    let redis = Redis::start();
    let first = Service::start(config(&broker, &redis, "twin", "2024-07-10")).await;
    let mut second_cfg = config(&broker, &redis, "twin", "2024-07-10");
    second_cfg.listen = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let second = Service::start(second_cfg).await;
    let mut client = second.client().await;
    let mut watch = client
        .watch_scores(proto::WatchScoresRequest { partner_ids: Vec::new(), all: true, resume_cursor: String::new() })
        .await
        .unwrap()
        .into_inner();

    // Protobuf events (content-type header) for 12 partners, spread over every partition.
    let producer: FutureProducer = pcs::kafka::Cluster::new(&broker.bootstrap).producer().create().unwrap();
    for i in 0..12 {
        let event = proto::PartnerEvent {
            event_id: format!("pb-{i}"),
            partner_id: format!("PB{i}"),
            payload: Some(proto::partner_event::Payload::Acr(proto::AcrLine {
                customer_id: "C1".into(),
                customer_segment: proto::CustomerSegment::Smb as i32,
                solution_area: proto::SolutionArea::DataAi as i32,
                attribution: "PAL".into(),
                month: "2024-06".into(),
                amount_micros: 1_000_000 * (i + 1),
            })),
        };
        let bytes = event.encode_to_vec();
        let key = format!("PB{i}");
        let headers = OwnedHeaders::new().insert(Header { key: "content-type", value: Some("application/x-protobuf") });
        let record = FutureRecord::to(&first.config.events_topic).key(&key).payload(&bytes).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 12 {
        let change =
            tokio::time::timeout(Duration::from_secs(60), watch.message()).await.expect("in time").unwrap().unwrap();
        seen.insert(change.score.unwrap().partner_id);
    }
    assert_eq!(ttm(&first, "PB11").await, Some(12_000_000));
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_refused_with_the_limit_named() {
    let broker = Broker::start();
    let redis = Redis::start();
    let mut cfg = config(&broker, &redis, "hostile", "2024-07-10");
    cfg.max_watchers = 2;
    cfg.watch_buffer = 4;
    let service = Service::start(cfg).await;
    let mut client = service.client().await;
    let all = || proto::WatchScoresRequest { partner_ids: Vec::new(), all: true, resume_cursor: String::new() };

    // A watcher that never reads, and one more: the third is refused.
    let mut sleeper = client.watch_scores(all()).await.unwrap().into_inner();
    let _second = client.watch_scores(all()).await.unwrap().into_inner();
    let refused = client.watch_scores(all()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("--max-watchers") && refused.message().contains('2'), "{}", refused.message());

    // Requests over the size limit are refused before they are decoded.
    let huge =
        client.get_score(proto::GetScoreRequest { partner_id: "P".repeat(2 << 20), as_of: None }).await.unwrap_err();
    assert!(matches!(huge.code(), Code::OutOfRange | Code::ResourceExhausted), "{huge:?}");
    assert!(huge.message().contains("limit"), "{}", huge.message());

    // The sleeper does not hold up ingestion: 400 partners change while it reads nothing.
    let lines: Vec<String> = (0..400).map(|i| acr(&format!("h{i}"), &format!("H{i}"), "C1", "2024-06", 10)).collect();
    produce_lines(&broker.bootstrap, &service.config.events_topic, &lines.join("\n")).await;
    wait_until("every partner applied", Duration::from_secs(60), || async { ttm(&service, "H399").await.is_some() })
        .await;
    // It was closed for lagging, with a cursor to resume from.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), sleeper.message()).await.expect("the stream ends") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("closed without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Aborted, "{ended:?}");
    assert!(ended.metadata().get(pcs::api::RESUME_CURSOR).is_some(), "no resume cursor in {ended:?}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_undecodable_messages_are_dead_lettered_and_the_rest_goes_on() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = Broker::start();
    let redis = Redis::start();
    let service = Service::start(config(&broker, &redis, "poison", "2024-07-10")).await;
    let mut settings = pcs::kafka::Cluster::new(&broker.bootstrap);
    settings.overrides.push(("message.max.bytes".into(), "4000000".into()));
    let producer: FutureProducer = settings.producer().create().unwrap();
    let topic = service.config.events_topic.clone();
    let big = vec![b'{'; pcs::ingest::MAX_EVENT_BYTES + 10];
    producer
        .send(FutureRecord::to(&topic).key("P1").payload(&big), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let junk: &[u8] = &[0xff, 0xfe, 0x00, 0x01];
    producer
        .send(FutureRecord::to(&topic).key("P1").payload(junk), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    produce_lines(&broker.bootstrap, &topic, &acr("ok-1", "P1", "C1", "2024-06", 5)).await;
    wait_until("the good event", Duration::from_secs(60), || async { ttm(&service, "P1").await == Some(5_000_000) })
        .await;

    let dlq = service.config.dlq_topic();
    let bootstrap = broker.bootstrap.clone();
    let letters =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, &dlq, 2, Duration::from_secs(30))).await.unwrap();
    assert_eq!(letters.len(), 2);
    let big_letter = letters.iter().find(|l| l.header("pcs-original-bytes").is_some()).expect("the oversized message");
    assert!(big_letter.header("pcs-error").unwrap().contains("exceeds the 1048576-byte limit"));
    assert_eq!(big_letter.payload.len(), pcs::ingest::MAX_DEAD_LETTER_PAYLOAD);
    let junk_letter = letters.iter().find(|l| l.header("pcs-original-bytes").is_none()).unwrap();
    assert_eq!(junk_letter.payload, junk);
    assert!(junk_letter.header("pcs-error").unwrap().contains("UTF-8"));
    service.stop().await;
}

/// Scores handed to the publisher reach the feed in the order they were handed over, even
/// when each call's hand-over runs on a task of its own and the producer's queue fills: a
/// queue of 4 messages, a first call of 200 scores, then two calls of one. A call that
/// handed over before the call before it finished would put its score among the first
/// call's; a full queue failing the hand-over would lose scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_reach_the_feed_in_the_order_handed_over_through_a_full_queue() {
    let broker = Broker::start();
    let cluster = pcs::kafka::Cluster::new(&broker.bootstrap);
    let topic = "ordered-scores";
    pcs::kafka::ensure_topics(
        &cluster,
        1,
        &[pcs::kafka::topics::TopicSpec { name: topic, partitions: 1, compacted: false }],
    )
    .await
    .unwrap();
    let producer: rdkafka::producer::FutureProducer =
        cluster.producer().set("queue.buffering.max.messages", "4").create().unwrap();
    let publisher = pcs::feed::ScorePublisher::new(producer, topic.to_owned());
    let update = |n: usize| pcs::ingest::ScoreUpdate {
        partner_id: format!("P{n}"),
        score: n.to_string().into_bytes().into(),
        version: n as u64,
        oldest_event_ms: None,
    };
    let calls = [(0..200).map(update).collect::<Vec<_>>(), vec![update(200)], vec![update(201)]];
    let mut deliveries = pcs::feed::Deliveries::default();
    for call in calls {
        deliveries.append(publisher.send(call).await);
    }
    deliveries.acknowledged().await.expect("every score is delivered");
    let read: Vec<String> = read_topic(&broker.bootstrap, topic, 202, Duration::from_secs(30))
        .into_iter()
        .map(|l| String::from_utf8(l.payload).unwrap())
        .collect();
    let handed: Vec<String> = (0..202).map(|n| n.to_string()).collect();
    assert_eq!(read, handed);
}

/// This instance's scores reach its live watchers as soon as the broker acknowledges them,
/// another instance's through the topic, and the watchers get every record once, in the
/// topic's order, each with the cursor right after it: what the topic's reader alone gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_watchers_get_acknowledged_scores_at_once_and_the_topic_in_order() {
    let TwoWriters { broker, hub, shutdown, ours, theirs } = TwoWriters::start("watched-scores").await;
    let mut live = hub.subscribe();
    let updates = score_updates;
    let mut total = 0;
    for round in 0..10 {
        ours.publish(&updates("A", round, 5)).await.unwrap();
        total += 5;
        if round % 3 == 1 {
            theirs.publish(&updates("B", round, 2)).await.unwrap();
            total += 2;
        }
    }
    // Nothing is sent twice, though the reader reads what the producer already gave.
    the_watcher_gets_the_topic_in_order(&broker, "watched-scores", &mut live, total).await;
    assert!(hub.sent_early() > 0, "this instance's scores went to the watchers as acknowledged");
    assert!(hub.sent_early() <= 50, "another instance's scores come from the topic");
    let _ = shutdown.send(());
}

/// An instance that writes alone stops reading its own scores back, and another writer's
/// score still reaches its live watchers, in the topic's order, once the reader has seen it
/// stay unsent at the partition's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_reader_idles_while_this_instance_writes_alone_and_still_sends_another_writers_scores() {
    let TwoWriters { broker, hub, shutdown, ours, theirs } = TwoWriters::start("idle-scores").await;
    let mut live = hub.subscribe();
    let updates = |who: &str, round: usize| score_updates(who, round, 3);
    let mut total = 0;
    let mut round = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hub.idle_partitions() == 0 {
        assert!(std::time::Instant::now() < deadline, "the reader never stopped reading this instance's scores back");
        ours.publish(&updates("A", round)).await.unwrap();
        (total, round) = (total + 3, round + 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    theirs.publish(&updates("B", round)).await.unwrap();
    ours.publish(&updates("A", round + 1)).await.unwrap();
    total += 6;
    // Nothing is sent twice, though the reader fetched again from before what it had passed over.
    the_watcher_gets_the_topic_in_order(&broker, "idle-scores", &mut live, total).await;
    while hub.idle_partitions() == 0 {
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(30), "the reader never idled again");
        ours.publish(&updates("A", round + 2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(END_CHECKS_AND_MORE).await;
    assert_eq!(hub.idle_partitions(), 1, "a partition with nothing unsent at its end stays idle");
    let _ = shutdown.send(());
}

/// A broker with a one-partition scores topic, its watch hub, and two publishers to it:
/// this instance's, whose acknowledged scores go to the hub, and another instance's.
struct TwoWriters {
    broker: Broker,
    hub: std::sync::Arc<pcs::feed::WatchHub>,
    shutdown: tokio::sync::broadcast::Sender<()>,
    ours: pcs::feed::ScorePublisher,
    theirs: pcs::feed::ScorePublisher,
}

impl TwoWriters {
    async fn start(topic: &str) -> TwoWriters {
        let broker = Broker::start();
        let cluster = pcs::kafka::Cluster::new(&broker.bootstrap);
        create_topic(&broker.bootstrap, topic).await;
        let (shutdown, _) = tokio::sync::broadcast::channel(1);
        let hub = pcs::feed::WatchHub::start(&cluster, topic, 1024, shutdown.subscribe()).await.unwrap();
        let ours = pcs::feed::ScorePublisher::new(cluster.producer().create().unwrap(), topic.to_owned())
            .with_watchers(hub.clone());
        let theirs = pcs::feed::ScorePublisher::new(cluster.producer().create().unwrap(), topic.to_owned());
        TwoWriters { broker, hub, shutdown, ours, theirs }
    }
}

/// `count` scores of writer `who` in its `round`, each naming both.
fn score_updates(who: &str, round: usize, count: usize) -> Vec<pcs::ingest::ScoreUpdate> {
    (0..count)
        .map(|i| pcs::ingest::ScoreUpdate {
            partner_id: format!("{who}{i}"),
            score: format!("{who}{round}.{i}").into_bytes().into(),
            version: round as u64 + 1,
            oldest_event_ms: None,
        })
        .collect()
}

/// The live watcher gets exactly the topic's `total` records, once each, in order, each with
/// its version and the cursor right after it, and then nothing more.
async fn the_watcher_gets_the_topic_in_order(
    broker: &Broker,
    topic: &str,
    live: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<pcs::feed::WatchItem>>,
    total: usize,
) {
    let mut got = Vec::new();
    while got.len() < total {
        let item =
            tokio::time::timeout(Duration::from_secs(30), live.recv()).await.expect("every score in time").unwrap();
        got.push(item);
    }
    assert!(tokio::time::timeout(Duration::from_secs(1), live.recv()).await.is_err(), "nothing is sent twice");
    let topic_records = read_topic(&broker.bootstrap, topic, total, Duration::from_secs(30));
    assert_eq!(topic_records.len(), total);
    for (offset, (item, record)) in got.iter().zip(&topic_records).enumerate() {
        assert_eq!(item.score.as_ref(), record.payload.as_slice(), "offset {offset}: the topic's record, in order");
        assert_eq!(item.version.to_string(), record.header(pcs::feed::VERSION_HEADER).unwrap());
        assert_eq!(item.cursor.encode(), format!("0:{}", offset + 1), "the cursor right after it");
    }
}

/// Several of the live reader's checks of an idle partition's end (a second apart).
const END_CHECKS_AND_MORE: Duration = Duration::from_secs(3);

/// Takes no dead letters: the events given are all good.
struct NoDeadLetters;

impl pcs::ingest::DeadLetterSink for NoDeadLetters {
    async fn send(&self, letters: Vec<pcs::ingest::DeadLetter>) -> Result<(), pcs::ingest::IngestError> {
        panic!("unexpected dead letters: {:?}", letters.iter().map(|l| &l.reason).collect::<Vec<_>>());
    }
}

type RedisApplier = std::sync::Arc<pcs::ingest::Applier<pcs::store::RedisStore>>;

fn day(s: &str) -> chrono::NaiveDate {
    pcs::calendar::parse_date(s).unwrap()
}

/// Applies one JSON event, from offset `offset` of partition 0, as of `today`.
async fn apply_line(applier: &RedisApplier, offset: i64, line: &str, today: &str) {
    let raw = pcs::ingest::RawMessage {
        source: pcs::store::SourcePartition { topic: "events".into(), partition: 0 },
        offset,
        key: None,
        payload: line.as_bytes().to_vec(),
        headers: Vec::new(),
        timestamp_ms: None,
    };
    let received = pcs::ingest::Received { event: pcs::events::decode_json(&raw.payload).unwrap(), raw: &raw };
    applier.apply(day(today), &[received], &NoDeadLetters, &mut Vec::new()).await.unwrap();
}

/// An applier over a fresh store holding partner P1, whose deployment leaves its window on
/// 2024-07-20: the rollover to that day changes its score (to version 2).
async fn rollover_partner(redis: &Redis) -> RedisApplier {
    let store = pcs::store::RedisStore::connect(&redis.url(), "late", Duration::from_secs(10)).unwrap();
    let applier = std::sync::Arc::new(pcs::ingest::Applier {
        store,
        rules: std::sync::Arc::new(pcs::rules::RuleBook::embedded()),
        history_days: 400,
        dedup_window_days: 7,
        workers: pcs::ingest::Workers::default(),
    });
    let deployment = r#"{"type":"deployment","event_id":"d","partner_id":"P1","deployment_id":"x","customer_id":"C","solution_area":"DATA_AI","service":"AKS","attribution":"PAL","deployed_on":"2023-07-20"}"#;
    apply_line(&applier, 0, deployment, "2024-07-10").await;
    applier
}

async fn version_of_p1(applier: &RedisApplier) -> u64 {
    use pcs::store::StateStore;
    applier.store.scores(&["P1".to_owned()]).await.unwrap()[0].as_ref().map_or(0, |s| s.version)
}

/// The rollover task on 2024-07-20, ticking every 200 ms and publishing changes noted longer
/// than `stale_after` ago, publishing to `topic` at `bootstrap` through a producer whose
/// messages time out after a second.
fn start_rollover(
    applier: &RedisApplier,
    bootstrap: &str,
    topic: &str,
    stale_after: Duration,
) -> (tokio::sync::broadcast::Sender<()>, tokio::task::JoinHandle<()>) {
    let producer: rdkafka::producer::FutureProducer = pcs::kafka::Cluster::new(bootstrap)
        .producer()
        .set("message.timeout.ms", "1000")
        .set("reconnect.backoff.max.ms", "200")
        .create()
        .unwrap();
    let publisher = pcs::feed::ScorePublisher::new(producer, topic.to_owned());
    let (shutdown, _) = tokio::sync::broadcast::channel(1);
    let task = tokio::spawn(pcs::ingest::run_rollover(
        applier.clone(),
        publisher,
        pcs::clock::Clock::Fixed(day("2024-07-20")),
        pcs::ingest::RolloverTiming { tick: Duration::from_millis(200), stale_after },
        shutdown.subscribe(),
    ));
    (shutdown, task)
}

/// The versions (header `pcs-version`) of every score on `topic`, once at least `expected`
/// arrived (or `wait` passed), and a second more for any that follow.
async fn versions_published(bootstrap: &str, topic: &str, expected: usize, wait: Duration) -> Vec<String> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &topic, expected, wait);
        std::thread::sleep(Duration::from_secs(1));
        read_topic(&bootstrap, &topic, expected + 1, Duration::from_secs(3))
            .iter()
            .map(|l| l.header(pcs::feed::VERSION_HEADER).unwrap().to_owned())
            .collect()
    })
    .await
    .unwrap()
}

async fn create_topic(bootstrap: &str, topic: &str) {
    let spec = pcs::kafka::topics::TopicSpec { name: topic, partitions: 1, compacted: false };
    pcs::kafka::ensure_topics(&pcs::kafka::Cluster::new(bootstrap), 1, &[spec]).await.unwrap();
}

/// A rollover score that could not be published is published later from what the store
/// holds then, not from the score kept: an event changed the partner meanwhile, and ingest
/// published that newer score, which the older one must not follow onto the compacted topic.
/// The broker is down for the rollover's first publish and started afterwards; the task
/// retries its own changes, not waiting for them to count as left by a stopped instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollover_score_published_late_is_the_partners_latest() {
    let redis = Redis::start();
    let applier = rollover_partner(&redis).await;
    assert_eq!(version_of_p1(&applier).await, 1);
    let port = support::free_port();
    let topic = "late-scores";
    let (shutdown, rollover) = start_rollover(&applier, &format!("127.0.0.1:{port}"), topic, Duration::from_secs(3600));
    wait_until("the rollover's write", Duration::from_secs(20), || async { version_of_p1(&applier).await == 2 }).await;
    // An event for the partner, applied (and, in the service, published) after the rollover.
    let acr = r#"{"type":"acr","event_id":"a","partner_id":"P1","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"900000000"}"#;
    apply_line(&applier, 1, acr, "2024-07-20").await;
    assert_eq!(version_of_p1(&applier).await, 3);
    // The rollover's publish fails once its message times out, with no broker to take it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let broker = Broker::start_on(port);
    create_topic(&broker.bootstrap, topic).await;
    let versions = versions_published(&broker.bootstrap, topic, 1, Duration::from_secs(60)).await;
    assert_eq!(versions, ["3"], "only the partner's latest score is published");
    let _ = shutdown.send(());
    rollover.await.unwrap();
}

/// A rollover that wrote a change and stopped before publishing it (a crash) left the
/// partner in the store's outbox: another rollover task publishes its score once the note
/// is older than `stale_after`, though the partner is no longer due, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollover_change_left_unpublished_by_a_crash_is_published_by_the_next_run() {
    use pcs::store::StateStore;
    let redis = Redis::start();
    let applier = rollover_partner(&redis).await;
    // The run that stopped: written, never published.
    applier.roll_over(day("2024-07-20"), 500).await.unwrap();
    assert_eq!(version_of_p1(&applier).await, 2);
    let broker = Broker::start();
    let topic = "rollover-scores";
    create_topic(&broker.bootstrap, topic).await;
    let (shutdown, rollover) = start_rollover(&applier, &broker.bootstrap, topic, Duration::from_secs(3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(applier.store.unpublished(i64::MAX, 10).await.unwrap(), ["P1"], "not stale yet");
    let versions = versions_published(&broker.bootstrap, topic, 1, Duration::from_secs(30)).await;
    assert_eq!(versions, ["2"]);
    wait_until("the outbox to empty", Duration::from_secs(10), || async {
        applier.store.unpublished(i64::MAX, 10).await.unwrap().is_empty()
    })
    .await;
    let _ = shutdown.send(());
    rollover.await.unwrap();
}
