//! `POST /v1/checkout/sessions`: a Stripe Checkout Session for a price of the catalog, and
//! nothing else (`docs/billing-api.md`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use shared::catalog::Product;
use shared::stripe_api::Form;
use sqlx::PgConnection;

use super::BillingState;
use super::commands::{self, Command, Incoming, Reply};
use super::error::ApiError;

const ENDPOINT: &str = "POST /v1/checkout/sessions";
/// Sessions one customer (or one email) may create per window: card testers create many.
const SESSIONS_PER_WINDOW: i64 = 10;
const WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// Most credit packs in one checkout.
const MAX_PACKS: u64 = 100;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    price: String,
    customer: Option<String>,
    email: Option<String>,
    quantity: Option<u64>,
    success_url: String,
    cancel_url: String,
}

/// The handler.
pub async fn create(State(state): State<BillingState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    commands::respond(run(&state, &headers, &body).await)
}

async fn run(state: &BillingState, headers: &HeaderMap, body: &[u8]) -> Result<Reply, ApiError> {
    let Incoming { caller, key, request, parsed } = commands::incoming::<CheckoutRequest>(state, headers, body).await?;
    let customer = caller.customer(parsed.customer.as_deref())?;
    let acting_for = customer.clone();
    let command = Command { caller: &caller, endpoint: ENDPOINT, request: &request, customer: acting_for.as_deref() };
    commands::run(&state.pool, command, &key, |mut tx, stripe_key| async move {
        let reply = checkout(state, &mut tx, parsed, customer, &stripe_key).await.unwrap_or_else(Reply::from);
        (tx, reply)
    })
    .await
}

async fn checkout(
    state: &BillingState,
    conn: &mut PgConnection,
    req: CheckoutRequest,
    customer: Option<String>,
    stripe_key: &str,
) -> Result<Reply, ApiError> {
    let quantity = req.quantity.unwrap_or(1);
    let (mode, entry) = match state.catalog.product(&req.price) {
        Some(Product::Tier { tier, .. }) if quantity == 1 => ("subscription", ("tier", tier.name.clone())),
        Some(Product::Tier { .. }) => return Err(ApiError::unprocessable("invalid_quantity", "a tier is bought once")),
        Some(Product::CreditPack(pack)) if (1..=MAX_PACKS).contains(&quantity) => {
            ("payment", ("pack", pack.name.clone()))
        }
        Some(Product::CreditPack(_)) => {
            return Err(ApiError::unprocessable("invalid_quantity", format!("1 to {MAX_PACKS} packs at once")));
        }
        None => {
            let message = format!("price {} is neither a tier nor a credit pack of the catalog", req.price);
            return Err(ApiError::unprocessable("unknown_price", message));
        }
    };
    let customer = match customer {
        Some(customer) => Some(customer),
        None => super::customer_by_email(conn, req.email.as_deref()).await?,
    };
    if mode == "subscription"
        && let Some(customer) = &customer
        && let Some(subscription) = super::live_subscription(conn, customer).await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_subscribed",
            format!("{customer} already has a live subscription: change its plan or open the portal"),
        )
        .with(json!({ "subscription": subscription })));
    }
    rate_limit(state, conn, customer.as_deref(), req.email.as_deref()).await?;
    let stripe = state.stripe()?;
    let mut form = Form::new()
        .set("mode", mode)
        .set("line_items[0][price]", &req.price)
        .set("line_items[0][quantity]", quantity)
        .set("success_url", &req.success_url)
        .set("cancel_url", &req.cancel_url)
        .set(format!("metadata[{}]", entry.0), &entry.1)
        .set("metadata[price_id]", &req.price)
        .set("metadata[quantity]", quantity);
    form = match (&customer, &req.email) {
        (Some(customer), _) => form.set("customer", customer),
        (None, email) => form.set_opt("customer_email", email.as_ref()),
    };
    if mode == "subscription" {
        form = form.set(format!("subscription_data[metadata][{}]", entry.0), &entry.1);
    }
    let answer = stripe.post("/v1/checkout/sessions", &form, stripe_key).await.map_err(super::stripe_error)?;
    let body = json!({ "id": answer.body["id"], "url": answer.body["url"] });
    Ok(Reply::ok(body, (answer.request_id, answer.status)))
}

async fn rate_limit(
    state: &BillingState,
    conn: &mut PgConnection,
    customer: Option<&str>,
    email: Option<&str>,
) -> Result<(), ApiError> {
    let since = state.clock.now() - WINDOW;
    // Two queries, each on its index: by customer, or by email for a customer not created yet.
    let recent = match (customer, email) {
        (Some(customer), _) => sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM ledger.commands
               WHERE customer = $1 AND endpoint = $2 AND at > $3 AND response_status = 200"#,
            customer,
            ENDPOINT,
            since
        )
        .fetch_one(&mut *conn)
        .await?,
        (None, Some(email)) => sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM ledger.commands
               WHERE customer IS NULL AND request->>'email' = $1 AND endpoint = $2 AND at > $3 AND response_status = 200"#,
            email,
            ENDPOINT,
            since
        )
        .fetch_one(&mut *conn)
        .await?,
        (None, None) => 0,
    };
    if recent >= SESSIONS_PER_WINDOW {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "at most {SESSIONS_PER_WINDOW} checkout sessions per customer every {} minutes",
                WINDOW.num_minutes()
            ),
        ));
    }
    Ok(())
}
