//! `pcs health`: asks a service whether it is serving (gRPC health checking), for container
//! health checks and scripts. Exit code 0: SERVING; 1: anything else or unreachable.

use super::endpoint::Endpoint;
use std::process::ExitCode;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let status = match args.endpoint.channel().await {
        Ok(channel) => match HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await {
            Ok(response) => ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown),
            Err(status) => {
                eprintln!("pcs: health check: {:?}: {}", status.code(), status.message());
                ServingStatus::Unknown
            }
        },
        Err(e) => {
            eprintln!("pcs: {e:#}");
            ServingStatus::Unknown
        }
    };
    println!("{}", status.as_str_name());
    Ok(if status == ServingStatus::Serving { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
