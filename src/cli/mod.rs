//! The command line: one file per subcommand. Errors are printed once, here.

mod demo_data;
mod get;
mod list;
mod produce;
mod score;
mod serve;
mod watch;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "pcs", version, about = "Partner capability scores, fresh in near real time")]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "PCS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Score partners from a JSON Lines event file, one JSON report per partner on stdout.
    Score(score::Args),
    /// Run the service: consume events from Kafka, keep state in Redis, serve scores over gRPC.
    Serve(Box<serve::Args>),
    /// Print partners' scores from a running service (spec §7 JSON, one line each).
    Get(get::Args),
    /// Print every partner's score from a running service, one JSON line each.
    List(list::Args),
    /// Send a JSON Lines event file to Kafka, each line as one message keyed by partner_id.
    Produce(produce::Args),
    /// Follow score changes live (WatchScores), one JSON line per change.
    Watch(watch::Args),
    /// Print the demo dataset that `serve --demo` loads (JSON Lines).
    DemoData(demo_data::Args),
}

/// Logs go to stderr; `RUST_LOG` overrides the default level.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Score(args) => score::run(args),
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve::run(*args))),
        Command::Get(args) => runtime().and_then(|rt| rt.block_on(get::run(args))),
        Command::List(args) => runtime().and_then(|rt| rt.block_on(list::run(args))),
        Command::Produce(args) => runtime().and_then(|rt| rt.block_on(produce::run(args))),
        Command::Watch(args) => runtime().and_then(|rt| rt.block_on(watch::run(args))),
        Command::DemoData(args) => demo_data::run(args),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`pcs list | head`): not an error of ours.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pcs: {e:#}");
            ExitCode::from(2)
        }
    }
}
