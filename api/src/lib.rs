//! The projector's HTTP API on `PROJECTOR_ADDR`: health, readiness and the endpoints
//! products call (`GET /v1/access`, the billing commands of `docs/billing-api.md`). Handlers read
//! the projections on the API's own pool; they never write what the fold owns: a command's
//! result comes back as webhooks through the log. `/metrics` is on the admin listener
//! ([`admin_router`], `PROJECTOR_ADMIN_ADDR`) with the console.
//!
//! - [`access`], [`access_cache`]: `GET /v1/access` and its per-replica cache.
//! - [`auth`], [`limiter`], [`error`]: who calls, how often, and the one error shape.
//! - [`commands`]: idempotent, journaled commands; [`checkout`], [`portal`], [`subscriptions`].
//! - [`usage`], [`counter`]: `POST /v1/usage` and its group-commit batcher.
//! - [`customers`]: `GET /v1/customers/{id}`; [`reads`]: the projection reads handlers share.
//! - [`catalog`]: `GET /v1/catalog`, the public pricing page's tiers and packs with their prices.
//! - [`analytics`]: `GET /v1/analytics/mrr`, MRR and its movements per day (the backend key).
//! - [`health`]: what `/readyz` and the console say about the fold, read from the database.
//! - [`console`]: the operator console on the admin listener.

pub mod access;
pub mod access_cache;
pub mod analytics;
pub mod auth;
pub mod catalog;
pub mod checkout;
pub mod commands;
pub mod console;
pub mod counter;
pub mod customers;
pub mod error;
pub mod health;
pub mod limiter;
pub mod portal;
pub mod reads;
pub mod subscriptions;
pub mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use domain::catalog::Catalog;
use prometheus_client::registry::Registry;
use shared::stripe_api::{StripeApi, StripeError};
use sqlx::{PgConnection, PgPool};

use self::auth::{Authenticator, Caller};
use self::error::{ApiError, Code};
use domain::clock::Clock;

pub use access::AccessState;
pub use usage::UsageState;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Readiness of the database (one check per second at most).
    pub readiness: shared::db::Readiness,
    /// Every metric of the process.
    pub registry: Arc<Registry>,
    /// This process stopping, the fold as the database shows it.
    pub health: health::Health,
    /// `/v1/access`.
    pub access: AccessState,
    /// The billing commands.
    pub billing: BillingState,
    /// `/v1/usage`.
    pub usage: UsageState,
    /// Requests refused for a body above [`BODY_LIMIT`].
    pub too_large: prometheus_client::metrics::counter::Counter,
    /// What this process runs (`PROJECTOR_ROLES`).
    pub roles: shared::config::Roles,
}

/// Largest request body the API reads (every body it expects is a small JSON object).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

impl FromRef<ApiState> for UsageState {
    fn from_ref(state: &ApiState) -> Self {
        state.usage.clone()
    }
}

impl FromRef<ApiState> for AccessState {
    fn from_ref(state: &ApiState) -> Self {
        state.access.clone()
    }
}

impl FromRef<ApiState> for BillingState {
    fn from_ref(state: &ApiState) -> Self {
        state.billing.clone()
    }
}

/// What the billing commands share.
#[derive(Clone)]
pub struct BillingState {
    /// The API's pool.
    pub pool: PgPool,
    /// Prices are validated against it.
    pub catalog: Arc<Catalog>,
    /// Token expiry and rate windows.
    pub clock: Arc<dyn Clock>,
    /// Who may call.
    pub auth: Authenticator,
    /// Stripe (None: `STRIPE_API_KEY` unset; commands answer 503 `stripe_not_configured`).
    pub stripe: Option<StripeApi>,
    /// `STRIPE_PORTAL_CONFIGURATION`.
    pub portal_configuration: Option<String>,
    /// `BILLING_REDIRECT_ORIGINS`: where sessions may send the buyer back to.
    pub redirects: shared::config::RedirectOrigins,
    /// Customer tokens' command rate and concurrency.
    pub limiter: limiter::CommandLimiter,
}

impl BillingState {
    /// The caller of a request, or 401.
    pub async fn caller(&self, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
        self.auth.caller(&self.pool, headers, self.clock.now()).await
    }

    /// The Stripe client, or 503 when none is configured.
    pub fn stripe(&self) -> Result<&StripeApi, ApiError> {
        self.stripe.as_ref().ok_or_else(|| {
            ApiError::new(Code::StripeNotConfigured,
                "the billing API cannot reach Stripe: set STRIPE_API_KEY (and STRIPE_API_BASE if not https://api.stripe.com) for the projector",
            )
        })
    }

    /// 422 `redirect_not_allowed` unless `url` (the request's `field`) is on an origin of
    /// `BILLING_REDIRECT_ORIGINS` (or on loopback in local development).
    pub fn redirect_allowed(&self, field: &str, url: &str) -> Result<(), ApiError> {
        if self.redirects.allows(url) {
            return Ok(());
        }
        Err(ApiError::new(
            Code::RedirectNotAllowed,
            format!("{field} must be on an origin listed in BILLING_REDIRECT_ORIGINS"),
        ))
    }
}

/// Whether `id` can be a Stripe object id (`cus_...`, `sub_...`): 1 to 255 ASCII letters, digits
/// and `_`. Anything else is no object we know, and never reaches a query (PostgreSQL refuses a
/// NUL in text, which would fail the statement instead of answering 404).
pub fn is_stripe_id(id: &str) -> bool {
    (1..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a customer the projections know (not deleted) holds `email`, case-insensitively.
pub async fn email_taken(conn: &mut PgConnection, email: Option<&str>) -> Result<bool, ApiError> {
    let Some(email) = email else { return Ok(false) };
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM projection.accounts WHERE lower(email) = lower($1) AND NOT deleted) AS "taken!""#,
        email
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// A live subscription of `customer` (Stripe still bills it: the fold's `live`), if any.
pub async fn live_subscription(conn: &mut PgConnection, customer: &str) -> Result<Option<String>, ApiError> {
    Ok(sqlx::query_scalar!(
        "SELECT stripe_subscription_id FROM projection.subscriptions
         WHERE stripe_customer_id = $1 AND live
         ORDER BY stripe_subscription_id LIMIT 1",
        customer
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// A Stripe failure as the API answers it: a refusal passes Stripe's code and message through
/// as 422 `stripe_error`; no usable answer is 502 `stripe_unavailable`.
pub fn stripe_error(error: StripeError) -> ApiError {
    match error {
        StripeError::Refused { status, code, message, request_id } => {
            tracing::info!(status, ?code, ?request_id, "Stripe refused a command");
            ApiError::new(Code::StripeError, message)
                .with(serde_json::json!({ "stripe_code": code, "stripe_status": status }))
        }
        StripeError::Unavailable(why) => {
            tracing::warn!(why, "Stripe unavailable for a command");
            ApiError::new(Code::StripeUnavailable, "Stripe did not answer; retry with the same Idempotency-Key")
        }
    }
}

/// Every route of the API.
pub fn router(state: ApiState) -> Router {
    let api = probes()
        .route("/v1/access", get(access::check))
        .route("/v1/catalog", get(catalog::read))
        .route("/v1/analytics/mrr", get(analytics::mrr))
        .route("/v1/checkout/sessions", post(checkout::create))
        .route("/v1/portal/sessions", post(portal::create))
        .route("/v1/customers/{id}", get(customers::read))
        .route("/v1/usage", post(usage::record))
        .route("/v1/subscriptions/{id}/preview", post(subscriptions::preview))
        .route("/v1/subscriptions/{id}/change", post(subscriptions::change))
        .route("/v1/subscriptions/{id}/cancel", post(subscriptions::cancel))
        .route("/v1/subscriptions/{id}/resume", post(subscriptions::resume));
    with_error_fallbacks(api)
        .layer(axum::middleware::from_fn_with_state(state.clone(), body_limit))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// The public listener of a process without the `api` role: the probes only, and the one error
/// shape for everything else.
pub fn probe_router(state: ApiState) -> Router {
    with_error_fallbacks(probes()).with_state(state)
}

/// What every public listener serves: the probes.
fn probes() -> Router<ApiState> {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz))
}

/// The one error shape for a path or method `routes` does not serve. Called once every route is
/// in: axum gives the 405 fallback to the routes that exist when it is set.
fn with_error_fallbacks(routes: Router<ApiState>) -> Router<ApiState> {
    routes.fallback(not_found).method_not_allowed_fallback(method_not_allowed)
}

/// The admin listener's part of the API (`PROJECTOR_ADMIN_ADDR`): `/metrics` and `/healthz`;
/// the console is merged beside it.
pub fn admin_router(state: ApiState) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/metrics", get(metrics)).with_state(state)
}

/// 413 for a body announced above [`BODY_LIMIT`], before it is read, logged and counted (a
/// chunked body without a length is cut at the same size by the extractor's limit).
async fn body_limit(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = announced.filter(|l| *l > BODY_LIMIT as u64) {
        tracing::warn!(path = request.uri().path(), length, limit = BODY_LIMIT, "request refused: body too large");
        state.too_large.inc();
        return ApiError::new(Code::BodyTooLarge, format!("bodies are at most {BODY_LIMIT} bytes")).into_response();
    }
    next.run(request).await
}

/// 404 for a path the API does not serve, in the one error shape.
async fn not_found() -> Response {
    ApiError::new(Code::NotFound, "no such endpoint").into_response()
}

/// 405 for a method the path does not take, in the one error shape.
async fn method_not_allowed() -> Response {
    ApiError::new(Code::MethodNotAllowed, "this endpoint does not take that method").into_response()
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let not_ready = |code, message: &str| ApiError::new(code, message).into_response();
    if state.health.is_stopping() {
        return not_ready(Code::Stopping, "a projector task died: the process is stopping");
    }
    if let Err(error) = state.readiness.check().await {
        tracing::warn!(%error, "not ready");
        return not_ready(Code::Unavailable, "database unavailable");
    }
    let fold = match state.health.fold().await {
        Ok(fold) => fold,
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "not ready");
            return not_ready(Code::Unavailable, "database unavailable");
        }
    };
    if fold.catalog_mismatch {
        return not_ready(Code::CatalogMismatch, "projections were built with another catalog: run `replay rebuild`");
    }
    if fold.settings_mismatch {
        return not_ready(
            Code::RebuildNeeded,
            "rebuild needed: projections were built with other fold settings (STRIPE_LIVEMODE, GRACE_PERIOD_DAYS): run `replay rebuild`",
        );
    }
    let role = match state.roles.fold {
        true if fold.leads_here => "active",
        true => "standby",
        false => "no fold here",
    };
    (StatusCode::OK, format!("ready ({role})")).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let body = shared::telemetry::encode_metrics(&state.registry);
    ([(header::CONTENT_TYPE, shared::telemetry::METRICS_CONTENT_TYPE)], body).into_response()
}
