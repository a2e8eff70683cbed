//! `pcs demo-data`: prints the demo dataset (the one `serve --demo` loads), JSON Lines.

use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> anyhow::Result<ExitCode> {
    std::io::stdout().lock().write_all(crate::demo::generate().as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
