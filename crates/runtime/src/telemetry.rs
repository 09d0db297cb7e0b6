//! One tracing setup for every labrelay process: human-readable text (in
//! colour on a terminal, plain in a file or a pipe); JSON in Cloud
//! Logging's structured shape when `LOG_FORMAT=json`, or on Cloud Run
//! (`K_SERVICE` set) unless `LOG_FORMAT` names another format
//! (`LOG_FORMAT=text`). `RUST_LOG` filters as usual (default: info).
//!
//! Cloud Logging reads `severity`, `message` and `time` from each JSON line
//! and keeps the other keys as the entry's payload; the fields of the spans
//! an event happens in (`report_id`, `message_id`, ...) are merged in, so
//! every line about a report carries them. The trace fields of a request's
//! span ([`crate::trace`]) become the special keys
//! `logging.googleapis.com/trace`, `logging.googleapis.com/spanId` and
//! `logging.googleapis.com/trace_sampled`, which Cloud Logging uses to
//! group a request's lines under its trace.

use std::fmt;

use crate::trace;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the process's subscriber: call once, first thing in `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = wants_json(
        std::env::var("LOG_FORMAT").ok().as_deref(),
        crate::on_cloud_run_env(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours on a terminal only, not in a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(CloudLogging)
            .init();
    } else {
        builder.init();
    }
}

/// JSON when `LOG_FORMAT` says `json`; when it is unset (or empty), JSON
/// on Cloud Run only.
fn wants_json(log_format: Option<&str>, on_cloud_run: bool) -> bool {
    match log_format.map(str::trim).filter(|f| !f.is_empty()) {
        Some(format) => format.eq_ignore_ascii_case("json"),
        None => on_cloud_run,
    }
}

/// Span fields that Cloud Logging reads under special keys.
const LIFTED: [(&str, &str); 3] = [
    (trace::TRACE_FIELD, "logging.googleapis.com/trace"),
    (trace::SPAN_ID_FIELD, "logging.googleapis.com/spanId"),
    (trace::SAMPLED_FIELD, "logging.googleapis.com/trace_sampled"),
];

/// Formats an event as one Cloud Logging JSON line.
struct CloudLogging;

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        // Outer spans first, so the innermost value of a field wins.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields)
                {
                    line.extend(map);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        for (field, key) in LIFTED {
            if let Some(value) = line.remove(field) {
                line.insert(key.into(), value);
            }
        }
        let metadata = event.metadata();
        line.insert("severity".into(), severity(metadata.level()).into());
        line.insert("time".into(), humantime_now().into());
        line.insert("target".into(), metadata.target().into());
        if !line.contains_key("message") {
            line.insert("message".into(), Value::String(String::new()));
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// RFC 3339 in UTC with microseconds, without pulling in a date crate.
fn humantime_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let timestamp = prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: (now.subsec_micros() * 1000) as i32,
    };
    timestamp.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn json_when_asked_or_on_cloud_run_unless_told_otherwise() {
        let cases = [
            (None, false, false),
            (None, true, true),
            (Some(""), true, true),
            (Some("json"), false, true),
            (Some("JSON"), false, true),
            (Some("text"), true, false),
            (Some("text"), false, false),
        ];
        for (log_format, on_cloud_run, want) in cases {
            assert_eq!(
                wants_json(log_format, on_cloud_run),
                want,
                "{log_format:?} {on_cloud_run}"
            );
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON lines `emit` logs.
    fn json_lines(emit: impl FnOnce()) -> Vec<Map<String, Value>> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(CloudLogging)
            .with_writer({
                let captured = captured.clone();
                move || captured.clone()
            })
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn a_request_with_a_trace_logs_cloud_loggings_trace_keys_and_the_report_ids() {
        let lines = json_lines(|| {
            let request = tracing::error_span!(
                "request",
                trace = "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736",
                trace_span_id = "00f067aa0ba902b7",
                trace_sampled = true,
            );
            let _request = request.enter();
            let push =
                tracing::error_span!("push", report_id = tracing::field::Empty, message_id = "17",);
            let _push = push.enter();
            push.record("report_id", "LR-1");
            tracing::warn!(outcome = "sent", "push handled");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "push handled");
        assert_eq!(line["report_id"], "LR-1");
        assert_eq!(line["message_id"], "17");
        assert_eq!(line["outcome"], "sent");
        assert_eq!(
            line["logging.googleapis.com/trace"],
            "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(line["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
        assert_eq!(line["logging.googleapis.com/trace_sampled"], true);
        for raw in ["trace", "trace_span_id", "trace_sampled"] {
            assert!(!line.contains_key(raw), "{raw} left in {line:?}");
        }
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line:?}");
    }

    #[test]
    fn without_a_trace_there_is_no_trace_key() {
        let lines = json_lines(|| tracing::info!(report_id = "LR-2", "report accepted"));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["severity"], "INFO");
        assert_eq!(lines[0]["report_id"], "LR-2");
        assert!(
            !lines[0]
                .keys()
                .any(|k| k.starts_with("logging.googleapis.com/")),
            "{:?}",
            lines[0]
        );
    }
}
