//! Plan changes on an existing subscription: `preview`, `change`, `cancel`, `resume`
//! (`docs/billing-api.md`). The subscription names the customer; a token acts only on its own
//! customer's subscriptions. Prices are validated against the catalog before Stripe is called;
//! preview and change share one `proration_date`, so the charge equals the preview.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::catalog::Product;
use shared::stripe_api::{Answer, Form};

use super::BillingState;
use super::commands::{self, Command, Incoming, Reply};
use super::error::ApiError;

/// What the projections know of a subscription.
struct Known {
    customer: Option<String>,
    status: String,
    tier: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    price: String,
    /// Unix seconds; default now. Pass the answer's `proration_date` to `change`.
    proration_date: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    price: String,
    /// The preview's `proration_date`, so the charge equals the preview.
    proration_date: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    at_period_end: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// `POST /v1/subscriptions/{id}/preview`.
pub async fn preview(
    s: State<BillingState>,
    id: Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    commands::respond(run::<PreviewRequest>(&s, &id, &headers, &body, "preview").await)
}

/// `POST /v1/subscriptions/{id}/change`.
pub async fn change(s: State<BillingState>, id: Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    commands::respond(run::<ChangeRequest>(&s, &id, &headers, &body, "change").await)
}

/// `POST /v1/subscriptions/{id}/cancel`.
pub async fn cancel(s: State<BillingState>, id: Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    commands::respond(run::<CancelRequest>(&s, &id, &headers, &body, "cancel").await)
}

/// `POST /v1/subscriptions/{id}/resume`.
pub async fn resume(s: State<BillingState>, id: Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    commands::respond(run::<Empty>(&s, &id, &headers, &body, "resume").await)
}

/// The request types of the four endpoints, and what each does.
trait Action: serde::de::DeserializeOwned + Send {
    async fn act(self, state: &BillingState, id: &str, known: Known, stripe_key: &str) -> Result<Reply, ApiError>;
}

async fn run<A: Action>(
    state: &BillingState,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    verb: &str,
) -> Result<Reply, ApiError> {
    let Incoming { caller, key, request, parsed } = commands::incoming::<A>(state, headers, body).await?;
    let known = known(state, id).await?;
    caller.may_act_for(known.customer.as_deref())?;
    let endpoint = format!("POST /v1/subscriptions/{{id}}/{verb}");
    let customer = known.customer.clone();
    let command = Command { caller: &caller, endpoint: &endpoint, request: &request, customer: customer.as_deref() };
    // The actions read nothing from the database: the transaction only holds the command's lock.
    commands::run(&state.pool, command, &key, |tx, stripe_key| async move {
        (tx, parsed.act(state, id, known, &stripe_key).await.unwrap_or_else(Reply::from))
    })
    .await
}

async fn known(state: &BillingState, id: &str) -> Result<Known, ApiError> {
    let row = sqlx::query!(
        "SELECT stripe_customer_id, status, tier FROM projection.subscriptions WHERE stripe_subscription_id = $1",
        id
    )
    .fetch_optional(&state.pool)
    .await?;
    let row = row.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_subscription", format!("no subscription {id} is known"))
    })?;
    Ok(Known { customer: row.stripe_customer_id, status: row.status, tier: row.tier })
}

/// The target tier of a price, or 422 `unknown_price` (no Stripe call).
fn target_tier<'a>(state: &'a BillingState, price: &str) -> Result<(&'a str, usize), ApiError> {
    match state.catalog.product(price) {
        Some(Product::Tier { tier, rank }) => Ok((tier.name.as_str(), rank)),
        _ => Err(ApiError::unprocessable("unknown_price", format!("price {price} is not a tier of the catalog"))),
    }
}

/// Plan changes need a subscription that is running: not incomplete, not ended.
fn changeable(known: &Known) -> Result<(), ApiError> {
    if matches!(known.status.as_str(), "incomplete" | "incomplete_expired" | "canceled" | "unknown") {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "subscription_not_changeable",
            format!("a {} subscription cannot change plan", known.status),
        ));
    }
    Ok(())
}

fn direction(state: &BillingState, from: &str, to_rank: usize) -> &'static str {
    match state.catalog.rank(from) {
        Some(rank) if rank < to_rank => "upgrade",
        Some(rank) if rank > to_rank => "downgrade",
        Some(_) => "same",
        None => "upgrade", // from an unknown tier, any catalog tier is a step up
    }
}

/// The id of the subscription's (single) item, read from Stripe.
async fn item_id(state: &BillingState, id: &str) -> Result<String, ApiError> {
    let answer =
        state.stripe()?.get(&format!("/v1/subscriptions/{id}"), &Form::new()).await.map_err(super::stripe_error)?;
    answer.body["items"]["data"][0]["id"].as_str().map(str::to_owned).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_GATEWAY, "stripe_unavailable", format!("Stripe's {id} has no item"))
    })
}

fn stripe_of(answer: &Answer) -> (Option<String>, u16) {
    (answer.request_id.clone(), answer.status)
}

/// When service ends: the earliest item period end (API 2025-03-31.basil), else the top-level
/// field of older shapes, else `cancel_at`.
pub fn service_ends_at(subscription: &Value) -> Option<i64> {
    let items = subscription["items"]["data"].as_array();
    let from_items = items.into_iter().flatten().filter_map(|i| i["current_period_end"].as_i64()).min();
    from_items.or_else(|| subscription["current_period_end"].as_i64()).or_else(|| subscription["cancel_at"].as_i64())
}

/// What previewing and making a plan change both establish first.
struct PlanChange<'a> {
    /// The subscription's item, read from Stripe.
    item: String,
    /// The tier of the new price.
    to_tier: &'a str,
    /// `upgrade`, `downgrade` or `same`.
    direction: &'static str,
}

/// The new price must be a tier of the catalog (else 422, no Stripe call) and the subscription
/// running (else 409); then its item is read from Stripe.
async fn plan_change<'a>(
    state: &'a BillingState,
    id: &str,
    known: &Known,
    price: &str,
) -> Result<PlanChange<'a>, ApiError> {
    let (to_tier, to_rank) = target_tier(state, price)?;
    changeable(known)?;
    let item = item_id(state, id).await?;
    Ok(PlanChange { item, to_tier, direction: direction(state, &known.tier, to_rank) })
}

impl Action for PreviewRequest {
    async fn act(self, state: &BillingState, id: &str, known: Known, stripe_key: &str) -> Result<Reply, ApiError> {
        let PlanChange { item, to_tier, direction } = plan_change(state, id, &known, &self.price).await?;
        let date = self.proration_date.unwrap_or_else(|| state.clock.now().timestamp());
        let form = Form::new()
            .set("subscription", id)
            .set("subscription_details[items][0][id]", &item)
            .set("subscription_details[items][0][price]", &self.price)
            .set("subscription_details[proration_behavior]", "create_prorations")
            .set("subscription_details[proration_date]", date);
        let answer = state.stripe()?.post("/v1/invoices/create_preview", &form, stripe_key).await;
        let answer = answer.map_err(super::stripe_error)?;
        let lines: Vec<Value> = answer.body["lines"]["data"].as_array().into_iter().flatten().map(line).collect();
        let body = json!({
            "subscription": id,
            "direction": direction,
            "from_tier": known.tier,
            "to_tier": to_tier,
            "amount_due": answer.body["amount_due"],
            "currency": answer.body["currency"],
            "proration_date": date,
            "lines": lines,
        });
        Ok(Reply::ok(body, stripe_of(&answer)))
    }
}

/// One invoice line as the preview shows it (both the basil `parent` shape and the older one).
fn line(l: &Value) -> Value {
    let proration =
        l["parent"]["subscription_item_details"]["proration"].as_bool().or_else(|| l["proration"].as_bool());
    let price = l["pricing"]["price_details"]["price"].as_str().or_else(|| l["price"]["id"].as_str());
    json!({ "description": l["description"], "amount": l["amount"], "proration": proration.unwrap_or(false), "price": price })
}

impl Action for ChangeRequest {
    async fn act(self, state: &BillingState, id: &str, known: Known, stripe_key: &str) -> Result<Reply, ApiError> {
        let PlanChange { item, to_tier, direction } = plan_change(state, id, &known, &self.price).await?;
        let form = Form::new()
            .set("items[0][id]", &item)
            .set("items[0][price]", &self.price)
            .set("proration_behavior", "create_prorations")
            .set_opt("proration_date", self.proration_date);
        let answer = state.stripe()?.post(&format!("/v1/subscriptions/{id}"), &form, stripe_key).await;
        let answer = answer.map_err(super::stripe_error)?;
        let body = json!({
            "subscription": id,
            "direction": direction,
            "from_tier": known.tier,
            "to_tier": to_tier,
            "status": answer.body["status"],
            "proration_date": self.proration_date,
        });
        Ok(Reply::ok(body, stripe_of(&answer)))
    }
}

impl Action for CancelRequest {
    async fn act(self, state: &BillingState, id: &str, known: Known, stripe_key: &str) -> Result<Reply, ApiError> {
        let stripe = state.stripe()?;
        if matches!(known.status.as_str(), "canceled" | "incomplete_expired") {
            return Err(ApiError::new(StatusCode::CONFLICT, "subscription_not_changeable", "it has ended already"));
        }
        let answer = if self.at_period_end {
            let form = Form::new().set("cancel_at_period_end", true);
            stripe.post(&format!("/v1/subscriptions/{id}"), &form, stripe_key).await
        } else {
            stripe.delete(&format!("/v1/subscriptions/{id}"), &Form::new(), stripe_key).await
        }
        .map_err(super::stripe_error)?;
        let ends_at = if self.at_period_end {
            service_ends_at(&answer.body)
        } else {
            answer.body["ended_at"].as_i64().or_else(|| answer.body["canceled_at"].as_i64())
        };
        let body = json!({
            "subscription": id,
            "status": answer.body["status"],
            "cancel_at_period_end": answer.body["cancel_at_period_end"],
            "service_ends_at": ends_at,
        });
        Ok(Reply::ok(body, stripe_of(&answer)))
    }
}

impl Action for Empty {
    async fn act(self, state: &BillingState, id: &str, known: Known, stripe_key: &str) -> Result<Reply, ApiError> {
        changeable(&known)?;
        let form = Form::new().set("cancel_at_period_end", false);
        let answer = state.stripe()?.post(&format!("/v1/subscriptions/{id}"), &form, stripe_key).await;
        let answer = answer.map_err(super::stripe_error)?;
        let body = json!({
            "subscription": id,
            "status": answer.body["status"],
            "cancel_at_period_end": answer.body["cancel_at_period_end"],
        });
        Ok(Reply::ok(body, stripe_of(&answer)))
    }
}
