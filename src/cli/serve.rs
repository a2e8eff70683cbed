//! `pcs serve`: runs the service until SIGTERM or Ctrl-C.

use crate::config::ServeConfig;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ServeConfig,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (shutdown, _) = broadcast::channel(1);
    let trigger = shutdown.clone();
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
        let _ = trigger.send(());
    });
    crate::service::serve(args.config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
