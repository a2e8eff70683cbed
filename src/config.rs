//! `pcs serve` configuration: one struct, every field a flag with a `PCS_*` environment
//! variable, checked as a whole before anything starts.

use crate::calendar::parse_date;
use chrono::NaiveDate;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The default of `--batch-max-events`. A catch-up batch reads, scores, rewrites and
/// publishes each partner it touches once, so the larger it is, the more of a partner's
/// events share that work; where the service keeps up, batches stay small whatever this
/// limit is. The price is memory: up to two batches are held (the one applied and the one
/// whose scores await the broker's acknowledgement), and a catch-up's peak grew by about
/// 1.3 KB per event of this limit. Measured with 1M events over 20k partners (eighteenth
/// round, docs/performance-log.md), ingest and `pcs serve`'s peak RSS catching up alone:
/// - 100k: 92k-115k events/s, 502-540 MiB;
/// - 200k: 129k-133k events/s, 629-649 MiB;
/// - 300k: 127k-138k events/s, 819-831 MiB;
/// - 500k: 143k-152k events/s, 1024 MiB.
///
/// Freshness under 20k new partners a second was no worse with 200k (p99 0.27-0.57 s
/// against 0.33-1.21 s in runs alternated with 100k); the sixth round's reason to stay at
/// 100k, a p99 of 12.1-12.6 s with 200k against 9.0-11.5 s, was read when that p99 was
/// seconds at any size. 200k takes most of the gain and keeps a catch-up inside the
/// Kubernetes limit (1 GiB, `deploy/k8s`) with room to spare.
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 200_000;

/// The default of `--batch-max-wait-ms`: how long a batch waits for company after a first
/// event that had to be waited for (events already queued are taken at once). Every event
/// below capacity waits up to this long before it is scored, so it is part of the
/// freshness of every score; a backlog fills batches at once whatever it is.
pub const DEFAULT_BATCH_MAX_WAIT_MS: u64 = 5;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct ServeConfig {
    /// Kafka bootstrap servers (host:port,...). Absent: the playground, an in-process broker.
    #[arg(long, env = "PCS_KAFKA_BROKERS", value_name = "HOSTS")]
    pub kafka_brokers: Option<String>,
    /// A librdkafka setting for every Kafka client, `key=value` (repeatable): SASL, TLS,
    /// timeouts. Values of keys that look secret are redacted in logs.
    #[arg(long = "kafka-config", env = "PCS_KAFKA_CONFIG", value_delimiter = ',', value_name = "KEY=VALUE")]
    #[serde(serialize_with = "redacted_settings")]
    pub kafka_config: Vec<String>,
    /// Redis URL (redis://[user:password@]host:port[/db]). Absent: in-memory state, lost on
    /// restart.
    #[arg(long, env = "PCS_REDIS_URL", value_name = "URL")]
    #[serde(skip)]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes (comma-separated `redis://[user:password@]host:port`), instead
    /// of --redis-url: partners spread over the cluster's shards by their hash tag.
    #[arg(
        long,
        env = "PCS_REDIS_CLUSTER_NODES",
        value_delimiter = ',',
        value_name = "URLS",
        conflicts_with = "redis_url"
    )]
    #[serde(skip)]
    pub redis_cluster_nodes: Vec<String>,
    /// Load the bundled demo dataset at start-up (and, without --now, score as of its date).
    #[arg(long, env = "PCS_DEMO")]
    pub demo: bool,
    /// Prefix of every Redis key pcs writes (several deployments can share one Redis).
    #[arg(long, env = "PCS_REDIS_PREFIX", default_value = "pcs", value_name = "PREFIX")]
    pub redis_prefix: String,
    /// Bound on every Redis command; reads answer UNAVAILABLE after it while Redis is down.
    #[arg(long, env = "PCS_REDIS_TIMEOUT_MS", default_value_t = 2000, value_name = "MS")]
    pub redis_timeout_ms: u64,
    /// Topic of partner events (JSON or protobuf).
    #[arg(long, env = "PCS_EVENTS_TOPIC", default_value = "pcs.partner-events", value_name = "TOPIC")]
    pub events_topic: String,
    /// Dead-letter topic for rejected events (default: the events topic + ".dlq").
    #[arg(long, env = "PCS_DLQ_TOPIC", value_name = "TOPIC")]
    pub dlq_topic: Option<String>,
    /// Compacted topic of scores (key partner id, value protobuf PartnerScore).
    #[arg(long, env = "PCS_SCORES_TOPIC", default_value = "pcs.partner-scores", value_name = "TOPIC")]
    pub scores_topic: String,
    /// Consumer group of the event consumers.
    #[arg(long, env = "PCS_GROUP_ID", default_value = "pcs", value_name = "GROUP")]
    pub group_id: String,
    /// Partitions of the events topic when pcs creates it.
    #[arg(long, env = "PCS_EVENTS_PARTITIONS", default_value_t = 6)]
    pub events_partitions: i32,
    /// Partitions of the scores topic when pcs creates it.
    #[arg(long, env = "PCS_SCORES_PARTITIONS", default_value_t = 6)]
    pub scores_partitions: i32,
    /// Partitions of the dead-letter topic when pcs creates it.
    #[arg(long, env = "PCS_DLQ_PARTITIONS", default_value_t = 1)]
    pub dlq_partitions: i32,
    /// Replication factor of created topics (-1: the broker's default).
    #[arg(long, env = "PCS_REPLICATION_FACTOR", default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i32,
    /// gRPC listen address. Without authentication (--jwks or --tls-client-ca) only a
    /// loopback address is accepted, unless --insecure.
    #[arg(long, env = "PCS_LISTEN", default_value = "127.0.0.1:50051", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// A second, plaintext address that serves only gRPC health checking (no scores), for
    /// orchestrator probes that cannot present TLS client certificates or tokens.
    #[arg(long, env = "PCS_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// Allow listening on a non-loopback address with no authentication (logs a warning).
    #[arg(long, env = "PCS_INSECURE")]
    pub insecure: bool,
    /// Serve gRPC over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "PCS_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, env = "PCS_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: only clients with a certificate issued by this CA (PEM) are served.
    #[arg(long, env = "PCS_TLS_CLIENT_CA", value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require a bearer JWT (RS256/ES256) verified with the keys of this JWKS file, which is
    /// re-read when it changes. Needs --jwt-issuer and --jwt-audience.
    #[arg(long, env = "PCS_JWKS", value_name = "FILE", requires_all = ["jwt_issuer", "jwt_audience"])]
    pub jwks: Option<PathBuf>,
    /// The `iss` every token must carry.
    #[arg(long, env = "PCS_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// The `aud` every token must carry.
    #[arg(long, env = "PCS_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// Fix "today" (YYYY-MM-DD) instead of the UTC date: for tests and backfills.
    #[arg(long, env = "PCS_NOW", value_name = "YYYY-MM-DD", value_parser = date_arg)]
    pub now: Option<NaiveDate>,
    /// Rule set files (TOML); default: the built-in rule set.
    #[arg(long, env = "PCS_RULES", value_delimiter = ',', value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Most events in one batch. A batch stops waiting after --batch-max-wait-ms and then
    /// takes only what is already fetched, so this bounds only a backlog (catch-up, a
    /// burst): the larger it is, the more of a partner's events share one read and rewrite
    /// of its facts, and the fewer dead-letter round trips a burst of bad input costs.
    #[arg(long, env = "PCS_BATCH_MAX_EVENTS", default_value_t = DEFAULT_BATCH_MAX_EVENTS)]
    pub batch_max_events: usize,
    /// Longest a batch waits to fill after its first event, when that event had to be
    /// waited for. Events already queued when a batch begins (they arrived while the last
    /// batch was applied) are taken at once, without this wait.
    #[arg(long, env = "PCS_BATCH_MAX_WAIT_MS", default_value_t = DEFAULT_BATCH_MAX_WAIT_MS, value_name = "MS")]
    pub batch_max_wait_ms: u64,
    /// Nice value (1-19) of the threads that decode and score a batch (Linux); 0 scores at
    /// the service's own priority. Reads get a core first while ingest catches up, and
    /// scores arrive later whenever the cores are full: see the README's Performance section.
    #[arg(long, env = "PCS_SCORING_NICE", default_value_t = 0, value_name = "NICE")]
    pub scoring_nice: u8,
    /// Days of history kept: facts that cannot affect a score on any of these days are pruned,
    /// and GetScore answers for `as_of` within them.
    #[arg(long, env = "PCS_HISTORY_DAYS", default_value_t = 400)]
    pub history_days: u32,
    /// Days an event id is remembered after it arrives, at least (ids of facts that still
    /// count are kept as long as they count): a redelivery within it is recognised.
    #[arg(long, env = "PCS_DEDUP_WINDOW_DAYS", default_value_t = 7)]
    pub dedup_window_days: u32,
    /// Most WatchScores streams open at once on this instance; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "PCS_MAX_WATCHERS", default_value_t = 256)]
    pub max_watchers: usize,
    /// Score changes buffered per watch stream before it is closed as lagging (with a cursor
    /// to resume from).
    #[arg(long, env = "PCS_WATCH_BUFFER", default_value_t = 1024)]
    pub watch_buffer: usize,
}

/// Whether a setting's value must not be shown (passwords, secrets, keys, tokens).
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key", "credential"].iter().any(|s| key.contains(s))
}

fn redact(setting: &str) -> String {
    match setting.split_once('=') {
        Some((k, _)) if is_secret(k) => format!("{k}=***"),
        Some(_) => setting.to_owned(),
        None => "***".to_owned(),
    }
}

fn redacted_settings<S: serde::Serializer>(settings: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(settings.iter().map(|kv| redact(kv)))
}

pub(crate) fn date_arg(text: &str) -> Result<NaiveDate, String> {
    parse_date(text).ok_or_else(|| format!("{text:?} is not a YYYY-MM-DD date between 2000 and 2100"))
}

impl ServeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        if self.kafka_brokers.as_ref().is_some_and(|b| b.trim().is_empty()) {
            return fail("--kafka-brokers is empty".into());
        }
        self.kafka_overrides()?;
        for (flag, topic) in [
            ("--events-topic", &self.events_topic),
            ("--scores-topic", &self.scores_topic),
            ("--dlq-topic", &self.dlq_topic()),
        ] {
            let ok = !topic.is_empty()
                && topic.len() <= 249
                && topic.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
            if !ok {
                return fail(format!("{flag} {topic:?} is not a valid Kafka topic name"));
            }
        }
        if self.events_topic == self.scores_topic || self.events_topic == self.dlq_topic() {
            return fail("the events, scores and dead-letter topics must differ".into());
        }
        for (flag, n) in [
            ("--events-partitions", self.events_partitions),
            ("--scores-partitions", self.scores_partitions),
            ("--dlq-partitions", self.dlq_partitions),
        ] {
            if n < 1 {
                return fail(format!("{flag} must be at least 1"));
            }
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return fail("--replication-factor must be -1 (broker default) or at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.batch_max_events) {
            return fail("--batch-max-events must be 1-1000000".into());
        }
        if self.scoring_nice > 19 {
            return fail("--scoring-nice must be 0-19".into());
        }
        if self.redis_timeout_ms == 0 {
            return fail("--redis-timeout-ms must be > 0".into());
        }
        if self.history_days < 1 {
            return fail("--history-days must be at least 1".into());
        }
        if self.max_watchers < 1 {
            return fail("--max-watchers must be at least 1".into());
        }
        if self.watch_buffer < 1 {
            return fail("--watch-buffer must be at least 1".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return fail("--tls-cert and --tls-key go together".into());
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return fail("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key".into());
        }
        if self.jwks.is_some() && (self.jwt_issuer.is_none() || self.jwt_audience.is_none()) {
            return fail(
                "--jwks needs --jwt-issuer and --jwt-audience (tokens for other services must not pass)".into(),
            );
        }
        if !self.authenticates() && !self.listen.ip().is_loopback() && !self.insecure {
            return fail(format!(
                "--listen {} is not a loopback address and no authentication is configured: \
                 give --jwks (and --jwt-issuer, --jwt-audience) or --tls-client-ca, or --insecure to serve anyone",
                self.listen
            ));
        }
        if self.redis_url.is_some() && !self.redis_cluster_nodes.is_empty() {
            return fail("give --redis-url or --redis-cluster-nodes, not both".into());
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(['{', '}']) {
            return fail("--redis-prefix must be non-empty and free of { }".into());
        }
        Ok(())
    }

    /// Whether callers must prove who they are (a bearer JWT or a client certificate).
    pub fn authenticates(&self) -> bool {
        self.jwks.is_some() || self.tls_client_ca.is_some()
    }

    /// `--kafka-config` as (key, value) pairs.
    pub fn kafka_overrides(&self) -> Result<Vec<(String, String)>, ConfigError> {
        self.kafka_config
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
                _ => Err(ConfigError(format!("--kafka-config {:?} is not key=value", redact(kv)))),
            })
            .collect()
    }

    pub fn dlq_topic(&self) -> String {
        self.dlq_topic.clone().unwrap_or_else(|| format!("{}.dlq", self.events_topic))
    }

    pub fn batch_max_wait(&self) -> Duration {
        Duration::from_millis(self.batch_max_wait_ms)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> ServeConfig {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeConfig,
        }
        <Cli as clap::Parser>::try_parse_from(std::iter::once("pcs").chain(args.iter().copied())).unwrap().serve
    }

    #[test]
    fn scoring_nice_is_a_nice_value() {
        assert_eq!(serve_args(&[]).scoring_nice, 0);
        assert!(serve_args(&["--scoring-nice", "19"]).validate().is_ok());
        let high = serve_args(&["--scoring-nice", "20"]).validate().unwrap_err().to_string();
        assert!(high.contains("--scoring-nice must be 0-19"), "{high}");
    }

    #[test]
    fn only_loopback_without_authentication_unless_insecure() {
        assert!(serve_args(&[]).validate().is_ok());
        let open = serve_args(&["--listen", "0.0.0.0:50051"]).validate().unwrap_err().to_string();
        assert!(open.contains("--insecure") && open.contains("--jwks"), "{open}");
        assert!(serve_args(&["--listen", "0.0.0.0:50051", "--insecure"]).validate().is_ok());
        let jwt = ["--listen", "0.0.0.0:50051", "--jwks", "k.json", "--jwt-issuer", "i", "--jwt-audience", "a"];
        assert!(serve_args(&jwt).validate().is_ok());
        let mtls = ["--listen", "[::]:50051", "--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca"];
        assert!(serve_args(&mtls).validate().is_ok());
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("sasl.password=hunter2"), "sasl.password=***");
        assert_eq!(redact("ssl.key.pem=abc"), "ssl.key.pem=***");
        assert_eq!(redact("session.timeout.ms=6000"), "session.timeout.ms=6000");
        assert_eq!(redact("garbage"), "***");
    }
}
