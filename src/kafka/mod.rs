//! Kafka clients as pcs sets them up, with the reason for each setting beside it, and the
//! creation of pcs's topics.

mod enqueue;
mod lines;
pub mod topics;

pub use enqueue::enqueue;
pub use lines::{await_delivery, send_lines};
pub use topics::ensure_topics;

use rdkafka::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot create Kafka client: {0}")]
    Client(rdkafka::error::KafkaError),
    #[error("cannot create topic {topic}: {message}")]
    CreateTopic { topic: String, message: String },
    #[error("cannot produce to {topic}: {source}")]
    Produce { topic: String, source: rdkafka::error::KafkaError },
    #[error("Kafka metadata for {topic}: {source}")]
    Metadata { topic: String, source: rdkafka::error::KafkaError },
}

/// Where the brokers are, and settings the operator passes through to every client
/// (`--kafka-config key=value`: SASL, TLS, timeouts). Those are applied last, so they win.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub bootstrap: String,
    pub overrides: Vec<(String, String)>,
}

impl Cluster {
    pub fn new(bootstrap: &str) -> Cluster {
        Cluster { bootstrap: bootstrap.to_owned(), overrides: Vec::new() }
    }

    fn finish(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.overrides {
            config.set(key, value);
        }
        config
    }

    /// The consumer of partner events, which takes them in batches of up to `batch_max_events`.
    pub fn event_consumer(&self, group_id: &str, batch_max_events: usize) -> ClientConfig {
        self.finish(event_consumer_config(&self.bootstrap, group_id, batch_max_events))
    }

    /// The producer of scores and dead letters.
    pub fn producer(&self) -> ClientConfig {
        self.finish(producer_config(&self.bootstrap))
    }

    /// A producer of a whole file at once (`pcs produce`).
    pub fn bulk_producer(&self) -> ClientConfig {
        self.finish(bulk_producer_config(&self.bootstrap))
    }

    /// A reader by explicit assignment.
    pub fn reader(&self, name: &str) -> ClientConfig {
        self.finish(reader_config(&self.bootstrap, name))
    }

    /// The admin client that creates topics.
    pub fn admin(&self) -> ClientConfig {
        self.finish(base(&self.bootstrap))
    }
}

/// Settings every pcs client shares.
fn base(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // librdkafka refreshes metadata every 5 minutes by default; a topic or partition
        // created after start-up must be picked up within seconds.
        .set("topic.metadata.refresh.interval.ms", "5000")
        // pcs creates its topics itself, with the partition counts it is configured with.
        .set("allow.auto.create.topics", "false");
    config
}

/// librdkafka's default `queued.min.messages`: the prefetch pcs keeps for smaller batches.
const PREFETCH_MIN_EVENTS: usize = 100_000;

/// `fetch.queue.backoff.ms` of every pcs consumer: how soon librdkafka looks again at a
/// full prefetch queue (1 s by default, too long: see the event consumer's setting).
const FULL_QUEUE_BACKOFF_MS: &str = "20";

/// The consumer of partner events, in the service's consumer group.
fn event_consumer_config(brokers: &str, group_id: &str, batch_max_events: usize) -> ClientConfig {
    let mut config = base(brokers);
    config
        .set("group.id", group_id)
        // Offsets are committed by pcs after the batch is durable in Redis, never by a timer.
        .set("enable.auto.commit", "false")
        // A new group must see every fact ever published: scores are functions of all of them.
        .set("auto.offset.reset", "earliest")
        // Detects a dead instance within 6 s (the lowest a Kafka broker accepts by default),
        // so its partitions move on quickly. Heartbeats come from librdkafka's own thread, so
        // a long batch does not miss them. tansu also holds a new group's first join for
        // half of it: with 10 s, pcs waited 5 s before its first fetch, 3 s now.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        // A batch blocked on an outage keeps its partitions this long before the group
        // moves them elsewhere (the work is safe to redo: offsets live with the state).
        .set("max.poll.interval.ms", "300000")
        // Partition EOF is not an event pcs acts on.
        .set("enable.partition.eof", "false")
        // Fresh scores: a broker that holds a fetch until its maximum wait (500 ms by
        // default) adds that to every event's latency on a quiet partition, and tansu does.
        // 10 ms rather than 20 took about 5 ms off the benchmark's produce → watch latency
        // below capacity; the price is an idle consumer's fetch every 10 ms.
        .set("fetch.wait.max.ms", "10")
        // While a batch is applied, librdkafka prefetches the next one, up to this many
        // events (or `queued.max.messages.kbytes`, 64 MB, whichever comes first). With the
        // group consumer the count is of the whole consumer queue, not per partition, so a
        // prefetch smaller than a batch cut catch-up batches short at it, whatever
        // `--batch-max-events` said.
        .set("queued.min.messages", batch_max_events.max(PREFETCH_MIN_EVENTS).to_string())
        // When that prefetch is full, librdkafka stops fetching every partition for this long
        // (1 s by default) before it looks again, even if pcs has taken the batch meanwhile.
        // In a catch-up, a batch is applied in about half a second, so with 1 s the consumer
        // sat on an empty queue for up to 0.75 s after every other batch, and the batches
        // between held what had arrived by then (6k-78k events instead of 100k). At 20 ms
        // (six benchmark runs alternated with six), ingest after the first commit rose from
        // 116k-123k to 131k-180k events/s; the cost is a look at the queue's length every
        // 20 ms while it is full.
        .set("fetch.queue.backoff.ms", FULL_QUEUE_BACKOFF_MS)
        // librdkafka's statistics carry the consumer lag per partition, exported as a metric.
        .set("statistics.interval.ms", "10000");
    config
}

/// The producer of scores and dead letters.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = base(brokers);
    config
        // No duplicates or reordering from producer retries: a partner's scores stay in order.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // A millisecond of batching: every score waits this long before it is sent, which
        // 5 ms made about 8 ms of the benchmark's produce → watch latency. Under load the
        // producer batches anyway, with the messages queued while a request is in flight.
        .set("linger.ms", "1")
        // A score is about 4 KB, most of it the wording of shortfall plans, which repeats:
        // lz4 shrinks what the broker takes, stores and serves to every reader for a few
        // microseconds of the producer's own thread. In 400k-event benchmark runs, ingest
        // after the first commit rose from 43k to 48-54k events/s.
        .set("compression.type", "lz4")
        // Fail a delivery after 30 s instead of librdkafka's 5 minutes, so a broker outage
        // surfaces as a retried batch (nothing committed) rather than a stall.
        .set("message.timeout.ms", "30000");
    config
}

/// The producer's settings, batched for a file sent at once, where nobody waits on one
/// line's latency and the command ends when the last line is acknowledged.
fn bulk_producer_config(brokers: &str) -> ClientConfig {
    let mut config = producer_config(brokers);
    // A millisecond of lingering cut a file into batches of about 120 events: 1M events made
    // about 1,400 batches per partition of a 6-partition topic. A broker keeps each batch as
    // it came, and tansu lists every stored batch of a partition at each fetch that finds
    // new data there, so every later fetch of that partition paid for those batches. At
    // 100 ms, batches fill up to librdkafka's `batch.size` (1 MB, about 4,600 of these
    // events): 36-37 per partition for the same file.
    config.set("linger.ms", "100");
    config
}

/// A consumer that reads a topic by explicit assignment (no group management): the score
/// feed behind WatchScores. Its group id is never used to commit.
fn reader_config(brokers: &str, name: &str) -> ClientConfig {
    let mut config = base(brokers);
    config
        .set("group.id", name)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // Deliver a score change as soon as it is written: with 50 ms (tansu holds a fetch
        // for its maximum wait), watchers saw scores about 10 ms later.
        .set("fetch.wait.max.ms", "10")
        // The event consumer's reason (above): a reader 16k scores behind fills librdkafka's
        // 64 MB queue, and with the default 1 s backoff it could drain that queue and then
        // wait, its watchers with it. It changed none of the benchmark's freshness figures
        // beyond noise, but a catch-up publishes that many scores at once.
        .set("fetch.queue.backoff.ms", FULL_QUEUE_BACKOFF_MS);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_prefetch_a_whole_batch_and_look_again_soon() {
        let cluster = Cluster::new("localhost:9092");
        let default = cluster.event_consumer("pcs", 100_000);
        assert_eq!(default.get("queued.min.messages"), Some("100000"));
        assert_eq!(default.get("fetch.queue.backoff.ms"), Some("20"));
        let large = cluster.event_consumer("pcs", 500_000);
        assert_eq!(large.get("queued.min.messages"), Some("500000"), "a larger batch is prefetched whole");
        let small = cluster.event_consumer("pcs", 10);
        assert_eq!(small.get("queued.min.messages"), Some("100000"), "smaller batches keep librdkafka's prefetch");
        assert_eq!(cluster.reader("pcs-watch").get("fetch.queue.backoff.ms"), Some("20"));
    }

    #[test]
    fn a_file_is_sent_in_full_batches_with_the_producers_guarantees() {
        let cluster = Cluster::new("localhost:9092");
        let bulk = cluster.bulk_producer();
        assert_eq!(bulk.get("linger.ms"), Some("100"));
        assert_eq!(cluster.producer().get("linger.ms"), Some("1"), "scores are not held back");
        for key in ["enable.idempotence", "acks", "compression.type", "message.timeout.ms"] {
            assert_eq!(bulk.get(key), cluster.producer().get(key), "{key}");
        }
        let mut tuned = cluster.clone();
        tuned.overrides = vec![("linger.ms".into(), "5".into())];
        assert_eq!(tuned.bulk_producer().get("linger.ms"), Some("5"), "the operator's setting wins");
    }

    #[test]
    fn the_operators_settings_win() {
        let mut cluster = Cluster::new("localhost:9092");
        cluster.overrides =
            vec![("queued.min.messages".into(), "5000".into()), ("fetch.queue.backoff.ms".into(), "1000".into())];
        let config = cluster.event_consumer("pcs", 100_000);
        assert_eq!(config.get("queued.min.messages"), Some("5000"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("1000"));
    }
}
