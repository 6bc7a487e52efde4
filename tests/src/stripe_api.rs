//! A fake Stripe API: a real HTTP server on 127.0.0.1:0 serving `GET /v1/events` from a list of
//! event bodies, newest first, paginated with `limit` and `starting_after`, with scripted failures
//! (a status, optionally with `Retry-After`) and a record of every request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One request it saw.
#[derive(Debug, Clone)]
pub struct Request {
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
        Router::new().route("/v1/events", get(list)).with_state(self.clone())
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

async fn list(State(fake): State<FakeStripe>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let query = query.unwrap_or_default();
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut inner = fake.lock();
    let record = |inner: &mut Inner, status: u16| {
        inner.requests.push(Request {
            query: query.clone(),
            authorization: authorization.clone(),
            at: Instant::now(),
            status,
        });
    };
    if let Some((status, retry_after)) = inner.script.pop_front() {
        record(&mut inner, status);
        let mut response = (StatusCode::from_u16(status).expect("status"), "scripted").into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert("retry-after", secs.to_string().parse().expect("header"));
        }
        return response;
    }
    if let Some((pages, status)) = inner.fail_after_pages
        && inner.served_pages >= pages
    {
        record(&mut inner, status);
        return (StatusCode::from_u16(status).expect("status"), "failing").into_response();
    }
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.replace("%5B", "[").replace("%5D", "]"), v.to_owned()))
        .collect();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let limit: usize = param("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let types: Vec<&String> = params.iter().filter(|(k, _)| k == "types[]").map(|(_, v)| v).collect();
    let since: Option<i64> = param("created[gte]").and_then(|v| v.parse().ok());
    let newest_first: Vec<&Vec<u8>> = inner
        .events
        .iter()
        .rev()
        .filter(|body| {
            let value: serde_json::Value = serde_json::from_slice(body).expect("json");
            let type_ok = types.is_empty() || types.iter().any(|t| value["type"].as_str() == Some(t.as_str()));
            let time_ok = since.is_none_or(|s| value["created"].as_i64().unwrap_or(0) >= s);
            type_ok && time_ok
        })
        .collect();
    let start = match param("starting_after") {
        Some(cursor) => match newest_first.iter().position(|b| id_of(b) == cursor) {
            Some(at) => at + 1,
            None => return (StatusCode::BAD_REQUEST, "no such starting_after").into_response(),
        },
        None => 0,
    };
    let page: Vec<&Vec<u8>> = newest_first.iter().skip(start).take(limit).copied().collect();
    let has_more = start + page.len() < newest_first.len();
    let mut body = b"{\n  \"object\": \"list\",\n  \"url\": \"/v1/events\",\n  \"has_more\": ".to_vec();
    body.extend_from_slice(if has_more { b"true" } else { b"false" });
    body.extend_from_slice(b",\n  \"data\": [");
    for (i, event) in page.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]\n}");
    inner.served_pages += 1;
    record(&mut inner, 200);
    ([("content-type", "application/json")], body).into_response()
}
