//! W3C trace context across Kafka: read `traceparent` from consumed messages, write it on
//! published ones.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'a>(&'a [(String, Vec<u8>)]);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Collects what the propagator writes, to add as Kafka headers.
#[derive(Default)]
struct HeaderInjector(Vec<(String, String)>);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// Makes `span` continue the traces of the consumed messages' `traceparent` headers: the
/// first becomes its parent, the others links (a batch has one parent but may serve many
/// upstream traces).
pub fn continue_trace<'a>(span: &Span, messages: impl IntoIterator<Item = &'a [(String, Vec<u8>)]>) {
    let mut parent_set = false;
    for headers in messages {
        let context = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
        let upstream = context.span().span_context().clone();
        if !upstream.is_valid() {
            continue;
        }
        if parent_set {
            span.add_link(upstream);
        } else {
            let _ = span.set_parent(context);
            parent_set = true;
        }
    }
}

/// The headers that carry the current trace context of `span` (`traceparent`, and
/// `tracestate` when set), to add to outgoing messages. Worked out once for a span's many
/// messages: looking up the span's context takes the tracing registry's lock.
pub fn trace_headers(span: &Span) -> Vec<(String, String)> {
    let mut injector = HeaderInjector::default();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&span.context(), &mut injector));
    injector.0
}

/// Puts the span's trace id into its `trace_id` field, so every log line inside the span
/// names the trace (when tracing export is on; otherwise the field stays empty).
pub fn record_trace_id(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}
