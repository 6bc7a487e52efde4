//! A fake Stripe API: a real HTTP server on 127.0.0.1:0 serving `GET /v1/events` from a list of
//! event bodies and `GET /v1/customers`, `/v1/subscriptions` (canceled ones only with
//! `status=all`, as Stripe does), `/v1/prices` and `/v1/prices/{id}` from objects it holds, and the
//! sub-lists `/v1/checkout/sessions/{id}/line_items` and `/v1/invoices/{id}/lines` (in the order
//! given, 404 when not held); lists newest first, paginated with `limit` and `starting_after`, with scripted failures (a status,
//! optionally with `Retry-After`) and a record of every request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One request it saw.
#[derive(Debug, Clone)]
pub struct Request {
    /// The path.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The bearer key.
    pub authorization: Option<String>,
    /// When.
    pub at: Instant,
    /// What it answered.
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    /// Event bodies, oldest first (served newest first).
    events: Vec<Vec<u8>>,
    /// Objects by kind (`customers`, `subscriptions`, `prices`), oldest first.
    objects: std::collections::HashMap<&'static str, Vec<serde_json::Value>>,
    /// Sub-lists by path, in order.
    lists: std::collections::HashMap<String, Vec<serde_json::Value>>,
    script: VecDeque<(u16, Option<u64>)>,
    fail_after_pages: Option<(usize, u16)>,
    served_pages: usize,
    requests: Vec<Request>,
}

/// The fake.
#[derive(Clone)]
pub struct FakeStripe {
    /// Base URL (`STRIPE_API_BASE`).
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn id_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).expect("event JSON");
    value["id"].as_str().expect("event id").to_owned()
}

impl FakeStripe {
    /// Serves `events` (oldest first, as bodies).
    pub async fn start(events: Vec<Vec<u8>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = Self { url, inner: Arc::new(Mutex::new(Inner { events, ..Inner::default() })) };
        let app = fake.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// Serves `events` over HTTPS with a certificate from `ca`, at `https://localhost:<port>`.
    pub async fn start_tls(events: Vec<Vec<u8>>, ca: &crate::tls::TestCa) -> Self {
        let mut fake = Self { url: String::new(), inner: Arc::new(Mutex::new(Inner { events, ..Inner::default() })) };
        let addr = ca.serve(fake.router()).await;
        fake.url = format!("https://localhost:{}", addr.port());
        fake
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/v1/events", get(events))
            .route("/v1/customers", get(|f, q, h| objects(f, q, h, "customers")))
            .route("/v1/subscriptions", get(|f, q, h| objects(f, q, h, "subscriptions")))
            .route("/v1/prices", get(|f, q, h| objects(f, q, h, "prices")))
            .route("/v1/prices/{id}", get(|f, p, q, h| one(f, p, q, h, "prices")))
            .route("/v1/customers/{id}", get(|f, p, q, h| one(f, p, q, h, "customers")))
            .route("/v1/subscriptions/{id}", get(|f, p, q, h| one(f, p, q, h, "subscriptions")))
            .route("/v1/invoices/{id}", get(|f, p, q, h| one(f, p, q, h, "invoices")))
            .route("/v1/checkout/sessions/{id}", get(|f, p, q, h| one(f, p, q, h, "checkout/sessions")))
            .route("/v1/checkout/sessions/{id}/line_items", get(|f, p, q, h| sublist(f, p, q, h, "checkout_items")))
            .route("/v1/invoices/{id}/lines", get(|f, p, q, h| sublist(f, p, q, h, "invoice_lines")))
            .with_state(self.clone())
    }

    /// Holds the items of a Checkout Session's line items (`line_items` of `cs_...`) or an
    /// invoice's lines (`lines` of `in_...`), in order.
    pub fn put_list(&self, parent: &str, items: Vec<serde_json::Value>) {
        let path = if parent.starts_with("cs_") {
            format!("/v1/checkout/sessions/{parent}/line_items")
        } else {
            format!("/v1/invoices/{parent}/lines")
        };
        self.lock().lists.insert(path, items);
    }

    /// Holds `object` (a customer, subscription, price, invoice or Checkout Session, by its
    /// `object` field), replacing one with the same id (kept in its place).
    pub fn put(&self, object: serde_json::Value) {
        let kind = match object["object"].as_str() {
            Some("customer") => "customers",
            Some("subscription") => "subscriptions",
            Some("price") => "prices",
            Some("invoice") => "invoices",
            Some("checkout.session") => "checkout/sessions",
            other => panic!("the fake holds no {other:?}"),
        };
        let mut inner = self.lock();
        let list = inner.objects.entry(kind).or_default();
        match list.iter_mut().find(|o| o["id"] == object["id"]) {
            Some(held) => *held = object,
            None => list.push(object),
        }
    }

    /// The next requests answer these statuses (with a `Retry-After` in seconds, if given).
    pub fn script(&self, answers: &[(u16, Option<u64>)]) {
        self.lock().script.extend(answers.iter().copied());
    }

    /// After `pages` successful pages, every request answers `status` (until [`FakeStripe::heal`]).
    pub fn fail_after(&self, pages: usize, status: u16) {
        self.lock().fail_after_pages = Some((pages, status));
    }

    /// Stops failing.
    pub fn heal(&self) {
        self.lock().fail_after_pages = None;
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The query's parameters, brackets decoded.
fn params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.replace("%5B", "[").replace("%5D", "]"), v.to_owned()))
        .collect()
}

/// Records the request; the answer to give instead when a failure is scripted or ongoing.
fn gate(inner: &mut Inner, path: &str, query: &str, headers: &HeaderMap) -> Option<Response> {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut record = |status: u16| {
        let (path, query) = (path.to_owned(), query.to_owned());
        inner.requests.push(Request { path, query, authorization: authorization.clone(), at: Instant::now(), status });
    };
    if let Some((status, retry_after)) = inner.script.pop_front() {
        record(status);
        let mut response = (StatusCode::from_u16(status).expect("status"), "scripted").into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert("retry-after", secs.to_string().parse().expect("header"));
        }
        return Some(response);
    }
    if let Some((pages, status)) = inner.fail_after_pages
        && inner.served_pages >= pages
    {
        record(status);
        return Some((StatusCode::from_u16(status).expect("status"), "failing").into_response());
    }
    inner.served_pages += 1;
    record(200);
    None
}

/// Where a page starts in `ids` (newest first) and how long it is; `None` for an unknown cursor.
fn window(ids: &[&str], params: &[(String, String)]) -> Option<(usize, usize)> {
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let limit: usize = param("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let start = match param("starting_after") {
        Some(cursor) => match ids.iter().position(|id| *id == cursor) {
            Some(at) => at + 1,
            None => return None,
        },
        None => 0,
    };
    Some((start, limit))
}

/// Stripe's list JSON around `items`.
fn list_body(url: &str, items: &[Vec<u8>], has_more: bool) -> Response {
    let mut body = format!("{{\n  \"object\": \"list\",\n  \"url\": \"{url}\",\n  \"has_more\": ").into_bytes();
    body.extend_from_slice(if has_more { b"true" } else { b"false" });
    body.extend_from_slice(b",\n  \"data\": [");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]\n}");
    ([("content-type", "application/json")], body).into_response()
}

/// One page of `newest_first` (bodies) after `starting_after`.
fn page(url: &str, newest_first: &[Vec<u8>], params: &[(String, String)]) -> Response {
    let ids: Vec<String> = newest_first.iter().map(|b| id_of(b)).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let Some((start, limit)) = window(&ids, params) else {
        return (StatusCode::BAD_REQUEST, "no such starting_after").into_response();
    };
    let page: Vec<Vec<u8>> = newest_first.iter().skip(start).take(limit).cloned().collect();
    list_body(url, &page, start + page.len() < newest_first.len())
}

async fn events(State(fake): State<FakeStripe>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let query = query.unwrap_or_default();
    let mut inner = fake.lock();
    if let Some(failure) = gate(&mut inner, "/v1/events", &query, &headers) {
        return failure;
    }
    let params = params(&query);
    let types: Vec<&String> = params.iter().filter(|(k, _)| k == "types[]").map(|(_, v)| v).collect();
    let since: Option<i64> = params.iter().find(|(k, _)| k == "created[gte]").and_then(|(_, v)| v.parse().ok());
    let newest_first: Vec<Vec<u8>> = inner
        .events
        .iter()
        .rev()
        .filter(|body| {
            let value: serde_json::Value = serde_json::from_slice(body).expect("json");
            let type_ok = types.is_empty() || types.iter().any(|t| value["type"].as_str() == Some(t.as_str()));
            let time_ok = since.is_none_or(|s| value["created"].as_i64().unwrap_or(0) >= s);
            type_ok && time_ok
        })
        .cloned()
        .collect();
    page("/v1/events", &newest_first, &params)
}

async fn objects(
    State(fake): State<FakeStripe>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    kind: &'static str,
) -> Response {
    let query = query.unwrap_or_default();
    let path = format!("/v1/{kind}");
    let mut inner = fake.lock();
    if let Some(failure) = gate(&mut inner, &path, &query, &headers) {
        return failure;
    }
    let params = params(&query);
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let (status, active) = (param("status"), param("active"));
    let newest_first: Vec<&serde_json::Value> = inner
        .objects
        .get(kind)
        .into_iter()
        .flatten()
        .rev()
        .filter(|o| match kind {
            // Stripe lists canceled subscriptions only when asked for status=all.
            "subscriptions" => status == Some("all") || o["status"] != "canceled",
            "prices" => active.is_none_or(|a| o["active"].as_bool() == Some(a == "true")),
            // Deleted customers are not listed (a GET by id answers their stub).
            _ => o["deleted"] != true,
        })
        .collect();
    let ids: Vec<&str> = newest_first.iter().map(|o| o["id"].as_str().unwrap_or_default()).collect();
    let Some((start, limit)) = window(&ids, &params) else {
        return (StatusCode::BAD_REQUEST, "no such starting_after").into_response();
    };
    let page: Vec<Vec<u8>> =
        newest_first.iter().skip(start).take(limit).map(|o| serde_json::to_vec(o).expect("json")).collect();
    list_body(&path, &page, start + page.len() < newest_first.len())
}

async fn one(
    State(fake): State<FakeStripe>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    kind: &'static str,
) -> Response {
    let mut inner = fake.lock();
    if let Some(failure) = gate(&mut inner, &format!("/v1/{kind}/{id}"), &query.unwrap_or_default(), &headers) {
        return failure;
    }
    match inner.objects.get(kind).into_iter().flatten().find(|o| o["id"] == id.as_str()) {
        Some(object) => axum::Json(object.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": { "code": "resource_missing", "message": format!("No such {kind}: '{id}'") } })),
        )
            .into_response(),
    }
}

async fn sublist(
    State(fake): State<FakeStripe>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    kind: &'static str,
) -> Response {
    let path = match kind {
        "checkout_items" => format!("/v1/checkout/sessions/{id}/line_items"),
        _ => format!("/v1/invoices/{id}/lines"),
    };
    let query = query.unwrap_or_default();
    let mut inner = fake.lock();
    if let Some(failure) = gate(&mut inner, &path, &query, &headers) {
        return failure;
    }
    let Some(items) = inner.lists.get(&path) else {
        let error = serde_json::json!({ "error": { "code": "resource_missing", "message": format!("No such object: '{id}'") } });
        return (StatusCode::NOT_FOUND, axum::Json(error)).into_response();
    };
    let ids: Vec<&str> = items.iter().map(|o| o["id"].as_str().unwrap_or_default()).collect();
    let Some((start, limit)) = window(&ids, &params(&query)) else {
        return (StatusCode::BAD_REQUEST, "no such starting_after").into_response();
    };
    let page: Vec<Vec<u8>> =
        items.iter().skip(start).take(limit).map(|o| serde_json::to_vec(o).expect("json")).collect();
    list_body(&path, &page, start + page.len() < items.len())
}
