//! Tracing, trace-context propagation and the Prometheus recorder.
//!
//! Logs go to stdout (text, or JSON with `LOG_FORMAT=json`; level from
//! `RUST_LOG`, default `info`). Spans are always OpenTelemetry spans, so
//! every log line and every event carries a trace id; they are exported over
//! OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! W3C trace context crosses process boundaries in three places, all done
//! here: gRPC metadata (event-store calls), NATS message headers (the relay
//! and consumers), and the `trace` field stored with every event.

use std::collections::HashMap;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::proto::events::v1::TraceContext;

/// Keeps the tracer provider alive; dropping it flushes pending spans.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

/// Installs logging and tracing for a process named `service`. Call once,
/// first thing in `main`.
pub fn init(service: &str) -> Telemetry {
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    let exporting = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty());
    if exporting {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => eprintln!("OTLP exporter not started: {error}"),
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());

    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt_layer: Box<dyn Layer<Registry> + Send + Sync> = if json {
        Box::new(fmt::layer().json().with_current_span(true))
    } else {
        use std::io::IsTerminal;
        Box::new(
            fmt::layer()
                .with_target(true)
                .with_ansi(std::io::stdout().is_terminal()),
        )
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans feed traces whatever the log level, so that `RUST_LOG=warn`
    // quietens logs without breaking trace propagation.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service.to_owned()))
        .with_filter(LevelFilter::INFO);
    // A second init (tests running several services in one process) keeps
    // the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(fmt_layer.with_filter(filter))
        .with(otel)
        .try_init();
    // Metrics recorded before the first scrape must not be lost.
    prometheus();
    Telemetry { provider }
}

/// Logging and tracing for tests: quiet unless `RUST_LOG` says otherwise.
/// Safe to call from every test.
pub fn init_for_tests() {
    static ONCE: OnceLock<Telemetry> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("RUST_LOG").is_err() {
            // SAFETY: called once, before the test's own threads read the
            // environment through this module.
            unsafe { std::env::set_var("RUST_LOG", "warn") };
        }
        init("test")
    });
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            // Another recorder is already installed: serve an empty one
            // rather than fail.
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
    })
}

fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

/// The current span's trace context as W3C headers (empty strings when there
/// is no sampled span).
pub fn current_trace_context() -> TraceContext {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    propagator().inject_context(&cx, &mut carrier);
    TraceContext {
        traceparent: carrier.remove("traceparent").unwrap_or_default(),
        tracestate: carrier.remove("tracestate").unwrap_or_default(),
    }
}

/// Makes `span` a child of the trace described by W3C headers; does nothing
/// when `traceparent` is empty or malformed.
pub fn set_parent(span: &tracing::Span, traceparent: &str, tracestate: &str) {
    if traceparent.is_empty() {
        return;
    }
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if !tracestate.is_empty() {
        carrier.insert("tracestate".to_owned(), tracestate.to_owned());
    }
    let cx = propagator().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Copies the current trace context into NATS message headers.
pub fn inject_nats_headers(headers: &mut async_nats::HeaderMap) {
    let tc = current_trace_context();
    if !tc.traceparent.is_empty() {
        headers.insert("traceparent", tc.traceparent.as_str());
    }
    if !tc.tracestate.is_empty() {
        headers.insert("tracestate", tc.tracestate.as_str());
    }
}

/// Makes `span` a child of the trace carried in NATS message headers.
pub fn set_parent_from_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    let Some(headers) = headers else { return };
    let get = |name: &str| {
        headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    set_parent(span, &get("traceparent"), &get("tracestate"));
}

/// Makes `span` a child of the trace in HTTP request headers (a webhook from
/// a caller that traces, or a PBX).
pub fn set_parent_from_http(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    set_parent(span, &get("traceparent"), &get("tracestate"));
}

/// Copies the current trace context into gRPC request metadata.
pub fn inject_grpc_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    let tc = current_trace_context();
    if !tc.traceparent.is_empty()
        && let Ok(value) = tc.traceparent.parse()
    {
        metadata.insert("traceparent", value);
    }
    if !tc.tracestate.is_empty()
        && let Ok(value) = tc.tracestate.parse()
    {
        metadata.insert("tracestate", value);
    }
}

/// Makes `span` a child of the trace carried in gRPC request metadata.
pub fn set_parent_from_grpc(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    let get = |name: &str| {
        metadata
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    set_parent(span, &get("traceparent"), &get("tracestate"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_survives_a_round_trip_through_nats_headers() {
        init_for_tests();
        let outer = tracing::info_span!("producer");
        let sent = outer.in_scope(|| {
            let mut headers = async_nats::HeaderMap::new();
            inject_nats_headers(&mut headers);
            headers
        });
        let traceparent = sent
            .get("traceparent")
            .expect("traceparent header")
            .to_string();
        let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();

        let inner = tracing::info_span!("consumer");
        set_parent_from_nats(&inner, Some(&sent));
        let seen = inner.in_scope(current_trace_context);
        assert_eq!(seen.traceparent.split('-').nth(1).unwrap(), trace_id);
        assert_ne!(
            seen.traceparent, traceparent,
            "the consumer span is a child, not the same span"
        );
    }
}
