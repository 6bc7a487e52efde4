//! A fake Dokku-style provisioner: a real HTTP server on 127.0.0.1:0 that records every call and
//! answers from a script (default 200). Like a real idempotent API, a repeated `Idempotency-Key`
//! that succeeded gets the first answer again; like a real one too, every other create makes a new
//! app (`app-sub-x`, then `app-sub-x-2`, ...), so a create sent twice under two keys leaks an app,
//! visible in [`FakeProvisioner::live_apps`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `POST`, `PUT`, `DELETE`.
    pub method: String,
    /// `/provision`, `/update`, `/deprovision`.
    pub path: String,
    /// `X-API-Key`.
    pub api_key: Option<String>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// JSON body.
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    script: VecDeque<u16>,
    always: Option<u16>,
    latency: std::time::Duration,
    done: HashMap<String, Value>,
    created_per_subscription: HashMap<String, usize>,
    /// Live app -> its subscription.
    live: std::collections::BTreeMap<String, String>,
    slow_creates: VecDeque<std::time::Duration>,
}

/// The fake.
#[derive(Clone)]
pub struct FakeProvisioner {
    /// Its base URL.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    /// Open: answer. Closed (`hold()`): calls are recorded and then wait.
    gate: Arc<watch::Sender<bool>>,
}

impl FakeProvisioner {
    /// Starts one.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let fake =
            Self { url: format!("http://{addr}"), inner: Arc::default(), gate: Arc::new(watch::channel(true).0) };
        let app = fake.router();
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// Starts one over HTTPS with a certificate from `ca`, at `https://localhost:<port>`.
    pub async fn start_tls(ca: &crate::tls::TestCa) -> Self {
        let mut fake = Self { url: String::new(), inner: Arc::default(), gate: Arc::new(watch::channel(true).0) };
        let addr = ca.serve(fake.router()).await;
        fake.url = format!("https://localhost:{}", addr.port());
        fake
    }

    fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// The next answers' statuses, in order (then 200, or the `always` status).
    pub fn script(&self, statuses: &[u16]) {
        self.lock().script.extend(statuses);
    }

    /// Every answer has this status.
    pub fn always(&self, status: u16) {
        self.lock().always = Some(status);
    }

    /// Every answer takes this long (a real provisioner takes seconds to start an app).
    pub fn latency(&self, latency: std::time::Duration) {
        self.lock().latency = latency;
    }

    /// The next creates do their work (the app exists) but answer only after these delays: a
    /// client with a shorter timeout never hears about the app.
    pub fn slow_creates(&self, delays: &[std::time::Duration]) {
        self.lock().slow_creates.extend(delays);
    }

    /// Apps that exist now (created and not deprovisioned).
    pub fn live_apps(&self) -> Vec<String> {
        self.lock().live.keys().cloned().collect()
    }

    /// Live apps per subscription (more than one: a create sent twice under two keys).
    pub fn live_apps_by_subscription(&self) -> HashMap<String, Vec<String>> {
        let mut by_subscription: HashMap<String, Vec<String>> = HashMap::new();
        for (app, subscription) in &self.lock().live {
            by_subscription.entry(subscription.clone()).or_default().push(app.clone());
        }
        by_subscription
    }

    /// Calls are recorded, then wait until [`FakeProvisioner::release`].
    pub fn hold(&self) {
        self.gate.send_replace(false);
    }

    /// Lets held and later calls through.
    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Waits until `n` calls were recorded.
    pub async fn wait_calls(&self, n: usize) -> Vec<Call> {
        crate::wait::until(std::time::Duration::from_secs(30), &format!("{n} provisioner calls"), || async {
            let calls = self.calls();
            (calls.len() >= n).then_some(calls)
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn handle(
    State(fake): State<FakeProvisioner>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let call = Call {
        method: method.to_string(),
        path: uri.path().to_owned(),
        api_key: header("x-api-key"),
        idempotency_key: header("idempotency-key"),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    };
    fake.lock().calls.push(call.clone());
    let latency = fake.lock().latency;
    tokio::time::sleep(latency).await;
    let mut open = fake.gate.subscribe();
    if open.wait_for(|open| *open).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let (answer, delay) = {
        let mut inner = fake.lock();
        if let Some(previous) = call.idempotency_key.as_ref().and_then(|k| inner.done.get(k)) {
            return (StatusCode::OK, axum::Json(previous.clone())).into_response();
        }
        let status = inner.script.pop_front().or(inner.always).unwrap_or(200);
        if status != 200 {
            let code = StatusCode::from_u16(status).expect("status");
            return (code, format!("scripted {status}")).into_response();
        }
        let mut delay = None;
        let answer = match call.path.as_str() {
            "/provision" => {
                let sub = call.body["subscription_id"].as_str().unwrap_or("unknown").to_owned();
                let n = inner.created_per_subscription.entry(sub.clone()).or_default();
                *n += 1;
                let suffix = if *n == 1 { String::new() } else { format!("-{n}") };
                let app = format!("app-{}{suffix}", sub.replace('_', "-"));
                inner.live.insert(app.clone(), sub.clone());
                delay = inner.slow_creates.pop_front();
                json!({
                    "app_name": app,
                    "subdomain": app,
                    "frontend_url": format!("https://{app}.apps.test"),
                    "backend_url": format!("https://api-{app}.apps.test"),
                })
            }
            "/deprovision" => {
                let app = call.body["app_name"].as_str().unwrap_or_default().to_owned();
                inner.live.remove(&app);
                json!({ "ok": true })
            }
            _ => json!({ "ok": true }),
        };
        if let Some(key) = &call.idempotency_key {
            inner.done.insert(key.clone(), answer.clone());
        }
        (answer, delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    (StatusCode::OK, axum::Json(answer)).into_response()
}
