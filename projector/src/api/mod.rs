//! The projector's HTTP API on `PROJECTOR_ADDR`: health, readiness, metrics and the endpoints
//! products call (`GET /v1/access`). Handlers read the projections on the API's own pool; they
//! never write what the fold owns.

pub mod access;
pub mod token;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::runner::RunnerStatus;

pub use access::AccessState;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Readiness of the database (one check per second at most).
    pub readiness: shared::db::Readiness,
    /// Every metric of the process.
    pub registry: Arc<Registry>,
    /// What the runner and the supervisor report.
    pub status: Arc<RunnerStatus>,
    /// `/v1/access`.
    pub access: AccessState,
}

impl FromRef<ApiState> for AccessState {
    fn from_ref(state: &ApiState) -> Self {
        state.access.clone()
    }
}

/// Every route of the API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/access", get(access::check))
        .with_state(state)
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.status.dead.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "a projector task died: the process is stopping").into_response();
    }
    if let Err(error) = state.readiness.check().await {
        tracing::warn!(%error, "not ready");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
    }
    if state.status.catalog_mismatch.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "projections were built with another catalog: run `replay rebuild`")
            .into_response();
    }
    let role = if state.status.leader.load(Ordering::Relaxed) { "active" } else { "standby" };
    (StatusCode::OK, format!("ready ({role})")).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let body = shared::telemetry::encode_metrics(&state.registry);
    ([(header::CONTENT_TYPE, shared::telemetry::METRICS_CONTENT_TYPE)], body).into_response()
}
