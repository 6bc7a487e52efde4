//! `GET /v1/customers/{id}` (`me` with a customer's token): the customer as the projections
//! know it: account, subscriptions, instances, credits (balance and transactions) and today's
//! usage.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::BillingState;
use super::auth::Caller;
use super::error::{ApiError, Code};
use super::reads::{counters, live_tier};
use domain::usage;

/// Credit transactions listed, newest first.
const TRANSACTIONS: i64 = 100;

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
            return Err(ApiError::new(Code::CustomerRequired, "`me` is for a customer's token"));
        }
        (caller, id) => {
            caller.may_act_for(Some(id))?;
            id.to_owned()
        }
    };
    let account =
        sqlx::query!("SELECT email, name, deleted FROM projection.accounts WHERE stripe_customer_id = $1", id)
            .fetch_optional(&state.pool)
            .await?
            .ok_or_else(|| ApiError::new(Code::UnknownCustomer, format!("no customer {id} is known")))?;
    let subscriptions = subscriptions(state, &id).await?;
    let mut conn = state.pool.acquire().await?;
    let credits = credits(&mut conn, &id).await?;
    let now = state.clock.now();
    let plan = live_tier(&mut conn, &state.catalog, &id, now).await?;
    let (tier, period) = (plan.map(|(t, _)| t), plan.map_or((None, None), |(_, p)| p));
    let counters = counters(&mut conn, &id, now).await?;
    let mut usage = usage::standing(&state.catalog, tier, period, &counters, now);
    if let Some(object) = usage.as_object_mut() {
        let credits = domain::catalog::CREDITS_METRIC;
        let today = usage::counts(None, credits, period, &counters, now);
        object.insert(credits.into(), json!({ "used": today.first().map_or(0, |w| w.used) }));
    }
    Ok(json!({
        "id": id,
        "email": account.email,
        "name": account.name,
        "deleted": account.deleted,
        "tier": tier.map(|t| t.name.clone()),
        "subscriptions": subscriptions,
        "credits": credits,
        "usage": usage,
    }))
}

/// A customer's subscriptions as `GET /v1/customers/{id}` lists them, each with its instance and
/// the discount in force.
async fn subscriptions(state: &BillingState, id: &str) -> Result<Vec<Value>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT s.stripe_subscription_id, s.tier, s.status, s.price_id, s.current_period_end, s.cancel_at_period_end,
                s.grace_until, i.desired AS "desired?", i.status AS "instance_status?", i.frontend_url,
                s.discount, s.discount_percent_off, s.discount_amount_off, s.discount_currency, s.discount_end,
                d.discount_id AS "discount_id?", d.coupon, d.duration, d.duration_in_months, d.promotion_code,
                d.percent_off, d.amount_off, d.currency, d.end_at, d.stripe_subscription_id IS NULL AS "customer_wide?"
         FROM projection.subscriptions s LEFT JOIN projection.instances i USING (stripe_subscription_id)
         LEFT JOIN LATERAL (
           SELECT * FROM projection.discounts d
           WHERE NOT d.deleted AND (d.end_at IS NULL OR d.end_at > $2)
             AND (d.stripe_subscription_id = s.stripe_subscription_id
                  OR (d.stripe_subscription_id IS NULL AND d.stripe_customer_id = s.stripe_customer_id))
           ORDER BY d.stripe_subscription_id IS NULL, d.version_created DESC, d.discount_id LIMIT 1
         ) d ON true
         WHERE s.stripe_customer_id = $1 ORDER BY s.stripe_subscription_id"#,
        id,
        state.clock.now()
    )
    .fetch_all(&state.pool)
    .await?;
    let listed = rows.into_iter().map(|s| {
        // The snapshot's own discount (its terms as the subscription carries them), else the
        // discount in force from `customer.discount.*` events: the subscription's, or the customer's.
        let discount = match (s.discount, &s.discount_id) {
            (true, _) => Some(json!({
                "percent_off": s.discount_percent_off.map(|p| f64::from(p) / 100.0),
                "amount_off": s.discount_amount_off,
                "currency": s.discount_currency,
                "end": s.discount_end.map(|t| t.to_rfc3339()),
            })),
            (false, Some(_)) => Some(json!({
                "percent_off": s.percent_off.map(|p| f64::from(p) / 100.0),
                "amount_off": s.amount_off,
                "currency": s.currency,
                "end": s.end_at.map(|t| t.to_rfc3339()),
            })),
            (false, None) => None,
        };
        let discount = discount.map(|mut d| {
            let same = !(s.discount && s.customer_wide == Some(true));
            if let Some(from) = s.discount_id.as_ref().filter(|_| same).and_then(|_| d.as_object_mut()) {
                from.insert("id".into(), json!(s.discount_id));
                from.insert("coupon".into(), json!(s.coupon));
                from.insert("duration".into(), json!(s.duration));
                from.insert("duration_in_months".into(), json!(s.duration_in_months));
                from.insert("promotion_code".into(), json!(s.promotion_code));
                from.insert(
                    "applies_to".into(),
                    json!(if s.customer_wide == Some(true) { "customer" } else { "subscription" }),
                );
            }
            d
        });
        json!({
            "id": s.stripe_subscription_id, "tier": s.tier, "status": s.status, "price": s.price_id,
            "current_period_end": s.current_period_end.map(|t| t.to_rfc3339()),
            "cancel_at_period_end": s.cancel_at_period_end,
            "grace_until": s.grace_until.map(|t| t.to_rfc3339()),
            "instance": { "desired": s.desired, "status": s.instance_status, "url": s.frontend_url },
            "discount": discount,
        })
    });
    Ok(listed.collect())
}

/// `{balance, transactions}`: grants (with their cause) and debits (with their key), newest first.
async fn credits(conn: &mut sqlx::PgConnection, id: &str) -> Result<Value, ApiError> {
    let balance = super::reads::credit_account(&mut *conn, id).await?.balance();
    let rows = sqlx::query!(
        r#"(SELECT 'grant' AS "kind!", key AS "reference!", credits AS "credits!", granted_for AS "at!",
                   rollover_cap IS NOT NULL AS "cycle!", NULL::bigint AS balance_after
            FROM projection.credit_grants WHERE stripe_customer_id = $1 ORDER BY granted_for DESC LIMIT $2)
           UNION ALL
           (SELECT 'debit', idempotency_key, -quantity, applies_at, false, balance_after
            FROM ledger.usage WHERE stripe_customer_id = $1 AND metric = 'credits' ORDER BY applies_at DESC LIMIT $2)
           ORDER BY 4 DESC, 2 LIMIT $2"#,
        id,
        TRANSACTIONS
    )
    .fetch_all(&mut *conn)
    .await?;
    let transactions: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut t = json!({ "kind": r.kind, "credits": r.credits, "at": r.at.to_rfc3339() });
            if r.kind == "grant" {
                t["cause"] = json!(r.reference);
                t["grant"] = json!(if r.cycle { "cycle" } else { "pack" });
            } else {
                t["idempotency_key"] = json!(r.reference);
                t["balance_after"] = json!(r.balance_after);
            }
            t
        })
        .collect();
    Ok(json!({ "balance": balance, "transactions": transactions }))
}
