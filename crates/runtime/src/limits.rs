//! Limits that protect a service's process from its callers, the same in
//! every labrelay service.
//!
//! - At most [`Limits::max_in_flight`] requests are handled at once; one
//!   more is answered 503 with `Retry-After` at once instead of queueing,
//!   so memory stays bounded and a push is redelivered later.
//! - A request (reading its body included) that takes longer than
//!   [`Limits::request_timeout`] is answered 408, so a client that trickles
//!   its body cannot hold a connection and a slot forever.
//!
//! Body sizes are limited where the body is read (`DefaultBodyLimit` in
//! each service).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;

/// Requests handled at once when a service does not say otherwise; Cloud
/// Run's default concurrency is 80 per instance.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// How much work one service instance takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_in_flight: usize,
    pub request_timeout: Duration,
}

impl Limits {
    /// Wraps every route of `router` (call it last, after all routes).
    pub fn apply<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        // One semaphore for the whole router: axum applies the layer once
        // per route (and, before `with_state`, once per request).
        let permits = Arc::new(Semaphore::new(self.max_in_flight.max(1)));
        router.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded_or_timed_out))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(permits))
                .timeout(self.request_timeout),
        )
    }
}

async fn overloaded_or_timed_out(error: tower::BoxError) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        tracing::warn!("request timed out; answered 408");
        (
            StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({ "error": "the request took too long" })),
        )
            .into_response()
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        tracing::warn!("too many requests in flight; answered 503");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            axum::Json(serde_json::json!({ "error": "overloaded; retry later" })),
        )
            .into_response()
    } else {
        tracing::error!(%error, "request failed in a middleware");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": "internal error" })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn sheds_load_with_503_and_times_out_with_408() {
        let (entered, mut entered_rx) = tokio::sync::mpsc::channel::<()>(1);
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let held = release.clone();
        let app = Limits {
            max_in_flight: 1,
            request_timeout: Duration::from_millis(300),
        }
        .apply(
            Router::new()
                .route(
                    "/hold",
                    get(move || {
                        let entered = entered.clone();
                        let held = held.clone();
                        async move {
                            let _ = entered.send(()).await;
                            held.notified().await;
                            "done"
                        }
                    }),
                )
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                ),
        );
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();

        let first = tokio::spawn(app.clone().oneshot(get("/hold")));
        entered_rx.recv().await.unwrap();
        let shed = app.clone().oneshot(get("/hold")).await.unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);

        let slow = app.oneshot(get("/slow")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
    }
}
