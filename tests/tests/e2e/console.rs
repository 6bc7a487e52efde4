//! The operator console in a real browser (headless Chromium through chromedriver): the release of
//! `projector` as deployed (a password, a provisioner that fails), a lifecycle posted through
//! ingest, and what a person would see on each page. Screenshots land in
//! `target/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them and sets
//! `LEDGER_BROWSER_TESTS=required`); without them the test says so and passes, unless required.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::provisioner::FakeProvisioner;
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::{bin, wait};
use serde_json::json;

const PASSWORD: &str = "console-test-password-0123";
const BILLING_KEY: &str = ledger_tests::projector::BILLING_KEY;
const SCRIPT_NAME: &str = "<script>alert('owned')</script>";

/// chromedriver and Chromium, or None (with a note) when they are not installed.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let (driver, chromium) = (PathBuf::from("/usr/bin/chromedriver"), PathBuf::from("/usr/bin/chromium"));
    if driver.exists() && chromium.exists() {
        return Some((driver, chromium));
    }
    let required = std::env::var("LEDGER_BROWSER_TESTS").is_ok_and(|v| v == "required");
    assert!(!required, "LEDGER_BROWSER_TESTS=required but chromium or chromedriver is missing");
    eprintln!("console browser test skipped: install Debian's chromium and chromium-driver to run it");
    None
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(driver: &PathBuf, chromium: &PathBuf) -> (Driver, Client) {
    let port = bin::free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    wait::until(Duration::from_secs(30), "chromedriver to answer", || async {
        reqwest::get(format!("{url}/status")).await.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;
    let profile = tempfile::tempdir().expect("profile").keep();
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ];
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));
    // fantoccini's client is built on rustls; this process may not have chosen a provider yet.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client =
        ClientBuilder::rustls().expect("tls").capabilities(caps).connect(&url).await.expect("a browser session");
    (driver, client)
}

async fn screenshot(client: &Client, name: &str) {
    let dir = ledger_tests::db::workspace_root().join("target").join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("dir");
    // The whole page: the window as tall as the document (WebDriver shoots the viewport).
    let height = client.execute("return document.documentElement.scrollHeight", vec![]).await.expect("height");
    let height = height.as_u64().map_or(900, |h| u32::try_from(h).unwrap_or(900).clamp(900, 4000));
    client.set_window_size(1280, height + 140).await.expect("resize");
    let png = client.screenshot().await.expect("screenshot");
    client.set_window_size(1280, 900).await.expect("resize");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

/// Clicks the first element `css` selects and waits for the page it leads to.
async fn click(client: &Client, css: &str) {
    let before = client.current_url().await.expect("url");
    client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.expect("click");
    wait::until(Duration::from_secs(10), "the click to lead to another page", || async {
        (client.current_url().await.expect("url") != before).then_some(())
    })
    .await;
    client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("main h1")).await.expect("the page");
}

/// The texts of the elements `css` selects.
async fn texts(client: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for element in client.find_all(Locator::Css(css)).await.expect("find") {
        out.push(element.text().await.expect("text"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_the_story_the_anomaly_and_retries_a_failed_effect_in_a_browser() {
    let Some((driver_path, chromium)) = browser_binaries() else { return };
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let provisioner = FakeProvisioner::start().await;
    provisioner.always(500);
    let url = db.url().await;
    let logs = tempfile::tempdir().expect("dir");
    let mail_dir = logs.path().join("mail");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("MIGRATE_ON_START", "false"),
        ("STRIPE_WEBHOOK_SECRET", stripe::SECRET),
        ("CONSOLE_PASSWORD", PASSWORD),
        ("BILLING_API_KEY", BILLING_KEY),
        ("PROVISIONER_URL", provisioner.url.as_str()),
        ("ALLOW_INSECURE_HTTP", "true"),
        ("EFFECT_MAX_ATTEMPTS", "2"),
        ("EFFECT_BACKOFF_MS", "10"),
        ("MAIL_DIR", mail_dir.to_str().expect("utf-8")),
        ("RUST_LOG", "warn"),
    ];
    let log = std::fs::File::create(logs.path().join("projector.log")).expect("log");
    let projector = bin::start("projector", "PROJECTOR_ADDR", &env, log).await;

    // A customer whose name is a script, a subscription that provisions (and fails), and one on
    // a price the catalog does not know.
    let t = stripe::now();
    let mut customer = stripe::customer("cus_console");
    customer["name"] = json!(SCRIPT_NAME);
    customer["email"] = json!("console@example.com");
    customer["created"] = json!(t);
    let created = stripe::event(&stripe::event_id(), "customer.created", t, customer);
    let snap = SubSnapshot::new("sub_console", "cus_console", "price_starter_monthly", "active", (t, t + 2_592_000));
    let mystery = SubSnapshot::new("sub_mystery", "cus_console", "price_mystery", "active", (t, t + 2_592_000));
    // An older customer (Stripe created it a day earlier): listed after the console customer.
    let mut older = stripe::customer("cus_older");
    older["created"] = json!(t - 86_400);
    older["email"] = json!("older@example.com");
    let bodies = [
        serde_json::to_vec(&stripe::event(&stripe::event_id(), "customer.created", t - 10, older)).expect("json"),
        serde_json::to_vec(&created).expect("json"),
        stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap),
        stripe::subscription_event("customer.subscription.created", t + 1, Shape::Legacy, &mystery),
    ];
    for body in &bodies {
        assert_eq!(ingest.post_signed(body).await.status(), 200);
    }
    let failed_key = "instance:sub_console:3";
    wait::until(Duration::from_secs(60), "the provision to fail for good", || async {
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.effect_failures WHERE key = $1")
            .bind(failed_key)
            .fetch_one(&db.pool)
            .await
            .expect("failures");
        (failed == 1).then_some(())
    })
    .await;
    wait::until(Duration::from_secs(60), "the starter token to be mailed", || async {
        let delivered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledger.api_tokens WHERE stripe_customer_id = 'cus_console' AND delivered_at IS NOT NULL",
        )
        .fetch_one(&db.pool)
        .await
        .expect("tokens");
        (delivered == 1).then_some(())
    })
    .await;
    // The day's messages used up (starter: 1,000 a day), and what the API says of the credits.
    let http = reqwest::Client::new();
    let usage = http
        .post(format!("{}/v1/usage", projector.url))
        .bearer_auth(BILLING_KEY)
        .json(&json!({ "customer": "cus_console", "metric": "messages", "quantity": 1000, "idempotency_key": "console-1" }))
        .send()
        .await
        .expect("usage");
    assert_eq!(usage.status(), 200);
    let api: serde_json::Value = http
        .get(format!("{}/v1/customers/cus_console", projector.url))
        .bearer_auth(BILLING_KEY)
        .send()
        .await
        .expect("customer")
        .json()
        .await
        .expect("json");
    let balance = api["credits"]["balance"].as_i64().expect("a balance");
    // A billing command refused before Stripe (the customer already has the starter tier): one
    // outcome in today's commands.
    let checkout = http
        .post(format!("{}/v1/checkout/sessions", projector.url))
        .bearer_auth(BILLING_KEY)
        .header("Idempotency-Key", "console-checkout-1")
        .json(&json!({ "price": "price_starter_monthly", "customer": "cus_console",
                       "success_url": "http://localhost/ok", "cancel_url": "http://localhost/no" }))
        .send()
        .await
        .expect("checkout");
    let refusal: serde_json::Value = checkout.json().await.expect("json");
    let refusal = refusal["error"]["code"].as_str().expect("a refusal").to_owned();

    // Without the password: 401, and nothing of the console.
    let public = reqwest::get(format!("{}/console", projector.url)).await.expect("request");
    assert_eq!(public.status(), 404, "the console is not on the public listener");
    let refused = reqwest::get(format!("{}/console", projector.admin_url)).await.expect("request");
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));

    let (_driver, client) = browser(&driver_path, &chromium).await;
    let authed = projector.admin_url.replace("http://", &format!("http://operator:{PASSWORD}@"));
    client.goto(&format!("{authed}/console")).await.expect("overview");
    let cards = texts(&client, ".card").await.join(" | ");
    assert!(
        cards.contains("log head") && cards.contains("active"),
        "{cards}: {}",
        client.source().await.expect("source")
    );
    assert!(
        client.find(Locator::Css("header")).await.expect("header").text().await.expect("text").contains("log head 4")
    );
    let axes = texts(&client, "svg text").await.join(" | ");
    assert!(axes.contains("events per hour") && axes.contains("hour (UTC)"), "both axes titled: {axes}");
    let commands = texts(&client, "table.commands tr td").await.join(" ");
    assert!(commands.contains(&refusal), "today's commands by outcome ({refusal}): {commands}");
    let anomalies = texts(&client, ".card .v.bad").await.join(" | ");
    assert!(anomalies.contains('1'), "the open anomaly is highlighted: {anomalies}");
    screenshot(&client, "overview").await;

    let base = projector.admin_url.clone();
    // Two clicks from the overview: Customers, then the customer (or one of its subscriptions).
    click(&client, "header a[href='/console/customers']").await;
    let listed = texts(&client, "table tr td:first-child code").await;
    assert_eq!(listed, ["cus_console", "cus_older"], "newest first (by Stripe's created)");
    let mrr = texts(&client, "table tr td:last-child").await;
    // Both subscriptions bill Stripe's example price (20.00 a month): revenue counts what Stripe
    // bills, the one on a price the catalog does not know too.
    assert_eq!(mrr[0], "40.00 usd", "{mrr:?}");
    screenshot(&client, "customers").await;
    let search = client.find(Locator::Css("input[name=q]")).await.expect("search box");
    search.send_keys("OLDER@example").await.expect("type");
    click(&client, "form button[type=submit]").await;
    assert_eq!(texts(&client, "table tr td:first-child code").await, ["cus_older"], "searched by part of an email");
    client.back().await.expect("back");
    click(&client, "a[href='/console/subscription/sub_console']").await;
    let subscription = texts(&client, "main").await.join(" ");
    assert!(subscription.contains("Subscription sub_console") && subscription.contains("HTTP 500"), "{subscription}");
    screenshot(&client, "subscription").await;
    client.back().await.expect("back");
    click(&client, "table a[href='/console/customer?q=cus_console']").await;

    let types: Vec<String> = texts(&client, "table.events tr td:nth-child(3) > code").await;
    assert_eq!(
        types,
        ["customer.created", "customer.subscription.created", "customer.subscription.created"],
        "the customer's events in log order"
    );
    let account = client.find(Locator::Css("main p b")).await.expect("name").text().await.expect("text");
    assert_eq!(account, SCRIPT_NAME, "the name renders as text");
    assert!(client.source().await.expect("source").contains("&lt;script&gt;alert('owned')&lt;/script&gt;"));
    assert!(client.get_alert_text().await.is_err(), "no script ran");
    let page = texts(&client, "main").await.join(" ");
    assert!(page.contains("failed") && page.contains("HTTP 500"), "the instance and the provisioner's answer: {page}");
    let tokens = texts(&client, "table.tokens tr td:first-child").await;
    assert_eq!(tokens, ["active"], "the token's state, never the token");
    let shown = client.find(Locator::Css("b.balance")).await.expect("balance").text().await.expect("text");
    assert_eq!(shown, balance.to_string(), "the balance the API computes");
    let at_quota = texts(&client, "tr.at-quota td:first-child").await;
    assert_eq!(at_quota, ["messages at quota"], "the used-up metric highlighted");
    let body =
        client.find(Locator::Css("table.events details pre")).await.expect("a body").html(true).await.expect("html");
    assert!(body.contains("\n  \"id\": \"evt_") && body.contains("\"object\": \"customer\""), "pretty-printed: {body}");
    client.find(Locator::Css("table.events summary")).await.expect("summary").click().await.expect("open a body");
    screenshot(&client, "customer").await;

    // Revenue: the charts with titled axes, today's movement, and the customer behind it.
    click(&client, "header a[href='/console/revenue']").await;
    let axes = texts(&client, "svg text").await.join(" | ");
    assert!(axes.contains("MRR, usd") && axes.contains("MRR moved, usd") && axes.contains("day (UTC)"), "{axes}");
    screenshot(&client, "revenue").await;
    click(&client, "table.revenue a").await;
    let day = texts(&client, "table.day-movements tr td").await.join(" ");
    assert!(day.contains("cus_console") && day.contains("new") && day.contains("20.00 usd"), "{day}");

    client.goto(&format!("{base}/console/anomalies")).await.expect("anomalies");
    let rows = texts(&client, "table tr").await.join("\n");
    assert!(rows.contains("unknown_price") && rows.contains("sub_mystery"), "{rows}");
    screenshot(&client, "anomalies").await;

    client.goto(&format!("{base}/console/effects")).await.expect("effects");
    let rows = texts(&client, "table tr").await.join("\n");
    assert!(rows.contains(failed_key), "{rows}");
    screenshot(&client, "failed-effects").await;
    client
        .find(Locator::Css("form[action='/console/effects/retry'] button"))
        .await
        .expect("Retry")
        .click()
        .await
        .expect("click");
    // The click submits a form: wait for the page it leads to, not the one still shown.
    let flash = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("p.flash"))
        .await
        .expect("flash")
        .text()
        .await
        .expect("text");
    assert!(flash.contains(&format!("Re-armed {failed_key}")), "{flash}");
    let retry: (i32, String, String) = sqlx::query_as(
        "SELECT attempt, outcome, request FROM ledger.effects WHERE key = $1 AND attempt = 0 ORDER BY id DESC LIMIT 1",
    )
    .bind(failed_key)
    .fetch_one(&db.pool)
    .await
    .expect("the retry row");
    assert_eq!(retry, (0, "retry".to_owned(), "re-armed by operator".to_owned()));

    client.goto(&format!("{base}/console/event/1")).await.expect("event");
    let table = texts(&client, "main table").await.join("\n");
    assert!(table.contains("verifies with secret 1") && table.contains("chain hash"), "{table}");
    screenshot(&client, "event").await;
    client.close().await.expect("close");
    drop(projector);
    ingest.stop().await.expect("stop");
}
