//! Logs and traces. Logs go to stderr: the service logs JSON lines at `info`
//! (one object per event, with its span's fields: `run_id`, `trace_id`, ...);
//! commands log text at `warn`. `CREWGRAPH_LOG` is the filter,
//! `CREWGRAPH_LOG_FORMAT` `json` or `text`.
//!
//! Traces are exported over OTLP/HTTP (protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set
//! (and `OTEL_SDK_DISABLED` is not `true`); `OTEL_SERVICE_NAME` defaults to
//! `crewgraph`.

use anyhow::Context;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::prelude::*;

/// Flushes exported spans when dropped (at exit).
pub struct Telemetry(Option<SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: OpenTelemetry export did not flush: {e}");
        }
    }
}

pub fn init(service: bool) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREWGRAPH_LOG")
        .unwrap_or_else(|_| if service { "info".into() } else { "warn".into() });
    let json = match std::env::var("CREWGRAPH_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => service,
    };
    let provider = match exporter() {
        Ok(provider) => provider,
        Err(e) => {
            eprintln!("warning: OpenTelemetry export is off: {e:#}");
            None
        }
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("crewgraph")));
    let json_logs = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let text_logs = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry().with(filter).with(otel).with(json_logs).with(text_logs).init();
    Telemetry(provider)
}

fn exporter() -> anyhow::Result<Option<SdkTracerProvider>> {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let configured = set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if !configured || disabled {
        return Ok(None);
    }
    // The exporter's HTTP client uses rustls without a built-in provider, as every client here does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("OTLP exporter (OTEL_EXPORTER_OTLP_* settings)")?;
    let mut resource = Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("crewgraph");
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    Ok(Some(provider))
}
