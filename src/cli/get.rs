//! `pcs get`: partners' scores from a running service, as spec §7 JSON lines.

use super::endpoint::Endpoint;
use crate::config::date_arg;
use crate::engine::PartnerScore;
use crate::proto;
use anyhow::Context;
use chrono::NaiveDate;
use std::io::Write;
use std::process::ExitCode;
use tonic::Code;

#[derive(clap::Args)]
pub struct Args {
    /// Partner ids.
    #[arg(required = true, value_name = "PARTNER")]
    partners: Vec<String>,
    #[command(flatten)]
    endpoint: Endpoint,
    /// Score on this day instead of the current score.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date_arg)]
    as_of: Option<NaiveDate>,
    /// Print `{"score": ..., "qualification_windows": ..., "forecast": ...}` instead of the
    /// bare spec report.
    #[arg(long)]
    insights: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = args.endpoint.client().await?;
    let mut missing = false;
    for partner_id in args.partners {
        let request =
            proto::GetScoreRequest { partner_id: partner_id.clone(), as_of: args.as_of.map(|d| d.to_string()) };
        match client.get_score(request).await {
            Ok(response) => {
                let score = response.into_inner().score.context("the service sent an empty score")?;
                let report = serde_json::to_value(PartnerScore::try_from(&score)?)?;
                let line = if args.insights {
                    serde_json::json!({
                        "score": report,
                        "qualification_windows": super::insights::windows(&score.qualification_windows),
                        "forecast": super::insights::forecast(score.forecast.as_ref()),
                    })
                } else {
                    report
                };
                writeln!(std::io::stdout().lock(), "{line}")?;
            }
            Err(status) if status.code() == Code::NotFound => {
                eprintln!("pcs: {}", status.message());
                missing = true;
            }
            Err(status) => anyhow::bail!("GetScore {partner_id}: {:?}: {}", status.code(), status.message()),
        }
    }
    Ok(if missing { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
