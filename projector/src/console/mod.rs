//! The operator console (docs/console.md): server-rendered HTML on `PROJECTOR_ADDR` under
//! `/console`, behind HTTP Basic (user `operator`, `CONSOLE_PASSWORD`), or open in local
//! development, or 404. It reads the log, the projections and the journal; the only thing it
//! writes is an operator's retry of a failed effect (a journal row, as `replay effects retry`).
//!
//! - [`layout`]: the page around every page (name, log head, navigation, style).
//! - [`overview`], [`anomalies`], [`effects`], [`customer`], [`event`]: one page each.
//!
//! Every value from Stripe or a customer goes through maud's escaping; no page runs a script
//! (`Content-Security-Policy` forbids them); lists page by position or id, never by `OFFSET`.

mod anomalies;
mod customer;
mod effects;
mod event;
mod layout;
mod overview;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use shared::config::ConsoleAccess;
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;

use crate::runner::RunnerStatus;

/// The HTTP Basic user of the console.
pub const OPERATOR: &str = "operator";

/// Rows per page of every list.
const PAGE: i64 = 50;

/// The console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Who may open it (`CONSOLE_PASSWORD`).
    pub access: ConsoleAccess,
    /// `STRIPE_WEBHOOK_SECRET`: the event page says whether a stored signature verifies.
    pub webhook_secrets: Vec<SecretString>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self { access: ConsoleAccess::Off, webhook_secrets: Vec::new() }
    }
}

/// What the pages read.
#[derive(Clone)]
pub struct ConsoleState {
    pool: PgPool,
    access: Arc<ConsoleAccess>,
    webhook_secrets: Arc<Vec<SecretString>>,
    /// Per process; every form carries it, every POST must.
    csrf: Arc<String>,
    catalog_hash: String,
    status: Arc<RunnerStatus>,
    readiness: shared::db::Readiness,
}

impl ConsoleState {
    /// The console of this projector: `pool` is a small pool of its own.
    pub fn new(
        pool: PgPool,
        settings: ConsoleSettings,
        catalog_hash: String,
        status: Arc<RunnerStatus>,
        readiness: shared::db::Readiness,
    ) -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the console's CSRF token: {e}"))?;
        Ok(Self {
            pool,
            access: Arc::new(settings.access),
            webhook_secrets: Arc::new(settings.webhook_secrets),
            csrf: Arc::new(hex::encode(bytes)),
            catalog_hash,
            status,
            readiness,
        })
    }
}

/// The console's pool: two connections of its own (a slow page never holds up the API), without
/// JIT compilation (PostgreSQL would spend more compiling a timeline query than running it).
pub fn pool(main: &PgPool) -> PgPool {
    let options = (*main.connect_options()).clone().options([("jit", "off")]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy_with(options)
}

/// The console's routes, behind its access check.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/anomalies", get(anomalies::page))
        .route("/console/effects", get(effects::page))
        .route("/console/effects/retry", post(effects::retry))
        .route("/console/customer", get(customer::page))
        .route("/console/event/{position}", get(event::page))
        .route("/console/event/{position}/raw", get(event::raw))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Access (404 when off, 401 without the password) and the headers every console answer carries.
async fn guard(State(state): State<ConsoleState>, request: Request, next: Next) -> Response {
    match &*state.access {
        ConsoleAccess::Off => return StatusCode::NOT_FOUND.into_response(),
        ConsoleAccess::Password(password) if !authorized(request.headers(), password) => {
            tracing::info!(path = request.uri().path(), "console: refused without the operator's password");
            let challenge = HeaderValue::from_static("Basic realm=\"stripe-ledger console\", charset=\"UTF-8\"");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
                "the console needs its password",
            )
                .into_response();
        }
        _ => {}
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let csp = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; \
               frame-ancestors 'none'; base-uri 'none'";
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `Authorization: Basic base64(operator:<password>)`, compared in constant time.
fn authorized(headers: &HeaderMap, password: &SecretString) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim())
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else { return false };
    let expected = format!("{OPERATOR}:{}", password.expose_secret());
    bool::from(decoded.as_slice().ct_eq(expected.as_bytes()))
}

/// A page that could not be read: 503 with the reason (the database, mostly), logged.
fn unavailable(error: &anyhow::Error) -> Response {
    tracing::warn!(error = format!("{error:#}"), "console page failed");
    (StatusCode::SERVICE_UNAVAILABLE, "the console could not read the database; try again").into_response()
}

/// `text` as a value in a query string.
fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Unix seconds as `2026-11-28 14:05:17 UTC`.
fn time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map_or_else(|| unix.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass));
        headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
        headers
    }

    #[test]
    fn only_the_operator_with_the_password_gets_in() {
        let password = SecretString::from("correct horse battery staple");
        assert!(authorized(&basic("operator:correct horse battery staple"), &password));
        for wrong in ["operator:correct horse", "admin:correct horse battery staple", "operator:", ""] {
            assert!(!authorized(&basic(wrong), &password), "{wrong}");
        }
        assert!(!authorized(&HeaderMap::new(), &password));
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer x".parse().expect("header"));
        assert!(!authorized(&bearer, &password));
    }
}
