//! Commands: idempotent, journaled in `ledger.commands`. The first request under an
//! `Idempotency-Key` runs (holding a transaction-scoped advisory lock on the key, so two identical
//! requests at once make one Stripe call) and its answer is stored with it. A request's
//! fingerprint is its method, path (with the ids in it) and body, as Stripe's own: a repeat with
//! the same fingerprint gets the stored answer, any other request under the key 422
//! `idempotency_key_reused`. An answer meaning Stripe was not reached (502, 503) is not final and
//! not stored: the retry runs again. The Stripe `Idempotency-Key` is derived from the caller, the
//! path and the key, so every retry (after a crash, a 502) is the same request at Stripe too.

use std::future::Future;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::BillingState;
use super::auth::Caller;
use super::error::{ApiError, Code};

/// A command's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// Stripe's request id and status, when Stripe was called.
    pub stripe: Option<(Option<String>, u16)>,
}

impl Reply {
    /// Whether this answer is the command's last word. Stripe not reached (502
    /// `stripe_unavailable`) or not configured (503 `stripe_not_configured`), or the database
    /// unavailable (503): nothing happened that a retry could repeat, so a retry runs again.
    pub fn is_final(&self) -> bool {
        !matches!(self.status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE)
    }

    /// A 200 after a Stripe call.
    pub fn ok(body: Value, stripe: (Option<String>, u16)) -> Self {
        Self { status: StatusCode::OK, body, stripe: Some(stripe) }
    }
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Self {
        Self { status: error.status, body: error.body(), stripe: None }
    }
}

/// One command: who, which endpoint, the request as sent, and the customer it acts for.
#[derive(Debug, Clone)]
pub struct Command<'a> {
    /// The caller.
    pub caller: &'a Caller,
    /// Method and path as requested, ids included: `POST /v1/subscriptions/sub_1/cancel`.
    pub endpoint: &'a str,
    /// The request body.
    pub request: &'a Value,
    /// The customer it acts for, if known.
    pub customer: Option<&'a str>,
}

/// A command request, read: who calls, under which idempotency key, the body as sent and parsed.
pub struct Incoming<T> {
    /// The caller.
    pub caller: Caller,
    /// Its `Idempotency-Key`.
    pub key: String,
    /// The body as sent (journaled).
    pub request: Value,
    /// The body parsed.
    pub parsed: T,
    /// The caller's in-flight slot ([`super::limiter`]), held until the command answers.
    pub slot: super::limiter::InFlight,
}

/// Authenticates a POST, admits it under the caller's rate and concurrency limits (429), and
/// reads its key and JSON body (401, 400 `idempotency_key_required`, 400 `invalid_request`). An
/// empty body reads as `{}`.
pub async fn incoming<T: DeserializeOwned>(
    state: &BillingState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Incoming<T>, ApiError> {
    let caller = state.caller(headers).await?;
    let slot = state.limiter.admit(&caller)?;
    let key = idempotency_key(headers)?;
    let invalid = |error: serde_json::Error| {
        ApiError::new(Code::InvalidRequest, format!("the body is not a valid request: {error}"))
    };
    let request: Value = if body.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(body).map_err(invalid)?
    };
    let parsed = serde_json::from_value(request.clone()).map_err(invalid)?;
    Ok(Incoming { caller, key, request, parsed, slot })
}

/// The HTTP answer of a command.
pub fn respond(result: Result<Reply, ApiError>) -> Response {
    match result {
        Ok(reply) => (reply.status, axum::Json(reply.body)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The `Idempotency-Key` of a request (1 to 255 characters, as Stripe allows).
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::new(
            Code::IdempotencyKeyRequired,
            "every POST needs an Idempotency-Key header of 1 to 255 characters",
        ));
    }
    Ok(key.to_owned())
}

/// The transaction a command runs in: its reads go through it, never through a second
/// connection of the pool (a command holding one connection and waiting for another would
/// starve the pool under load).
pub type CommandTx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Runs `work` once per (caller, key): `work` gets the command's transaction (to read what it
/// checks, and to hand back) and the Stripe idempotency key to use.
pub async fn run<F, Fut>(pool: &PgPool, command: Command<'_>, key: &str, work: F) -> Result<Reply, ApiError>
where
    F: FnOnce(CommandTx, String) -> Fut,
    Fut: Future<Output = (CommandTx, Reply)>,
{
    let caller = command.caller.journal_name();
    let request_sha256 = fingerprint(command.endpoint, command.request);
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", format!("command\n{caller}\n{key}"))
        .execute(&mut *tx)
        .await?;
    let stored = sqlx::query!(
        r#"SELECT request_sha256, response_status, response::text AS "response!"
           FROM ledger.commands WHERE caller = $1 AND idempotency_key = $2"#,
        caller,
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(stored) = stored {
        if stored.request_sha256 != request_sha256 {
            return Err(ApiError::new(
                Code::IdempotencyKeyReused,
                "this Idempotency-Key was used with another endpoint, subscription or body",
            ));
        }
        let status = u16::try_from(stored.response_status).ok().and_then(|s| StatusCode::from_u16(s).ok());
        let body = serde_json::from_str(&stored.response).unwrap_or(Value::Null);
        return Ok(Reply { status: status.unwrap_or(StatusCode::OK), body, stripe: None });
    }
    let stripe_key = stripe_key(&caller, command.endpoint, key);
    let (mut tx, reply) = work(tx, stripe_key.clone()).await;
    if !reply.is_final() {
        // Rolled back with the transaction: the retry under this key runs the command again.
        tracing::info!(endpoint = command.endpoint, status = reply.status.as_u16(), "command not final: not journaled");
        return Ok(reply);
    }
    let (request_id, stripe_status) = match &reply.stripe {
        Some((id, status)) => (id.clone(), Some(i32::from(*status))),
        None => (None, None),
    };
    sqlx::query!(
        "INSERT INTO ledger.commands (caller, endpoint, idempotency_key, request_sha256, request, customer,
           stripe_idempotency_key, stripe_request_id, stripe_status, response_status, response)
         VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9, $10, $11::text::jsonb)",
        caller,
        command.endpoint,
        key,
        request_sha256,
        command.request.to_string(),
        command.customer,
        stripe_key,
        request_id,
        stripe_status,
        i32::from(reply.status.as_u16()),
        reply.body.to_string()
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(reply)
}

/// What a repeat under the same key must match: method and path (with ids) and the body as
/// parsed (`serde_json` writes object keys sorted, so key order and spacing do not count).
fn fingerprint(endpoint: &str, request: &Value) -> Vec<u8> {
    Sha256::digest(format!("{endpoint}\n{request}").as_bytes()).to_vec()
}

/// The Stripe `Idempotency-Key` of a command: the same for every retry of it.
fn stripe_key(caller: &str, endpoint: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{caller}\n{endpoint}\n{key}").as_bytes());
    format!("sl-{}", hex::encode(&digest[..16]))
}
