//! The trace a request belongs to, so Cloud Logging can group a request's
//! log lines under its trace.
//!
//! Cloud Run (and any W3C-aware proxy) sends `traceparent:
//! 00-TRACE_ID-SPAN_ID-FLAGS` and/or `X-Cloud-Trace-Context:
//! TRACE_ID/SPAN_ID;o=1` (the names are part of the wire contract,
//! [`labrelay_contract::headers`]). [`apply`] puts a middleware in front of a
//! service's router that reads them and runs the request inside a span
//! carrying [`TRACE_FIELD`] (`projects/PROJECT/traces/TRACE_ID`),
//! [`SPAN_ID_FIELD`] (16 hex digits) and [`SAMPLED_FIELD`]; the JSON log
//! format lifts those to `logging.googleapis.com/trace`, `.../spanId` and
//! `.../trace_sampled`. Without a project id there is no trace field:
//! Cloud Logging needs the project, and guessing one would link lines to
//! someone else's traces.
//!
//! The headers are network input: anything that is not exactly the
//! documented shape is ignored, never an error.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use labrelay_contract::headers::{TRACEPARENT, X_CLOUD_TRACE_CONTEXT};
use tracing::Instrument as _;

/// Span field: `projects/PROJECT/traces/TRACE_ID`.
pub const TRACE_FIELD: &str = "trace";
/// Span field: the caller's span id, 16 lowercase hex digits.
pub const SPAN_ID_FIELD: &str = "trace_span_id";
/// Span field: whether the caller sampled the trace.
pub const SAMPLED_FIELD: &str = "trace_sampled";

/// A request's trace, as its caller stated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, when the caller named its span.
    pub span_id: Option<String>,
    /// Whether the caller sampled the trace, when it said.
    pub sampled: Option<bool>,
}

impl TraceContext {
    /// The trace of a request: `traceparent` if it is well-formed, else
    /// `X-Cloud-Trace-Context` (the order Google's logging libraries use).
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        header(TRACEPARENT)
            .and_then(TraceContext::parse_traceparent)
            .or_else(|| header(X_CLOUD_TRACE_CONTEXT).and_then(TraceContext::parse_cloud_trace))
    }

    /// `VERSION-TRACE_ID-PARENT_ID-FLAGS` (W3C Trace Context). Later
    /// versions may append fields, which are ignored; version `ff` and
    /// all-zero ids are invalid.
    pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let span_id = parts.next()?;
        let flags = parts.next()?;
        let rest_allowed = version != "00";
        if parts.next().is_some() && !rest_allowed {
            return None;
        }
        if !is_hex(version, 2) || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        if !is_hex(trace_id, 32) || !is_hex(span_id, 16) || !is_hex(flags, 2) {
            return None;
        }
        if is_zero(trace_id) || is_zero(span_id) {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceContext {
            trace_id: trace_id.to_ascii_lowercase(),
            span_id: Some(span_id.to_ascii_lowercase()),
            sampled: Some(flags & 1 == 1),
        })
    }

    /// `TRACE_ID[/SPAN_ID][;o=OPTIONS]`, the span id in decimal (Cloud
    /// Logging wants it in hex).
    pub fn parse_cloud_trace(value: &str) -> Option<TraceContext> {
        let (ids, options) = match value.trim().split_once(';') {
            Some((ids, options)) => (ids, Some(options)),
            None => (value.trim(), None),
        };
        let (trace_id, span_id) = match ids.split_once('/') {
            Some((trace_id, span_id)) => (trace_id, Some(span_id)),
            None => (ids, None),
        };
        if !is_hex(trace_id, 32) || is_zero(trace_id) {
            return None;
        }
        let span_id = match span_id {
            None | Some("") => None,
            Some(decimal) => match decimal.parse::<u64>() {
                Ok(0) | Err(_) => None,
                Ok(id) => Some(format!("{id:016x}")),
            },
        };
        let sampled = options.and_then(|o| match o.trim() {
            "o=1" => Some(true),
            "o=0" => Some(false),
            _ => None,
        });
        Some(TraceContext {
            trace_id: trace_id.to_ascii_lowercase(),
            span_id,
            sampled,
        })
    }

    /// Cloud Logging's `logging.googleapis.com/trace` value.
    pub fn resource_name(&self, project: &str) -> String {
        format!("projects/{project}/traces/{}", self.trace_id)
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_zero(text: &str) -> bool {
    text.bytes().all(|b| b == b'0')
}

/// The project whose traces requests belong to: `GOOGLE_CLOUD_PROJECT`,
/// else `PUBSUB_PROJECT_ID`; `None` when neither is set (empty counts as
/// unset).
pub fn project_from_vars(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    ["GOOGLE_CLOUD_PROJECT", "PUBSUB_PROJECT_ID"]
        .into_iter()
        .filter_map(get)
        .map(|value| value.trim().to_string())
        .find(|value| !value.is_empty())
}

/// Runs every request of `router` inside a span carrying its trace, when
/// it has one. Call it last, so the span also covers the lines logged by
/// the other layers (authentication, limits). With no `project` the
/// router is returned unchanged.
pub fn apply<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    project: Option<&str>,
) -> Router<S> {
    let Some(project) = project else {
        return router;
    };
    let project: Arc<str> = Arc::from(project);
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let project = Arc::clone(&project);
            async move {
                match TraceContext::from_headers(request.headers()) {
                    None => next.run(request).await,
                    Some(context) => {
                        // ERROR level so that no level filter drops the
                        // span: it only carries fields, it never prints.
                        let span = tracing::error_span!(
                            "request",
                            trace = %context.resource_name(&project),
                            trace_span_id = context.span_id.as_deref(),
                            trace_sampled = context.sampled,
                        );
                        next.run(request).instrument(span).await
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn traceparent() {
        let cases: &[(&str, Option<(&str, bool)>)] = &[
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Some(("00f067aa0ba902b7", true)),
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00",
                Some(("00f067aa0ba902b7", false)),
            ),
            // A later version may carry more fields.
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-extra",
                Some(("00f067aa0ba902b7", true)),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                None,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                None,
            ),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
            ("", None),
            ("----", None),
            // Multi-byte text where hex is expected must not panic.
            ("00-ééééééééééééééé-00f067aa0ba902b7-01", None),
        ];
        for (value, want) in cases {
            let got = TraceContext::parse_traceparent(value);
            match want {
                None => assert_eq!(got, None, "{value}"),
                Some((span, sampled)) => assert_eq!(
                    got,
                    Some(TraceContext {
                        trace_id: TRACE.into(),
                        span_id: Some(span.to_string()),
                        sampled: Some(*sampled),
                    }),
                    "{value}"
                ),
            }
        }
    }

    #[test]
    fn cloud_trace_context() {
        let context = |span: Option<&str>, sampled| {
            Some(TraceContext {
                trace_id: TRACE.into(),
                span_id: span.map(str::to_string),
                sampled,
            })
        };
        let cases = [
            (
                "4bf92f3577b34da6a3ce929d0e0e4736/1;o=1",
                context(Some("0000000000000001"), Some(true)),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736/18446744073709551615;o=0",
                context(Some("ffffffffffffffff"), Some(false)),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736/123",
                context(Some("000000000000007b"), None),
            ),
            ("4bf92f3577b34da6a3ce929d0e0e4736", context(None, None)),
            // A span id that is no u64 is dropped; the trace still counts.
            (
                "4bf92f3577b34da6a3ce929d0e0e4736/18446744073709551616;o=1",
                context(None, Some(true)),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736/-1;o=2",
                context(None, None),
            ),
            ("4bf92f3577b34da6a3ce929d0e0e47/1;o=1", None),
            ("00000000000000000000000000000000/1;o=1", None),
            ("zzf92f3577b34da6a3ce929d0e0e4736/1;o=1", None),
            ("/1;o=1", None),
            ("", None),
            ("é/1", None),
        ];
        for (value, want) in cases {
            assert_eq!(TraceContext::parse_cloud_trace(value), want, "{value}");
        }
    }

    #[test]
    fn traceparent_wins_when_well_formed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            X_CLOUD_TRACE_CONTEXT,
            "0123456789abcdef0123456789abcdef/5;o=1".parse().unwrap(),
        );
        assert_eq!(
            TraceContext::from_headers(&headers).unwrap().trace_id,
            "0123456789abcdef0123456789abcdef"
        );
        headers.insert(TRACEPARENT, "garbage".parse().unwrap());
        assert_eq!(
            TraceContext::from_headers(&headers).unwrap().trace_id,
            "0123456789abcdef0123456789abcdef"
        );
        headers.insert(
            TRACEPARENT,
            format!("00-{TRACE}-00f067aa0ba902b7-01").parse().unwrap(),
        );
        assert_eq!(
            TraceContext::from_headers(&headers).unwrap().trace_id,
            TRACE
        );
        assert_eq!(TraceContext::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn project_comes_from_the_environment_or_not_at_all() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(project_from_vars(vars(&[])), None);
        assert_eq!(
            project_from_vars(vars(&[("GOOGLE_CLOUD_PROJECT", " ")])),
            None
        );
        assert_eq!(
            project_from_vars(vars(&[("PUBSUB_PROJECT_ID", "pubsub-p")])).as_deref(),
            Some("pubsub-p")
        );
        assert_eq!(
            project_from_vars(vars(&[
                ("GOOGLE_CLOUD_PROJECT", "run-p"),
                ("PUBSUB_PROJECT_ID", "pubsub-p")
            ]))
            .as_deref(),
            Some("run-p")
        );
    }
}
