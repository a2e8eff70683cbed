//! The store contract, run against the Redis store (a real redis-server, and a real local
//! Redis Cluster of three masters) and the in-memory store of the playground, and the
//! exactly-once apply logic on top of each.

mod support;

use pcs::events::decode_json;
use pcs::ingest::{
    Applier, DeadLetter, DeadLetterSink, IngestError, RawMessage, Received, ScoreSink, ScoreUpdate, Workers,
};
use pcs::rules::RuleBook;
use pcs::store::{MemoryStore, PartnerWrite, RedisStore, SourcePartition, StateStore, WriteOutcome};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Redis, RedisCluster};

fn day(s: &str) -> chrono::NaiveDate {
    pcs::calendar::parse_date(s).unwrap()
}

/// The stores' bound on a command. These checks are of what is stored, not how fast: a
/// debug build's cluster client, sharing CI's two cores with other tests and three
/// redis-servers, took more than the service's default 2 s to get through a few thousand
/// commands, even with the store's window on commands in flight.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

fn store(redis: &Redis, prefix: &str) -> RedisStore {
    RedisStore::connect(&redis.url(), prefix, COMMAND_TIMEOUT).unwrap()
}

/// Runs one contract check against each store, on a runtime like the service's: two
/// workers, so that store calls the applier has under way are answered while it scores on
/// its own worker (on one worker they wait, and can time out, behind a debug build's scoring).
macro_rules! contract {
    ($check:ident) => {
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let redis = super::Redis::start();
                super::$check(super::store(&redis, "c")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                let cluster = super::RedisCluster::start();
                let store = super::RedisStore::connect_cluster(&cluster.urls(), "c", super::COMMAND_TIMEOUT);
                super::$check(store.unwrap()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$check(super::MemoryStore::default()).await;
            }
        }
    };
}

contract!(writes_are_conditional_on_the_version);
contract!(listing_and_the_due_index);
contract!(a_replayed_batch_changes_nothing);
contract!(concurrent_writers_of_one_partner_both_count);
contract!(batches_of_many_chunks_written_concurrently_all_count);
contract!(scores_are_sent_chunk_by_chunk_once_stored);
contract!(a_batch_failing_midway_counts_each_event_once);
contract!(rollover_reevaluates_due_partners);
contract!(a_rollover_notes_its_changes_until_they_are_published);
contract!(an_unreadable_stored_score_is_left_out_of_a_republish);
contract!(history_is_recorded_backfilled_and_kept);

fn applier<S: StateStore>(store: S) -> Applier<S> {
    Applier {
        store,
        rules: Arc::new(RuleBook::embedded()),
        history_days: 400,
        dedup_window_days: 7,
        workers: Workers::default(),
    }
}

/// Collects dead letters in memory (the Kafka side is tested in the pipeline tests).
#[derive(Default)]
struct Letters(Mutex<Vec<String>>);

impl DeadLetterSink for Letters {
    async fn send(&self, letters: Vec<DeadLetter>) -> Result<(), IngestError> {
        self.0.lock().unwrap().extend(letters.into_iter().map(|l| l.reason));
        Ok(())
    }
}

fn raw(partition: i32, offset: i64, line: &str) -> RawMessage {
    RawMessage {
        source: SourcePartition { topic: "events".into(), partition },
        offset,
        key: None,
        payload: line.as_bytes().to_vec(),
        headers: Vec::new(),
        timestamp_ms: None,
    }
}

fn received(raw: &RawMessage) -> Received<'_> {
    Received { event: decode_json(&raw.payload).unwrap(), raw }
}

fn acr(id: &str, customer: &str, usd: i64) -> String {
    format!(
        r#"{{"type":"acr","event_id":"{id}","partner_id":"P1","customer_id":"{customer}","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"{}"}}"#,
        usd * 1_000_000
    )
}

/// A fingerprint past `i64::MAX`: fingerprints take the whole range of a `u64`.
const FINGERPRINT: u64 = u64::MAX - 6;

fn write(partner: &str, expected_version: u64, next: Option<&str>) -> PartnerWrite {
    PartnerWrite {
        partner_id: partner.into(),
        expected_version,
        state: pcs::engine::PartnerState::default().encode(),
        score: b"score".to_vec(),
        score_fingerprint: FINGERPRINT,
        history: None,
        offsets: vec![(SourcePartition { topic: "t".into(), partition: 2 }, 41)],
        next_change: next.map(day),
    }
}

async fn writes_are_conditional_on_the_version(store: impl StateStore) {
    store.ping().await.unwrap();
    assert_eq!(store.write(&[write("A", 0, None)]).await.unwrap(), vec![WriteOutcome::Written { version: 1 }]);
    assert_eq!(store.write(&[write("A", 0, None)]).await.unwrap(), vec![WriteOutcome::Conflict]);
    assert_eq!(store.write(&[write("A", 1, None)]).await.unwrap(), vec![WriteOutcome::Written { version: 2 }]);
    let loaded = store
        .load(&[(
            "A".into(),
            vec![
                SourcePartition { topic: "t".into(), partition: 2 },
                SourcePartition { topic: "t".into(), partition: 3 },
            ],
        )])
        .await
        .unwrap();
    assert_eq!(loaded[0].version, 2);
    assert_eq!(loaded[0].offsets, vec![Some(41), None]);
    assert_eq!(loaded[0].score_fingerprint, Some(FINGERPRINT));
    let scores = store.scores(&["A".into(), "B".into()]).await.unwrap();
    assert_eq!(scores[0].as_ref().unwrap().score, b"score");
    assert!(scores[1].is_none());
}

/// Redis keeps a score that compresses compressed (see `store::packed`), and reads it back
/// whole; a score stored plain, as before, reads as it is.
#[tokio::test]
async fn redis_keeps_scores_compressed_and_reads_plain_ones_as_before() {
    let redis = Redis::start();
    let store = store(&redis, "packed");
    let wordy: Vec<u8> = (0..40).flat_map(|i| format!("customer C{i} counted for DATA_AI; ").into_bytes()).collect();
    store.write(&[PartnerWrite { score: wordy.clone(), ..write("A", 0, None) }]).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let kept: Vec<u8> = redis::cmd("HGET").arg("packed:{A}").arg("score").query_async(&mut c).await.unwrap();
    assert_eq!(kept[0], 0, "compressed");
    assert!(kept.len() < wordy.len() / 3, "{} bytes kept for {}", kept.len(), wordy.len());
    let plain = b"\x0a\x01Bcustomer C1 counted for DATA_AI; customer C1 counted for DATA_AI".to_vec();
    let _: () = redis::cmd("HSET").arg("packed:{B}").arg("score").arg(&plain).query_async(&mut c).await.unwrap();
    let scores = store.scores(&["A".into(), "B".into()]).await.unwrap();
    assert_eq!(scores[0].as_ref().unwrap().score, wordy);
    assert_eq!(scores[1].as_ref().unwrap().score, plain);
}

#[tokio::test]
async fn keys_share_the_partners_hash_tag() {
    let redis = Redis::start();
    let store = store(&redis, "tag");
    store.write(&[write("P.1:x", 0, Some("2024-08-01"))]).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("tag:*").query_async(&mut c).await.unwrap();
    let partner_keys: Vec<&String> = keys.iter().filter(|k| k.contains("P.1:x")).collect();
    assert_eq!(partner_keys, vec!["tag:{P.1:x}"], "one hash per partner, hash-tagged: {keys:?}");
    // The fields stored data already has: renaming one would lose every partner's offsets.
    let fields: Vec<Option<String>> =
        redis::cmd("HMGET").arg("tag:{P.1:x}").arg("o:t:2").arg("fp").query_async(&mut c).await.unwrap();
    assert_eq!(fields, vec![Some("41".to_owned()), Some(FINGERPRINT.to_string())]);
}

async fn listing_and_the_due_index(store: impl StateStore) {
    for (p, next) in [("B", "2024-08-01"), ("A", "2024-07-20"), ("C", "2024-09-01")] {
        store.write(&[write(p, 0, Some(next))]).await.unwrap();
    }
    assert_eq!(store.list_partners("", 2).await.unwrap(), vec!["A", "B"]);
    assert_eq!(store.list_partners("B", 10).await.unwrap(), vec!["C"]);
    assert_eq!(store.due(day("2024-08-01"), 10).await.unwrap(), vec!["A", "B"]);
    // A due partner moves on; a later event can only move its day earlier.
    let changes = [("A".to_owned(), Some(day("2024-09-01"))), ("B".to_owned(), None)];
    store.reschedule(day("2024-08-01"), &changes).await.unwrap();
    assert_eq!(store.due(day("2024-08-31"), 10).await.unwrap(), Vec::<String>::new());
    store.write(&[write("C", 1, Some("2024-08-15"))]).await.unwrap();
    assert_eq!(store.due(day("2024-08-31"), 10).await.unwrap(), vec!["C"]);
}

async fn a_replayed_batch_changes_nothing(store: impl StateStore) {
    let applier = applier(store);
    let letters = Letters::default();
    let raws = [raw(0, 10, &acr("a", "C1", 700)), raw(0, 11, &acr("b", "C2", 100))];
    let batch: Vec<Received> = raws.iter().map(received).collect();
    let today = day("2024-07-10");
    let mut scores = Vec::new();
    let first = applier.apply(today, &batch, &letters, &mut scores).await.unwrap();
    assert_eq!((first.applied, scores.len()), (2, 1));
    // The same messages again (a crash before the offset commit): skipped by offset.
    let mut scores = Vec::new();
    let again = applier.apply(today, &batch, &letters, &mut scores).await.unwrap();
    assert_eq!((again.applied, scores.len(), again.replayed.clone()), (0, 0, vec!["P1".to_owned()]));
    // The same event under a new offset (an upstream redelivery): skipped by event id.
    let redelivered = raw(1, 5, &acr("a", "C1", 700));
    let mut scores = Vec::new();
    assert_eq!(applier.apply(today, &[received(&redelivered)], &letters, &mut scores).await.unwrap().applied, 0);
    // An id reused for another fact is a dead letter, and nothing else changes.
    let reused = raw(1, 6, &acr("a", "C9", 5));
    assert_eq!(applier.apply(today, &[received(&reused)], &letters, &mut scores).await.unwrap().applied, 0);
    assert!(scores.is_empty());
    assert_eq!(letters.0.lock().unwrap().len(), 1);
    assert!(letters.0.lock().unwrap()[0].contains("reused"));
    let state = applier.store.load(&[("P1".into(), Vec::new())]).await.unwrap().remove(0).state;
    let score = pcs::engine::evaluate("P1", &state, today, &applier.rules);
    assert_eq!(score.ttm_acr_micros, 800_000_000);
}

async fn concurrent_writers_of_one_partner_both_count<S: StateStore>(store: S) {
    let (a, b) = (applier(store.clone()), applier(store));
    let letters = Letters::default();
    let today = day("2024-07-10");
    // Two instances, two partitions, one partner (an unkeyed producer): 50 events each.
    let left: Vec<RawMessage> = (0..50).map(|i| raw(0, i, &acr(&format!("l{i}"), "C1", 1))).collect();
    let right: Vec<RawMessage> = (0..50).map(|i| raw(1, i, &acr(&format!("r{i}"), "C2", 1))).collect();
    async fn run<S: StateStore>(
        applier: &Applier<S>,
        events: Vec<RawMessage>,
        letters: &Letters,
        today: chrono::NaiveDate,
    ) {
        for e in &events {
            applier.apply(today, &[received(e)], letters, &mut Vec::new()).await.unwrap();
        }
    }
    tokio::join!(run(&a, left, &letters, today), run(&b, right, &letters, today));
    let state = a.store.load(&[("P1".into(), Vec::new())]).await.unwrap().remove(0).state;
    assert_eq!(pcs::engine::evaluate("P1", &state, today, &a.rules).ttm_acr_micros, 100_000_000);
}

/// An ACR event of partner `P<p>`, its id and customer named after `side`.
fn partner_line(side: &str, p: usize) -> String {
    acr(&format!("{side}{p}"), side, 1).replace(r#""partner_id":"P1""#, &format!(r#""partner_id":"P{p}""#))
}

/// Checks that each of partners `P0`..`P<partners - 1>` holds `ttm_acr_micros` of ACR.
async fn assert_every_partner_holds<S: StateStore>(
    applier: &Applier<S>,
    partners: usize,
    today: chrono::NaiveDate,
    ttm_acr_micros: i128,
) {
    let ids: Vec<(String, Vec<SourcePartition>)> = (0..partners).map(|p| (format!("P{p}"), Vec::new())).collect();
    for (id, stored) in ids.iter().zip(applier.store.load(&ids).await.unwrap()) {
        let ttm = pcs::engine::evaluate(&id.0, &stored.state, today, &applier.rules).ttm_acr_micros;
        assert_eq!(ttm, ttm_acr_micros, "partner {}", id.0);
    }
}

/// Takes scores as the applier sends them, checking that each is already stored (at its
/// version or, after another writer, a later one), and keeps the partner ids of each send.
struct DurableScores<S> {
    store: S,
    sends: Vec<Vec<String>>,
}

impl<S: StateStore> ScoreSink for DurableScores<S> {
    async fn send(&mut self, updates: Vec<ScoreUpdate>) -> Result<(), IngestError> {
        let ids: Vec<String> = updates.iter().map(|u| u.partner_id.clone()).collect();
        for (update, stored) in updates.iter().zip(self.store.scores(&ids).await?) {
            let version = stored.map_or(0, |s| s.version);
            assert!(
                version >= update.version,
                "{} sent at version {} but stored at {version}",
                update.partner_id,
                update.version
            );
        }
        self.sends.push(ids);
        Ok(())
    }
}

/// Two instances apply, at the same time, batches over the same 4,500 partners (more than
/// two of the store's chunks, which are read, scored and written as a pipeline): every
/// partner ends with both events, whichever write lost and was applied again, and its
/// score is sent once it is stored.
async fn batches_of_many_chunks_written_concurrently_all_count<S: StateStore>(store: S) {
    const PARTNERS: usize = 4_500;
    let mut sinks = [
        DurableScores { store: store.clone(), sends: Vec::new() },
        DurableScores { store: store.clone(), sends: Vec::new() },
    ];
    let (a, b) = (applier(store.clone()), applier(store));
    let letters = Letters::default();
    let today = day("2024-07-10");
    let left: Vec<RawMessage> = (0..PARTNERS).map(|p| raw(0, p as i64, &partner_line("l", p))).collect();
    let right: Vec<RawMessage> = (0..PARTNERS).map(|p| raw(1, p as i64, &partner_line("r", p))).collect();
    let (left_batch, right_batch): (Vec<Received>, Vec<Received>) =
        (left.iter().map(received).collect(), right.iter().map(received).collect());
    let [left_scores, right_scores] = &mut sinks;
    let (l, r) = tokio::join!(
        a.apply(today, &left_batch, &letters, left_scores),
        b.apply(today, &right_batch, &letters, right_scores)
    );
    let (l, r) = (l.unwrap(), r.unwrap());
    assert_eq!((l.applied, r.applied), (PARTNERS, PARTNERS));
    for sink in &sinks {
        assert_eq!(sink.sends.iter().map(Vec::len).sum::<usize>(), PARTNERS);
    }
    assert_every_partner_holds(&a, PARTNERS, today, 2_000_000).await;
    // Replayed (a crash before the offset commit): nothing is applied twice.
    let mut replayed_scores = Vec::new();
    let again = a.apply(today, &left_batch, &letters, &mut replayed_scores).await.unwrap();
    assert_eq!((again.applied, again.replayed.len(), replayed_scores.len()), (0, PARTNERS, 0));
    assert!(letters.0.lock().unwrap().is_empty());
}

/// A batch's scores are sent chunk by chunk, each chunk's as soon as it is stored, and the
/// partners whose events came first go first: the first events of a large batch do not wait
/// for its last.
async fn scores_are_sent_chunk_by_chunk_once_stored<S: StateStore>(store: S) {
    let mut scores = DurableScores { store: store.clone(), sends: Vec::new() };
    // Arriving against the order of their ids: P4499 first, P0 last.
    let arrivals: Vec<usize> = (0..4_500).rev().collect();
    let lines: Vec<RawMessage> =
        arrivals.iter().enumerate().map(|(offset, p)| raw(0, offset as i64, &partner_line("e", *p))).collect();
    let batch: Vec<Received> = lines.iter().map(received).collect();
    applier(store).apply(day("2024-07-10"), &batch, &Letters::default(), &mut scores).await.unwrap();
    // Chunks of 2,000 partners (`PARTNERS_PER_CHUNK` in the applier).
    assert_eq!(scores.sends.iter().map(Vec::len).collect::<Vec<_>>(), vec![2_000, 2_000, 500]);
    let first_arrivals: Vec<String> = arrivals[..2_000].iter().map(|p| format!("P{p}")).collect();
    assert_eq!(scores.sends[0], first_arrivals);
}

/// Fails the applier's second send, as a producer whose queue is full would.
struct FailingSecondSend(usize);

impl ScoreSink for FailingSecondSend {
    async fn send(&mut self, _: Vec<ScoreUpdate>) -> Result<(), IngestError> {
        self.0 += 1;
        if self.0 == 2 { Err(IngestError::Produce(rdkafka::error::KafkaError::Canceled)) } else { Ok(()) }
    }
}

/// A batch that fails after some of its chunks were written and their scores handed over is
/// retried whole (its offsets were not committed): the written partners are replays then,
/// whose stored scores the caller publishes again, and every event counts once.
async fn a_batch_failing_midway_counts_each_event_once<S: StateStore>(store: S) {
    const PARTNERS: usize = 4_500;
    let applier = applier(store);
    let letters = Letters::default();
    let today = day("2024-07-10");
    let lines: Vec<RawMessage> = (0..PARTNERS).map(|p| raw(0, p as i64, &partner_line("m", p))).collect();
    let batch: Vec<Received> = lines.iter().map(received).collect();
    assert!(applier.apply(today, &batch, &letters, &mut FailingSecondSend(0)).await.is_err());
    let mut scores = Vec::new();
    let retried = applier.apply(today, &batch, &letters, &mut scores).await.unwrap();
    // The first two chunks were written before their scores were sent; the third's write may
    // or may not have landed before the retry read it.
    assert!(retried.replayed.len() >= 4_000, "{} replayed", retried.replayed.len());
    assert_eq!(retried.applied + retried.replayed.len(), PARTNERS);
    assert_eq!(scores.len(), retried.applied);
    assert_every_partner_holds(&applier, PARTNERS, today, 1_000_000).await;
}

/// An applier whose store holds partner P1 with a deployment that leaves its window on
/// 2024-07-20, applied on 2024-07-10.
async fn with_ageing_deployment<S: StateStore>(store: S) -> Applier<S> {
    let applier = applier(store);
    let deployment = r#"{"type":"deployment","event_id":"d","partner_id":"P1","deployment_id":"x","customer_id":"C","solution_area":"DATA_AI","service":"AKS","attribution":"PAL","deployed_on":"2023-07-20"}"#;
    let event = raw(0, 0, deployment);
    applier.apply(day("2024-07-10"), &[received(&event)], &Letters::default(), &mut Vec::new()).await.unwrap();
    applier
}

async fn rollover_reevaluates_due_partners(store: impl StateStore) {
    let applier = with_ageing_deployment(store).await;
    // Nothing is due before the deployment leaves its window on 2024-07-20.
    assert!(applier.roll_over(day("2024-07-19"), 10).await.unwrap().is_empty());
    let changed = applier.roll_over(day("2024-07-20"), 10).await.unwrap();
    assert_eq!(changed.len(), 1, "the deployment aged out");
    assert!(applier.roll_over(day("2024-07-20"), 10).await.unwrap().is_empty(), "and it is not due again");
}

/// The rollover notes the partners whose scores it changes before writing them, and they
/// stay noted until the caller has published them; partners are listed by when they were
/// noted, up to a time, a page at a time.
async fn a_rollover_notes_its_changes_until_they_are_published(store: impl StateStore) {
    let applier = with_ageing_deployment(store).await;
    let all = i64::MAX;
    assert!(applier.store.unpublished(all, 10).await.unwrap().is_empty(), "ingest publishes its changes itself");
    assert!(applier.roll_over(day("2024-07-19"), 10).await.unwrap().is_empty());
    assert!(applier.store.unpublished(all, 10).await.unwrap().is_empty(), "nothing changed");
    let before = chrono::Utc::now().timestamp_millis() - 1;
    assert_eq!(applier.roll_over(day("2024-07-20"), 10).await.unwrap().len(), 1);
    assert_eq!(applier.store.unpublished(all, 10).await.unwrap(), ["P1"]);
    assert!(applier.store.unpublished(before, 10).await.unwrap().is_empty(), "noted now, not before");

    applier.store.note_unpublished(&["P3".to_owned()], 3).await.unwrap();
    applier.store.note_unpublished(&["P0".to_owned(), "P2".to_owned()], 2).await.unwrap();
    assert_eq!(applier.store.unpublished(all, 3).await.unwrap(), ["P0", "P2", "P3"]);
    assert_eq!(applier.store.unpublished(2, 10).await.unwrap(), ["P0", "P2"]);
    applier.store.forget_published(&["P1".to_owned(), "P2".to_owned()]).await.unwrap();
    assert_eq!(applier.store.unpublished(all, 10).await.unwrap(), ["P0", "P3"]);
    applier.store.forget_published(&[]).await.unwrap();
    applier.store.forget_published(&["P0".to_owned(), "P3".to_owned()]).await.unwrap();
    assert!(applier.store.unpublished(all, 10).await.unwrap().is_empty());
}

/// A stored score that cannot be read is left out of what is published again (the outbox,
/// replayed partners), and the partners beside it are not held back by it. P2's reads as
/// compressed in the Redis store (a zero byte first) and does not decompress.
async fn an_unreadable_stored_score_is_left_out_of_a_republish(store: impl StateStore) {
    let applier = with_ageing_deployment(store).await;
    let unreadable = PartnerWrite { score: vec![0x0a, 0xff], ..write("P0", 0, None) };
    let not_compressed = PartnerWrite { score: vec![0, 9, 0, 0, 0, 0xff], ..write("P2", 0, None) };
    assert_eq!(
        applier.store.write(&[unreadable, not_compressed]).await.unwrap(),
        [WriteOutcome::Written { version: 1 }, WriteOutcome::Written { version: 1 }]
    );
    let partners = ["P0", "P1", "P2", "P9"].map(String::from);
    let updates = applier.stored_updates(&partners).await.unwrap();
    let published: Vec<&str> = updates.iter().map(|u| u.partner_id.as_str()).collect();
    assert_eq!(published, ["P1"]);
}

fn earned(id: &str, who: &str, on: &str) -> String {
    format!(
        r#"{{"type":"certification","event_id":"{id}","partner_id":"P1","individual_id":"{who}","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","earned_on":"{on}"}}"#
    )
}

/// The history travels with the partner's facts: written with them, kept by writes that do
/// not change it, recomputed for past days when a late event arrives, and extended by the
/// day rollover.
async fn history<S: StateStore>(applier: &Applier<S>) -> pcs::store::StoredPartner {
    applier.store.load(&[("P1".into(), Vec::new())]).await.unwrap().remove(0)
}

async fn history_is_recorded_backfilled_and_kept(store: impl StateStore) {
    let applier = applier(store);
    let letters = Letters::default();
    let rules = RuleBook::embedded();
    let first = day("2024-07-10");
    let earned_first = raw(0, 1, &earned("c1", "u1", "2024-07-01"));
    applier.apply(first, &[received(&earned_first)], &letters, &mut Vec::new()).await.unwrap();
    // Learned on 2024-07-12: someone certified back on 2024-05-20, and a June ACR line.
    let late = day("2024-07-12");
    let raws = [raw(0, 2, &earned("c2", "u2", "2024-05-20")), raw(0, 3, &acr("a", "C1", 900))];
    let batch: Vec<Received> = raws.iter().map(received).collect();
    applier.apply(late, &batch, &letters, &mut Vec::new()).await.unwrap();
    let stored = history(&applier).await;
    assert_eq!(stored.history.evaluated_through(), Some(late));
    let mut d = day("2024-05-20");
    while d <= late {
        let expected = pcs::engine::DaySnapshot::of(&pcs::engine::evaluate("P1", &stored.state, d, &rules));
        assert_eq!(stored.history.on(d), Some(&expected), "{d}");
        d = d.succ_opt().unwrap();
    }
    let served = applier.store.scores(&["P1".into()]).await.unwrap().remove(0).unwrap();
    assert!(served.history.is_some(), "scores() carries the history for the qualification window");
    // A write that leaves the history as it is keeps it.
    let mut unchanged = write("P1", stored.version, None);
    unchanged.state = stored.state.encode();
    applier.store.write(&[unchanged]).await.unwrap();
    assert_eq!(history(&applier).await.history, stored.history);
    // Days pass: the rollover evaluates the partner on its change days and records them.
    let later = day("2024-08-03");
    applier.roll_over(later, 100).await.unwrap();
    let rolled = history(&applier).await;
    assert_eq!(rolled.history.evaluated_through(), Some(later));
    let expected = pcs::engine::DaySnapshot::of(&pcs::engine::evaluate("P1", &rolled.state, later, &rules));
    assert_eq!(rolled.history.on(later), Some(&expected));
}
