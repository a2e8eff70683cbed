//! The playground broker: librdkafka's in-process mock cluster, listening on a loopback
//! port so `pcs produce` or any Kafka client can write to it. The mock cluster handle is
//! not `Send`, so a thread of its own owns it for the life of the service.

use crate::kafka::KafkaError;
use rdkafka::mocking::MockCluster;
use std::sync::mpsc;
use std::thread::JoinHandle;

pub struct Playground {
    pub bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Playground {
    /// Starts a one-broker mock cluster with `topics` (name, partitions) created.
    pub fn start(topics: Vec<(String, i32)>) -> Result<Playground, KafkaError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pcs-playground-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(KafkaError::Client(e)));
                        return;
                    }
                };
                for (topic, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(topic, *partitions, 1) {
                        let _ = ready_tx
                            .send(Err(KafkaError::CreateTopic { topic: topic.clone(), message: e.to_string() }));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Keeps the cluster alive until the playground is dropped.
                let _ = stop_rx.recv();
            })
            .expect("can spawn a thread");
        let bootstrap = ready_rx.recv().expect("the broker thread answers")?;
        Ok(Playground { bootstrap, stop: Some(stop_tx), thread: Some(thread) })
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
