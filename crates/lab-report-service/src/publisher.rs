//! Publishing a validated report through the official `google-cloud-pubsub`
//! Publisher, bounded in time.
//!
//! How the official Publisher (1.7) behaves when the broker is unreachable,
//! and how that is bounded here:
//! - Each batch is sent by a background task in a gax retry loop. By
//!   default the loop retries transport errors and `UNAVAILABLE` with
//!   exponential backoff (100 ms ×4, up to 60 s) for up to 600 s, and the
//!   background task is not cancelled when the caller stops waiting.
//! - The gRPC channel connects lazily and reconnects on the next request, so
//!   a broker that comes back is used again without rebuilding the client.
//! - A connection attempt itself has no timeout of its own (a blackholed
//!   host waits for the OS's TCP timeout).
//!
//! So [`ReportPublisher`] sets the client's retry time limit to the publish
//! timeout (its background retries stop when the lab is told 503), caps the
//! backoff at 1 s (a recovered broker is noticed quickly), and wraps each
//! publish in [`tokio::time::timeout`] as the hard bound.

use std::time::Duration;

use anyhow::Context;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use labrelay_contract::LabReport;

use crate::settings::Settings;

/// The attribute naming the report on every message.
pub const REPORT_ID_ATTRIBUTE: &str = "reportId";
/// The attribute naming the lab that posted the report.
pub const LAB_ATTRIBUTE: &str = "lab";

/// Why a report was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    #[error("the broker did not confirm the publish within {0:?}")]
    TimedOut(Duration),
    #[error("the broker refused or failed the publish")]
    Failed(#[from] PublishError),
}

/// Publishes reports to the configured topic. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReportPublisher {
    publisher: Publisher,
    timeout: Duration,
}

impl ReportPublisher {
    /// Builds the client; it connects on the first publish.
    pub async fn new(settings: &Settings) -> anyhow::Result<ReportPublisher> {
        let topic = settings.topic_name();
        let endpoint = settings.emulator_endpoint()?;
        let builder = labrelay_runtime::pubsub::publisher(
            &topic,
            endpoint.as_deref(),
            settings.publish_timeout,
        )
        .set_delay_threshold(settings.batch_delay);
        let publisher = builder.build().await.with_context(|| match &endpoint {
            Some(endpoint) => format!("building a publisher for {topic} at {endpoint}"),
            None => {
                format!("building a publisher for {topic} with Application Default Credentials")
            }
        })?;
        Ok(ReportPublisher {
            publisher,
            timeout: settings.publish_timeout,
        })
    }

    /// Publishes the report and resolves once the broker has stored it,
    /// returning its message id.
    /// `lab` is the name of the lab whose key authenticated the request,
    /// carried as attribute `lab`.
    pub async fn publish(
        &self,
        report: &LabReport,
        lab: Option<&str>,
    ) -> Result<String, PublishFailure> {
        let mut attributes = vec![(REPORT_ID_ATTRIBUTE, report.id.to_string())];
        if let Some(lab) = lab {
            attributes.push((LAB_ATTRIBUTE, lab.to_string()));
        }
        let message = Message::new()
            .set_data(report.to_json())
            .set_attributes(attributes);
        match tokio::time::timeout(self.timeout, self.publisher.publish(message)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(PublishFailure::TimedOut(self.timeout)),
        }
    }
}
