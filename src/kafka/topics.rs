//! Creates the events, dead-letter and scores topics when they are missing.

use super::{Cluster, KafkaError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// A topic pcs needs.
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    /// The scores topic keeps only each partner's latest score.
    pub compacted: bool,
}

/// Creates the topics that do not exist yet. Existing topics are left as they are, and
/// when all exist no CreateTopics request is sent at all: that works with brokers or ACLs
/// that do not allow pcs to create topics, as long as an operator created them.
pub async fn ensure_topics(cluster: &Cluster, replication: i32, topics: &[TopicSpec<'_>]) -> Result<(), KafkaError> {
    let admin = Arc::new(cluster.admin().create::<AdminClient<DefaultClientContext>>().map_err(KafkaError::Client)?);
    let existing: Vec<String> = {
        let admin = Arc::clone(&admin);
        tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(|m| m.topics().iter().filter(|t| t.error().is_none()).map(|t| t.name().to_owned()).collect())
        })
        .await
        .expect("metadata task does not panic")
        .map_err(|source| KafkaError::Metadata { topic: "(all)".into(), source })?
    };
    let missing: Vec<&TopicSpec> = topics.iter().filter(|t| !existing.iter().any(|e| e == t.name)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            let topic = NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(replication));
            if t.compacted { topic.set("cleanup.policy", "compact") } else { topic }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new, &options).await.map_err(|e| KafkaError::CreateTopic {
        topic: missing.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        message: e.to_string(),
    })?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, message: code.to_string() }),
        }
    }
    Ok(())
}
