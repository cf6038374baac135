//! W3C trace context. Every request and every execution of a run has a trace
//! id that its log lines carry (`trace_id`) and that OpenTelemetry export uses
//! when it is configured. A run keeps the context of the request that
//! submitted it, so its execution on any worker, after any number of
//! restarts, joins that request's trace.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A `traceparent`: the trace, and the span that is the parent of what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`); `None`
    /// for anything malformed, as the W3C spec says to start a new trace then.
    pub fn parse(header: &str) -> Option<Self> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        let [version, trace, span, flags, rest @ ..] = parts.as_slice() else {
            return None;
        };
        let hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex(version, 2) || *version == "ff" || (*version == "00" && !rest.is_empty()) {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = TraceId::from(u128::from_str_radix(trace, 16).ok()?);
        let span_id = SpanId::from(u64::from_str_radix(span, 16).ok()?);
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        Some(Self { trace_id, span_id, sampled: u8::from_str_radix(flags, 16).ok()? & 1 == 1 })
    }

    /// A new trace, for a request that did not send one.
    pub fn root() -> Self {
        Self { trace_id: TraceId::from(fastrand::u128(1..)), span_id: SpanId::from(fastrand::u64(1..)), sampled: true }
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }

    /// Makes `span` a child of this context and returns the context its own
    /// children continue: the span's id when it is exported, else a new one.
    pub fn adopt(&self, span: &tracing::Span) -> TraceParent {
        let flags = if self.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let remote = SpanContext::new(self.trace_id, self.span_id, flags, true, TraceState::default());
        // Without an OpenTelemetry layer there is nothing to attach to: not an error.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        let context = span.context();
        let own = context.span().span_context().clone();
        if own.is_valid() && own.trace_id() == self.trace_id {
            TraceParent { trace_id: self.trace_id, span_id: own.span_id(), sampled: self.sampled }
        } else {
            TraceParent { span_id: SpanId::from(fastrand::u64(1..)), ..*self }
        }
    }
}

/// Middleware: one span per request with the caller's trace (or a new one),
/// the context in the request's extensions for handlers that store it (run
/// submission), and `traceparent` on the response.
pub async fn requests(mut req: Request, next: Next) -> Response {
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .unwrap_or_else(TraceParent::root);
    let span =
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), trace_id = %parent.trace_id);
    let own = parent.adopt(&span);
    req.extensions_mut().insert(own);
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    if status.is_server_error() {
        span.in_scope(|| tracing::warn!(status = status.as_u16(), "request failed"));
    } else {
        span.in_scope(|| tracing::debug!(status = status.as_u16(), "request"));
    }
    if let Ok(value) = HeaderValue::from_str(&own.header()) {
        response.headers_mut().insert("traceparent", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_w3c_example() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(header).unwrap();
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(tp.sampled);
        assert_eq!(tp.header(), header);
        assert!(!TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
    }

    #[test]
    fn refuses_malformed_headers() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may append fields.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
    }

    #[test]
    fn a_span_without_export_gets_a_new_id_in_the_same_trace() {
        let parent = TraceParent::root();
        let child = parent.adopt(&tracing::info_span!("x"));
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
    }
}
