//! `pcs produce`: sends a JSON Lines file to the events topic, one message per non-blank
//! line, keyed by its partner_id. Lines are sent as they are (a bad line goes to the
//! service's dead-letter topic, as it would from any producer).

use crate::kafka;
use anyhow::Context;
use rdkafka::producer::FutureProducer;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// JSON Lines event file (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// Kafka bootstrap servers (the playground prints its address at start-up).
    #[arg(long, env = "PCS_KAFKA_BROKERS", default_value = "127.0.0.1:9092", value_name = "HOSTS")]
    kafka_brokers: String,
    /// Topic to send to.
    #[arg(long, env = "PCS_EVENTS_TOPIC", default_value = "pcs.partner-events", value_name = "TOPIC")]
    topic: String,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?,
        ))
    };
    let producer: FutureProducer = kafka::Cluster::new(&args.kafka_brokers).bulk_producer().create()?;
    let lines = reader
        .split(b'\n')
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let sent = kafka::send_lines(&producer, &args.topic, lines).await?;
    eprintln!("pcs: sent {sent} event{} to {}", if sent == 1 { "" } else { "s" }, args.topic);
    Ok(ExitCode::SUCCESS)
}
