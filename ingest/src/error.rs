//! The errors of the webhook endpoint and the status each one gets.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::envelope::EnvelopeError;
use domain::signature::SignatureError;

/// Why a webhook was not acknowledged. Every variant is answered, logged and counted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    MissingSignature,
    /// The header is not valid UTF-8 text.
    #[error("the Stripe-Signature header is not text")]
    UnreadableSignature,
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Body above the configured limit.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read (client went away mid-body).
    #[error("the request body could not be read")]
    UnreadableBody,
    /// Authentic, but not a Stripe event.
    #[error(transparent)]
    NotAnEvent(#[from] EnvelopeError),
    /// The database cannot be reached: Stripe retries later.
    #[error("the event log is unavailable, retry later")]
    Unavailable(#[source] anyhow::Error),
    /// Shutting down: the request arrived after the appender stopped.
    #[error("shutting down, retry later")]
    ShuttingDown,
    /// A bug or an unexpected database error.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl IngestError {
    /// HTTP status: 4xx for permanent rejections (Stripe retries them too, which is right: a
    /// misconfigured secret must not lose events), 503 for "retry later", 500 for bugs.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingSignature
            | Self::UnreadableSignature
            | Self::Signature(_)
            | Self::UnreadableBody
            | Self::NotAnEvent(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable metric label and log field.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::UnreadableSignature => "unreadable_signature",
            Self::Signature(e) => e.reason(),
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::UnreadableBody => "unreadable_body",
            Self::NotAnEvent(_) => "not_an_event",
            Self::Unavailable(_) => "database_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::Internal(_) => "internal",
        }
    }

    /// True for client errors (the request itself is at fault).
    pub fn is_rejection(&self) -> bool {
        self.status().is_client_error()
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        // Client errors say why; server errors' messages are generic (their `#[source]` cause is
        // logged, never sent).
        let message = self.to_string();
        let mut response =
            (self.status(), Json(serde_json::json!({ "error": message, "reason": self.reason() }))).into_response();
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        }
        response
    }
}
