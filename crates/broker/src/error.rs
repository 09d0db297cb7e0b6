//! The broker's error type and its one mapping to gRPC status codes.
//!
//! REST answers are derived from the same `tonic::Status` (see `api/rest.rs`), so
//! a caller sees the same code and message over both protocols.

/// What went wrong with a request, in Pub/Sub's own categories.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The caller sent something malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The broker's settings forbid it (a push endpoint outside the
    /// allowlist).
    #[error("{0}")]
    PermissionDenied(String),
    /// A feature this broker does not offer (yet).
    #[error("{0}")]
    Unimplemented(String),
    /// The store could not take the write (disk full, I/O error): try again later.
    #[error("the broker could not store the request: {0}")]
    Unavailable(String),
    /// Our own failure; its cause is logged, not sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

impl BrokerError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        BrokerError::InvalidArgument(message.into())
    }
}

impl From<BrokerError> for tonic::Status {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            BrokerError::NotFound(m) => tonic::Status::not_found(m),
            BrokerError::AlreadyExists(m) => tonic::Status::already_exists(m),
            BrokerError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            BrokerError::PermissionDenied(m) => tonic::Status::permission_denied(m),
            BrokerError::Unimplemented(m) => tonic::Status::unimplemented(m),
            BrokerError::Unavailable(m) => {
                tracing::warn!(cause = %m, "store unavailable");
                tonic::Status::unavailable("the broker could not store the request; retry later")
            }
            BrokerError::Internal(cause) => {
                tracing::error!(cause = format!("{cause:#}"), "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
