//! Each subscription's timer.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Engine;
use super::subscription::Subscription;

/// The subscription's timer: expires leases, releases delayed retries and
/// drops messages past retention. Wakes at the next deadline or when a new,
/// earlier one appears; stops when the subscription is deleted or the broker
/// shuts down.
pub(super) async fn run(engine: Engine, sub: Arc<Subscription>) {
    loop {
        let tick = sub.tick(Instant::now(), SystemTime::now());
        if !tick.expired.is_empty() {
            engine.inner.store.ack_later(sub.id, tick.expired).await;
        }
        engine
            .settle_failures(&sub, tick.failures, "ack deadline expired")
            .await;
        let wake = tick
            .next_wake
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = sub.timer.notified() => {}
            _ = sub.closed.cancelled() => return,
            _ = engine.inner.shutdown.cancelled() => return,
        }
    }
}
