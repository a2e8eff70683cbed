//! Logs, traces and metrics. Logs always go to stderr (text or JSON). Traces and metrics are
//! exported over OTLP/gRPC when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
//! `…_TRACES_ENDPOINT` / `…_METRICS_ENDPOINT` variants) is set, and are off, silently, when
//! it is not; `OTEL_SERVICE_NAME`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BSP_*` and the other
//! standard variables apply as the OpenTelemetry SDK reads them.

mod metrics;
mod propagation;

pub use metrics::{Metrics, metrics};
pub use propagation::{continue_trace, record_trace_id, trace_headers};

use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes and stops the exporters when dropped (at the end of `main`).
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            let _ = t.shutdown();
        }
        if let Some(m) = self.meter.take() {
            let _ = m.shutdown();
        }
    }
}

fn configured(signal: &str) -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
}

/// Sets up logging, and tracing and metrics export when configured. Must run inside a
/// Tokio runtime when the exporters are on (they send from it).
pub fn init(json_logs: bool) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let tracer = configured("TRACES").then(|| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map(|exporter| SdkTracerProvider::builder().with_batch_exporter(exporter).build())
    });
    let meter = configured("METRICS").then(|| {
        opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .map(|exporter| SdkMeterProvider::builder().with_periodic_exporter(exporter).build())
    });
    let otel_layer = match &tracer {
        Some(Ok(provider)) => {
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            Some(tracing_opentelemetry::layer().with_tracer(provider.tracer("pcs")))
        }
        _ => None,
    };
    if let Some(Ok(provider)) = &meter {
        opentelemetry::global::set_meter_provider(provider.clone());
    }
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let _ = if json_logs { registry.with(fmt.json()).try_init() } else { registry.with(fmt).try_init() };
    for (what, result) in
        [("traces", tracer.as_ref().map(|r| r.as_ref().err())), ("metrics", meter.as_ref().map(|r| r.as_ref().err()))]
    {
        if let Some(Some(e)) = result {
            tracing::error!(error = %e, "cannot export {what} over OTLP; continuing without");
        }
    }
    Telemetry { tracer: tracer.and_then(Result::ok), meter: meter.and_then(Result::ok) }
}
