//! Plan changes on an existing subscription: `preview`, `change`, `cancel`, `resume`
//! (`docs/billing-api.md`). The subscription names the customer; a token acts only on its own
//! customer's subscriptions. Prices are validated against the catalog before Stripe is called.
//! The server decides proration dates: `preview` uses now and returns it, and `change` accepts a
//! `proration_date` only if a preview by the same caller issued exactly that value for the same
//! subscription and price within [`PRORATION_DATE_TTL_SECS`] (the journal is the proof), else 422
//! `invalid_proration_date` before any Stripe call; without one, Stripe prorates at the moment it
//! applies the change. A caller who could pick the date could downgrade "as of" the period start
//! and pay the cheaper price for the month they used (docs/security.md).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use domain::catalog::Product;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::stripe_api::{Answer, Form};
use sqlx::PgConnection;

use super::BillingState;
use super::commands::{self, Command, Incoming, Reply};
use super::error::{ApiError, Code};

/// What the projections know of a subscription.
struct Known {
    customer: Option<String>,
    status: String,
    tier: String,
}

/// How long a preview's `proration_date` may be passed to `change`.
pub const PRORATION_DATE_TTL_SECS: i64 = 600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    price: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    price: String,
    /// A preview's `proration_date` (issued to this caller for this subscription and price), so
    /// the charge equals the preview.
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

/// What an action knows of its command: the subscription as projected, who asks, the
/// transaction holding the command's lock (for the journal reads an action makes), and the
/// Stripe idempotency key to use.
struct Context<'a> {
    id: &'a str,
    known: Known,
    caller: &'a str,
    tx: &'a mut PgConnection,
    stripe_key: &'a str,
}

/// The request types of the four endpoints, and what each does.
trait Action: serde::de::DeserializeOwned + Send {
    async fn act(self, state: &BillingState, cx: Context<'_>) -> Result<Reply, ApiError>;
}

async fn run<A: Action>(
    state: &BillingState,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    verb: &str,
) -> Result<Reply, ApiError> {
    let Incoming { caller, key, request, parsed, slot: _slot } = commands::incoming::<A>(state, headers, body).await?;
    let known = known(state, id).await?;
    caller.may_act_for(known.customer.as_deref())?;
    let endpoint = endpoint(id, verb);
    let customer = known.customer.clone();
    let command = Command { caller: &caller, endpoint: &endpoint, request: &request, customer: customer.as_deref() };
    let caller = caller.journal_name();
    commands::run(&state.pool, command, &key, |mut tx, stripe_key| async move {
        let cx = Context { id, known, caller: &caller, tx: &mut tx, stripe_key: &stripe_key };
        let reply = parsed.act(state, cx).await.unwrap_or_else(Reply::from);
        (tx, reply)
    })
    .await
}

/// How the journal names a subscription command: method and path, the id in it.
fn endpoint(id: &str, verb: &str) -> String {
    format!("POST /v1/subscriptions/{id}/{verb}")
}

async fn known(state: &BillingState, id: &str) -> Result<Known, ApiError> {
    let unknown = || ApiError::new(Code::UnknownSubscription, format!("no subscription {id} is known"));
    if !super::is_stripe_id(id) {
        return Err(unknown());
    }
    let row = sqlx::query!(
        "SELECT stripe_customer_id, status, tier FROM projection.subscriptions WHERE stripe_subscription_id = $1",
        id
    )
    .fetch_optional(&state.pool)
    .await?;
    let row = row.ok_or_else(unknown)?;
    Ok(Known { customer: row.stripe_customer_id, status: row.status, tier: row.tier })
}

/// The target tier of a price, or 422 `unknown_price` or `not_sellable` (no Stripe call).
fn target_tier<'a>(state: &'a BillingState, price: &str) -> Result<(&'a str, usize), ApiError> {
    match state.catalog.product(price) {
        Some(Product::Tier { tier, .. }) if !tier.sellable => Err(ApiError::new(
            Code::NotSellable,
            format!("the {} tier is not sold through plan changes: contact sales", tier.name),
        )),
        Some(Product::Tier { tier, rank }) => Ok((tier.name.as_str(), rank)),
        _ => Err(ApiError::new(Code::UnknownPrice, format!("price {price} is not a tier of the catalog"))),
    }
}

/// Plan changes need a subscription that is running: not incomplete, not ended.
fn changeable(known: &Known) -> Result<(), ApiError> {
    if matches!(known.status.as_str(), "incomplete" | "incomplete_expired" | "canceled" | "unknown") {
        return Err(ApiError::new(
            Code::SubscriptionNotChangeable,
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
    answer.body["items"]["data"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::new(Code::StripeUnavailable, format!("Stripe's {id} has no item")))
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

/// What previewing and making a plan change both establish first, before any Stripe call: the
/// new price is a tier of the catalog (else 422) that is for sale (else 422 `not_sellable`), and
/// the subscription is running (else 409). The target tier and the direction of the change.
fn plan_target<'a>(state: &'a BillingState, known: &Known, price: &str) -> Result<(&'a str, &'static str), ApiError> {
    let (to_tier, to_rank) = target_tier(state, price)?;
    changeable(known)?;
    Ok((to_tier, direction(state, &known.tier, to_rank)))
}

/// 422 `invalid_proration_date` unless a preview by `caller` issued exactly `date` for this
/// subscription and price, and `date` is at most [`PRORATION_DATE_TTL_SECS`] old. The journal
/// holds every preview's answer: the proof is a row of it (found through its customer index).
async fn issued_proration_date(
    state: &BillingState,
    conn: &mut PgConnection,
    caller: &str,
    id: &str,
    price: &str,
    date: i64,
) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        ApiError::new(
            Code::InvalidProrationDate,
            format!(
                "proration_date {date} {why}: pass the one a preview of this change returned, within {} minutes, or none",
                PRORATION_DATE_TTL_SECS / 60
            ),
        )
    };
    let age = state.clock.now().timestamp() - date;
    if !(0..=PRORATION_DATE_TTL_SECS).contains(&age) {
        return Err(invalid("is not a recent preview's"));
    }
    let issued = sqlx::query_scalar!(
        r#"SELECT EXISTS (
             SELECT 1 FROM ledger.commands
             WHERE customer IN (SELECT stripe_customer_id FROM projection.subscriptions WHERE stripe_subscription_id = $1)
               AND endpoint = $2 AND caller = $3 AND response_status = 200
               AND request->>'price' = $4 AND response->>'proration_date' = $5
           ) AS "issued!""#,
        id,
        endpoint(id, "preview"),
        caller,
        price,
        date.to_string()
    )
    .fetch_one(&mut *conn)
    .await?;
    if !issued {
        return Err(invalid("was not issued by a preview of this change to this caller"));
    }
    Ok(())
}

impl Action for PreviewRequest {
    async fn act(self, state: &BillingState, cx: Context<'_>) -> Result<Reply, ApiError> {
        let (id, known) = (cx.id, &cx.known);
        let (to_tier, direction) = plan_target(state, known, &self.price)?;
        let item = item_id(state, id).await?;
        let date = state.clock.now().timestamp();
        let form = Form::new()
            .set("subscription", id)
            .set("subscription_details[items][0][id]", &item)
            .set("subscription_details[items][0][price]", &self.price)
            .set("subscription_details[proration_behavior]", "create_prorations")
            .set("subscription_details[proration_date]", date);
        // A preview creates nothing: no Stripe key, so a retry (with a later date) is not refused.
        let answer = state.stripe()?.post_without_key("/v1/invoices/create_preview", &form).await;
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
    async fn act(self, state: &BillingState, cx: Context<'_>) -> Result<Reply, ApiError> {
        let (id, known, stripe_key) = (cx.id, &cx.known, cx.stripe_key);
        let (to_tier, direction) = plan_target(state, known, &self.price)?;
        if let Some(date) = self.proration_date {
            issued_proration_date(state, &mut *cx.tx, cx.caller, id, &self.price, date).await?;
        }
        let item = item_id(state, id).await?;
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
    async fn act(self, state: &BillingState, cx: Context<'_>) -> Result<Reply, ApiError> {
        let (id, known, stripe_key) = (cx.id, &cx.known, cx.stripe_key);
        let stripe = state.stripe()?;
        if matches!(known.status.as_str(), "canceled" | "incomplete_expired") {
            return Err(ApiError::new(Code::SubscriptionNotChangeable, "it has ended already"));
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
    async fn act(self, state: &BillingState, cx: Context<'_>) -> Result<Reply, ApiError> {
        let (id, known, stripe_key) = (cx.id, &cx.known, cx.stripe_key);
        changeable(known)?;
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
