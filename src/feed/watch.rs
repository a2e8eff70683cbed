//! The watch fan-out. Every instance reads the scores topic (which every instance writes),
//! so a watcher on any instance sees the changes made by all of them, per partner in order
//! (a partner's scores share a partition).
//!
//! Live watchers share one reader through a bounded broadcast channel: a watcher that falls
//! more than the buffer behind is closed with a cursor to resume from, so a slow client never
//! slows ingestion or grows memory. A watcher that resumes from a cursor gets a reader of its
//! own that starts at the cursor and is paced by the client (backpressure, no buffer growth).

use crate::feed::VERSION_HEADER;
use crate::kafka::{Cluster, KafkaError};
use prost::bytes::Bytes;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    cluster: Cluster,
    topic: String,
    buffer: usize,
    readers: AtomicU64,
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
        let hub = Arc::new(WatchHub {
            live: live.clone(),
            cluster: cluster.clone(),
            topic: topic.to_owned(),
            buffer,
            readers: AtomicU64::new(0),
        });
        let reader = hub.reader(None).await?;
        tokio::spawn(async move {
            reader
                .run(shutdown, |item| {
                    // No live watcher is fine: the item is on the topic for later resumes.
                    let _ = live.send(Arc::new(item));
                    async { true }
                })
                .await
        });
        Ok(hub)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchItem>> {
        self.live.subscribe()
    }

    /// A feed of its own, from `cursor` on; ends when the receiver is dropped.
    pub async fn resume(
        &self,
        cursor: Cursor,
        shutdown: broadcast::Receiver<()>,
    ) -> Result<mpsc::Receiver<Arc<WatchItem>>, KafkaError> {
        let (tx, rx) = mpsc::channel(self.buffer.min(1024));
        let reader = self.reader(Some(cursor)).await?;
        tokio::spawn(async move {
            reader
                .run(shutdown, |item| {
                    let tx = tx.clone();
                    async move { tx.send(Arc::new(item)).await.is_ok() }
                })
                .await
        });
        Ok(rx)
    }

    async fn reader(&self, from: Option<Cursor>) -> Result<TopicReader, KafkaError> {
        let n = self.readers.fetch_add(1, Ordering::Relaxed);
        let name = format!("pcs-watch-{}-{n}", std::process::id());
        let consumer: StreamConsumer = self.cluster.reader(&name).create().map_err(KafkaError::Client)?;
        let mut reader =
            TopicReader { consumer: Arc::new(consumer), topic: self.topic.clone(), positions: Cursor::default() };
        reader.assign(from).await?;
        Ok(reader)
    }
}

struct TopicReader {
    /// Shared with the blocking tasks that fetch metadata.
    consumer: Arc<StreamConsumer>,
    topic: String,
    positions: Cursor,
}

impl TopicReader {
    /// Assigns every partition: at the cursor, or at the current end for a live reader.
    /// Partitions the cursor does not name (added since) start at their beginning.
    async fn assign(&mut self, from: Option<Cursor>) -> Result<(), KafkaError> {
        let partitions = self.partitions().await?;
        let mut list = TopicPartitionList::new();
        for p in partitions {
            let offset = match &from {
                Some(cursor) => cursor.0.get(&p).copied().unwrap_or(0),
                None => self.high_watermark(p).await?,
            };
            self.positions.0.insert(p, offset);
            list.add_partition_offset(&self.topic, p, Offset::Offset(offset))
                .map_err(|source| KafkaError::Metadata { topic: self.topic.clone(), source })?;
        }
        self.consumer.assign(&list).map_err(|source| KafkaError::Metadata { topic: self.topic.clone(), source })
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
    async fn run<F, Fut>(mut self, mut shutdown: broadcast::Receiver<()>, deliver: F)
    where
        F: Fn(WatchItem) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut refresh = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = refresh.tick() => self.add_new_partitions().await,
                message = self.consumer.recv() => match message {
                    Ok(m) => {
                        self.positions.0.insert(m.partition(), m.offset() + 1);
                        let version = m
                            .headers()
                            .and_then(|hs| hs.iter().find(|h| h.key == VERSION_HEADER))
                            .and_then(|h| h.value)
                            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                            .unwrap_or(0);
                        let item = WatchItem {
                            partner_id: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                            score: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                            version,
                            cursor: self.positions.clone(),
                        };
                        if !deliver(item).await {
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
        let new: Vec<i32> = partitions.into_iter().filter(|p| !self.positions.0.contains_key(p)).collect();
        for p in new {
            self.positions.0.insert(p, 0);
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
}
