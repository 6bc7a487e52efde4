//! `GET /v1/customers/{id}` (`me` with a customer's token): the customer as the projections
//! know it: account, subscriptions, instances and credits.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::BillingState;
use super::auth::Caller;
use super::error::ApiError;

/// The handler.
pub async fn read(State(state): State<BillingState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match customer(&state, &id, &headers).await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn customer(state: &BillingState, id: &str, headers: &HeaderMap) -> Result<Value, ApiError> {
    let caller = state.caller(headers).await?;
    let id = match (&caller, id) {
        (Caller::Customer(own), "me") => own.clone(),
        (Caller::Backend, "me") => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "customer_required", "`me` is for a customer's token"));
        }
        (caller, id) => {
            caller.may_act_for(Some(id))?;
            id.to_owned()
        }
    };
    let account = sqlx::query!(
        "SELECT a.email, a.name, a.deleted, c.balance AS \"balance?\" FROM projection.accounts a
         LEFT JOIN projection.credits c USING (stripe_customer_id) WHERE a.stripe_customer_id = $1",
        id
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_customer", format!("no customer {id} is known")))?;
    let subscriptions: Vec<Value> = sqlx::query!(
        "SELECT s.stripe_subscription_id, s.tier, s.status, s.price_id, s.current_period_end, s.cancel_at_period_end,
                s.grace_until, i.desired AS \"desired?\", i.status AS \"instance_status?\", i.frontend_url
         FROM projection.subscriptions s LEFT JOIN projection.instances i USING (stripe_subscription_id)
         WHERE s.stripe_customer_id = $1 ORDER BY s.stripe_subscription_id",
        id
    )
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .map(|s| {
        json!({
            "id": s.stripe_subscription_id, "tier": s.tier, "status": s.status, "price": s.price_id,
            "current_period_end": s.current_period_end.map(|t| t.to_rfc3339()),
            "cancel_at_period_end": s.cancel_at_period_end,
            "grace_until": s.grace_until.map(|t| t.to_rfc3339()),
            "instance": { "desired": s.desired, "status": s.instance_status, "url": s.frontend_url },
        })
    })
    .collect();
    let grants: Vec<Value> = sqlx::query!(
        "SELECT key, credits, granted_for FROM projection.credit_grants WHERE stripe_customer_id = $1 ORDER BY granted_for, key",
        id
    )
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .map(|g| json!({ "key": g.key, "credits": g.credits, "granted_for": g.granted_for.to_rfc3339() }))
    .collect();
    Ok(json!({
        "id": id,
        "email": account.email,
        "name": account.name,
        "deleted": account.deleted,
        "subscriptions": subscriptions,
        "credits": { "balance": account.balance.unwrap_or(0), "grants": grants },
    }))
}
