//! The operator console (docs/console.md): server-rendered HTML on the admin listener
//! (`PROJECTOR_ADMIN_ADDR`) under `/console`, behind HTTP Basic (user `operator`,
//! `CONSOLE_PASSWORD`; ten failed logins a minute from one address and it gets 429 for a
//! minute), or open in local development on loopback, or 404. It reads the log, the projections and the journal; the only thing it
//! writes is an operator's retry of a failed effect (a journal row, as `replay effects retry`).
//!
//! - [`layout`]: the page around every page (name, log head, navigation, style).
//! - [`overview`], [`customers`], [`customer`], [`subscription`], [`revenue`], [`anomalies`],
//!   [`effects`], [`event`]: one page each; [`parts`]: fragments several of them show;
//!   [`charts`]: inline SVG charts.
//!
//! Every value from Stripe or a customer goes through maud's escaping; no page runs a script
//! (`Content-Security-Policy` forbids them); lists page by position or id, never by `OFFSET`.

mod anomalies;
mod charts;
mod customer;
mod customers;
mod effects;
mod event;
mod layout;
mod logins;
mod overview;
mod parts;
mod revenue;
mod subscription;

use std::sync::Arc;

use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest, Sha256};
use shared::config::ConsoleAccess;
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;

use crate::health::Health;
use domain::catalog::Catalog;
use domain::clock::Clock;

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
    /// Derived from `CONSOLE_PASSWORD` (the same on every replica), random when open; every form
    /// carries it, every POST must.
    csrf: Arc<String>,
    /// Failed logins per address.
    logins: Arc<logins::Logins>,
    health: Health,
    readiness: shared::db::Readiness,
    /// The product's tiers: a customer's limits beside its usage.
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
}

/// What the console shares with the API: the database's health, the catalog and the clock.
pub struct Shared {
    /// Who folds, and whether the catalog or the fold settings differ.
    pub health: Health,
    /// The database check of `/readyz`.
    pub readiness: shared::db::Readiness,
    /// The catalog in force.
    pub catalog: Arc<Catalog>,
    /// The clock (today's usage).
    pub clock: Arc<dyn Clock>,
}

impl ConsoleState {
    /// The console of this projector: `pool` is a small pool of its own.
    pub fn new(pool: PgPool, settings: ConsoleSettings, shared: Shared) -> anyhow::Result<Self> {
        let csrf = csrf_token(&settings.access)?;
        Ok(Self {
            pool,
            access: Arc::new(settings.access),
            webhook_secrets: Arc::new(settings.webhook_secrets),
            csrf: Arc::new(csrf),
            logins: Arc::default(),
            health: shared.health,
            readiness: shared.readiness,
            catalog: shared.catalog,
            clock: shared.clock,
        })
    }
}

/// The Retry form's CSRF token: an HMAC of a fixed label under the console password, so every
/// replica behind a load balancer issues and accepts the same token and nobody without the
/// password can compute it; a random one per process for the open (local) console.
fn csrf_token(access: &ConsoleAccess) -> anyhow::Result<String> {
    use hmac::Mac as _;
    let key = match access {
        ConsoleAccess::Password(password) => password.expose_secret().as_bytes().to_vec(),
        ConsoleAccess::Open | ConsoleAccess::Off => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|e| anyhow::anyhow!("no randomness for the console's CSRF token: {e}"))?;
            bytes.to_vec()
        }
    };
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key).map_err(|e| anyhow::anyhow!("CSRF key: {e}"))?;
    mac.update(b"stripe-ledger console csrf v1");
    Ok(hex::encode(mac.finalize().into_bytes()))
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
        .route("/console/customers", get(customers::page))
        .route("/console/revenue", get(revenue::page))
        .route("/console/subscription/{id}", get(subscription::page))
        .route("/console/anomalies", get(anomalies::page))
        .route("/console/effects", get(effects::page))
        .route("/console/effects/retry", post(effects::retry))
        .route("/console/customer", get(customer::page))
        .route("/console/event/{position}", get(event::page))
        .route("/console/event/{position}/raw", get(event::raw))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Access (404 when off, 401 without the password, 429 after too many failed logins, 403 for a
/// POST from another origin) and the headers every console answer carries.
async fn guard(State(state): State<ConsoleState>, request: Request, next: Next) -> Response {
    match &*state.access {
        ConsoleAccess::Off => return StatusCode::NOT_FOUND.into_response(),
        ConsoleAccess::Password(password) => {
            if let Some(refusal) = login(&state, &request, password) {
                return refusal;
            }
        }
        ConsoleAccess::Open => {}
    }
    if request.method() == Method::POST && !same_origin(request.headers()) {
        tracing::warn!(path = request.uri().path(), "console: a POST from another origin was refused");
        return (StatusCode::FORBIDDEN, "this form did not come from this console").into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let csp = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; \
               frame-ancestors 'none'; base-uri 'none'";
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: with it a browser sends `Origin: null` on the console's own POSTs, which
    // the origin check must then refuse. `same-origin` still tells no other site anything.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The refusal for a request without the operator's password (401), or from an address that
/// failed too often (429 with `Retry-After`); `None` lets it in. Only a request that presented
/// credentials counts as a failed login (a browser's first request carries none).
fn login(state: &ConsoleState, request: &Request, password: &SecretString) -> Option<Response> {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let now = std::time::Instant::now();
    if let Some(wait) = address.and_then(|a| state.logins.blocked(a, now)) {
        tracing::warn!(?address, "console: login refused, too many failures from this address");
        let seconds = wait.as_secs().max(1).to_string();
        return Some(
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, seconds)], "too many failed logins; wait a minute")
                .into_response(),
        );
    }
    if authorized(request.headers(), password) {
        return None;
    }
    if request.headers().contains_key(header::AUTHORIZATION)
        && let Some(address) = address
    {
        state.logins.failed(address, now);
    }
    tracing::info!(path = request.uri().path(), "console: refused without the operator's password");
    let challenge = HeaderValue::from_static("Basic realm=\"stripe-ledger console\", charset=\"UTF-8\"");
    Some(
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], "the console needs its password")
            .into_response(),
    )
}

/// Whether a POST comes from a page of this console: its `Origin` names the host it was sent to
/// (a form another site makes the operator's browser submit carries that site's origin).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let authority = origin.and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
    matches!((host, authority), (Some(host), Some(authority)) if host.eq_ignore_ascii_case(authority))
}

/// `Authorization: Basic base64(operator:<password>)`. Both sides are hashed first, so the
/// constant-time comparison sees equal lengths whatever was sent (comparing the raw bytes returns
/// early on a length mismatch, which tells the password's length).
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
    bool::from(Sha256::digest(&decoded).ct_eq(&Sha256::digest(expected.as_bytes())))
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

    #[test]
    fn a_post_must_come_from_the_consoles_own_origin() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
            }
            h
        };
        assert!(same_origin(&headers(&[("host", "127.0.0.1:3007"), ("origin", "http://127.0.0.1:3007")])));
        assert!(same_origin(&headers(&[("host", "ops.example.com"), ("origin", "https://ops.example.com")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:3007"), ("origin", "https://evil.test")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:3007"), ("origin", "null")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:3007")])), "no Origin, no POST");
    }

    #[test]
    fn the_csrf_token_is_the_same_on_every_replica_with_the_password_and_differs_without_it() {
        let access = ConsoleAccess::Password(SecretString::from("correct horse battery staple"));
        let other = ConsoleAccess::Password(SecretString::from("another long password"));
        assert_eq!(csrf_token(&access).expect("token"), csrf_token(&access).expect("token"));
        assert_ne!(csrf_token(&access).expect("token"), csrf_token(&other).expect("token"));
        assert_ne!(csrf_token(&ConsoleAccess::Open).expect("a"), csrf_token(&ConsoleAccess::Open).expect("b"));
    }
}
