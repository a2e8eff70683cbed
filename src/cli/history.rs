//! `pcs history`: a partner's score day by day (GetScoreHistory), one JSON line per day.

use super::endpoint::Endpoint;
use crate::config::date_arg;
use crate::proto;
use chrono::NaiveDate;
use std::io::Write;
use std::process::ExitCode;
use tonic::Code;

#[derive(clap::Args)]
pub struct Args {
    #[arg(value_name = "PARTNER")]
    partner: String,
    #[command(flatten)]
    endpoint: Endpoint,
    /// First day (default: 29 days before --to).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date_arg)]
    from: Option<NaiveDate>,
    /// Last day (default: today).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date_arg)]
    to: Option<NaiveDate>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = args.endpoint.client().await?;
    let request = proto::GetScoreHistoryRequest {
        partner_id: args.partner.clone(),
        from: args.from.map(|d| d.to_string()),
        to: args.to.map(|d| d.to_string()),
    };
    match client.get_score_history(request).await {
        Ok(response) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for day in &response.into_inner().days {
                writeln!(out, "{}", super::insights::day(day))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(status) if status.code() == Code::NotFound => {
            eprintln!("pcs: {}", status.message());
            Ok(ExitCode::from(1))
        }
        Err(status) => anyhow::bail!("GetScoreHistory {}: {:?}: {}", args.partner, status.code(), status.message()),
    }
}
