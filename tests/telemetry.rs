//! OpenTelemetry export from a real pipeline (real Redis, real broker) to an OTLP receiver
//! in this test: the span tree of one event, continuing its upstream `traceparent`; the
//! RPC span; and the freshness histogram.

mod support;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use pcs::proto;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Broker, Redis, free_port};

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.spans.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const UPSTREAM_SPAN: &str = "b7ad6b7169203331";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).map(|v| format!("{:?}", v.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_traced_end_to_end_and_freshness_is_exported() {
    let receiver = Receiver::default();
    let otlp_port = free_port();
    let server = {
        let receiver = receiver.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver.clone()))
                .add_service(MetricsServiceServer::new(receiver))
                .serve(format!("127.0.0.1:{otlp_port}").parse().unwrap()),
        )
    };
    let broker = Broker::start();
    let redis = Redis::start();
    let port = free_port();
    let mut serve = support::serve_command(&broker, &redis, port)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{otlp_port}"))
        .env("OTEL_SERVICE_NAME", "pcs-under-test")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .spawn()
        .unwrap();
    let addr = format!("http://127.0.0.1:{port}");

    // One event, continuing an upstream trace.
    let producer: FutureProducer = pcs::kafka::Cluster::new(&broker.bootstrap).producer().create().unwrap();
    let event = r#"{"type":"acr","event_id":"t-1","partner_id":"T1","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"700000000"}"#;
    let traceparent = format!("00-{TRACE_ID}-{UPSTREAM_SPAN}-01");
    let headers = OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(&traceparent) });
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wait for the service to create its topic before producing to it.
    let mut client = loop {
        if let Ok(c) = proto::partner_score_service_client::PartnerScoreServiceClient::connect(addr.clone()).await {
            break c;
        }
        assert!(Instant::now() < deadline, "pcs serve never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    producer
        .send(FutureRecord::to("pcs.partner-events").key("T1").payload(event).headers(headers), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    loop {
        let mut request = tonic::Request::new(proto::GetScoreRequest { partner_id: "T1".into(), as_of: None });
        request
            .metadata_mut()
            .insert("traceparent", format!("00-{TRACE_ID}-{}-01", "1111111111111111").parse().unwrap());
        if client.get_score(request).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the event was not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Command::new("kill").args(["-TERM", &serve.id().to_string()]).status().unwrap();
    assert!(serve.wait().unwrap().success());

    let spans = receiver.spans.lock().unwrap().clone();
    let named = |name: &str| spans.iter().filter(|s| s.name == name).cloned().collect::<Vec<_>>();
    let batch = named("pcs.batch").into_iter().find(|s| hex(&s.trace_id) == TRACE_ID).unwrap_or_else(|| {
        panic!(
            "no pcs.batch span in the upstream trace; spans: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    });
    assert_eq!(hex(&batch.parent_span_id), UPSTREAM_SPAN, "the batch continues the upstream span");
    assert_eq!(attribute(&batch, "messaging.system").as_deref(), Some(r#"Some(StringValue("kafka"))"#));
    let child_of = |parent: &Span, name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.parent_span_id == parent.span_id)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} span under {}", parent.name))
    };
    child_of(&batch, "pcs.decode");
    let apply = child_of(&batch, "pcs.apply");
    child_of(&apply, "pcs.redis.read");
    child_of(&apply, "pcs.redis.write");
    // Each chunk's changed scores are published as its writes land, within the apply.
    child_of(&apply, "pcs.publish");

    let rpc = named("pcs.v1.PartnerScoreService/GetScore");
    let rpc = rpc.iter().find(|s| hex(&s.trace_id) == TRACE_ID).unwrap_or_else(|| {
        panic!(
            "the GetScore span continues the caller's trace; spans: {:?}",
            spans.iter().map(|s| (&s.name, hex(&s.trace_id), hex(&s.parent_span_id))).collect::<Vec<_>>()
        )
    });
    assert_eq!(attribute(rpc, "rpc.system").as_deref(), Some(r#"Some(StringValue("grpc"))"#));

    let metrics = receiver.metrics.lock().unwrap();
    let names: Vec<String> = metrics
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.clone())
        .collect();
    for name in
        ["pcs.score.freshness", "pcs.events.consumed", "pcs.events.applied", "pcs.apply.duration", "pcs.redis.duration"]
    {
        assert!(names.iter().any(|n| n == name), "{name} was not exported; got {names:?}");
    }
    server.abort();
}
