//! The service's instruments. They bind to the global meter provider on first use, which is
//! a no-op (and nearly free) when metrics export is off.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, UpDownCounter};
use std::sync::OnceLock;

pub struct Metrics {
    /// Messages read from the events topic.
    pub events_consumed: Counter<u64>,
    /// Events merged as new facts.
    pub events_applied: Counter<u64>,
    /// Events rejected, by `reason` (decode, reused_id) and `event.type` (unknown when the
    /// event did not decode).
    pub events_rejected: Counter<u64>,
    /// Messages per consumed batch.
    pub batch_size: Histogram<u64>,
    /// Seconds to apply a batch (load, merge, evaluate, write).
    pub apply_duration: Histogram<f64>,
    /// Seconds per Redis round trip of a batch (read or write).
    pub redis_duration: Histogram<f64>,
    /// Seconds from an event's Kafka timestamp to its partner's new score being published.
    pub freshness: Histogram<f64>,
    /// Consumer lag per partition (messages).
    pub consumer_lag: Gauge<i64>,
    /// Open WatchScores streams.
    pub active_watchers: UpDownCounter<i64>,
    /// Scores published because they changed.
    pub score_changes: Counter<u64>,
    /// Partners qualified per designation (counted every minute).
    pub qualified_partners: Gauge<u64>,
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter("pcs");
        let seconds = |name: &'static str, what: &'static str| {
            meter.f64_histogram(name).with_unit("s").with_description(what).build()
        };
        Metrics {
            events_consumed: meter
                .u64_counter("pcs.events.consumed")
                .with_description("messages read from the events topic")
                .build(),
            events_applied: meter
                .u64_counter("pcs.events.applied")
                .with_description("events merged as new facts")
                .build(),
            events_rejected: meter
                .u64_counter("pcs.events.rejected")
                .with_description("events sent to the dead-letter topic")
                .build(),
            batch_size: meter.u64_histogram("pcs.batch.size").with_description("messages per consumed batch").build(),
            apply_duration: seconds("pcs.apply.duration", "time to apply a batch, its scores handed to the producer"),
            redis_duration: seconds("pcs.redis.duration", "time per Redis round trip"),
            freshness: seconds("pcs.score.freshness", "Kafka timestamp of an event to its score being published"),
            consumer_lag: meter
                .i64_gauge("pcs.consumer.lag")
                .with_description("messages behind the partition end")
                .build(),
            active_watchers: meter
                .i64_up_down_counter("pcs.watchers.active")
                .with_description("open WatchScores streams")
                .build(),
            score_changes: meter
                .u64_counter("pcs.score.changes")
                .with_description("scores published because they changed")
                .build(),
            qualified_partners: meter
                .u64_gauge("pcs.partners.qualified")
                .with_description("partners qualified per designation")
                .build(),
        }
    })
}

impl Metrics {
    pub fn rejected(&self, n: u64, reason: &'static str, event_type: &'static str) {
        if n > 0 {
            self.events_rejected.add(n, &[KeyValue::new("reason", reason), KeyValue::new("event.type", event_type)]);
        }
    }
}
