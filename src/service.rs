//! `pcs serve`: wires the consumer, the store, the feed and the gRPC server together, and
//! shuts them down in order (mini-redis style: one broadcast says "stop", each task ends
//! its own work, the caller waits for all of them).

use crate::api::{MAX_REQUEST_BYTES, ScoreApi};
use crate::auth::{AuthError, Authenticator};
use crate::calendar::parse_date;
use crate::clock::Clock;
use crate::config::{ConfigError, ServeConfig};
use crate::demo::{BUNDLED, DEMO_AS_OF};
use crate::feed::{ScorePublisher, WatchHub};
use crate::ingest::{
    Applier, DeadLetterTopic, Ingest, IngestContext, IngestStatus, PriorityError, RolloverTiming, Workers, run_rollover,
};
use crate::kafka::{self, Cluster, KafkaError, ensure_topics, topics::TopicSpec};
use crate::playground::Playground;
use crate::proto::{self, server::partner_score_service_server::PartnerScoreServiceServer};
use crate::rules::{RuleBook, RulesError};
use crate::store::{MemoryStore, RedisStore, StateStore, StoreError};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::sleep;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("cannot subscribe to {topic}: {source}")]
    Subscribe { topic: String, source: rdkafka::error::KafkaError },
    #[error("gRPC server on {addr}: {source}")]
    Grpc { addr: String, source: tonic::transport::Error },
    #[error("event ingestion stopped unexpectedly (see the log); the service stopped with it")]
    IngestStopped,
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("TLS file {path}: {message}")]
    Tls { path: String, message: String },
    #[error(transparent)]
    Priority(#[from] PriorityError),
}

/// How long shutdown waits for the in-flight batch before giving up on it (its offsets are
/// then not committed, and it is replayed without effect by the next owner).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// The rollover task looks at the date (and retries scores it could not publish) every 10 s,
/// so a day's changes start going out within that of midnight. A change noted and not
/// published for 10 minutes, where a batch takes seconds to write and publish, was left by
/// an instance that stopped, and any instance publishes it.
const ROLLOVER_TIMING: RolloverTiming =
    RolloverTiming { tick: Duration::from_secs(10), stale_after: Duration::from_secs(600) };

/// Runs the service until `shutdown` fires.
pub async fn serve(mut config: ServeConfig, shutdown: broadcast::Sender<()>) -> Result<(), ServiceError> {
    config.validate()?;
    // Here rather than in `main`: the benchmark starts the service through this function too.
    crate::allocator::keep_freed_memory_briefly();
    if config.demo && config.now.is_none() {
        config.now = parse_date(DEMO_AS_OF);
    }
    let rules = Arc::new(RuleBook::load(&config.rules)?);
    tracing::info!(config = %serde_json::to_string(&config).unwrap_or_default(), "starting pcs serve");

    let dlq_topic = config.dlq_topic();
    let (cluster, playground) = match &config.kafka_brokers {
        Some(brokers) => {
            let cluster = Cluster { bootstrap: brokers.clone(), overrides: config.kafka_overrides()? };
            let topics = [
                TopicSpec { name: &config.events_topic, partitions: config.events_partitions, compacted: false },
                TopicSpec { name: &dlq_topic, partitions: config.dlq_partitions, compacted: false },
                TopicSpec { name: &config.scores_topic, partitions: config.scores_partitions, compacted: true },
            ];
            let mut attempt = 0;
            let mut stop_waiting = shutdown.subscribe();
            while let Err(e) = ensure_topics(&cluster, config.replication_factor, &topics).await {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "cannot create topics yet; retrying");
                tokio::select! {
                    _ = sleep(Duration::from_secs(2)) => {}
                    _ = stop_waiting.recv() => return Ok(()),
                }
            }
            (cluster, None)
        }
        None => {
            let playground = Playground::start(vec![
                (config.events_topic.clone(), config.events_partitions),
                (dlq_topic.clone(), config.dlq_partitions),
                (config.scores_topic.clone(), config.scores_partitions),
            ])?;
            tracing::warn!(
                bootstrap = %playground.bootstrap,
                "PLAYGROUND: no --kafka-brokers, so an in-process Kafka broker serves at {} (write events to topic {})",
                playground.bootstrap,
                config.events_topic
            );
            // A plain line a newcomer can paste into another shell for `pcs produce`.
            eprintln!("\n    playground broker: export PCS_KAFKA_BROKERS={}\n", playground.bootstrap);
            let cluster = Cluster { bootstrap: playground.bootstrap.clone(), overrides: config.kafka_overrides()? };
            (cluster, Some(playground))
        }
    };
    let (prefix, timeout) = (&config.redis_prefix, config.redis_timeout());
    let result = match config.redis_url.clone() {
        None if !config.redis_cluster_nodes.is_empty() => {
            let connect = || RedisStore::connect_cluster(&config.redis_cluster_nodes, prefix, timeout);
            run(&config, &cluster, Stores::apart(connect)?, rules, shutdown).await
        }
        Some(url) => {
            let connect = || RedisStore::connect(&url, prefix, timeout);
            run(&config, &cluster, Stores::apart(connect)?, rules, shutdown).await
        }
        None => {
            tracing::warn!("PLAYGROUND: no --redis-url, so state is kept in memory: NOTHING SURVIVES A RESTART");
            run(&config, &cluster, Stores::shared(MemoryStore::default()), rules, shutdown).await
        }
    };
    drop(playground);
    result
}

/// The store as two handles onto the same data, each with connections of its own: the
/// applier's (ingest, the rollover and the qualified count) and the API's (reads and the
/// health check). Redis answers a connection's commands in order, and the applier sends a
/// batch's commits as one pipeline of up to 2,000 partners, tens of milliseconds of Redis's
/// time in a catch-up: on one shared connection, every read that came meanwhile waited
/// behind all of them. In the benchmark's reads during a catch-up (1M events for 20k
/// partners, GetScore at 2.5k QPS, seven alternated runs each), GetScore took 53-187 ms at
/// the median on the shared connection and 8-17 ms on its own, and the catch-up took as long.
struct Stores<S> {
    applier: S,
    api: S,
}

impl<S: Clone> Stores<S> {
    /// Two handles, each connected by `connect`.
    fn apart<E>(connect: impl Fn() -> Result<S, E>) -> Result<Stores<S>, E> {
        Ok(Stores { applier: connect()?, api: connect()? })
    }

    /// One handle for both: a store without connections, where nothing queues.
    fn shared(store: S) -> Stores<S> {
        Stores { applier: store.clone(), api: store }
    }
}

async fn run<S: StateStore>(
    config: &ServeConfig,
    cluster: &Cluster,
    Stores { applier: store, api: api_store }: Stores<S>,
    rules: Arc<RuleBook>,
    shutdown: broadcast::Sender<()>,
) -> Result<(), ServiceError> {
    let clock = config.now.map_or(Clock::System, Clock::Fixed);
    let workers = Workers::at_nice(config.scoring_nice)?;
    let producer: FutureProducer = cluster.producer().create().map_err(KafkaError::Client)?;
    let status = Arc::new(IngestStatus::default());
    let consumer: StreamConsumer<IngestContext> = cluster
        .event_consumer(&config.group_id, config.batch_max_events)
        .create_with_context(IngestContext::new(status.clone()))
        .map_err(KafkaError::Client)?;
    consumer
        .subscribe(&[&config.events_topic])
        .map_err(|source| ServiceError::Subscribe { topic: config.events_topic.clone(), source })?;
    let hub = WatchHub::start(cluster, &config.scores_topic, config.watch_buffer, shutdown.subscribe()).await?;
    let publisher = ScorePublisher::new(producer.clone(), config.scores_topic.clone()).with_watchers(hub.clone());
    if config.demo {
        let lines: Vec<Vec<u8>> = BUNDLED.lines().map(|l| l.as_bytes().to_vec()).collect();
        let sent = kafka::send_lines(&producer, &config.events_topic, lines).await?;
        tracing::info!(events = sent, as_of = DEMO_AS_OF, "demo dataset sent to {}", config.events_topic);
    }

    let applier = || Applier {
        store: store.clone(),
        rules: rules.clone(),
        history_days: config.history_days,
        dedup_window_days: config.dedup_window_days,
        workers,
    };
    let ingest = Ingest {
        consumer,
        applier: applier(),
        dead_letters: DeadLetterTopic { producer: producer.clone(), topic: config.dlq_topic() },
        publisher: publisher.clone(),
        clock,
        batch_max_events: config.batch_max_events,
        batch_max_wait: config.batch_max_wait(),
        status: status.clone(),
    };
    // Ingestion ending on its own (a panic, say) must not leave a service that answers
    // reads with scores nobody updates: it stops the whole service, with an error, so the
    // orchestrator restarts it.
    let ingest_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest_task = {
        let run = tokio::spawn(ingest.run(shutdown.subscribe()));
        let (shutdown, failed, mut stopping) = (shutdown.clone(), ingest_failed.clone(), shutdown.subscribe());
        tokio::spawn(async move {
            let ended = run.await;
            if stopping.try_recv().is_err() {
                tracing::error!(outcome = ?ended.err(), "event ingestion stopped unexpectedly; shutting down");
                failed.store(true, Ordering::Release);
                let _ = shutdown.send(());
            }
        })
    };
    let rollover_task =
        tokio::spawn(run_rollover(Arc::new(applier()), publisher, clock, ROLLOVER_TIMING, shutdown.subscribe()));

    tokio::spawn(count_qualified(store.clone(), shutdown.subscribe()));
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_health::<S>(health, api_store.clone(), status, shutdown.subscribe()));
    // Both reflection versions: grpcurl before 1.9 and many other tools speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
    let api = ScoreApi {
        store: api_store,
        rules,
        clock,
        history_days: config.history_days,
        hub,
        watch_buffer: config.watch_buffer,
        watchers: Arc::new(tokio::sync::Semaphore::new(config.max_watchers)),
        max_watchers: config.max_watchers,
        shutdown: shutdown.clone(),
        auth: authenticator(config, shutdown.subscribe())?,
    };
    let mut stop = shutdown.subscribe();
    tracing::info!(listen = %config.listen, tls = config.tls_cert.is_some(), mutual_tls = config.tls_client_ca.is_some(), bearer_tokens = api.auth.is_some(), "gRPC listening");
    if !config.authenticates() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "--insecure: serving every partner's score to anyone who can reach this address");
    }
    if let Some(addr) = config.health_listen {
        let (health, mut stop) = (health_service.clone(), shutdown.subscribe());
        let server = Server::builder().add_service(health).serve_with_shutdown(addr, async move {
            let _ = stop.recv().await;
        });
        tracing::info!(listen = %addr, "gRPC health checking (only) listening");
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, listen = %addr, "the health listener failed");
            }
        });
    }
    let mut server = Server::builder();
    if let Some(tls) = tls_config(config)? {
        server =
            server.tls_config(tls).map_err(|source| ServiceError::Grpc { addr: config.listen.to_string(), source })?;
    }
    server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(PartnerScoreServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES))
        .serve_with_shutdown(config.listen, async move {
            let _ = stop.recv().await;
        })
        .await
        .map_err(|source| ServiceError::Grpc { addr: config.listen.to_string(), source })?;

    // Stopped first, not left to finish, so it takes neither the cores nor the producer from the
    // in-flight batch. A rollover batch can take seconds and its publish, with the
    // broker down, a minute. Stopping it anywhere is safe: a partner's write is atomic, a
    // change written and not published stays noted in the outbox (published later by
    // whoever runs the rollover), and a partner not rescheduled is re-evaluated again.
    rollover_task.abort();
    let _ = rollover_task.await;
    if tokio::time::timeout(SHUTDOWN_GRACE, ingest_task).await.is_err() {
        tracing::warn!("the in-flight batch did not finish in time; it will be replayed without effect");
    }
    if ingest_failed.load(Ordering::Acquire) {
        return Err(ServiceError::IngestStopped);
    }
    tracing::info!("pcs stopped");
    Ok(())
}

/// The bearer-token checker, and a task that re-reads the JWKS file when it changes.
fn authenticator(
    config: &ServeConfig,
    mut shutdown: broadcast::Receiver<()>,
) -> Result<Option<Arc<Authenticator>>, ServiceError> {
    let (Some(path), Some(issuer), Some(audience)) = (&config.jwks, &config.jwt_issuer, &config.jwt_audience) else {
        return Ok(None);
    };
    let auth = Arc::new(Authenticator::load(path, issuer, audience)?);
    let watched = auth.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = sleep(JWKS_CHECK_INTERVAL) => watched.reload_if_changed(),
            }
        }
    });
    Ok(Some(auth))
}

/// How often the JWKS file is checked for a change (a stat; it is re-read only if changed).
const JWKS_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The server's TLS settings: its certificate and, for mutual TLS, the CA client
/// certificates must come from (clients without one are refused in the handshake).
fn tls_config(config: &ServeConfig) -> Result<Option<ServerTlsConfig>, ServiceError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| ServiceError::Tls { path: path.display().to_string(), message: e.to_string() })
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// Serving only while the store answers and the consumer has its partitions.
async fn report_health<S: StateStore>(
    health: tonic_health::server::HealthReporter,
    store: S,
    status: Arc<IngestStatus>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut serving = None;
    loop {
        let ok = status.assigned.load(Ordering::Acquire) && store.ping().await.is_ok();
        if serving != Some(ok) {
            if ok {
                health.set_serving::<PartnerScoreServiceServer<ScoreApi<S>>>().await;
                health.set_service_status("", tonic_health::ServingStatus::Serving).await;
            } else {
                health.set_not_serving::<PartnerScoreServiceServer<ScoreApi<S>>>().await;
                health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            }
            tracing::info!(serving = ok, "health changed");
            serving = Some(ok);
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Partners read per page while counting. A page is one pipeline of HMGETs, and Redis
/// answers nobody else while it runs one: small pages keep that well under a millisecond.
const COUNT_PAGE: usize = 200;

/// Every minute, counts the partners qualified per designation into
/// `pcs.partners.qualified` (a full pass over the stored scores, a page at a time). After
/// each page it rests nine times as long as the page took, so a pass takes at most about a
/// tenth of a core and of Redis. Read in one go, a pass over 240k partners held Redis and a
/// core for seconds, and the GetScore calls that landed in it waited: the benchmark's p99
/// read 10 to 50 ms when a pass fell into its reads, 2 ms otherwise.
async fn count_qualified<S: StateStore>(store: S, mut shutdown: broadcast::Receiver<()>) {
    use prost::Message;
    loop {
        let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        let mut after = String::new();
        let complete = loop {
            let started = std::time::Instant::now();
            let Ok(ids) = store.list_partners(&after, COUNT_PAGE).await else { break false };
            let Some(last) = ids.last().cloned() else { break true };
            let Ok(scores) = store.scores(&ids).await else { break false };
            for view in
                scores.into_iter().flatten().filter_map(|s| proto::QualifiedView::decode(s.score.as_slice()).ok())
            {
                for d in view.designations {
                    *counts.entry(d.designation).or_default() += u64::from(d.qualified);
                }
            }
            after = last;
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = sleep(started.elapsed() * 9) => {}
            }
        };
        if complete {
            for (designation, n) in counts {
                crate::telemetry::metrics()
                    .qualified_partners
                    .record(n, &[opentelemetry::KeyValue::new("designation", designation)]);
            }
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = sleep(Duration::from_secs(60)) => {}
        }
    }
}
