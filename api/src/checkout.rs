//! `POST /v1/checkout/sessions`: a Stripe Checkout Session for a price of the catalog, and
//! nothing else (`docs/billing-api.md`). Checkouts of one buyer (the customer, or the email of a
//! new one) run one at a time under a lock on the buyer, so the "already subscribed" and "a
//! session is open" checks hold under concurrency: a buyer has at most one open subscription
//! session. The same tier price again gets that session back; another tier price expires it at
//! Stripe first. An email alone never binds to an existing customer, and the redirect URLs must
//! be on an allowed origin.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use domain::catalog::Product;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::stripe_api::{Form, StripeError};
use sqlx::PgConnection;

use super::BillingState;
use super::commands::{self, Command, Incoming, Reply};
use super::error::{ApiError, Code};

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
    /// Checkout shows a field where the buyer may enter a promotion code.
    #[serde(default)]
    allow_promotion_codes: bool,
    /// A promotion code (`promo_...`) applied to the session.
    promotion_code: Option<String>,
}

/// The handler.
pub async fn create(State(state): State<BillingState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    commands::respond(run(&state, &headers, &body).await)
}

async fn run(state: &BillingState, headers: &HeaderMap, body: &[u8]) -> Result<Reply, ApiError> {
    let Incoming { caller, key, request, parsed, slot: _slot } =
        commands::incoming::<CheckoutRequest>(state, headers, body).await?;
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
        Some(Product::Tier { tier, .. }) if !tier.sellable => {
            let message = format!("the {} tier is not sold through checkout: contact sales", tier.name);
            return Err(ApiError::new(Code::NotSellable, message));
        }
        Some(Product::Tier { tier, .. }) if quantity == 1 => ("subscription", ("tier", tier.name.clone())),
        Some(Product::Tier { .. }) => return Err(ApiError::new(Code::InvalidQuantity, "a tier is bought once")),
        Some(Product::CreditPack(pack)) if (1..=MAX_PACKS).contains(&quantity) => {
            ("payment", ("pack", pack.name.clone()))
        }
        Some(Product::CreditPack(_)) => {
            return Err(ApiError::new(Code::InvalidQuantity, format!("1 to {MAX_PACKS} packs at once")));
        }
        None => {
            let message = format!("price {} is neither a tier nor a credit pack of the catalog", req.price);
            return Err(ApiError::new(Code::UnknownPrice, message));
        }
    };
    state.redirect_allowed("success_url", &req.success_url)?;
    state.redirect_allowed("cancel_url", &req.cancel_url)?;
    let promotion = promotion(&req)?;
    let buyer = Buyer::of(customer.as_deref(), req.email.as_deref())?;
    lock(conn, &buyer).await?;
    if customer.is_none() && super::email_taken(conn, req.email.as_deref()).await? {
        // No ids: whoever holds this email is not the caller's business. The backend signs its
        // user in and names the `customer`.
        return Err(ApiError::new(
            Code::CustomerExists,
            "a customer with this email exists: sign them in and name the customer",
        ));
    }
    if mode == "subscription"
        && let Some(customer) = &customer
        && let Some(subscription) = super::live_subscription(conn, customer).await?
    {
        return Err(ApiError::new(
            Code::AlreadySubscribed,
            format!("{customer} already has a live subscription: change its plan or open the portal"),
        )
        .with(json!({ "subscription": subscription })));
    }
    if mode == "subscription"
        && let Some(open) = open_session(state, conn, &buyer).await?
    {
        if open.price == req.price {
            return Ok(Reply { status: StatusCode::OK, body: open.answer, stripe: None });
        }
        expire(state, &open.id, stripe_key).await?;
    }
    rate_limit(state, conn, &buyer).await?;
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
    form = match promotion {
        Promotion::None => form,
        Promotion::Field => form.set("allow_promotion_codes", "true"),
        Promotion::Code(code) => form.set("discounts[0][promotion_code]", code),
    };
    let answer = stripe.post("/v1/checkout/sessions", &form, stripe_key).await.map_err(super::stripe_error)?;
    let body = json!({
        "id": answer.body["id"], "url": answer.body["url"], "mode": mode, "expires_at": answer.body["expires_at"],
    });
    Ok(Reply::ok(body, (answer.request_id, answer.status)))
}

/// How a session takes a promotion code.
enum Promotion<'a> {
    None,
    /// The buyer may type one (`allow_promotion_codes`).
    Field,
    /// This one applies (`discounts[0][promotion_code]`).
    Code(&'a str),
}

/// The request's promotion code choice: a field for the buyer, or a code, never both (Stripe
/// refuses both: "You may only specify one of these parameters").
fn promotion(req: &CheckoutRequest) -> Result<Promotion<'_>, ApiError> {
    match (req.allow_promotion_codes, req.promotion_code.as_deref()) {
        (true, Some(_)) => Err(ApiError::new(
            Code::ConflictingParameters,
            "allow_promotion_codes and promotion_code exclude each other: send one",
        )),
        (false, Some(code)) if !is_promotion_code_id(code) => Err(ApiError::new(
            Code::InvalidRequest,
            "promotion_code: a Stripe promotion code id (promo_ and letters, digits or _)",
        )),
        (false, Some(code)) => Ok(Promotion::Code(code)),
        (true, None) => Ok(Promotion::Field),
        (false, None) => Ok(Promotion::None),
    }
}

fn is_promotion_code_id(code: &str) -> bool {
    code.len() <= 255
        && code
            .strip_prefix("promo_")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// Who is buying: a customer, or the email of one Stripe will create.
enum Buyer {
    Customer(String),
    Email(String),
    Anonymous,
}

impl Buyer {
    fn of(customer: Option<&str>, email: Option<&str>) -> Result<Self, ApiError> {
        Ok(match (customer, email) {
            (Some(customer), _) => Self::Customer(customer.to_owned()),
            (None, Some(email)) if email.contains('@') && email.len() <= 512 => Self::Email(email.to_lowercase()),
            (None, Some(_)) => {
                return Err(ApiError::new(Code::InvalidRequest, "email is not an email address"));
            }
            (None, None) => Self::Anonymous,
        })
    }

    fn lock_name(&self) -> Option<String> {
        match self {
            Self::Customer(customer) => Some(format!("checkout\ncustomer\n{customer}")),
            Self::Email(email) => Some(format!("checkout\nemail\n{email}")),
            Self::Anonymous => None,
        }
    }
}

/// One checkout per buyer at a time, until the command's commit: what the next one reads (an
/// open session, the recent sessions) includes what this one made.
async fn lock(conn: &mut PgConnection, buyer: &Buyer) -> Result<(), ApiError> {
    if let Some(name) = buyer.lock_name() {
        sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name).execute(&mut *conn).await?;
    }
    Ok(())
}

/// A subscription session this buyer opened that has not expired by its own `expires_at`.
struct OpenSession {
    id: String,
    price: String,
    answer: Value,
}

async fn open_session(
    state: &BillingState,
    conn: &mut PgConnection,
    buyer: &Buyer,
) -> Result<Option<OpenSession>, ApiError> {
    let now = state.clock.now().timestamp();
    // Sessions live 24 hours at most (Stripe's default); the bound lets the index find them.
    let since = state.clock.now() - chrono::TimeDelta::hours(25);
    let row = match buyer {
        Buyer::Customer(customer) => sqlx::query!(
            r#"SELECT response::text AS "answer!", request->>'price' AS "price!" FROM ledger.commands
               WHERE customer = $1 AND endpoint = $2 AND at > $3 AND response_status = 200
                 AND response->>'mode' = 'subscription' AND (response->>'expires_at')::bigint > $4
               ORDER BY at DESC LIMIT 1"#,
            customer,
            ENDPOINT,
            since,
            now
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| (r.answer, r.price)),
        Buyer::Email(email) => sqlx::query!(
            r#"SELECT response::text AS "answer!", request->>'price' AS "price!" FROM ledger.commands
               WHERE customer IS NULL AND lower(request->>'email') = $1 AND endpoint = $2 AND at > $3
                 AND response_status = 200 AND response->>'mode' = 'subscription'
                 AND (response->>'expires_at')::bigint > $4
               ORDER BY at DESC LIMIT 1"#,
            email,
            ENDPOINT,
            since,
            now
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| (r.answer, r.price)),
        Buyer::Anonymous => None,
    };
    Ok(row.and_then(|(answer, price)| {
        let answer: Value = serde_json::from_str(&answer).ok()?;
        Some(OpenSession { id: answer["id"].as_str()?.to_owned(), price, answer })
    }))
}

/// Expires an open session before another tier's is made (at most one open session per buyer).
/// Stripe refuses to expire a session that is no longer open: completed, it is the buyer's
/// subscription on its way (409); expired, there is nothing to do.
async fn expire(state: &BillingState, session: &str, stripe_key: &str) -> Result<(), ApiError> {
    let stripe = state.stripe()?;
    let path = format!("/v1/checkout/sessions/{session}/expire");
    match stripe.post(&path, &Form::new(), &format!("{stripe_key}-expire")).await {
        Ok(_) => Ok(()),
        Err(StripeError::Refused { .. }) => {
            let read = stripe.get(&format!("/v1/checkout/sessions/{session}"), &Form::new()).await;
            match read.map_err(super::stripe_error)?.body["status"].as_str() {
                Some("complete") => Err(ApiError::new(
                    Code::AlreadySubscribed,
                    "a checkout of this customer has completed: its subscription is on its way",
                )),
                _ => Ok(()),
            }
        }
        Err(error) => Err(super::stripe_error(error)),
    }
}

async fn rate_limit(state: &BillingState, conn: &mut PgConnection, buyer: &Buyer) -> Result<(), ApiError> {
    let since = state.clock.now() - WINDOW;
    // Two queries, each on its index: by customer, or by email for a customer not created yet.
    let recent = match buyer {
        Buyer::Customer(customer) => {
            sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM ledger.commands
               WHERE customer = $1 AND endpoint = $2 AND at > $3 AND response_status = 200"#,
                customer,
                ENDPOINT,
                since
            )
            .fetch_one(&mut *conn)
            .await?
        }
        Buyer::Email(email) => {
            sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM ledger.commands
               WHERE customer IS NULL AND lower(request->>'email') = $1 AND endpoint = $2 AND at > $3
                 AND response_status = 200"#,
                email,
                ENDPOINT,
                since
            )
            .fetch_one(&mut *conn)
            .await?
        }
        Buyer::Anonymous => 0,
    };
    if recent >= SESSIONS_PER_WINDOW {
        return Err(ApiError::new(
            Code::RateLimited,
            format!(
                "at most {SESSIONS_PER_WINDOW} checkout sessions per customer every {} minutes",
                WINDOW.num_minutes()
            ),
        ));
    }
    Ok(())
}
