//! `GET /v1/access`: the check bots make on every request with a customer's API token.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::catalog::Catalog;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::access_cache::{self, AccessCache, CacheMetrics, TokenHash};
use super::auth::bearer;
use super::error::{ApiError, Code};
use domain::access::{Answer, Outcome, TokenState, decide};
use domain::clock::Clock;
use domain::token::token_key;
use domain::usage;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// What `/v1/access` needs.
#[derive(Clone)]
pub struct AccessState {
    /// The database.
    pub pool: PgPool,
    /// Tier ranks and limits.
    pub catalog: Arc<Catalog>,
    /// Expiry is checked against it.
    pub clock: Arc<dyn Clock>,
    /// Answers by token hash (see [`access_cache`]).
    pub cache: Arc<AccessCache<Answer>>,
    /// The cache's metrics (the listener counts invalidations on them).
    pub cache_metrics: CacheMetrics,
    checks: Family<ResultLabel, Counter>,
}

impl AccessState {
    /// The state, its metrics registered; `cache_rows` answers at most are cached (0: none).
    pub fn new(
        pool: PgPool,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        cache_rows: usize,
        registry: &mut Registry,
    ) -> Self {
        let checks = Family::<ResultLabel, Counter>::default();
        registry.register("access_checks", "GET /v1/access answers, by result", checks.clone());
        let cache_metrics = CacheMetrics::new(registry);
        Self { pool, catalog, clock, cache: Arc::new(AccessCache::new(cache_rows)), cache_metrics, checks }
    }

    /// Keeps the cache fed with the database's notifications, on a connection of `pool` (not the
    /// checks' own), until `shutdown` (nothing is cached without it).
    pub fn listen(&self, pool: PgPool, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(access_cache::keep_listening(pool, self.cache.clone(), self.cache_metrics.clone(), shutdown))
    }
}

/// A refusal in the API's one error shape (`unauthorized`, `tier_too_low`,
/// `invalid_request`), the `reason` of a 401 beside it (`missing`, `unknown`, `expired`,
/// `revoked`, `no_live_subscription`).
fn deny(state: &AccessState, code: Code, result: &'static str, message: &str) -> Response {
    state.checks.get_or_create(&ResultLabel { result }).inc();
    tracing::info!(result, "access denied");
    let mut error = ApiError::new(code, message);
    if code == Code::Unauthorized {
        error = error.with(json!({ "reason": result })).header("www-authenticate", "Bearer".to_owned());
    }
    error.into_response()
}

/// `GET /v1/access[?tier=<minimum>]` with `Authorization: Bearer <token>`: 200 with the customer,
/// tier, limits, status, expiry and today's usage of each daily quota; 401 for a missing, unknown, expired or revoked token; 403 when
/// the token's tier ranks below `tier`; 400 for a `tier` the catalog does not know.
pub async fn check(
    State(state): State<AccessState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return deny(&state, Code::Unauthorized, "missing", "an Authorization: Bearer token is required");
    };
    let required = match query.get("tier") {
        None => None,
        Some(tier) => match state.catalog.rank(tier) {
            Some(rank) => Some(rank),
            None => return deny(&state, Code::InvalidRequest, "bad_request", "unknown tier in ?tier="),
        },
    };
    let key = token_key(token);
    let now = state.clock.now();
    let answer = match state.cache.get(&key, now) {
        Some(answer) => {
            state.cache_metrics.lookup("hit");
            answer
        }
        None => {
            state.cache_metrics.lookup("miss");
            let ticket = state.cache.ticket();
            let token = match read(&state.pool, &key, now).await {
                Ok(Some(token)) => token,
                Ok(None) => return deny(&state, Code::Unauthorized, "unknown", "invalid token"),
                Err(error) => {
                    tracing::error!(%error, "access check: database unavailable");
                    state.checks.get_or_create(&ResultLabel { result: "unavailable" }).inc();
                    return ApiError::unavailable().into_response();
                }
            };
            let (answer, valid_until) = decide(&token, &state.catalog, now);
            if let Some(ticket) = ticket {
                state.cache.insert(ticket, key, &token.customer, answer.clone(), now..valid_until);
            }
            answer
        }
    };
    respond(&state, answer, required)
}

fn respond(state: &AccessState, answer: Answer, required: Option<usize>) -> Response {
    let body = match answer.outcome {
        Outcome::Denied(result) => return deny(state, Code::Unauthorized, result, "invalid token"),
        Outcome::Granted(body) => body,
    };
    if let Some(required) = required
        && answer.rank.is_none_or(|rank| rank < required)
    {
        return deny(state, Code::TierTooLow, "tier_too_low", "this token's tier is too low");
    }
    state.checks.get_or_create(&ResultLabel { result: "ok" }).inc();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The token with hash `key` and, in the same snapshot, the customer's live subscription: access
/// ends with the subscription even while the dispatcher has not revoked the token yet (or cannot).
/// Live is what the fold wrote as `entitled_until` (`SubscriptionRow::entitled_until`: what it
/// provisions for, up to a grace deadline); the token's own tier is preferred, then the one
/// without a deadline.
async fn read(pool: &PgPool, key: &TokenHash, now: DateTime<Utc>) -> sqlx::Result<Option<TokenState>> {
    let starts = usage::current_starts(now);
    let row = sqlx::query!(
        r#"SELECT k.stripe_customer_id, k.expires_at, k.revoked_at,
                  s.tier AS "live_tier?", s.status AS "status?", s.period_start, s.period_end,
                  (SELECT min(g.entitled_until) FROM projection.subscriptions g
                   WHERE g.stripe_customer_id = k.stripe_customer_id AND g.entitled_until > $2) AS "next_grace_end?",
                  ledger.current_counters(k.stripe_customer_id, $3, $4, $5)::text AS "counters!"
           FROM ledger.api_tokens k
           LEFT JOIN LATERAL (
             SELECT s.tier, s.status, extract(epoch FROM s.current_period_start)::bigint AS period_start,
                    extract(epoch FROM s.current_period_end)::bigint AS period_end
             FROM projection.subscriptions s
             WHERE s.stripe_customer_id = k.stripe_customer_id AND s.entitled_until > $2
             ORDER BY (s.tier = k.tier) DESC, s.entitled_until DESC, s.current_period_end DESC NULLS LAST
             LIMIT 1
           ) s ON true
           WHERE k.token_sha256 = $1"#,
        &key[..],
        now,
        starts[0],
        starts[1],
        starts[2]
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| TokenState {
        customer: row.stripe_customer_id,
        expires_at: row.expires_at,
        revoked: row.revoked_at.is_some(),
        live: row.live_tier.zip(row.status),
        next_grace_end: row.next_grace_end,
        period: (row.period_start, row.period_end),
        counters: usage::parse_counters(&row.counters),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer sl_x".parse().expect("header"));
        assert_eq!(bearer(&headers), Some("sl_x"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer(&headers), None);
    }
}
