//! The service benchmark (issue 7): real redis-server and tansu on this machine, every figure
//! printed, nothing asserted.
//!   scripts/bench            (or: cargo bench --bench pipeline)
//! Sizes: PCS_BENCH_EVENTS (default 1,000,000), PCS_BENCH_PARTNERS (20,000),
//! PCS_BENCH_SECONDS per steady-rate phase (10); PCS_BENCH_BATCH sets the service's
//! --batch-max-events (default: the service's default), to compare batch sizes, and
//! PCS_BENCH_BATCH_WAIT_MS its --batch-max-wait-ms;
//! PCS_BENCH_KAFKA_CONFIG (`key=value,...`) is passed to the service as --kafka-config.

use pcs::kafka::{Cluster, ensure_topics, send_lines, topics::TopicSpec};
use pcs::proto::{self, partner_score_service_client::PartnerScoreServiceClient};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use support::free_port;

const TOPIC: &str = "bench.events";
const PARTITIONS: i32 = 6;

/// The servers' builds, printed with the figures: two tansu binaries that both call
/// themselves 0.6.0 gave ingest figures a factor of two apart (docs/performance-log.md,
/// seventeenth round).
fn server_versions(broker: &support::Broker) -> String {
    let version = |program: &std::path::Path| {
        std::process::Command::new(program).arg("--version").output().ok().map_or_else(
            || format!("{} (no version)", program.display()),
            |out| String::from_utf8_lossy(&out.stdout).split(" sha=").next().unwrap_or_default().trim().to_owned(),
        )
    };
    let redis = version(std::path::Path::new("redis-server"));
    // A broker the benchmark started itself has a process; one from PCS_TEST_KAFKA does not.
    let kafka = if broker.pid().is_some() {
        // Both of those builds report 0.6.0: the binary's digest tells them apart.
        let tansu = support::tansu_path();
        let digest = std::process::Command::new("sha256sum")
            .arg(&tansu)
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).get(..12).map(str::to_owned))
            .unwrap_or_else(|| "no digest".to_owned());
        format!("{} ({}, sha256 {digest}…)", version(&tansu), tansu.display())
    } else {
        format!("the broker at {} (PCS_TEST_KAFKA)", broker.bootstrap)
    };
    format!("{redis}; {kafka}")
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The pre-fill's seed for [`events`].
const PRE_FILL_SEED: u64 = 0x2545_F491_4F6C_DD1D;
/// The last phase's seed for [`events`]: the catch-up's facts are not the pre-fill's again.
const CATCH_UP_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// ~90 % ACR lines over `partners` partners, 8 customers each, the 12 months to 2024-06,
/// drawn from `seed`, with event ids that start with `ids`.
fn events(n: u64, partners: u64, seed: u64, ids: &str) -> impl Iterator<Item = Vec<u8>> {
    const AREAS: [&str; 3] = ["DATA_AI", "DIGITAL_APP_INNOVATION", "INFRASTRUCTURE"];
    let mut x = seed;
    (0..n).map(move |i| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = x % partners;
        let line = match x % 20 {
            0 => format!(
                r#"{{"type":"certification","event_id":"{ids}c{i}","partner_id":"B{p}","individual_id":"u{}","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","earned_on":"2023-09-01"}}"#,
                x % 30
            ),
            1 => format!(
                r#"{{"type":"deployment","event_id":"{ids}d{i}","partner_id":"B{p}","deployment_id":"d{}","customer_id":"C1","solution_area":"{}","service":"AKS","attribution":"CSP","deployed_on":"2024-0{}-10"}}"#,
                x % 40,
                AREAS[(x % 3) as usize],
                x % 6 + 1
            ),
            _ => format!(
                r#"{{"type":"acr","event_id":"{ids}a{i}","partner_id":"B{p}","customer_id":"C{}","customer_segment":"SMB","solution_area":"{}","attribution":"PAL","month":"{}","amount_micros":"{}"}}"#,
                x % 8,
                AREAS[(x % 3) as usize],
                if x % 12 < 6 { format!("2024-{:02}", x % 6 + 1) } else { format!("2023-{:02}", x % 6 + 7) },
                (x % 5_000) * 1_000_000
            ),
        };
        line.into_bytes()
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The p99 of the events produced in each second of a freshness phase: one that grows
/// through the phase is a backlog building (the service short of capacity), one that holds
/// is the path's own latency at that rate.
fn p99_by_second(seen: &[(u64, Duration)], rate: u64, seconds: u64) -> String {
    let mut by_second = vec![Vec::new(); seconds as usize];
    for (i, latency) in seen {
        if let Some(second) = by_second.get_mut((i / rate.max(1)) as usize) {
            second.push(*latency);
        }
    }
    let p99s: Vec<String> = by_second
        .iter_mut()
        .map(|latencies| {
            latencies.sort();
            format!("{:.0}", percentile(latencies, 0.99).as_secs_f64() * 1000.0)
        })
        .collect();
    format!("| p99 by the second its events were produced in | {} ms |", p99s.join(", "))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A size from this process's `/proc/self/status` (`VmRSS:` now, `VmHWM:` its peak), in
/// bytes; 0 when it cannot be read.
fn memory_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Starts measuring a new peak: Linux sets `VmHWM` back to the current RSS when 5 is written
/// to `clear_refs`. Without it the peak would be the pre-fill's, not the ingest's.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time (user + system, all threads) a process has used so far, in seconds; `None` when
/// it cannot be read (not Linux, or the process is gone).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which is in parentheses and may hold spaces: fields 3 on, so
    // utime and stime (fields 14 and 15) are the 12th and 13th. Linux counts them in
    // USER_HZ ticks, 100 a second on every architecture it runs on.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The CPU time of the benchmark's process (the service and its load generators), the
/// redis-server and the broker (when the benchmark started it), read together.
#[derive(Clone, Copy)]
struct CpuTimes {
    service: f64,
    redis: f64,
    broker: Option<f64>,
}

impl CpuTimes {
    fn read(redis_pid: u32, broker_pid: Option<u32>) -> Option<CpuTimes> {
        Some(CpuTimes {
            service: cpu_seconds(std::process::id())?,
            redis: cpu_seconds(redis_pid)?,
            broker: broker_pid.and_then(cpu_seconds),
        })
    }

    /// A row of the CPU each process used from `self` to `later`, per event: what a phase of
    /// new partners costs the machine, read in every run instead of worked out from a
    /// profile. `phase` names the phase, `note` says how to read it.
    fn per_event_row(&self, later: &CpuTimes, events: usize, phase: &str, note: &str) -> String {
        let micros = |before: f64, after: f64| (after - before) * 1e6 / events.max(1) as f64;
        let service = micros(self.service, later.service);
        let redis = micros(self.redis, later.redis);
        let broker = self.broker.zip(later.broker).map(|(b, a)| micros(b, a));
        let total = service + redis + broker.unwrap_or(0.0);
        format!(
            "| CPU per event {phase} (each a new partner) | {total:.0} µs | service and load generators {service:.0} µs, \
             redis {redis:.0} µs, broker {} | {note} |",
            broker.map_or("not measured (external)".to_owned(), |b| format!("{b:.0} µs")),
        )
    }
}

/// Reads every partition to its end with a bare consumer: the ceiling. It has pcs's reader
/// settings, so it fetches as the service's consumer does (the same fetch wait, and a look
/// again at a full queue after 20 ms): with librdkafka's default of 1 s for that, its queue
/// filled and it stalled in most runs, reading about 200k events/s instead of about 900k.
fn bare_consume(bootstrap: &str, n: u64) -> Duration {
    let consumer: BaseConsumer = Cluster::new(bootstrap).reader("bench-ceiling").create().unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let started = Instant::now();
    let mut seen = 0;
    while seen < n {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the bare consumer stalled at {seen}");
    }
    started.elapsed()
}

fn committed(consumer: &BaseConsumer) -> i64 {
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition(TOPIC, p);
    }
    consumer
        .committed_offsets(list, Duration::from_secs(5))
        .map(|l| {
            l.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then a small smoke
    // run checks that the benchmark still works, in seconds.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = if smoke { 2_000 } else { env("PCS_BENCH_EVENTS", 1_000_000) };
    let partners = if smoke { 200 } else { env("PCS_BENCH_PARTNERS", 20_000) };
    let seconds = if smoke { 1 } else { env("PCS_BENCH_SECONDS", 10) };
    let scores_partitions = env("PCS_BENCH_SCORES_PARTITIONS", PARTITIONS as u64) as i32;

    // The same servers the tests use: a redis-server and tansu (or PCS_TEST_KAFKA) on free
    // loopback ports, stopped on drop.
    let redis_server = support::Redis::start();
    let redis_port = redis_server.port;
    let broker = support::Broker::start();
    let bootstrap = broker.bootstrap.clone();
    let cluster = Cluster::new(&bootstrap);
    ensure_topics(
        &cluster,
        -1,
        &[
            TopicSpec { name: TOPIC, partitions: PARTITIONS, compacted: false },
            TopicSpec { name: "bench.events.dlq", partitions: 1, compacted: false },
            TopicSpec { name: "bench.scores", partitions: scores_partitions, compacted: true },
        ],
    )
    .await
    .unwrap();
    println!(
        "pcs pipeline benchmark: {n} events, {partners} partners, {PARTITIONS} partitions (scores topic {scores_partitions}); redis-server and tansu on this machine"
    );
    println!("machine: {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("servers: {}", server_versions(&broker));

    // 1. Pre-fill, as `pcs produce` sends a file.
    let producer: FutureProducer = cluster.bulk_producer().create().unwrap();
    let started = Instant::now();
    send_lines(&producer, TOPIC, events(n, partners, PRE_FILL_SEED, "").collect::<Vec<_>>()).await.unwrap();
    let fill = started.elapsed();
    println!("| pre-fill (produce) | {:.0} events/s | {:.1} s |", n as f64 / fill.as_secs_f64(), fill.as_secs_f64());

    // 2. Ceiling.
    let b = bootstrap.clone();
    let ceiling = tokio::task::spawn_blocking(move || bare_consume(&b, n)).await.unwrap();
    let ceiling_rate = n as f64 / ceiling.as_secs_f64();
    println!("| ceiling: bare consumer to the end | {ceiling_rate:.0} events/s | {:.1} s |", ceiling.as_secs_f64());

    // 3. Ingest: pcs to the end (committed offsets = end).
    let listen_port = free_port();
    let mut config = support::config(&broker, &redis_server, "bench", "2024-07-10");
    // librdkafka settings for every client of the service, to compare them (`key=value,...`).
    config.kafka_config = std::env::var("PCS_BENCH_KAFKA_CONFIG")
        .map(|v| v.split(',').filter(|kv| !kv.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    config.redis_prefix = "pcs".into();
    config.redis_timeout_ms = 5000;
    config.group_id = "bench".into();
    config.events_partitions = PARTITIONS;
    config.scores_partitions = scores_partitions;
    config.listen = format!("127.0.0.1:{listen_port}").parse().unwrap();
    config.batch_max_events = env("PCS_BENCH_BATCH", pcs::config::DEFAULT_BATCH_MAX_EVENTS as u64) as usize;
    config.batch_max_wait_ms = env("PCS_BENCH_BATCH_WAIT_MS", config.batch_max_wait_ms);
    config.scoring_nice = env("PCS_BENCH_SCORING_NICE", 0).try_into().expect("PCS_BENCH_SCORING_NICE is 0-19");
    let workers = pcs::ingest::Workers::at_nice(config.scoring_nice).expect("scoring threads can be niced");
    config.watch_buffer = 65_536;
    let (shutdown, _) = tokio::sync::broadcast::channel(1);
    let rss_before_ingest = memory_bytes("VmRSS:");
    reset_peak_rss();
    let started = Instant::now();
    let service = tokio::spawn(pcs::service::serve(config, shutdown.clone()));
    let watcher: BaseConsumer = cluster.reader("bench").create().unwrap();
    // The first commit marks the end of start-up (Redis and broker connections, the group
    // join, the first fetch): a fixed cost that a 400k-event run would otherwise read as a
    // slower rate.
    let mut first_commit: Option<(Duration, i64)> = None;
    loop {
        let done = committed(&watcher);
        if done > 0 && first_commit.is_none() {
            first_commit = Some((started.elapsed(), done));
        }
        if done >= n as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(started.elapsed() < Duration::from_secs(1800), "ingest stalled");
    }
    let ingest = started.elapsed();
    let ingest_rate = n as f64 / ingest.as_secs_f64();
    let (startup, done_at_startup) = first_commit.expect("the loop ends only after a commit");
    let steady_rate = (n as i64 - done_at_startup) as f64 / (ingest - startup).as_secs_f64().max(0.001);
    println!(
        "| ingest: pcs serve to the end (incl. start-up) | {ingest_rate:.0} events/s | {:.1} s | ratio to ceiling {:.2} (target ≥ 0.5) | after the first commit at {:.1} s: {steady_rate:.0} events/s, ratio {:.2} | peak RSS of the bench process meanwhile {:.0} MiB, {:.0} MiB before the service started |",
        ingest.as_secs_f64(),
        ingest_rate / ceiling_rate,
        startup.as_secs_f64(),
        steady_rate / ceiling_rate,
        memory_bytes("VmHWM:") as f64 / (1 << 20) as f64,
        rss_before_ingest as f64 / (1 << 20) as f64
    );

    // 4. Freshness: produce → WatchScores notification, first at a rate the service keeps
    // up with (the latency of the path itself), then at the target's 20k events/s.
    let addr = format!("http://127.0.0.1:{listen_port}");
    let mut client = PartnerScoreServiceClient::connect(addr.clone()).await.unwrap();
    let mut on_topic = n as i64;
    for (rate, prefix) in [(if smoke { 200 } else { 2_000u64 }, "FL"), (if smoke { 1_000 } else { 20_000 }, "FR")] {
        let total = rate * seconds;
        let cpu_before = CpuTimes::read(redis_server.pid(), broker.pid());
        let seen = freshness(&addr, &cluster, &watcher, on_topic, rate, total, prefix).await;
        let cpu_after = CpuTimes::read(redis_server.pid(), broker.pid());
        on_topic += total as i64 + 1;
        let mut fresh: Vec<Duration> = seen.iter().map(|(_, latency)| *latency).collect();
        fresh.sort();
        let (target, cpu_note) = if rate == 20_000 {
            (
                " (target p99 ≤ 100 ms)",
                "the machine's whole budget at 20k events/s is 100 µs: a phase that fills both cores reads about that, whatever an event needs (see the backlog below)",
            )
        } else {
            ("", "below capacity: idle polling included")
        };
        println!(
            "| freshness at {rate} events/s for {seconds} s: produce → WatchScores | p50 {} | p99 {} | {} of {total} seen{target} |",
            ms(percentile(&fresh, 0.5)),
            ms(percentile(&fresh, 0.99)),
            fresh.len()
        );
        println!("{}", p99_by_second(&seen, rate, seconds));
        if let Some((before, after)) = cpu_before.zip(cpu_after) {
            println!("{}", before.per_event_row(&after, total as usize, &format!("at {rate} events/s"), cpu_note));
        }
    }

    // 4b. Capacity: a backlog of new partners, produced in bulk, scored to the end. At 20k
    // events/s the two cores are full, so that phase's CPU per event is the machine's budget
    // (100 µs) more than any process's need: whichever process is cheaper leaves the others
    // more. How fast the service works through a backlog, and what each event costs the
    // machine while it does, say how far 20k new partners a second are from its capacity.
    let backlog = if smoke { 1_000 } else { 10_000 * seconds };
    let line = |i: u64| new_partner_event(&format!("BL{i}")).into_bytes();
    // The producer's start-up (the broker's producer id, about 500 ms on tansu) is not the
    // service's: the backlog's first event waits for it before the clock starts. The score
    // producer's 1 ms linger, not the pre-fill's 100 ms: the clock runs from the first send,
    // and the phase times the service, not the producer's batching.
    let producer: FutureProducer = cluster.producer().create().unwrap();
    send_lines(&producer, TOPIC, [line(0)]).await.unwrap();
    let cpu_before = CpuTimes::read(redis_server.pid(), broker.pid());
    let started = Instant::now();
    send_lines(&producer, TOPIC, (1..backlog).map(line)).await.unwrap();
    let produced = started.elapsed();
    on_topic += backlog as i64;
    while committed(&watcher) < on_topic {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(started.elapsed() < Duration::from_secs(600), "the backlog was not scored within 600 s");
    }
    let drained = started.elapsed();
    let cpu_after = CpuTimes::read(redis_server.pid(), broker.pid());
    tokio::task::spawn_blocking(move || drop(producer)).await.expect("the producer is dropped");
    println!(
        "| capacity: a backlog of {backlog} new partners, produced in bulk ({:.1} s), scored to the end (committed offsets = end) | {:.0} events/s | {:.1} s |",
        produced.as_secs_f64(),
        (backlog - 1) as f64 / drained.as_secs_f64(),
        drained.as_secs_f64()
    );
    if let Some((before, after)) = cpu_before.zip(cpu_after) {
        let note = "the producer's share included; the cost of an event when batches are full";
        println!("{}", before.per_event_row(&after, backlog as usize - 1, "working through that backlog", note));
    }

    // 5. Reads: GetScore at a steady 5k QPS; BatchGetScores of 1000.
    let qps = if smoke { 500 } else { 5_000u64 };
    let timed = read_load::<_, ChangedPartner>(&addr, qps, seconds, GET_SCORE, move |k| proto::GetScoreRequest {
        partner_id: format!("B{}", k % partners),
        as_of: None,
    })
    .await;
    let reads = sorted_latencies(&timed);
    println!(
        "| GetScore at {qps} QPS for {seconds} s | p50 {} | p99 {} | {} answered (target p99 ≤ 2 ms) |",
        ms(percentile(&reads, 0.5)),
        ms(percentile(&reads, 0.99)),
        reads.len()
    );
    println!("{}", slow_read_shape("GetScore", &timed, seconds));
    // The same load on the health check, served by the same server and runtime but touching
    // neither Redis nor a score: against it, GetScore's own cost shows.
    let control = read_load::<_, tonic_health::pb::HealthCheckResponse>(&addr, qps, seconds, HEALTH_CHECK, |_| {
        tonic_health::pb::HealthCheckRequest { service: String::new() }
    })
    .await;
    let checks = sorted_latencies(&control);
    println!(
        "| control: health Check at {qps} QPS for {seconds} s | p50 {} | p99 {} | {} answered |",
        ms(percentile(&checks, 0.5)),
        ms(percentile(&checks, 0.99)),
        checks.len()
    );
    println!("{}", slow_read_shape("health Check", &control, seconds));
    let mut batch_latencies = Vec::new();
    for round in 0..20u64 {
        let ids: Vec<String> = (0..1000).map(|j| format!("B{}", (round * 1000 + j) % partners)).collect();
        let at = Instant::now();
        client.batch_get_scores(proto::BatchGetScoresRequest { partner_ids: ids }).await.unwrap();
        batch_latencies.push(at.elapsed());
    }
    batch_latencies.sort();
    println!(
        "| BatchGetScores of 1000, 20 calls | p50 {} | p99 {} |",
        ms(percentile(&batch_latencies, 0.5)),
        ms(percentile(&batch_latencies, 0.99))
    );

    // 6. Footprint.
    let redis = redis::Client::open(format!("redis://127.0.0.1:{redis_port}")).unwrap();
    let mut con = redis.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut con).await.unwrap();
    let used: u64 =
        info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    // Redis's own time per command, from its command statistics: what the partner commit
    // (a Lua script) and the reads cost on Redis's side of the connection.
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut con).await.unwrap();
    let per_call = |command: &str| -> String {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
            .map(|fields| {
                let field = |name: &str| {
                    fields.split(',').find_map(|f| f.strip_prefix(&format!("{name}="))).unwrap_or("?").to_owned()
                };
                format!("{} µs/call over {} calls", field("usec_per_call"), field("calls"))
            })
            .unwrap_or_else(|| "not called".into())
    };
    println!(
        "| Redis time per command | partner commit (EVALSHA) {} | HMGET {} |",
        per_call("evalsha"),
        per_call("hmget")
    );
    let stored: u64 = redis::cmd("ZCARD").arg("pcs:partners").query_async(&mut con).await.unwrap();
    println!(
        "| footprint | Redis {:.1} MiB for {stored} partners: {:.0} B/partner, {:.0} B per event applied | bench process RSS (service + load generators) {:.0} MiB |",
        used as f64 / (1 << 20) as f64,
        used as f64 / stored.max(1) as f64,
        used as f64 / on_topic as f64,
        memory_bytes("VmRSS:") as f64 / (1 << 20) as f64
    );

    // 7. Day rollover: every partner is due on 2024-08-01 (the month changes).
    let applier = pcs::ingest::Applier {
        store: pcs::store::RedisStore::connect(
            &format!("redis://127.0.0.1:{redis_port}"),
            "pcs",
            Duration::from_secs(5),
        )
        .unwrap(),
        rules: Arc::new(pcs::rules::RuleBook::embedded()),
        history_days: 400,
        dedup_window_days: 7,
        workers,
    };
    let started = Instant::now();
    let changed = applier.roll_over(pcs::calendar::parse_date("2024-08-01").unwrap(), 1000).await.unwrap();
    let rollover = started.elapsed();
    println!(
        "| day rollover to 2024-08-01 | {stored} partners re-evaluated in {:.1} s ({:.0}/s; 100k would take {:.1} s; target ≤ 30 s) | {} scores changed |",
        rollover.as_secs_f64(),
        stored as f64 / rollover.as_secs_f64(),
        100_000.0 * rollover.as_secs_f64() / stored.max(1) as f64,
        changed.len()
    );
    // The rollover noted its changes for publishing, which this one leaves out (it measures
    // the re-evaluation): the service's rollover task would publish them all, from the
    // store, once the notes are 10 minutes old, and a longer run's phases would then share
    // the machine with 240k scores being published.
    let noted: Vec<String> = changed.into_iter().map(|u| u.partner_id).collect();
    pcs::store::StateStore::forget_published(&applier.store, &noted).await.unwrap();

    // 8. A burst of bad input (issue 5): the good events alone, then the same number of good
    // events each behind 50 undecodable ones (100k bad events at full size). Each round is
    // timed from the moment a client starts producing (including its producer's start-up,
    // as a real client pays it) until the last good event is applied.
    let good_events = if smoke { 200 } else { 2_000 };
    let alone = time_good_events(&bootstrap, &mut client, good_events, 0, "BA").await;
    let with_burst = time_good_events(&bootstrap, &mut client, good_events, 50, "BB").await;
    println!(
        "| bad-event burst: {good_events} good events alone vs. each behind 50 bad ones | {} | {} | slowdown {:.2}× (target ≤ 2×) |",
        ms(alone),
        ms(with_burst),
        with_burst.as_secs_f64() / alone.as_secs_f64()
    );

    // 9. Reads during a catch-up: a backlog of events for the pre-filled partners, produced
    // in bulk while GetScore and the health check each run at half the read phase's rate. A
    // live service catches up after a deploy, an outage or a backfill, and its readers keep
    // reading meanwhile: then the applier's pipelined writes and the reads share Redis and
    // the cores. Only the reads sent before the backlog was committed to its end count (by
    // the loads' own clocks, which start a few milliseconds later, once connected).
    let catch_up = if smoke { 2_000 } else { 100_000 * seconds };
    let half = qps / 2;
    let producer: FutureProducer = cluster.bulk_producer().create().unwrap();
    let mut lines = events(catch_up, partners, CATCH_UP_SEED, "K");
    // The producer's start-up (about 500 ms on tansu) is not the catch-up's.
    send_lines(&producer, TOPIC, lines.next()).await.unwrap();
    let read_phase = Instant::now();
    let reads = tokio::spawn({
        let addr = addr.clone();
        async move {
            read_load::<_, ChangedPartner>(&addr, half, seconds, GET_SCORE, move |k| proto::GetScoreRequest {
                partner_id: format!("B{}", k % partners),
                as_of: None,
            })
            .await
        }
    });
    let checks = tokio::spawn({
        let addr = addr.clone();
        async move {
            read_load::<_, tonic_health::pb::HealthCheckResponse>(&addr, half, seconds, HEALTH_CHECK, |_| {
                tonic_health::pb::HealthCheckRequest { service: String::new() }
            })
            .await
        }
    });
    send_lines(&producer, TOPIC, lines).await.unwrap();
    let end = topic_end(&watcher);
    while committed(&watcher) < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(read_phase.elapsed() < Duration::from_secs(600), "the catch-up did not end within 600 s");
    }
    let caught_up = read_phase.elapsed();
    tokio::task::spawn_blocking(move || drop(producer)).await.expect("the producer is dropped");
    let during = |timed: Vec<TimedRead>| -> Vec<Duration> {
        let kept: Vec<TimedRead> = timed.into_iter().filter(|read| read.started < caught_up).collect();
        sorted_latencies(&kept)
    };
    let (reads, checks) = (during(reads.await.unwrap()), during(checks.await.unwrap()));
    println!(
        "| reads during a catch-up of {catch_up} events for the pre-filled partners, {:.1} s to the end | GetScore at {half} QPS: p50 {} | p99 {} | {} answered during it | health Check at {half} QPS: p50 {} | p99 {} | {} answered during it |",
        caught_up.as_secs_f64(),
        ms(percentile(&reads, 0.5)),
        ms(percentile(&reads, 0.99)),
        reads.len(),
        ms(percentile(&checks, 0.5)),
        ms(percentile(&checks, 0.99)),
        checks.len()
    );

    let _ = shutdown.send(());
    let _ = service.await;
}

/// The events topic's end: the sum of its partitions' high watermarks.
fn topic_end(consumer: &BaseConsumer) -> i64 {
    (0..PARTITIONS)
        .map(|p| consumer.fetch_watermarks(TOPIC, p, Duration::from_secs(5)).expect("the topic's watermarks").1)
        .sum()
}

/// One request of a read load, as offsets from the start of the phase.
struct TimedRead {
    /// When the load meant to send it: with its batch, on its batch's tick.
    scheduled: Duration,
    /// When its task ran and sent it; later than `scheduled` when the client itself fell behind.
    started: Duration,
    latency: Duration,
}

const GET_SCORE: &str = "/pcs.v1.PartnerScoreService/GetScore";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// Sends the unary call `path`, request `k` made by `request(k)`, at a steady `qps` for
/// `seconds`, and returns the timing of every answered request. The load runs on a runtime
/// of its own, on a thread of its own, as a separate client would: on the service's runtime,
/// the 5k tasks a second it spawns wait in the same run queues as the server's, and their
/// queueing read as the service's latency.
async fn read_load<Q: prost::Message + Default + 'static, R: prost::Message + Default + 'static>(
    addr: &str,
    qps: u64,
    seconds: u64,
    path: &'static str,
    request: impl Fn(u64) -> Q + Send + 'static,
) -> Vec<TimedRead> {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(steady_unary_calls::<Q, R>(addr, qps, seconds, path, request))
    })
    .await
    .unwrap()
}

async fn steady_unary_calls<Q: prost::Message + Default + 'static, R: prost::Message + Default + 'static>(
    addr: String,
    qps: u64,
    seconds: u64,
    path: &'static str,
    request: impl Fn(u64) -> Q,
) -> Vec<TimedRead> {
    let channel = tonic::transport::Channel::from_shared(addr).unwrap().connect().await.unwrap();
    // At 5k QPS, five requests on every millisecond tick: bursts of 50 every 10 ms measured
    // mostly the queue inside each burst, not a steady load. Below 1k QPS, one request a tick
    // and the ticks further apart.
    let per_tick = (qps / 1000).max(1);
    let tick_period = Duration::from_micros(per_tick * 1_000_000 / qps);
    let mut tick = tokio::time::interval(tick_period);
    let reads: Arc<Mutex<Vec<TimedRead>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let phase = Instant::now();
    for k in 0..qps * seconds {
        if k % per_tick == 0 {
            tick.tick().await;
        }
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let reads = reads.clone();
        let message = request(k);
        let scheduled = tick_period * (k / per_tick) as u32;
        tasks.spawn(async move {
            let at = Instant::now();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
            let codec = tonic_prost::ProstCodec::<Q, R>::default();
            if grpc.ready().await.is_ok() && grpc.unary(tonic::Request::new(message), path, codec).await.is_ok() {
                reads.lock().unwrap().push(TimedRead { scheduled, started: at - phase, latency: at.elapsed() });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    std::mem::take(&mut *reads.lock().unwrap())
}

fn sorted_latencies(reads: &[TimedRead]) -> Vec<Duration> {
    let mut latencies: Vec<Duration> = reads.iter().map(|read| read.latency).collect();
    latencies.sort();
    latencies
}

/// The tail's shape of the read load `name`, as one table row: requests over 2 ms spread
/// evenly over the phase's 10 ms windows point at queueing on busy cores; packed into a few
/// windows, at stalls (a task or thread holding the cores). A request is placed by when its
/// task ran, and the row says how far the client itself fell behind its schedule: its ticks
/// catch up in bursts after a stall of its own, so a window can hold more than its share of
/// the schedule. Windows after the phase's end (a client that fell behind) are counted apart.
fn slow_read_shape(name: &str, reads: &[TimedRead], seconds: u64) -> String {
    let slow: Vec<&TimedRead> = reads.iter().filter(|read| read.latency > Duration::from_millis(2)).collect();
    let client_lag = reads.iter().map(|read| read.started.saturating_sub(read.scheduled)).max().unwrap_or_default();
    let lag = format!("the client ran at most {} behind its schedule", ms(client_lag));
    if slow.is_empty() {
        return format!("| {name} requests over 2 ms | 0 | none; {lag} |");
    }
    let mut windows: std::collections::BTreeMap<u128, usize> = Default::default();
    for read in &slow {
        *windows.entry(read.started.as_millis() / 10).or_default() += 1;
    }
    let mut busiest: Vec<(u128, usize)> = windows.into_iter().collect();
    busiest.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let in_top: usize = busiest.iter().take(10).map(|(_, count)| count).sum();
    let past_the_end = busiest.iter().filter(|(start, _)| *start >= u128::from(seconds) * 100).count();
    format!(
        "| {name} requests over 2 ms | {} | in {} of the phase's {} 10 ms windows (and {past_the_end} after its \
         end); the 10 busiest hold {in_top} (window start: count; {}); {lag} |",
        slow.len(),
        busiest.len() - past_the_end,
        seconds * 100,
        busiest
            .iter()
            .take(10)
            .map(|(start, count)| format!("{} ms: {count}", start * 10))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The one ACR event of a new partner `id` (also its event id) in the freshness and capacity
/// phases.
fn new_partner_event(id: &str) -> String {
    format!(
        r#"{{"type":"acr","event_id":"{id}","partner_id":"{id}","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"900000000"}}"#
    )
}

/// Produces `total` ACR events at `rate` a second, each for a new partner `{prefix}N`, and
/// returns, for each one seen, its number and its time from produce to its WatchScores
/// notification. `on_topic`: the events already on the topic (all committed), so that the
/// phase ends when its own are.
async fn freshness(
    addr: &str,
    cluster: &Cluster,
    watcher: &BaseConsumer,
    on_topic: i64,
    rate: u64,
    total: u64,
    prefix: &'static str,
) -> Vec<(u64, Duration)> {
    let mut watch = watch_partner_ids(addr).await;
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total as usize]));
    let latencies: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (sent_at, latencies) = (sent_at.clone(), latencies.clone());
        tokio::spawn(async move {
            while let Ok(Some(change)) = watch.message().await {
                let id = change.score.unwrap_or_default().partner_id;
                if let Some(i) = id.strip_prefix(prefix).and_then(|i| i.parse::<usize>().ok())
                    && let Some(Some(at)) = sent_at.lock().unwrap().get(i).copied()
                {
                    latencies.lock().unwrap().push((i as u64, at.elapsed()));
                }
            }
        })
    };
    let producer: FutureProducer = cluster.producer().create().unwrap();
    // A steady producer is a long-lived one. A new idempotent producer holds its first
    // messages until the broker gives it a producer id (about 500 ms on tansu), which read
    // as the freshness of the first half second's events; one event delivered first takes
    // that start-up out of the measurement.
    let warm_up = format!(
        r#"{{"type":"acr","event_id":"warm-up-{prefix}","partner_id":"WARMUP","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"1000000"}}"#
    );
    let record = rdkafka::producer::FutureRecord::to(TOPIC).key("WARMUP").payload(&warm_up);
    producer.send(record, Duration::from_secs(30)).await.expect("the warm-up event is delivered");
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut i = 0u64;
    let mut deliveries = Vec::new();
    while i < total {
        tick.tick().await;
        for _ in 0..(rate / 100).max(1) {
            let key = format!("{prefix}{i}");
            let line = new_partner_event(&key);
            sent_at.lock().unwrap()[i as usize] = Some(Instant::now());
            let record = rdkafka::producer::FutureRecord::to(TOPIC).key(&key).payload(&line);
            if let Ok(d) = producer.send_result(record) {
                deliveries.push(d);
            }
            i += 1;
        }
    }
    for d in deliveries {
        let _ = d.await;
    }
    let settle = Instant::now();
    while committed(watcher) < on_topic + 1 + total as i64 && settle.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A score reaches the watcher through the score topic after its offset is committed:
    // a fixed grace after the last commit counted the tail of a large last batch as unseen.
    let settle = Instant::now();
    while latencies.lock().unwrap().len() < total as usize
        && !reader.is_finished()
        && settle.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reader.abort();
    // Destroying a librdkafka client blocks until its threads end, and this runtime's two
    // workers serve the service too: off them, the next phase's first requests do not wait
    // behind it.
    tokio::task::spawn_blocking(move || drop(producer)).await.expect("the producer is dropped");
    latencies.lock().unwrap().clone()
}

/// `ScoreChanged` and `GetScoreResponse` (both hold the score as field 1) as the benchmark's
/// clients read them: the partner id alone. A client that decoded every score whole shared
/// the machine with the service: the watcher took a tenth of the benchmark process's time
/// under 20k new partners a second, the GetScore load a fifth of it at 5k requests a
/// second. What they time is the answer's arrival.
#[derive(Clone, PartialEq, prost::Message)]
struct ChangedPartner {
    #[prost(message, optional, tag = "1")]
    score: Option<ScoredPartner>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScoredPartner {
    #[prost(string, tag = "1")]
    partner_id: String,
}

/// A WatchScores stream of every partner, read as `ChangedPartner`s.
async fn watch_partner_ids(addr: &str) -> tonic::Streaming<ChangedPartner> {
    let channel = tonic::transport::Channel::from_shared(addr.to_owned()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let request = proto::WatchScoresRequest { partner_ids: Vec::new(), all: true, resume_cursor: String::new() };
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/pcs.v1.PartnerScoreService/WatchScores");
    let codec = tonic_prost::ProstCodec::<proto::WatchScoresRequest, ChangedPartner>::default();
    grpc.server_streaming(tonic::Request::new(request), path, codec).await.unwrap().into_inner()
}

/// Produces `good` ACR events over 100 partners named `{prefix}N`, each behind `bad_per_good`
/// undecodable messages, and returns the time until the last partner has all of its events.
async fn time_good_events(
    bootstrap: &str,
    client: &mut PartnerScoreServiceClient<tonic::transport::Channel>,
    good: u64,
    bad_per_good: u64,
    prefix: &str,
) -> Duration {
    let lines: Vec<Vec<u8>> = (0..good)
        .flat_map(|i| {
            let line = format!(
                r#"{{"type":"acr","event_id":"{prefix}{i}","partner_id":"{prefix}{}","customer_id":"C{}","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"1000000"}}"#,
                i % 100,
                i / 100
            );
            (0..bad_per_good).map(move |j| format!("junk {i}.{j} is not an event").into_bytes()).chain([line.into_bytes()])
        })
        .collect();
    let last = format!("{prefix}99");
    let expected = (good / 100) as i64 * 1_000_000;
    let started = Instant::now();
    let producer: FutureProducer = Cluster::new(bootstrap).producer().create().unwrap();
    send_lines(&producer, TOPIC, lines).await.unwrap();
    loop {
        let request = proto::GetScoreRequest { partner_id: last.clone(), as_of: None };
        if let Ok(r) = client.get_score(request).await
            && r.into_inner().score.is_some_and(|s| s.ttm_acr_micros == expected)
        {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(300), "good events not applied within 300 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
