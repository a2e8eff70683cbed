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

use crate::feed::VERSION_HEADER;
use crate::kafka::{Cluster, KafkaError};
use prost::bytes::Bytes;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Next offset to read per partition of the scores topic: where a feed resumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<i32, i64>);

impl Cursor {
    /// `partition:offset` pairs, comma-separated (e.g. `0:17,1:4`).
    pub fn encode(&self) -> String {
        use std::fmt::Write;
        // Written into one string: every score sent to every watcher carries its cursor, and a
        // string per pair joined afterwards allocated once per partition of the topic.
        let mut text = String::with_capacity(self.0.len() * 12);
        for (i, (p, o)) in self.0.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            write!(text, "{comma}{p}:{o}").expect("writing to a String cannot fail");
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
    /// very next record of its partition, else `None`, and the reader sends it in its turn
    /// (a record before it is not sent yet, another instance's, say, or it was sent already).
    fn acknowledged(&mut self, partition: i32, offset: i64) -> Option<Cursor> {
        let next = self.0.0.get_mut(&partition)?;
        if *next != offset {
            return None;
        }
        *next = offset + 1;
        Some(self.0.clone())
    }
}

/// A score this instance's producer had acknowledged, for the live watchers.
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
    sent: Mutex<Sequence>,
    cluster: Cluster,
    topic: String,
    buffer: usize,
    readers: AtomicU64,
    /// Items the live watchers got from the producer, before the reader read them.
    early: AtomicU64,
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
            sent: Mutex::new(Sequence(start)),
            cluster: cluster.clone(),
            topic: topic.to_owned(),
            buffer,
            readers: AtomicU64::new(1),
            early: AtomicU64::new(0),
        });
        let sender = Arc::clone(&hub);
        tokio::spawn(async move {
            reader
                .run(shutdown, |read| {
                    let mut sent = sender.sent.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(cursor) = sent.read(read.partition, read.offset) {
                        // No live watcher is fine: the item is on the topic for later resumes.
                        let _ = sender.live.send(Arc::new(read.into_item(cursor)));
                    }
                    async { true }
                })
                .await
        });
        Ok(hub)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchItem>> {
        self.live.subscribe()
    }

    /// Whether anyone watches live: only then are acknowledged scores worth keeping for them.
    pub fn watched(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// Sends the live watchers a score this instance's producer had acknowledged, if it is
    /// the next record they are owed (see `Sequence::acknowledged`); else the reader does.
    pub fn acknowledged(&self, score: Acknowledged) {
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cursor) = sent.acknowledged(score.partition, score.offset) {
            self.early.fetch_add(1, Ordering::Relaxed);
            let item = WatchItem { partner_id: score.partner_id, score: score.score, version: score.version, cursor };
            let _ = self.live.send(Arc::new(item));
        }
    }

    /// How many scores the live watchers got from the producer rather than the reader.
    pub fn sent_early(&self) -> u64 {
        self.early.load(Ordering::Relaxed)
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
                .run(shutdown, |read| {
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
    /// to the topic later.
    async fn run<F, Fut>(mut self, mut shutdown: broadcast::Receiver<()>, mut deliver: F)
    where
        F: FnMut(Read<'_>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut refresh = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = refresh.tick() => self.add_new_partitions().await,
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
                        if !deliver(read).await {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, topic = %self.topic, "scores reader error"),
                },
            }
        }
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
    }
}
