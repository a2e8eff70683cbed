//! `pcs watch`: follows score changes live (WatchScores), one JSON line per change.

use super::endpoint::Endpoint;
use crate::engine::PartnerScore;
use crate::proto;
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Partners to watch; none watches every partner.
    #[arg(value_name = "PARTNER")]
    partners: Vec<String>,
    #[command(flatten)]
    endpoint: Endpoint,
    /// Resume right after this cursor (from an earlier change's "cursor").
    #[arg(long, value_name = "CURSOR")]
    resume: Option<String>,
    /// Stop after this many changes.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = args.endpoint.client().await?;
    let request = proto::WatchScoresRequest {
        all: args.partners.is_empty(),
        partner_ids: args.partners,
        resume_cursor: args.resume.unwrap_or_default(),
    };
    let mut stream =
        client.watch_scores(request).await.map_err(|s| anyhow::anyhow!("WatchScores: {}", s.message()))?.into_inner();
    let mut seen = 0;
    while args.count.is_none_or(|n| seen < n) {
        match stream.message().await {
            Ok(Some(change)) => {
                let score = change.score.context("a change without a score")?;
                let mut line = serde_json::json!({
                    "version": change.version,
                    "cursor": change.cursor,
                    "score": PartnerScore::try_from(&score)?,
                });
                if !change.warnings.is_empty() {
                    line["warnings"] = super::insights::warnings(&change.warnings);
                }
                writeln!(std::io::stdout().lock(), "{line}")?;
                seen += 1;
            }
            Ok(None) => break,
            Err(status) => anyhow::bail!("WatchScores ended: {:?}: {}", status.code(), status.message()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
