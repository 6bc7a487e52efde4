//! A fake of Stripe's billing API: a real HTTP server on 127.0.0.1:0 that records every call
//! (method, path, decoded form, `Authorization`, `Idempotency-Key`, `Stripe-Version`), answers
//! like Stripe (a repeated `Idempotency-Key` gets the first answer), and can be scripted to refuse
//! (4xx with a Stripe error), fail (5xx) or hang past the client's timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One call it received.
#[derive(Debug, Clone)]
pub struct Call {
    /// `POST`, `DELETE`...
    pub method: String,
    /// e.g. `/v1/checkout/sessions`.
    pub path: String,
    /// The decoded form, in order.
    pub form: Vec<(String, String)>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// `Stripe-Version`.
    pub stripe_version: Option<String>,
}

impl Call {
    /// The value of form parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// This status with a Stripe error body (`code`, `message`).
    Error(u16, &'static str, &'static str),
    /// No answer for this long (longer than the client's timeout).
    Hang(Duration),
    /// This status, not saved under the idempotency key: Stripe never began (a 429 rate limit,
    /// a load balancer's 503), so a retry under the same key runs for real.
    Unstored(u16),
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    script: VecDeque<Scripted>,
    answered: HashMap<String, (u16, Value)>,
    sessions: u64,
    subscriptions: HashMap<String, Value>,
    /// Checkout sessions by id: their status (`open`, `complete`, `expired`).
    checkouts: HashMap<String, String>,
}

/// The fake.
#[derive(Clone)]
pub struct FakeStripeBilling {
    /// Base URL (`STRIPE_API_BASE`).
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeStripeBilling {
    /// Starts it.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = Self { url, inner: Arc::default() };
        let app = Router::new()
            .route("/v1/checkout/sessions", post(checkout))
            .route("/v1/checkout/sessions/{id}", get(read_checkout))
            .route("/v1/checkout/sessions/{id}/expire", post(expire_checkout))
            .route("/v1/billing_portal/sessions", post(portal))
            .route("/v1/billing_portal/configurations", post(portal_configuration))
            .route("/v1/prices/{id}", get(price))
            .route("/v1/invoices/create_preview", post(preview))
            .route("/v1/subscriptions/{id}", get(read).post(update).delete(cancel))
            .route("/v1/{*rest}", post(unknown))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// The next calls get these answers, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.lock().script.extend(answers);
    }

    /// Knows subscription `id` with one item (`si_<id>`) on `price`, its period ending at
    /// `period_end`: on the item (API 2025-03-31.basil) or, with `basil` false, at the top level.
    pub fn subscription(&self, id: &str, price: &str, period_end: i64, basil: bool) {
        let mut item = json!({ "id": format!("si_{id}"), "object": "subscription_item", "price": { "id": price } });
        let mut subscription = json!({
            "id": id, "object": "subscription", "status": "active", "cancel_at_period_end": false,
            "cancel_at": null, "canceled_at": null, "ended_at": null,
        });
        if basil {
            item["current_period_end"] = json!(period_end);
        } else {
            subscription["current_period_end"] = json!(period_end);
        }
        subscription["items"] = json!({ "object": "list", "data": [item] });
        self.lock().subscriptions.insert(id.to_owned(), subscription);
    }

    /// The buyer paid: checkout session `id` is complete.
    pub fn complete_checkout(&self, id: &str) {
        self.lock().checkouts.insert(id.to_owned(), "complete".to_owned());
    }

    /// The status of checkout session `id`.
    pub fn checkout_status(&self, id: &str) -> Option<String> {
        self.lock().checkouts.get(id).cloned()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a call, then answers it: a replay of the key's first answer, a scripted one, or
    /// `make`'s.
    async fn answer(&self, call: Call, make: impl FnOnce(&mut Inner) -> Value) -> Response {
        let scripted = {
            let mut inner = self.lock();
            inner.calls.push(call.clone());
            if let Some((status, body)) = call.idempotency_key.as_ref().and_then(|k| inner.answered.get(k)) {
                return reply(*status, body.clone());
            }
            inner.script.pop_front()
        };
        let (status, body) = match scripted {
            Some(Scripted::Hang(time)) => {
                tokio::time::sleep(time).await;
                return reply(504, json!({}));
            }
            Some(Scripted::Unstored(status)) => {
                return reply(status, json!({ "error": { "type": "api_error", "message": "try again" } }));
            }
            Some(Scripted::Error(status, code, message)) => {
                (status, json!({ "error": { "type": "invalid_request_error", "code": code, "message": message } }))
            }
            None => (200, make(&mut self.lock())),
        };
        if let Some(key) = call.idempotency_key {
            self.lock().answered.insert(key, (status, body.clone()));
        }
        reply(status, body)
    }
}

fn reply(status: u16, body: Value) -> Response {
    let mut response = (StatusCode::from_u16(status).expect("status"), axum::Json(body)).into_response();
    response.headers_mut().insert("request-id", "req_fake".parse().expect("header"));
    response
}

fn call(method: &Method, path: &str, headers: &HeaderMap, form: Vec<(String, String)>) -> Call {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Call {
        method: method.to_string(),
        path: path.to_owned(),
        form,
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        stripe_version: header("stripe-version"),
    }
}

async fn checkout(
    State(fake): State<FakeStripeBilling>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let call = call(&Method::POST, "/v1/checkout/sessions", &headers, form);
    let mode = call.param("mode").unwrap_or_default().to_owned();
    let customer = call.param("customer").map(str::to_owned);
    fake.answer(call, |inner| {
        inner.sessions += 1;
        let id = format!("cs_test_fake{}", inner.sessions);
        inner.checkouts.insert(id.clone(), "open".to_owned());
        json!({
            "id": id, "object": "checkout.session", "mode": mode, "customer": customer,
            "url": format!("https://checkout.stripe.com/c/pay/{id}"), "status": "open",
            "expires_at": crate::stripe::now() + 86_400,
        })
    })
    .await
}

async fn read_checkout(State(fake): State<FakeStripeBilling>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    fake.lock().calls.push(call(&Method::GET, &format!("/v1/checkout/sessions/{id}"), &headers, Vec::new()));
    match fake.checkout_status(&id) {
        Some(status) => reply(200, json!({ "id": id, "object": "checkout.session", "status": status })),
        None => reply(
            404,
            json!({ "error": { "code": "resource_missing", "message": format!("No such checkout.session: '{id}'") } }),
        ),
    }
}

/// As Stripe: only an open session can be expired.
async fn expire_checkout(
    State(fake): State<FakeStripeBilling>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = call(&Method::POST, &format!("/v1/checkout/sessions/{id}/expire"), &headers, Vec::new());
    let status = fake.checkout_status(&id);
    if status.as_deref() != Some("open") {
        fake.lock().calls.push(call);
        let message = "Only Checkout Sessions with a status in [\"open\"] can be expired.";
        return reply(400, json!({ "error": { "type": "invalid_request_error", "message": message } }));
    }
    fake.answer(call, |inner| {
        inner.checkouts.insert(id.clone(), "expired".to_owned());
        json!({ "id": id, "object": "checkout.session", "status": "expired" })
    })
    .await
}

async fn unknown(Path(rest): Path<String>) -> Response {
    (StatusCode::NOT_FOUND, axum::Json(json!({ "error": { "message": format!("no fake for /v1/{rest}") } })))
        .into_response()
}

async fn portal(
    State(fake): State<FakeStripeBilling>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let call = call(&Method::POST, "/v1/billing_portal/sessions", &headers, form);
    fake.answer(call, |inner| {
        inner.sessions += 1;
        json!({ "id": format!("bps_fake{}", inner.sessions), "url": format!("https://billing.stripe.com/p/session/test_{}", inner.sessions) })
    })
    .await
}

/// A preview: 500 back for the unused time, 2,000 for the remaining time on the new price.
async fn preview(
    State(fake): State<FakeStripeBilling>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let call = call(&Method::POST, "/v1/invoices/create_preview", &headers, form);
    let new_price = call.param("subscription_details[items][0][price]").unwrap_or_default().to_owned();
    fake.answer(call, |_| {
        json!({
            "object": "invoice", "amount_due": 1500, "currency": "usd",
            "lines": { "object": "list", "data": [
                { "description": "Unused time on the old plan", "amount": -500,
                  "parent": { "subscription_item_details": { "proration": true } },
                  "pricing": { "price_details": { "price": "price_old" } } },
                { "description": "Remaining time on the new plan", "amount": 2000,
                  "parent": { "subscription_item_details": { "proration": true } },
                  "pricing": { "price_details": { "price": new_price } } }
            ] }
        })
    })
    .await
}

async fn read(State(fake): State<FakeStripeBilling>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let call = call(&Method::GET, &format!("/v1/subscriptions/{id}"), &headers, Vec::new());
    fake.lock().calls.push(call);
    match fake.lock().subscriptions.get(&id) {
        Some(subscription) => reply(200, subscription.clone()),
        None => reply(
            404,
            json!({ "error": { "code": "resource_missing", "message": format!("No such subscription: '{id}'") } }),
        ),
    }
}

async fn update(
    State(fake): State<FakeStripeBilling>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let call = call(&Method::POST, &format!("/v1/subscriptions/{id}"), &headers, form);
    let (cancel, price) =
        (call.param("cancel_at_period_end").map(|v| v == "true"), call.param("items[0][price]").map(str::to_owned));
    fake.answer(call, |inner| {
        let subscription = inner.subscriptions.entry(id.clone()).or_insert_with(|| json!({ "id": id }));
        if let Some(cancel) = cancel {
            subscription["cancel_at_period_end"] = json!(cancel);
        }
        if let Some(price) = price {
            subscription["items"]["data"][0]["price"]["id"] = json!(price);
        }
        subscription.clone()
    })
    .await
}

async fn cancel(State(fake): State<FakeStripeBilling>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let call = call(&Method::DELETE, &format!("/v1/subscriptions/{id}"), &headers, Vec::new());
    fake.answer(call, |inner| {
        let subscription = inner.subscriptions.entry(id.clone()).or_insert_with(|| json!({ "id": id }));
        subscription["status"] = json!("canceled");
        subscription["ended_at"] = json!(1_800_000_000);
        subscription["canceled_at"] = json!(1_800_000_000);
        subscription.clone()
    })
    .await
}

/// A price belongs to `prod_<tier>`: its id up to the last `_` (`price_starter_monthly` ->
/// `prod_starter`), as a Stripe account with one product per tier would answer.
async fn price(State(fake): State<FakeStripeBilling>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    fake.lock().calls.push(call(&Method::GET, &format!("/v1/prices/{id}"), &headers, Vec::new()));
    let tier = id.trim_start_matches("price_").split('_').next().unwrap_or_default().to_owned();
    reply(200, json!({ "id": id, "object": "price", "product": format!("prod_{tier}") }))
}

async fn portal_configuration(
    State(fake): State<FakeStripeBilling>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let call = call(&Method::POST, "/v1/billing_portal/configurations", &headers, form);
    fake.answer(call, |inner| {
        inner.sessions += 1;
        json!({ "id": format!("bpc_fake{}", inner.sessions), "object": "billing_portal.configuration" })
    })
    .await
}
