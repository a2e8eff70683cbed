//! `pcs simulate`: what a partner would score with some more facts (SimulateScore). Nothing
//! is stored: the service evaluates the partner's facts plus these events and forgets them.

use super::endpoint::Endpoint;
use crate::config::date_arg;
use crate::engine::PartnerScore;
use crate::events::decode_json;
use crate::proto;
use anyhow::Context;
use chrono::NaiveDate;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(value_name = "PARTNER")]
    partner: String,
    /// Hypothetical events (JSON Lines, the topic's event format; "-" for stdin).
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    #[command(flatten)]
    endpoint: Endpoint,
    /// Day to score (default: today).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date_arg)]
    as_of: Option<NaiveDate>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = if args.events.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(&args.events).with_context(|| format!("cannot read {}", args.events.display()))?
    };
    // Checked here first, so a bad line is reported with its number before anything is sent.
    let mut events = Vec::new();
    for (number, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        decode_json(line.as_bytes()).with_context(|| format!("{} line {}", args.events.display(), number + 1))?;
        events.push(line.to_owned());
    }
    let mut client = args.endpoint.client().await?;
    let request = proto::SimulateScoreRequest {
        partner_id: args.partner.clone(),
        events,
        as_of: args.as_of.map(|d| d.to_string()),
    };
    let response = client
        .simulate_score(request)
        .await
        .map_err(|s| anyhow::anyhow!("SimulateScore {}: {:?}: {}", args.partner, s.code(), s.message()))?
        .into_inner();
    let score = response.score.context("the service sent no simulated score")?;
    let baseline = response.baseline.context("the service sent no baseline score")?;
    let changes: Vec<_> = baseline
        .designations
        .iter()
        .filter_map(|before| {
            let after = score.designations.iter().find(|d| d.designation == before.designation)?;
            Some(json!({
                "designation": before.designation,
                "total": [before.total, after.total],
                "qualified": [before.qualified, after.qualified],
            }))
        })
        .collect();
    let line = json!({
        "applied": response.applied,
        "changes": changes,
        "baseline": PartnerScore::try_from(&baseline)?,
        "score": PartnerScore::try_from(&score)?,
    });
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}
