//! `pcs score`: the file scorer. Streams events, prints one report per partner.

use crate::config::date_arg;
use crate::engine::Partners;
use crate::events::{JsonLines, validate_partner_id};
use crate::rules::RuleBook;
use anyhow::{Context, bail};
use chrono::NaiveDate;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// JSON Lines event file (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// The date to score for (YYYY-MM-DD).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date_arg)]
    as_of: NaiveDate,
    /// Only score this partner (other partners' lines are still checked).
    #[arg(long, value_name = "ID")]
    partner: Option<String>,
    /// Rule set file (TOML); repeat to give several effective dates. Default: the built-in set.
    #[arg(long, value_name = "FILE")]
    rules: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rules = RuleBook::load(&args.rules)?;
    if let Some(partner) = &args.partner {
        validate_partner_id(partner).context("--partner")?;
    }
    let input: Box<dyn BufRead> = if args.events.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.events).with_context(|| format!("cannot open {}", args.events.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };

    let mut partners = Partners::default();
    let stderr = io::stderr();
    let mut rejected = BufWriter::new(stderr.lock());
    for item in JsonLines::new(input) {
        let (line, decoded) = item.with_context(|| format!("cannot read {}", args.events.display()))?;
        let outcome = decoded.map_err(|e| e.to_string()).and_then(|event| {
            if args.partner.as_ref().is_some_and(|p| *p != event.partner_id) {
                return Ok(());
            }
            partners.apply(&event).map(drop).map_err(|e| e.to_string())
        });
        if let Err(reason) = outcome {
            writeln!(rejected, "line {line}: {reason}")?;
        }
    }
    rejected.flush()?;

    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for report in partners.evaluate(args.as_of, &rules) {
        serde_json::to_writer(&mut out, &report)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if let Some(partner) = &args.partner
        && partners.get(partner).is_none()
    {
        bail!("partner {partner} has no accepted event in {}", args.events.display());
    }
    Ok(ExitCode::SUCCESS)
}
