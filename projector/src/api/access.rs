//! `GET /v1/access`: the check bots make on every request with a customer's API token.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use shared::catalog::Catalog;
use sqlx::PgPool;

use super::auth::bearer;
use super::token::token_hash;
use crate::effects::Clock;
use crate::effects::provisioner::limits_json;
use crate::usage;

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
    checks: Family<ResultLabel, Counter>,
}

impl AccessState {
    /// The state, its metric registered.
    pub fn new(pool: PgPool, catalog: Arc<Catalog>, clock: Arc<dyn Clock>, registry: &mut Registry) -> Self {
        let checks = Family::<ResultLabel, Counter>::default();
        registry.register("access_checks", "GET /v1/access answers, by result", checks.clone());
        Self { pool, catalog, clock, checks }
    }
}

fn deny(state: &AccessState, status: StatusCode, result: &'static str, message: &str) -> Response {
    state.checks.get_or_create(&ResultLabel { result }).inc();
    tracing::info!(result, "access denied");
    let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
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
        return deny(&state, StatusCode::UNAUTHORIZED, "missing", "an Authorization: Bearer token is required");
    };
    let required = match query.get("tier") {
        None => None,
        Some(tier) => match state.catalog.rank(tier) {
            Some(rank) => Some(rank),
            None => return deny(&state, StatusCode::BAD_REQUEST, "bad_request", "unknown tier in ?tier="),
        },
    };
    // The token and, in the same snapshot, the customer's live subscription: access ends with the
    // subscription even while the dispatcher has not revoked the token yet (or cannot). Live is
    // what the fold provisions for (`desired_instance`): trialing, active, or past_due within
    // its grace period, with a tier the catalog knows; the token's own tier is preferred.
    let found = sqlx::query!(
        r#"SELECT k.stripe_customer_id, k.tier, k.expires_at, k.revoked_at,
                  s.tier AS "live_tier?", s.status AS "status?",
                  (SELECT COALESCE(jsonb_object_agg(u.metric, u.used), '{}')::text FROM ledger.usage_counters u
                   WHERE u.stripe_customer_id = k.stripe_customer_id AND u.day = $3) AS "usage!"
           FROM ledger.api_tokens k
           LEFT JOIN LATERAL (
             SELECT s.tier, s.status FROM projection.subscriptions s
             WHERE s.stripe_customer_id = k.stripe_customer_id AND NOT s.deleted AND s.tier <> 'unknown'
               AND (s.status IN ('trialing', 'active')
                    OR (s.status = 'past_due' AND (s.grace_until IS NULL OR s.grace_until > $2)))
             ORDER BY (s.tier = k.tier) DESC, (s.status = 'active') DESC, s.current_period_end DESC NULLS LAST
             LIMIT 1
           ) s ON true
           WHERE k.token_sha256 = $1"#,
        token_hash(token),
        state.clock.now(),
        usage::day(state.clock.now())
    )
    .fetch_optional(&state.pool)
    .await;
    let row = match found {
        Ok(Some(row)) => row,
        Ok(None) => return deny(&state, StatusCode::UNAUTHORIZED, "unknown", "invalid token"),
        Err(error) => {
            tracing::error!(%error, "access check: database unavailable");
            state.checks.get_or_create(&ResultLabel { result: "unavailable" }).inc();
            return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
        }
    };
    if row.revoked_at.is_some() {
        return deny(&state, StatusCode::UNAUTHORIZED, "revoked", "invalid token");
    }
    if row.expires_at <= state.clock.now() {
        return deny(&state, StatusCode::UNAUTHORIZED, "expired", "invalid token");
    }
    let (Some(tier), Some(status)) = (row.live_tier, row.status) else {
        return deny(&state, StatusCode::UNAUTHORIZED, "no_live_subscription", "invalid token");
    };
    if let Some(required) = required
        && state.catalog.rank(&tier).is_none_or(|rank| rank < required)
    {
        return deny(&state, StatusCode::FORBIDDEN, "tier_too_low", "this token's tier is too low");
    }
    state.checks.get_or_create(&ResultLabel { result: "ok" }).inc();
    let tier_limits = state.catalog.tier(&tier);
    let used: BTreeMap<String, u64> = serde_json::from_str(&row.usage).unwrap_or_default();
    axum::Json(json!({
        "customer": row.stripe_customer_id,
        "tier": tier,
        "limits": limits_json(tier_limits.map(|t| t.limits)),
        "status": status,
        "expires_at": row.expires_at.to_rfc3339(),
        "usage": usage::today(&state.catalog, tier_limits, &used, usage::day(state.clock.now())),
    }))
    .into_response()
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
