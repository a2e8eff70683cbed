//! How the client commands reach a service: its address, TLS (and a client certificate for
//! mutual TLS), and a bearer token. Shared by `get`, `list`, `watch` and `health`.

use crate::proto::partner_score_service_client::PartnerScoreServiceClient;
use anyhow::Context;
use std::path::PathBuf;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Request, Status};

#[derive(clap::Args, Clone)]
pub struct Endpoint {
    /// The service's gRPC address (https:// for TLS).
    #[arg(long, env = "PCS_ADDR", default_value = "http://127.0.0.1:50051", value_name = "URL")]
    pub addr: String,
    /// Bearer token (JWT) sent with every call, when the service checks tokens.
    #[arg(long, env = "PCS_TOKEN", value_name = "JWT", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) the service's certificate must chain to; default: the system's.
    #[arg(long, env = "PCS_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --client-key.
    #[arg(long, env = "PCS_CLIENT_CERT", value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, env = "PCS_CLIENT_KEY", value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type ScoreClient = PartnerScoreServiceClient<InterceptedService<Channel, Bearer>>;

impl Endpoint {
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let mut endpoint =
            Channel::from_shared(self.addr.clone()).with_context(|| format!("bad address {}", self.addr))?;
        if self.addr.starts_with("https://") || self.tls_ca.is_some() || self.client_cert.is_some() {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &self.tls_ca {
                let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                let cert = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
                let key = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        endpoint.connect().await.with_context(|| format!("cannot connect to {}", self.addr))
    }

    pub async fn client(&self) -> anyhow::Result<ScoreClient> {
        let token = match &self.token {
            Some(t) => Some(format!("Bearer {t}").parse().context("the token is not valid header text")?),
            None => None,
        };
        Ok(PartnerScoreServiceClient::with_interceptor(self.channel().await?, Bearer(token)))
    }
}
