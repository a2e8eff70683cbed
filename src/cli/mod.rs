//! The command line: one file per subcommand.

mod score;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "pcs", version, about = "Partner capability scores, fresh in near real time")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score partners from a JSON Lines event file, one JSON report per partner on stdout.
    Score(score::Args),
}

/// Parses the arguments and runs the subcommand; errors are printed here, once.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Score(args) => score::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pcs: {e:#}");
            ExitCode::from(2)
        }
    }
}
