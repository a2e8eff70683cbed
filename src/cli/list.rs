//! `pcs list`: every partner's score from a running service, one JSON line each.

use super::endpoint::Endpoint;
use crate::engine::PartnerScore;
use crate::proto;
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only partners with this designation (DATA_AI, DIGITAL_APP_INNOVATION, INFRASTRUCTURE).
    #[arg(long, value_name = "DESIGNATION")]
    designation: Option<String>,
    /// Only partners qualified (for --designation, or for any designation).
    #[arg(long)]
    qualified: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = args.endpoint.client().await?;
    let mut page_token = String::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let request = proto::ListScoresRequest {
            page_size: 500,
            page_token: page_token.clone(),
            designation: args.designation.clone(),
            qualified: args.qualified.then_some(true),
        };
        let page = client
            .list_scores(request)
            .await
            .map_err(|s| anyhow::anyhow!("ListScores: {:?}: {}", s.code(), s.message()))?;
        let page = page.into_inner();
        for score in &page.scores {
            writeln!(out, "{}", serde_json::to_string(&PartnerScore::try_from(score)?)?)?;
        }
        if page.next_page_token.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        page_token = page.next_page_token;
    }
}
