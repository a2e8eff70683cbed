//! The watch fan-out. Every instance reads the scores topic (which every instance writes),
//! so a watcher on any instance sees the changes made by all of them, per partner in order
//! (a partner's scores share a partition).
//!
//! Live watchers share one reader through a bounded broadcast channel: a watcher that falls
//! more than the buffer behind is closed with a cursor to resume from, so a slow client never
//! slows ingestion or grows memory. A watcher that resumes from a cursor gets a reader of its
//! own that starts at the cursor and is paced by the client (backpressure, no buffer growth).
//!
//! This instance's own scores also reach its live watchers straight from the producer, once
//! the broker has acknowledged them (`acks=all`, idempotent: the record is then in the topic,
//! at the offset the acknowledgement names, for every reader to see). Read back, each crossed
//! the broker a second time behind the reader's fetch wait: at 20k new partners a second that
//! crossing took 29 ms at the median and 75 ms at the 99th percentile. A score acknowledged
//! is let through only when it is the next record of its partition that watchers are owed
//! (see `Sequence`), so they see exactly what the reader alone would show them, in the same
//! order with the same cursors, only sooner; the reader then passes it over. A score of
//! another instance's still makes this instance's next ones wait for the reader.
//!
//! Reading back what the watchers already have is most of the live reader's work when this
//! instance writes alone, and it was not cheap: with the reader off, a benchmark build
//! worked through a backlog of new partners at 48-60 µs of CPU an event instead of 61-76
//! (the broker serving the scores back, librdkafka decompressing them). So the live reader
//! stops fetching a partition where, for a second, nearly every record it read was this
//! instance's (see `Idling`), and looks at the partition's end instead: when records there
//! are still not sent a check later (another writer's), it fetches the partition again from
//! the first record not sent. For that, acknowledgements handled out of offset order wait
//! for the records before them (see `LiveSequence`) instead of being left to the reader.

use crate::feed::VERSION_HEADER;
use crate::kafka::{Cluster, KafkaError};
use prost::bytes::Bytes;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// Next offset to read per partition of the scores topic: where a feed resumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<i32, i64>);

impl Cursor {
    /// `partition:offset` pairs, comma-separated (e.g. `0:17,1:4`).
    pub fn encode(&self) -> String {
        // Written into one string, without a formatter: every score sent to every watcher
        // carries its cursor. A string per pair joined afterwards allocated once per
        // partition of the topic, and `write!` was still half a percent of the benchmark
        // process's samples under a stream of new partners.
        let (mut partition, mut offset) = (itoa::Buffer::new(), itoa::Buffer::new());
        let mut text = String::with_capacity(self.0.len() * 12);
        for (i, (p, o)) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(partition.format(*p));
            text.push(':');
            text.push_str(offset.format(*o));
        }
        text
    }

    pub fn parse(text: &str) -> Result<Cursor, String> {
        let mut positions = BTreeMap::new();
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let parsed = pair.split_once(':').and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)));
            match parsed {
                Some((p, o)) if p >= 0 && o >= 0 => {
                    positions.insert(p, o);
                }
                _ => return Err(format!("resume_cursor {pair:?} is not partition:offset")),
            }
        }
        Ok(Cursor(positions))
    }
}

/// How far each partition of the scores topic has been sent to watchers: the cursor of the
/// last item sent. Scores come to it from the topic's reader and, for the live watchers,
/// from this instance's producer; it lets each record through once, in offset order.
#[derive(Debug)]
struct Sequence(Cursor);

impl Sequence {
    /// A record read from the topic: the cursor after it, or `None` when it was sent already
    /// (acknowledged to the producer before the reader got to it). Offsets a compaction
    /// removed are skipped over, as a reader skips them.
    fn read(&mut self, partition: i32, offset: i64) -> Option<Cursor> {
        if self.0.0.get(&partition).is_some_and(|next| offset < *next) {
            return None;
        }
        self.0.0.insert(partition, offset + 1);
        Some(self.0.clone())
    }

    /// A record acknowledged to this instance's producer: the cursor after it when it is the
    /// very next record of its partition, else `None` (a record before it is not sent yet,
    /// another instance's, say, or it was sent already; see `LiveSequence` for what waits).
    fn acknowledged(&mut self, partition: i32, offset: i64) -> Option<Cursor> {
        let next = self.0.0.get_mut(&partition)?;
        if *next != offset {
            return None;
        }
        *next = offset + 1;
        Some(self.0.clone())
    }
}

/// The live watchers' place in the topic (a `Sequence`), with what the producer
/// acknowledged out of turn and the counts the live reader judges by (see `Idling`).
///
/// The producer's acknowledgements are handled by one task per hand-over, and two can be
/// in flight, so a partition's acknowledgements do not always come in offset order. One
/// that is not the next record yet waits here until the records before it are sent, by the
/// producer's path or the reader's: otherwise the reader would have to send it, and an idle
/// reader would have to be woken for it.
#[derive(Debug)]
struct LiveSequence {
    sequence: Sequence,
    /// Acknowledged records waiting for the records before them, with the item to send
    /// (none while nobody watched).
    waiting: BTreeMap<(i32, i64), Option<Acknowledged>>,
    counts: BTreeMap<i32, Counts>,
}

/// At most this many acknowledged records wait (about 4 KB each): past it the one with the
/// lowest partition and offset is dropped, and the reader sends it, at once if it follows
/// that partition, after an end check if it is idle there.
const MAX_WAITING: usize = 10_000;

/// What the live reader did in a partition, counted from the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    /// Records the reader sent: not acknowledged to this instance's producer by then.
    sent_by_reader: u64,
    /// Acknowledgements of records the reader had sent already: this instance's after all.
    raced: u64,
}

impl LiveSequence {
    fn new(start: Cursor) -> Self {
        LiveSequence { sequence: Sequence(start), waiting: BTreeMap::new(), counts: BTreeMap::new() }
    }

    /// The reader read a record: the items to send, in order (this one, if it was not sent
    /// yet, then acknowledged ones that were waiting for it).
    fn read(
        &mut self,
        partition: i32,
        offset: i64,
        item: impl FnOnce(Cursor) -> WatchItem,
        watched: bool,
    ) -> Vec<WatchItem> {
        let Some(cursor) = self.sequence.read(partition, offset) else { return Vec::new() };
        self.counts.entry(partition).or_default().sent_by_reader += 1;
        let mut items = vec![item(cursor)];
        // Records before the new place were all read now: their acknowledgements are moot.
        let next = offset + 1;
        let moot: Vec<(i32, i64)> =
            self.waiting.range((partition, i64::MIN)..(partition, next)).map(|(k, _)| *k).collect();
        for key in moot {
            self.waiting.remove(&key);
        }
        self.release(partition, watched, &mut items);
        items
    }

    /// The producer's acknowledgement of a record: the items to send, in order (it, if it is
    /// the next record, then those that were waiting for it).
    fn acknowledged(
        &mut self,
        partition: i32,
        offset: i64,
        score: Option<Acknowledged>,
        watched: bool,
    ) -> Vec<WatchItem> {
        let Some(&next) = self.sequence.0.0.get(&partition) else { return Vec::new() };
        if offset < next {
            self.counts.entry(partition).or_default().raced += 1;
            return Vec::new();
        }
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.pop_first();
        }
        self.waiting.insert((partition, offset), score);
        let mut items = Vec::new();
        self.release(partition, watched, &mut items);
        items
    }

    /// Sends the waiting acknowledged records that are next in `partition`, in order. One
    /// acknowledged while nobody watched has no item: it is passed over as the reader would
    /// have sent it to nobody, unless someone watches now, when it is left to the reader.
    fn release(&mut self, partition: i32, watched: bool, items: &mut Vec<WatchItem>) {
        loop {
            let Some(&next) = self.sequence.0.0.get(&partition) else { return };
            let Some(entry) = self.waiting.get(&(partition, next)) else { return };
            if entry.is_none() && watched {
                self.waiting.remove(&(partition, next));
                return;
            }
            let score = self.waiting.remove(&(partition, next)).flatten();
            let cursor = self.sequence.acknowledged(partition, next).expect("the next record is let through");
            if let Some(score) = score {
                items.push(WatchItem {
                    partner_id: score.partner_id,
                    score: score.score,
                    version: score.version,
                    cursor,
                });
            }
        }
    }

    fn counts(&self, partition: i32) -> Counts {
        self.counts.get(&partition).copied().unwrap_or_default()
    }

    fn next(&self, partition: i32) -> Option<i64> {
        self.sequence.0.0.get(&partition).copied()
    }
}

/// A score this instance's producer had acknowledged, for the live watchers.
#[derive(Debug)]
pub struct Acknowledged {
    pub partner_id: String,
    pub score: Bytes,
    pub version: u64,
    pub partition: i32,
    pub offset: i64,
}

/// One score change as read from the scores topic.
#[derive(Clone, Debug)]
pub struct WatchItem {
    pub partner_id: String,
    /// Protobuf `PartnerScore`, shared by every watcher it is sent to.
    pub score: Bytes,
    pub version: u64,
    /// Resume right after this item.
    pub cursor: Cursor,
}

pub struct WatchHub {
    live: broadcast::Sender<Arc<WatchItem>>,
    /// The live watchers' place in the topic. Locked while an item is sent, so items from the
    /// reader and from the producer enter the channel in the order they were let through.
    sent: Mutex<LiveSequence>,
    cluster: Cluster,
    topic: String,
    buffer: usize,
    readers: AtomicU64,
    /// Items the live watchers got from the producer, before the reader read them.
    early: AtomicU64,
    /// Partitions the live reader does not fetch now (see `Idling`).
    idle: AtomicUsize,
}

impl WatchHub {
    /// Starts the shared reader at the current end of the scores topic.
    pub async fn start(
        cluster: &Cluster,
        topic: &str,
        buffer: usize,
        shutdown: broadcast::Receiver<()>,
    ) -> Result<Arc<WatchHub>, KafkaError> {
        let (live, _) = broadcast::channel(buffer);
        let (reader, start) = TopicReader::open(cluster, topic, 0, None).await?;
        let hub = Arc::new(WatchHub {
            live,
            sent: Mutex::new(LiveSequence::new(start)),
            cluster: cluster.clone(),
            topic: topic.to_owned(),
            buffer,
            readers: AtomicU64::new(1),
            early: AtomicU64::new(0),
            idle: AtomicUsize::new(0),
        });
        let sender = Arc::clone(&hub);
        let idling = Some(Arc::clone(&hub));
        tokio::spawn(async move {
            reader
                .run(shutdown, idling, |read| {
                    let mut sent = sender.sent.lock().unwrap_or_else(PoisonError::into_inner);
                    let (partition, offset) = (read.partition, read.offset);
                    let items = sent.read(partition, offset, |cursor| read.into_item(cursor), sender.watched());
                    let acknowledged = items.len().saturating_sub(1) as u64;
                    sender.early.fetch_add(acknowledged, Ordering::Relaxed);
                    for item in items {
                        // No live watcher is fine: the item is on the topic for later resumes.
                        let _ = sender.live.send(Arc::new(item));
                    }
                    async { true }
                })
                .await
        });
        Ok(hub)
    }

    /// A live watcher. Taken under the lock that sends items: whether anyone watches decides
    /// whether a score acknowledged unwatched may be passed over (see `LiveSequence::release`),
    /// and a watcher arriving between that decision and the items' sending would miss it.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchItem>> {
        let _sending = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        self.live.subscribe()
    }

    /// Whether anyone watches live: only then are acknowledged scores worth keeping for them.
    pub fn watched(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// Sends the live watchers a score this instance's producer had acknowledged once it is
    /// the next record they are owed (see `LiveSequence`).
    pub fn acknowledged(&self, score: Acknowledged) {
        let (partition, offset) = (score.partition, score.offset);
        self.acknowledge(partition, offset, Some(score));
    }

    /// A score this instance's producer had acknowledged while nobody watched live, so it
    /// was not kept: in its turn it is passed over, as the reader would have sent it to
    /// nobody. If a watcher came meanwhile, the reader sends it.
    pub fn acknowledged_unwatched(&self, partition: i32, offset: i64) {
        self.acknowledge(partition, offset, None);
    }

    fn acknowledge(&self, partition: i32, offset: i64, score: Option<Acknowledged>) {
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        let items = sent.acknowledged(partition, offset, score, self.watched());
        self.early.fetch_add(items.len() as u64, Ordering::Relaxed);
        for item in items {
            let _ = self.live.send(Arc::new(item));
        }
    }

    /// What the live reader did in `partition` so far (see `Idling`).
    fn counts(&self, partition: i32) -> Counts {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner).counts(partition)
    }

    /// How many scores the live watchers got from the producer rather than the reader.
    pub fn sent_early(&self) -> u64 {
        self.early.load(Ordering::Relaxed)
    }

    /// How many partitions of the scores topic the live reader does not fetch now, their
    /// records reaching the watchers on acknowledgement, and any other within two end checks.
    pub fn idle_partitions(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    /// The first offset of `partition` not yet sent to the live watchers.
    fn unsent(&self, partition: i32) -> Option<i64> {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner).next(partition)
    }

    /// A feed of its own, from `cursor` on; ends when the receiver is dropped.
    pub async fn resume(
        &self,
        cursor: Cursor,
        shutdown: broadcast::Receiver<()>,
    ) -> Result<mpsc::Receiver<Arc<WatchItem>>, KafkaError> {
        let (tx, rx) = mpsc::channel(self.buffer.min(1024));
        let n = self.readers.fetch_add(1, Ordering::Relaxed);
        let (reader, start) = TopicReader::open(&self.cluster, &self.topic, n, Some(cursor)).await?;
        let mut sent = Sequence(start);
        tokio::spawn(async move {
            reader
                .run(shutdown, None, |read| {
                    let item = sent.read(read.partition, read.offset).map(|cursor| Arc::new(read.into_item(cursor)));
                    let tx = tx.clone();
                    async move {
                        match item {
                            Some(item) => tx.send(item).await.is_ok(),
                            None => true,
                        }
                    }
                })
                .await
        });
        Ok(rx)
    }
}

/// How long the live reader reads a partition before it judges whether to stop: long enough
/// that the counts it compares (below) outgrow the records in flight at either end.
const IDLE_AFTER: Duration = Duration::from_secs(1);

/// How often the ends of idle partitions are looked at, in one request for all of them. A
/// record no acknowledgement sends (another writer's) reaches the watchers within two of
/// these, plus a fetch, when its partition is idle. Not more often: tansu answers the
/// request by listing every batch stored in each partition, as it does a fetch (its CPU
/// per request: 1.0 ms for six partitions of 20,000 records sent 50 at a time, 4.2 ms for
/// 60,000),
/// and in the benchmark a check every 100 ms put GetScore's p99 at 5k QPS over 2 ms
/// (2.7-3.5 ms in three runs against 1.1-1.5 ms), its slow requests spread over a tenth of
/// the phase's 10 ms windows.
const END_CHECK: Duration = Duration::from_secs(1);

/// Which partitions the live reader fetches. Every `IDLE_AFTER` it looks, for each
/// partition, at the records it read there: those it passed over had reached the watchers
/// on acknowledgement, and of those it sent itself, the ones whose acknowledgement came
/// later were this instance's too (the reader often reads a record before its
/// acknowledgement is handled). When the rest, another writer's, are at most 1/64 of what
/// it read, it stops fetching the partition.
///
/// While idle, the partition's end is looked at every `END_CHECK`: a record before the end
/// seen at one check that is still not sent at the next is one no acknowledgement will send
/// (another writer's, or this instance's whose acknowledgement is slow or was lost with a
/// failed delivery: a needless fetch, then), and the reader fetches the
/// partition again from the first record not sent. It never starts after that record, so
/// none is skipped, and records read twice are passed over. Judging wrongly costs only
/// time: a partition idle while another instance writes there gets that instance's records
/// a check or two later, and one followed needlessly is read as before.
#[derive(Debug, Default)]
struct Idling(BTreeMap<i32, Follow>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Follow {
    /// Fetched; since `since`, `read` records were read, and `then` is what the counts
    /// were when it began.
    Following { since: Instant, read: u64, then: Counts },
    /// Not fetched; `end` is the partition's end at the last check.
    Idle { end: Option<i64> },
}

impl Idling {
    /// The reader read a record of `partition`, whose counts `counts` gives: whether to stop
    /// fetching the partition. The counts are asked for only where a window begins or ends,
    /// about once a second, not for every record: they sit behind the lock items are sent
    /// under.
    fn read(&mut self, partition: i32, counts: impl Fn() -> Counts, now: Instant) -> bool {
        let state =
            self.0.entry(partition).or_insert_with(|| Follow::Following { since: now, read: 0, then: counts() });
        let Follow::Following { since, read, then } = state else {
            // Left over in librdkafka's queue from before the partition went idle.
            return false;
        };
        *read += 1;
        if now.duration_since(*since) < IDLE_AFTER {
            return false;
        }
        let counts = counts();
        let sent = counts.sent_by_reader.saturating_sub(then.sent_by_reader);
        let ours = counts.raced.saturating_sub(then.raced);
        if sent.saturating_sub(ours).saturating_mul(64) <= *read {
            *state = Follow::Idle { end: None };
            return true;
        }
        *state = Follow::Following { since: now, read: 0, then: counts };
        false
    }

    /// Fetched again (or still): judged afresh from the next record read.
    fn follow(&mut self, partition: i32) {
        self.0.remove(&partition);
    }

    fn idle_again(&mut self, partition: i32) {
        self.0.insert(partition, Follow::Idle { end: None });
    }

    fn any_idle(&self) -> bool {
        self.0.values().any(|f| matches!(f, Follow::Idle { .. }))
    }

    fn idle(&self) -> Vec<i32> {
        self.0.iter().filter(|(_, f)| matches!(f, Follow::Idle { .. })).map(|(p, _)| *p).collect()
    }

    /// The ends of idle partitions were read (`ends`; an idle partition whose end could not
    /// be read is missing); `unsent` gives the first offset not sent to the watchers. Returns
    /// the partitions to fetch again, and from where: those with a record still unsent since
    /// the check before, and those whose end is not known, as a reader that cannot check must
    /// not miss records.
    fn checked(&mut self, ends: &[(i32, i64)], unsent: impl Fn(i32) -> Option<i64>) -> Vec<(i32, i64)> {
        let mut resume = Vec::new();
        for partition in self.idle() {
            // Every idle partition was read, so its place is known.
            let Some(next) = unsent(partition) else { continue };
            let end = ends.iter().find(|(p, _)| *p == partition).map(|(_, end)| *end);
            let Some(Follow::Idle { end: seen }) = self.0.get_mut(&partition) else { continue };
            let earlier = match end {
                Some(end) => seen.replace(end),
                None => None,
            };
            if end.is_none() || earlier.is_some_and(|earlier| earlier > next) {
                self.follow(partition);
                resume.push((partition, next));
            }
        }
        resume
    }
}

struct TopicReader {
    /// Shared with the blocking tasks that fetch metadata.
    consumer: Arc<StreamConsumer>,
    topic: String,
    assigned: BTreeSet<i32>,
}

/// A record as the reader got it, before it is let through.
struct Read<'m> {
    partition: i32,
    offset: i64,
    key: &'m [u8],
    payload: &'m [u8],
    version: u64,
}

impl Read<'_> {
    /// Copied out of the consumer's buffer only once it is let through.
    fn into_item(self, cursor: Cursor) -> WatchItem {
        WatchItem {
            partner_id: String::from_utf8_lossy(self.key).into_owned(),
            score: Bytes::copy_from_slice(self.payload),
            version: self.version,
            cursor,
        }
    }
}

impl TopicReader {
    /// The `n`th reader of `topic` this process opens, from `from` (or the end), and the
    /// cursor it starts at.
    async fn open(
        cluster: &Cluster,
        topic: &str,
        n: u64,
        from: Option<Cursor>,
    ) -> Result<(TopicReader, Cursor), KafkaError> {
        let name = format!("pcs-watch-{}-{n}", std::process::id());
        let consumer: StreamConsumer = cluster.reader(&name).create().map_err(KafkaError::Client)?;
        let mut reader =
            TopicReader { consumer: Arc::new(consumer), topic: topic.to_owned(), assigned: BTreeSet::new() };
        let start = reader.assign(from).await?;
        Ok((reader, start))
    }

    /// Assigns every partition: at the cursor, or at the current end for a live reader, and
    /// returns where it starts. Partitions the cursor does not name (added since) start at
    /// their beginning.
    async fn assign(&mut self, from: Option<Cursor>) -> Result<Cursor, KafkaError> {
        let partitions = self.partitions().await?;
        let mut list = TopicPartitionList::new();
        let mut start = Cursor::default();
        for p in partitions {
            let offset = match &from {
                Some(cursor) => cursor.0.get(&p).copied().unwrap_or(0),
                None => self.high_watermark(p).await?,
            };
            start.0.insert(p, offset);
            self.assigned.insert(p);
            list.add_partition_offset(&self.topic, p, Offset::Offset(offset))
                .map_err(|source| KafkaError::Metadata { topic: self.topic.clone(), source })?;
        }
        self.consumer.assign(&list).map_err(|source| KafkaError::Metadata { topic: self.topic.clone(), source })?;
        Ok(start)
    }

    async fn partitions(&self) -> Result<Vec<i32>, KafkaError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(|source| KafkaError::Metadata { topic: topic.clone(), source })?;
            Ok(metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect())
        })
        .await
        .expect("metadata task does not panic")
    }

    async fn high_watermark(&self, partition: i32) -> Result<i64, KafkaError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            consumer
                .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                .map(|(_, high)| high)
                .map_err(|source| KafkaError::Metadata { topic, source })
        })
        .await
        .expect("watermark task does not panic")
    }

    /// Reads until shutdown or until `deliver` returns false, picking up partitions added
    /// to the topic later. With `hub`, the live reader's, it stops fetching
    /// the partitions where it only passes records over (see `Idling`).
    async fn run<F, Fut>(mut self, mut shutdown: broadcast::Receiver<()>, hub: Option<Arc<WatchHub>>, mut deliver: F)
    where
        F: FnMut(Read<'_>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut refresh = tokio::time::interval(Duration::from_secs(5));
        let mut check = tokio::time::interval(END_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idling = Idling::default();
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = refresh.tick() => self.add_new_partitions().await,
                _ = check.tick(), if idling.any_idle() => {
                    if let Some(hub) = &hub {
                        self.check_idle(&mut idling, hub).await;
                        hub.idle.store(idling.idle().len(), Ordering::Relaxed);
                    }
                }
                message = self.consumer.recv() => match message {
                    Ok(m) => {
                        let version = m
                            .headers()
                            .and_then(|hs| hs.iter().find(|h| h.key == VERSION_HEADER))
                            .and_then(|h| h.value)
                            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                            .unwrap_or(0);
                        let read = Read {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().unwrap_or_default(),
                            payload: m.payload().unwrap_or_default(),
                            version,
                        };
                        let partition = read.partition;
                        if !deliver(read).await {
                            return;
                        }
                        if let Some(hub) = &hub
                            && idling.read(partition, || hub.counts(partition), Instant::now())
                        {
                            self.stop_fetching(&mut idling, partition);
                            hub.idle.store(idling.idle().len(), Ordering::Relaxed);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, topic = %self.topic, "scores reader error"),
                },
            }
        }
    }

    /// Stops fetching `partition`, which `idling` has just marked idle; if librdkafka
    /// refuses, the partition is followed again, as it is still fetched.
    fn stop_fetching(&self, idling: &mut Idling, partition: i32) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        match self.consumer.incremental_unassign(&list) {
            Ok(()) => {
                tracing::debug!(topic = %self.topic, partition, "scores reader idles: every record was sent already")
            }
            Err(e) => {
                tracing::warn!(error = %e, topic = %self.topic, partition, "cannot stop fetching a partition of the scores topic");
                idling.follow(partition);
            }
        }
    }

    /// Looks at the ends of the idle partitions and fetches again those with records that
    /// are still not sent since the check before, and those whose end cannot be read.
    async fn check_idle(&self, idling: &mut Idling, hub: &WatchHub) {
        let ends = self.ends(&idling.idle()).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, topic = %self.topic, "cannot read the scores topic's ends: fetching again");
            Vec::new()
        });
        let resume = idling.checked(&ends, |p| hub.unsent(p));
        for (partition, offset) in resume {
            let mut list = TopicPartitionList::new();
            let added = list.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
            match added.and_then(|()| self.consumer.incremental_assign(&list)) {
                Ok(()) => tracing::debug!(topic = %self.topic, partition, offset, "scores reader follows again"),
                Err(e) => {
                    // Marked idle again, so the next check tries again.
                    tracing::warn!(error = %e, topic = %self.topic, partition, "cannot fetch a partition of the scores topic again");
                    idling.idle_again(partition);
                }
            }
        }
    }

    /// The current end (high watermark) of each of `partitions`, in one request.
    async fn ends(&self, partitions: &[i32]) -> Result<Vec<(i32, i64)>, KafkaError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            // The "timestamp" END asks the broker for each partition's latest offset.
            list.add_partition_offset(&topic, p, Offset::End)
                .map_err(|source| KafkaError::Metadata { topic: topic.clone(), source })?;
        }
        tokio::task::spawn_blocking(move || {
            // The reader reads nothing while it waits: a broker slower than this to answer
            // is treated as one that cannot, and the idle partitions are fetched again.
            let found = consumer
                .offsets_for_times(list, END_CHECK * 2)
                .map_err(|source| KafkaError::Metadata { topic: topic.clone(), source })?;
            Ok(found
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(end) if e.error().is_ok() => Some((e.partition(), end)),
                    _ => None,
                })
                .collect())
        })
        .await
        .expect("offsets task does not panic")
    }

    async fn add_new_partitions(&mut self) {
        let Ok(partitions) = self.partitions().await else { return };
        let mut list = TopicPartitionList::new();
        let new: Vec<i32> = partitions.into_iter().filter(|p| !self.assigned.contains(p)).collect();
        for p in new {
            self.assigned.insert(p);
            if list.add_partition_offset(&self.topic, p, Offset::Beginning).is_err() {
                return;
            }
        }
        if list.count() > 0
            && let Err(e) = self.consumer.incremental_assign(&list)
        {
            tracing::warn!(error = %e, "cannot read new partitions of the scores topic");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = Cursor::parse("0:17,2:4").unwrap();
        assert_eq!(c.encode(), "0:17,2:4");
        assert_eq!(Cursor::parse("").unwrap(), Cursor::default());
        assert!(Cursor::parse("0:x").is_err());
        assert!(Cursor::parse("-1:3").is_err());
    }

    fn at(pairs: &[(i32, i64)]) -> Sequence {
        Sequence(Cursor(pairs.iter().copied().collect()))
    }

    #[test]
    fn an_acknowledged_score_goes_first_only_when_it_is_next() {
        let mut sent = at(&[(0, 5), (1, 2)]);
        assert_eq!(sent.acknowledged(0, 5).map(|c| c.encode()), Some("0:6,1:2".to_owned()));
        assert_eq!(sent.read(0, 5), None, "sent already: the reader passes it over");
        assert_eq!(sent.acknowledged(0, 7), None, "offset 6 (another instance's) is not sent yet");
        assert_eq!(sent.read(0, 6).map(|c| c.encode()), Some("0:7,1:2".to_owned()));
        assert_eq!(sent.read(0, 7).map(|c| c.encode()), Some("0:8,1:2".to_owned()), "the reader sends it in turn");
        assert_eq!(sent.acknowledged(2, 0), None, "a partition the reader has not reached yet");
        assert_eq!(sent.read(0, 9).map(|c| c.encode()), Some("0:10,1:2".to_owned()), "offsets compacted away");
    }

    fn counts(sent_by_reader: u64, raced: u64) -> Counts {
        Counts { sent_by_reader, raced }
    }

    #[test]
    fn a_partition_idles_when_nearly_every_record_read_for_a_second_was_ours() {
        let t0 = Instant::now();
        let mut idling = Idling::default();
        assert!(!idling.read(0, || counts(10, 10), t0), "the first record starts the window");
        for n in 1..640 {
            assert!(!idling.read(0, || counts(10 + n / 2, 10), t0 + IDLE_AFTER / 2), "judged only after a second");
        }
        assert!(!idling.read(1, || counts(0, 0), t0 + IDLE_AFTER * 2), "each partition keeps its own window");
        let (sent, raced) = (10 + 320, 10 + 310);
        assert!(idling.read(0, || counts(sent, raced), t0 + IDLE_AFTER), "641 read, 10 unaccounted for: within 1/64");
        assert_eq!(idling.idle(), vec![0]);
        assert!(!idling.read(0, || counts(sent, raced), t0 + IDLE_AFTER * 2), "left over in the queue: already idle");
    }

    #[test]
    fn a_partition_another_writer_writes_to_keeps_being_read() {
        let t0 = Instant::now();
        let mut idling = Idling::default();
        idling.read(0, || counts(0, 0), t0);
        for n in 1..100 {
            idling.read(0, || counts(n / 2, 0), t0 + IDLE_AFTER / 2);
        }
        assert!(!idling.read(0, || counts(50, 0), t0 + IDLE_AFTER), "101 read, 50 sent and never acknowledged");
        assert!(!idling.any_idle());
        assert!(!idling.read(0, || counts(50, 0), t0 + IDLE_AFTER * 3 / 2), "a new window began");
        assert!(idling.read(0, || counts(50, 0), t0 + IDLE_AFTER * 2), "2 read, both passed over: the writer stopped");
    }

    #[test]
    fn an_idle_partition_is_fetched_again_from_the_first_unsent_record_once_one_stays_unsent() {
        let t0 = Instant::now();
        let mut idling = Idling::default();
        idling.read(0, || counts(0, 0), t0);
        assert!(idling.read(0, || counts(0, 0), t0 + IDLE_AFTER));
        assert_eq!(idling.checked(&[(0, 2)], |_| Some(2)), vec![], "first look at the end");
        assert_eq!(idling.checked(&[(0, 5)], |_| Some(5)), vec![], "acknowledgements kept up with the end");
        assert_eq!(idling.checked(&[(0, 8)], |_| Some(7)), vec![], "7 was written after the check before");
        assert_eq!(idling.checked(&[(0, 8)], |_| Some(7)), vec![(0, 7)], "7 is still not sent a check later");
        assert!(!idling.any_idle());
        assert!(!idling.read(0, || counts(1, 0), t0 + IDLE_AFTER * 5), "judged afresh, from a new window");
        assert!(idling.read(0, || counts(1, 0), t0 + IDLE_AFTER * 6));
        assert_eq!(idling.checked(&[(0, 10)], |_| None), vec![], "a place not known is never guessed");
        assert_eq!(idling.checked(&[(0, 10)], |_| None), vec![]);
        assert_eq!(idling.checked(&[(1, 4)], |_| Some(12)), vec![(0, 12)], "an end not read: fetched again");
        assert!(!idling.any_idle());
    }

    fn score(offset: i64) -> Acknowledged {
        Acknowledged { partner_id: offset.to_string(), score: Bytes::new(), version: 1, partition: 0, offset }
    }

    fn offsets(items: Vec<WatchItem>) -> Vec<i64> {
        items.iter().map(|i| i.cursor.0[&0] - 1).collect()
    }

    #[test]
    fn an_acknowledgement_out_of_turn_waits_for_the_records_before_it() {
        let mut sent = LiveSequence::new(Cursor::parse("0:5").unwrap());
        let item = |offset: i64| {
            move |cursor| WatchItem { partner_id: offset.to_string(), score: Bytes::new(), version: 1, cursor }
        };
        assert_eq!(offsets(sent.acknowledged(0, 6, Some(score(6)), true)), Vec::<i64>::new(), "5 is not sent yet");
        assert_eq!(offsets(sent.acknowledged(0, 5, Some(score(5)), true)), vec![5, 6], "5, then 6 that waited");
        assert_eq!(offsets(sent.acknowledged(0, 8, Some(score(8)), true)), Vec::<i64>::new());
        assert_eq!(offsets(sent.read(0, 7, item(7), true)), vec![7, 8], "another writer's 7 read, then our 8");
        assert_eq!(offsets(sent.read(0, 8, item(8), true)), Vec::<i64>::new(), "passed over");
        assert_eq!(sent.counts(0), Counts { sent_by_reader: 1, raced: 0 });
        assert_eq!(offsets(sent.read(0, 9, item(9), true)), vec![9], "read before its acknowledgement");
        assert_eq!(offsets(sent.acknowledged(0, 9, Some(score(9)), true)), Vec::<i64>::new());
        assert_eq!(sent.counts(0), Counts { sent_by_reader: 2, raced: 1 }, "9 was ours after all");
        assert_eq!(offsets(sent.acknowledged(0, 10, None, false)), Vec::<i64>::new(), "nobody watches: passed over");
        assert_eq!(sent.next(0), Some(11));
        assert_eq!(offsets(sent.acknowledged(0, 11, None, true)), Vec::<i64>::new(), "kept for nobody: the reader's");
        assert_eq!(sent.next(0), Some(11));
        assert!(sent.waiting.is_empty());
    }

    proptest::proptest! {
        /// Whichever way the reader and the producer's acknowledgements interleave, watchers get
        /// every record of the partition once, in offset order: what the reader alone sends.
        #[test]
        fn watchers_get_the_topic_in_order_however_acknowledgements_interleave(
            start in 0i64..1000,
            ours in proptest::collection::vec(proptest::bool::ANY, 1..40),
            reader_first in proptest::collection::vec(proptest::bool::ANY, 80),
        ) {
            let mut sent = at(&[(0, start)]);
            let acknowledgements: Vec<i64> =
                ours.iter().enumerate().filter(|(_, o)| **o).map(|(i, _)| start + i as i64).collect();
            let (mut read, mut acknowledged) = (0, 0);
            let mut got = Vec::new();
            let mut choices = reader_first.iter().copied().chain(std::iter::repeat(true));
            while read < ours.len() || acknowledged < acknowledgements.len() {
                let reader_goes = acknowledged == acknowledgements.len() || (read < ours.len() && choices.next().unwrap());
                let cursor = if reader_goes {
                    read += 1;
                    sent.read(0, start + read as i64 - 1)
                } else {
                    acknowledged += 1;
                    sent.acknowledged(0, acknowledgements[acknowledged - 1])
                };
                got.extend(cursor.map(|c| c.0[&0] - 1));
            }
            let topic: Vec<i64> = (start..start + ours.len() as i64).collect();
            proptest::prop_assert_eq!(got, topic);
        }

        /// The same with the producer's acknowledgements handled in any order, as two
        /// hand-overs' tasks can: none is lost or sent twice, and none overtakes another.
        #[test]
        fn watchers_get_the_topic_in_order_whatever_order_acknowledgements_come_in(
            ours in proptest::collection::vec(proptest::bool::ANY, 1..40),
            order in proptest::collection::vec(proptest::num::u32::ANY, 40),
            reader_first in proptest::collection::vec(proptest::bool::ANY, 80),
        ) {
            let mut sent = LiveSequence::new(Cursor::parse("0:0").unwrap());
            let mut acknowledgements: Vec<i64> =
                ours.iter().enumerate().filter(|(_, o)| **o).map(|(i, _)| i as i64).collect();
            let mut keys = order.iter();
            acknowledgements.sort_by_cached_key(|_| keys.next().copied().unwrap_or(0));
            let (mut read, mut acknowledged) = (0, 0);
            let mut got = Vec::new();
            let mut choices = reader_first.iter().copied().chain(std::iter::repeat(true));
            while read < ours.len() || acknowledged < acknowledgements.len() {
                let reader_goes = acknowledged == acknowledgements.len() || (read < ours.len() && choices.next().unwrap());
                let items = if reader_goes {
                    read += 1;
                    let offset = read as i64 - 1;
                    sent.read(0, offset, |cursor| WatchItem { partner_id: String::new(), score: Bytes::new(), version: 1, cursor }, true)
                } else {
                    acknowledged += 1;
                    let offset = acknowledgements[acknowledged - 1];
                    sent.acknowledged(0, offset, Some(score(offset)), true)
                };
                got.extend(offsets(items));
            }
            let topic: Vec<i64> = (0..ours.len() as i64).collect();
            proptest::prop_assert_eq!(got, topic);
            proptest::prop_assert!(sent.waiting.is_empty());
        }
    }
}
