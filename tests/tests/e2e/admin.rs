//! Issue 27, finding 9: the console and `/metrics` live on admin listeners, never on the public
//! ones; the console's password resists guessing scripts, and its one write (Retry) works on any
//! replica but never from another site.

use std::sync::Arc;

use api::console::ConsoleSettings;
use domain::clock::SystemClock;
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{TestProjector, effect_settings, settings};
use secrecy::SecretString;
use shared::config::ConsoleAccess;

const PASSWORD: &str = "admin-test-password-0123";

async fn with_console(db: &TestDb, dir: &std::path::Path) -> TestProjector {
    let mut settings = settings(ledger_tests::projector::catalog(), 50, effect_settings(dir));
    settings.console =
        ConsoleSettings { access: ConsoleAccess::Password(SecretString::from(PASSWORD)), webhook_secrets: Vec::new() };
    TestProjector::start_settings(settings, db.service_pool(4), Arc::new(SystemClock)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_and_metrics_answer_only_on_the_admin_listeners() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("dir");
    let projector = with_console(&db, dir.path()).await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let http = reqwest::Client::new();
    for path in ["/metrics", "/console"] {
        let public = http.get(format!("http://{}{path}", projector.addr)).send().await.expect("request");
        assert_eq!(public.status(), 404, "{path} is not on PROJECTOR_ADDR");
        let body: serde_json::Value = public.json().await.expect("the API's JSON error");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, metrics) = projector.admin_get("/metrics").await;
    assert!(status == 200 && metrics.contains("projector_leader"), "{status}");
    let console = http.get(format!("http://{}/console", projector.admin_addr)).send().await.expect("request");
    assert_eq!(console.status(), 401, "the admin listener asks for the password");
    assert_eq!(ingest.get("/metrics").await.0, 404, "not on INGEST_ADDR");
    let (status, metrics) = ingest.admin_get("/metrics").await;
    assert!(status == 200 && metrics.contains("ingest_requests"), "{status}: {metrics}");
    assert_eq!(projector.get("/healthz").await.0, 200, "the probes stay public");
    assert_eq!(ingest.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_wrong_passwords_in_a_minute_lock_the_address_out_for_a_minute() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("dir");
    let projector = with_console(&db, dir.path()).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/console", projector.admin_addr);
    let attempt = |password: &'static str| http.get(&url).basic_auth("operator", Some(password)).send();
    assert_eq!(attempt(PASSWORD).await.expect("request").status(), 200, "the right password opens it");
    assert_eq!(http.get(&url).send().await.expect("request").status(), 401, "no credentials: not a failed login");
    for i in 0..10 {
        let status = attempt("a-wrong-guess-of-16").await.expect("request").status();
        assert_eq!(status, 401, "guess {}", i + 1);
    }
    let locked = attempt(PASSWORD).await.expect("request");
    assert_eq!(locked.status(), 429, "even the right password, for a minute");
    let retry: u64 = locked
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_form_from_one_replica_works_on_another_but_never_from_another_origin() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (with_console(&db, dir.path()).await, with_console(&db, dir.path()).await);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let page = http
        .get(format!("http://{}/console/effects", a.admin_addr))
        .basic_auth("operator", Some(PASSWORD))
        .send()
        .await
        .expect("request");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers().get("referrer-policy").and_then(|v| v.to_str().ok()), Some("same-origin"));
    let token = console_csrf(&db, &a).await;
    let post = |origin: String, csrf: &str| {
        http.post(format!("http://{}/console/effects/retry", b.admin_addr))
            .basic_auth("operator", Some(PASSWORD))
            .header("origin", origin)
            .form(&[("key", "instance:sub_none:1"), ("csrf", csrf)])
            .send()
    };
    let foreign = post("https://evil.test".to_owned(), &token).await.expect("request");
    assert_eq!(foreign.status(), 403, "a form another site submits");
    let forged = post(format!("http://{}", b.admin_addr), "0000").await.expect("request");
    assert_eq!(forged.status(), 403, "a wrong token");
    let accepted = post(format!("http://{}", b.admin_addr), &token).await.expect("request");
    assert_eq!(accepted.status(), 303, "replica a's token on replica b: {:?}", accepted.text().await);
}

/// The CSRF token a console's Retry form carries: a failed effect is made so the form is shown.
async fn console_csrf(db: &TestDb, projector: &TestProjector) -> String {
    sqlx::query(
        "INSERT INTO ledger.effects (key, kind, attempt, request, outcome, error, subject_type, subject)
         VALUES ('instance:sub_csrf:1', 'provision', 3, 'POST /provision', 'failed', 'boom', 'subscription', 'sub_csrf')",
    )
    .execute(&db.pool)
    .await
    .expect("a failed effect");
    let html = reqwest::Client::new()
        .get(format!("http://{}/console/effects", projector.admin_addr))
        .basic_auth("operator", Some(PASSWORD))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("page");
    let at = html.find("name=\"csrf\" value=\"").expect("the Retry form") + "name=\"csrf\" value=\"".len();
    html[at..].chars().take_while(|c| *c != '"').collect()
}

/// Issue 32: the customer page shows each erasure of the customer (who, when, why, how many bodies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_page_shows_who_erased_the_customer_when_and_why() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("dir");
    let projector = with_console(&db, dir.path()).await;
    let erasure: i64 = sqlx::query_scalar(
        "INSERT INTO ledger.erasures (stripe_customer_id, reason, requested_by, positions)
         VALUES ('cus_gone', 'GDPR request 17', 'owner (ada)', '{7}')
         RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .expect("erasure");
    sqlx::query("INSERT INTO ledger.redactions (erasure_id, position, redacted_sha256) VALUES ($1, 7, sha256('x'))")
        .bind(erasure)
        .execute(&db.pool)
        .await
        .expect("redaction");
    let http = reqwest::Client::new();
    let page = |q: &'static str| {
        http.get(format!("http://{}/console/customer?q={q}", projector.admin_addr))
            .basic_auth("operator", Some(PASSWORD))
            .send()
    };
    let erased = page("cus_gone").await.expect("request").text().await.expect("page");
    assert!(
        erased.contains("erased")
            && erased.contains("owner (ada)")
            && erased.contains("GDPR request 17")
            && erased.contains("1 bodies redacted"),
        "{erased}"
    );
    let other = page("cus_other").await.expect("request").text().await.expect("page");
    assert!(!other.contains("GDPR request 17"), "only on its customer's page");
}
