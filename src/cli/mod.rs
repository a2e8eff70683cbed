//! The command line: one file per subcommand. Errors are printed once, here.

mod demo_data;
mod endpoint;
mod get;
mod health;
mod history;
mod insights;
mod list;
mod produce;
mod score;
mod serve;
mod simulate;
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
    /// Print a partner's score day by day from a running service, one JSON line per day.
    History(history::Args),
    /// Score a partner as if some hypothetical events were added (nothing is stored).
    Simulate(simulate::Args),
    /// Ask a running service whether it is serving (exit 0) or not (exit 1): gRPC health.
    Health(health::Args),
    /// Print the demo dataset that `serve --demo` loads (JSON Lines).
    DemoData(demo_data::Args),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = matches!(cli.log_format, LogFormat::Json);
    if !matches!(cli.command, Command::Serve(_)) {
        // Client commands log only warnings (to stderr); `serve` sets up full telemetry.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    }
    let result = match cli.command {
        Command::Score(args) => score::run(args),
        Command::Serve(args) => runtime().and_then(|rt| {
            // The exporters send from the runtime, so they start (and flush) inside it.
            rt.block_on(async {
                let _telemetry = crate::telemetry::init(json_logs);
                serve::run(*args).await
            })
        }),
        Command::Get(args) => runtime().and_then(|rt| rt.block_on(get::run(args))),
        Command::List(args) => runtime().and_then(|rt| rt.block_on(list::run(args))),
        Command::Produce(args) => runtime().and_then(|rt| rt.block_on(produce::run(args))),
        Command::Watch(args) => runtime().and_then(|rt| rt.block_on(watch::run(args))),
        Command::History(args) => runtime().and_then(|rt| rt.block_on(history::run(args))),
        Command::Simulate(args) => runtime().and_then(|rt| rt.block_on(simulate::run(args))),
        Command::Health(args) => runtime().and_then(|rt| rt.block_on(health::run(args))),
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
