//! Prometheus metrics: one [`Registry`] per service, served at `/metrics`.
//!
//! Every labrelay service (and the broker) owns its registry instead of
//! sharing a process-wide one, so `labrelay up`, which runs all four in one
//! process, still answers each port's `/metrics` with that service's
//! figures only. Metrics are `prometheus-client` types registered by the
//! service at startup; gauges that are cheaper to compute at scrape time
//! (a backlog) are registered as collectors.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

/// The media type of the OpenMetrics text format Prometheus scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics` rendering `registry`, to merge into a service's router.
pub fn router<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    Router::new().route("/metrics", get(move || render(registry.clone())))
}

async fn render(registry: Arc<Registry>) -> Response {
    let mut body = String::new();
    match encode(&mut body, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response(),
    }
}

/// Histogram buckets for latencies in seconds: 250 µs up to about 33 s,
/// doubling, so one layout fits an fsync and a slow SMTP server alike.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 18)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn serves_the_registry_in_openmetrics_text() {
        let mut registry = Registry::default();
        let published: Counter = Counter::default();
        registry.register(
            "labrelay_test_published",
            "Messages published",
            published.clone(),
        );
        published.inc_by(3);

        let app: Router = router(Arc::new(registry));
        let response = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("labrelay_test_published_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn latency_buckets_span_an_fsync_to_a_slow_server() {
        let buckets: Vec<f64> = latency_buckets().collect();
        assert!(buckets[0] <= 0.000_25);
        assert!(*buckets.last().unwrap() >= 30.0);
    }
}
