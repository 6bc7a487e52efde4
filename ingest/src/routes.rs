//! The HTTP surface: `POST /webhooks/stripe`, `GET /healthz`, `GET /readyz` on the public
//! listener; `GET /metrics` on the admin listener.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use domain::signature::{self, Tolerance};
use secrecy::SecretString;
use shared::log::{AppendOutcome, NewEvent};

use crate::appender::{AppendError, AppenderHandle};
use crate::error::IngestError;
use crate::metrics::Metrics;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Webhook signing secrets, any of which may sign an event.
    pub secrets: Arc<[SecretString]>,
    /// Signature timestamp tolerance.
    pub tolerance: Tolerance,
    /// Largest accepted body.
    pub body_limit: usize,
    /// The group-commit appender.
    pub appender: AppenderHandle,
    /// `/readyz`: its own connection, at most one check per second.
    pub readiness: shared::db::Readiness,
    /// This instance's metrics.
    pub metrics: Arc<Metrics>,
}

/// The public router (`INGEST_ADDR`): the webhook endpoint and the probes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    Router::new()
        .route("/webhooks/stripe", post(receive_webhook).layer(DefaultBodyLimit::max(body_limit)))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The admin router (`INGEST_ADMIN_ADDR`): `/metrics` (and `/healthz`), kept off the address the
/// internet reaches.
pub fn admin_router(state: AppState) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/metrics", get(metrics)).with_state(state)
}

/// An event made durable (or found already durable).
struct Accepted {
    event_id: String,
    event_type: String,
    outcome: AppendOutcome,
}

async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = accept(&state, &headers, body).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(accepted) => {
            let (outcome, duplicate) = match accepted.outcome {
                AppendOutcome::Appended { .. } => ("appended", false),
                AppendOutcome::Duplicate { .. } => ("duplicate", true),
            };
            if duplicate {
                state.metrics.duplicate();
            }
            state.metrics.request(outcome, seconds);
            tracing::info!(
                stripe_event_id = %accepted.event_id,
                event_type = %accepted.event_type,
                position = accepted.outcome.position(),
                duplicate,
                "event durable"
            );
            (StatusCode::OK, axum::Json(serde_json::json!({ "received": true }))).into_response()
        }
        Err(error) => {
            state.metrics.rejection(error.reason());
            if error.is_rejection() {
                state.metrics.request("rejected", seconds);
                tracing::warn!(reason = error.reason(), error = %error, "webhook rejected");
            } else {
                let outcome = if error.status() == StatusCode::SERVICE_UNAVAILABLE { "unavailable" } else { "error" };
                state.metrics.request(outcome, seconds);
                let cause = std::error::Error::source(&error).map(|s| format!("{s:#}"));
                tracing::error!(reason = error.reason(), error = %error, cause, "webhook not stored");
            }
            error.into_response()
        }
    }
}

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, IngestError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::BodyTooLarge { limit: state.body_limit }
        } else {
            IngestError::UnreadableBody
        }
    })?;
    let signature = headers
        .get("stripe-signature")
        .ok_or(IngestError::MissingSignature)?
        .to_str()
        .map_err(|_| IngestError::UnreadableSignature)?;
    let verified = signature::verify(signature, &body, &state.secrets, state.tolerance, unix_now())?;
    let event = decode_signed(state, body, signature, verified.timestamp)?;
    let (event_id, event_type) = (event.envelope.id.clone(), event.envelope.event_type.clone());
    let outcome = state.appender.append(event).await.map_err(|error| match error {
        AppendError::Unavailable(_) => IngestError::Unavailable(error.into()),
        AppendError::Stopped => IngestError::ShuttingDown,
        AppendError::Failed(_) => IngestError::Internal(error.into()),
    })?;
    Ok(Accepted { event_id, event_type, outcome })
}

/// What Stripe signed, we keep: a body our envelope decoder refuses (a float `created`, no
/// `livemode`, a future shape) is still stored when it names an event id, and the projector
/// records it as an `undecodable` anomaly. Only a body without an event id is refused.
fn decode_signed(state: &AppState, body: Bytes, signature: &str, signed_at: i64) -> Result<NewEvent, IngestError> {
    match NewEvent::decode(body.clone(), Some(signature.to_owned())) {
        Ok(event) => Ok(event),
        Err(error) => {
            let Some(envelope) = domain::envelope::salvage(&body, signed_at) else {
                return Err(error.into());
            };
            state.metrics.undecodable();
            tracing::warn!(
                stripe_event_id = %envelope.id,
                reason = %error,
                "signed event with an undecodable envelope: stored as it came"
            );
            Ok(NewEvent { envelope, raw_body: body, signature: Some(signature.to_owned()) })
        }
    }
}

fn unix_now() -> i64 {
    // A clock before 1970 is a broken host; treating it as 0 makes every signature "too old".
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, shared::telemetry::METRICS_CONTENT_TYPE)], state.metrics.render()).into_response()
}
