//! Creates the events, dead-letter and scores topics when they are missing.

use super::{Cluster, KafkaError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// A topic pcs needs.
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    /// The scores topic keeps only each partner's latest score.
    pub compacted: bool,
}

pub async fn ensure_topics(cluster: &Cluster, replication: i32, topics: &[TopicSpec<'_>]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cluster.admin().create().map_err(KafkaError::Client)?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(replication));
            if t.compacted { topic.set("cleanup.policy", "compact") } else { topic }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new, &options).await.map_err(|e| KafkaError::CreateTopic {
        topic: topics.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
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
