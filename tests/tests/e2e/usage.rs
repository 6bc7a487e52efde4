//! `POST /v1/usage` against a real projector and PostgreSQL: quotas that never overshoot, keys
//! that count once, the UTC day on an injected clock, limits that follow the plan, and credits.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::catalog::{Catalog, EXAMPLE};
use domain::clock::{Clock as _, ManualClock};
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{BILLING_KEY, TestProjector, customer_token};
use ledger_tests::stripe::{self, InvoiceOf, Shape, SubSnapshot};
use serde_json::{Value, json};

/// The example catalog with the free tier's messages cut to 50 a day.
fn catalog() -> Catalog {
    Catalog::parse(&EXAMPLE.replace("messages_per_day = 100,", "messages_per_day = 50,")).expect("catalog")
}

/// The catalog with quota windows (issue 31): messages 50 a minute, a day and a period on the
/// free tier; api calls 3 a minute, 1,000 a day and 5 a billing period.
fn windowed() -> Catalog {
    let mut text = EXAMPLE.replace("messages_per_day = 100,", "messages_per_day = 50,");
    for (day, windows) in [
        (
            "messages_per_day = 50, api_calls_per_day = 1000,",
            "messages_per_minute = 50, messages_per_period = 50, api_calls_per_minute = 3, api_calls_per_period = 5,",
        ),
        (
            "messages_per_day = 1000, api_calls_per_day = 10000,",
            "messages_per_minute = 100, messages_per_period = 20000, api_calls_per_minute = 60, api_calls_per_period = 1000,",
        ),
        (
            "messages_per_day = 10000, api_calls_per_day = 100000,",
            "messages_per_minute = 600, messages_per_period = -1, api_calls_per_minute = 600, api_calls_per_period = -1,",
        ),
        (
            "messages_per_day = -1, api_calls_per_day = -1,",
            "messages_per_minute = -1, messages_per_period = -1, api_calls_per_minute = -1, api_calls_per_period = -1,",
        ),
    ] {
        assert!(text.contains(day), "{day}");
        text = text.replace(day, &format!("{day} {windows}"));
    }
    Catalog::parse(&text).expect("catalog")
}

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The `RateLimit-Policy` and `RateLimit` fields parsed as Structured Field Value lists
    /// (RFC 9651), as draft-ietf-httpapi-ratelimit-headers defines them: one item each, the same
    /// policy name (an sf-string), `q` and `w` in the policy, `r` and `t` in the limit.
    fn rate_limit(&self) -> (String, [i64; 4]) {
        let list = |name: &str| -> sfv::List {
            let value = self.headers.get(name).unwrap_or_else(|| panic!("{name} is set")).to_str().expect("ascii");
            sfv::Parser::new(value).parse().unwrap_or_else(|e| panic!("{name}: {value}: {e}"))
        };
        let item = |list: sfv::List| match list.into_iter().next() {
            Some(sfv::ListEntry::Item(item)) => item,
            other => panic!("one item: {other:?}"),
        };
        let (policy, limit) = (item(list("ratelimit-policy")), item(list("ratelimit")));
        let name = |i: &sfv::Item| i.bare_item.as_string().expect("an sf-string name").as_str().to_owned();
        assert_eq!(name(&policy), name(&limit), "the limit names its policy");
        let int = |i: &sfv::Item, key: &str| i.params.get(key).and_then(|v| v.as_integer()).map(i64::from);
        let [q, w, r, t] = [int(&policy, "q"), int(&policy, "w"), int(&limit, "r"), int(&limit, "t")]
            .map(|v| v.expect("q, w, r and t are integers"));
        (name(&policy), [q, w, r, t])
    }
}

struct Usage {
    db: TestDb,
    ingest: TestIngest,
    projector: TestProjector,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
}

/// Today (the real date: tokens expire by the database's clock) at `h:m:s` UTC.
fn today_at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    let day = Utc::now().date_naive();
    Utc.from_utc_datetime(&day.and_hms_opt(h, m, s).expect("time"))
}

impl Usage {
    async fn start() -> Self {
        Self::start_with(catalog()).await
    }

    async fn start_with(catalog: Catalog) -> Self {
        let db = TestDb::new().await;
        let clock = Arc::new(ManualClock::new(today_at(12, 0, 0)));
        let projector = TestProjector::start_billing_with(db.service_pool(8), catalog, None, clock.clone()).await;
        let ingest = TestIngest::start(db.service_pool(2)).await;
        Self { db, ingest, projector, clock, http: reqwest::Client::new() }
    }

    async fn post_event(&self, body: &[u8]) {
        assert_eq!(self.ingest.post_signed(body).await.status(), 200);
        self.projector.caught_up(&self.db.pool).await;
    }

    /// `customer` gets (or moves) subscription `sub` to `price`.
    async fn subscribe(&self, sub: &str, customer: &str, price: &str, event_type: &str) {
        let t = stripe::now();
        let snap = SubSnapshot::new(sub, customer, price, "active", (t, t + 2_592_000));
        self.post_event(&stripe::subscription_event(event_type, t, Shape::Basil, &snap)).await;
    }

    async fn post(&self, bearer: &str, body: &Value) -> Answer {
        let response = self
            .http
            .post(format!("http://{}/v1/usage", self.projector.addr))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let headers = response.headers().clone();
        Answer { status, retry_after, body: response.json().await.unwrap_or(Value::Null), headers }
    }

    async fn count(&self, customer: &str, metric: &str, quantity: i64, key: &str) -> Answer {
        let body = json!({ "customer": customer, "metric": metric, "quantity": quantity, "idempotency_key": key });
        self.post(BILLING_KEY, &body).await
    }

    async fn customer(&self, id: &str) -> Value {
        let (status, body) = self.projector.get_json(&format!("/v1/customers/{id}"), BILLING_KEY).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn rows(&self, customer: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ledger.usage WHERE stripe_customer_id = $1")
            .bind(customer)
            .fetch_one(&self.db.pool)
            .await
            .expect("rows")
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_increments_against_fifty_count_exactly_fifty() {
    let u = Arc::new(Usage::start().await);
    for round in 0..4 {
        let customer = format!("cus_race{round}");
        u.subscribe(&format!("sub_race{round}"), &customer, "price_free_monthly", "customer.subscription.created")
            .await;
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (u, customer) = (u.clone(), customer.clone());
                tokio::spawn(async move { u.count(&customer, "messages", 1, &format!("m{i}")).await.status })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.expect("task"));
        }
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((ok, refused), (50, 14), "round {round}: {statuses:?}");
        let counted: i64 = sqlx::query_scalar(
            "SELECT used FROM ledger.usage_counters WHERE stripe_customer_id = $1 AND metric = 'messages'",
        )
        .bind(&customer)
        .fetch_one(&u.db.pool)
        .await
        .expect("counter");
        assert_eq!((counted, u.rows(&customer).await), (50, 50), "the counter is the sum of the rows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_counts_once_even_concurrently_and_another_body_is_refused() {
    let u = Arc::new(Usage::start().await);
    u.subscribe("sub_k", "cus_k", "price_starter_monthly", "customer.subscription.created").await;
    let first = u.count("cus_k", "api_calls", 3, "call-1").await;
    assert_eq!((first.status, &first.body["used"]), (200, &json!(3)), "{}", first.body);
    let again = u.count("cus_k", "api_calls", 3, "call-1").await;
    assert_eq!((again.status, &again.body), (200, &first.body), "the first answer, nothing counted");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let u = u.clone();
            tokio::spawn(async move { u.count("cus_k", "api_calls", 2, "call-2").await })
        })
        .collect();
    let mut used = Vec::new();
    for task in tasks {
        let answer = task.await.expect("task");
        assert_eq!(answer.status, 200, "{}", answer.body);
        used.push(answer.body["used"].clone());
    }
    assert!(used.iter().all(|u| *u == json!(5)), "one count of 2 on top of 3, answered 16 times: {used:?}");
    assert_eq!(u.rows("cus_k").await, 2);
    let reused = u.count("cus_k", "api_calls", 7, "call-1").await;
    assert_eq!((reused.status, code(&reused.body)), (422, "idempotency_key_reused"));
    let reused = u.count("cus_k", "messages", 3, "call-1").await;
    assert_eq!((reused.status, code(&reused.body)), (422, "idempotency_key_reused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_utc_day_ends_at_midnight_and_retry_after_says_when() {
    let u = Usage::start().await;
    u.subscribe("sub_d", "cus_d", "price_free_monthly", "customer.subscription.created").await;
    u.clock.set(today_at(23, 59, 58));
    assert_eq!(u.count("cus_d", "messages", 49, "a").await.status, 200);
    u.clock.set(today_at(23, 59, 59));
    let last = u.count("cus_d", "messages", 1, "b").await;
    assert_eq!((last.status, &last.body["remaining"]), (200, &json!(0)), "23:59:59 counts for today");
    let tomorrow = today_at(0, 0, 0) + Duration::days(1);
    assert_eq!(last.body["resets_at"], json!(tomorrow.to_rfc3339()));
    let over = u.count("cus_d", "messages", 1, "c").await;
    assert_eq!((over.status, code(&over.body), over.retry_after), (429, "quota_exceeded", Some(1)));
    assert_eq!(over.body["error"]["used"], 50, "{}", over.body);
    u.clock.set(tomorrow);
    let fresh = u.count("cus_d", "messages", 1, "c").await;
    assert_eq!((fresh.status, &fresh.body["used"]), (200, &json!(1)), "00:00:00 starts a new day: {}", fresh.body);
    let too_many = u.count("cus_d", "messages", 50, "d").await;
    assert_eq!((too_many.status, too_many.retry_after), (429, Some(86_400)), "nothing counted: {}", too_many.body);
    let customer = u.customer("cus_d").await;
    assert_eq!(customer["usage"]["messages"]["used"], 1, "{customer}");
    assert_eq!(customer["usage"]["messages"]["limit"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_raises_the_limit_at_once_and_unlimited_never_refuses() {
    let u = Usage::start().await;
    u.subscribe("sub_u", "cus_u", "price_free_monthly", "customer.subscription.created").await;
    assert_eq!(u.count("cus_u", "messages", 50, "fill").await.status, 200);
    assert_eq!(u.count("cus_u", "messages", 1, "over").await.status, 429);
    u.subscribe("sub_u", "cus_u", "price_starter_monthly", "customer.subscription.updated").await;
    let after = u.count("cus_u", "messages", 1, "over").await;
    assert_eq!((after.status, &after.body["used"], &after.body["limit"]), (200, &json!(51), &json!(1000)));

    u.subscribe("sub_e", "cus_e", "price_enterprise_monthly", "customer.subscription.created").await;
    let huge = u.count("cus_e", "messages", 1_000_000_000, "huge").await;
    assert_eq!((huge.status, &huge.body["limit"], &huge.body["remaining"]), (200, &Value::Null, &Value::Null));

    let unknown = u.count("cus_u", "uploads", 1, "x").await;
    assert_eq!((unknown.status, code(&unknown.body)), (422, "unknown_metric"));
    let nobody = u.count("cus_nobody", "messages", 1, "x").await;
    assert_eq!((nobody.status, code(&nobody.body)), (404, "unknown_customer"));
    u.post_event(&stripe::customer_event("customer.created", stripe::now(), Shape::Basil, "cus_lapsed", "l@x.test"))
        .await;
    let lapsed = u.count("cus_lapsed", "messages", 1, "x").await;
    assert_eq!((lapsed.status, code(&lapsed.body)), (402, "no_live_subscription"), "known, without a plan");
    let zero = u.count("cus_u", "messages", 0, "zero").await;
    assert_eq!((zero.status, code(&zero.body)), (400, "invalid_request"));

    // A customer's token counts for its own customer only.
    let token = customer_token(&u.db.pool, "cus_u").await;
    let own = u.post(&token, &json!({ "metric": "api_calls", "quantity": 1, "idempotency_key": "t1" })).await;
    assert_eq!((own.status, &own.body["used"]), (200, &json!(1)), "{}", own.body);
    let other = json!({ "customer": "cus_e", "metric": "api_calls", "quantity": 1, "idempotency_key": "t2" });
    let other = u.post(&token, &other).await;
    assert_eq!((other.status, code(&other.body)), (403, "forbidden"));
    assert_eq!(u.rows("cus_e").await, 1, "nothing counted for cus_e");
    let (status, access) = u.projector.get_json("/v1/access", &token).await;
    assert_eq!((status, &access["usage"]["api_calls"]["used"]), (200, &json!(1)), "{access}");
    assert_eq!(access["usage"]["messages"]["used"], 51);

    let (_, metrics) = u.projector.admin_get("/metrics").await;
    assert!(metrics.contains("usage_recorded_total{metric=\"messages\"} 3"), "{metrics}");
    assert!(metrics.contains("usage_rejected_total{metric=\"messages\",reason=\"quota_exceeded\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_grants_minus_debits_with_the_cap_on_what_is_left_and_survive_a_rebuild() {
    let u = Usage::start().await;
    let base = today_at(12, 0, 0).timestamp();
    u.subscribe("sub_c", "cus_c", "price_starter_monthly", "customer.subscription.created").await;
    let cycle = |id: &'static str, start: i64| InvoiceOf {
        id,
        customer: "cus_c",
        subscription: "sub_c",
        price: "price_starter_monthly",
        period: (start, start + 2_592_000),
    };
    // 1,000 a cycle with a cap of 2,000; a pack of 10,000 before the debit.
    u.post_event(&stripe::invoice_event("invoice.paid", base - 86_400, Shape::Basil, &cycle("in_1", base - 86_400)))
        .await;
    let pack = Some(("price_credits_10000", 1));
    u.post_event(&stripe::checkout_completed(base - 3_600, Shape::Basil, "cs_pack", "cus_c", "payment", None, pack))
        .await;
    assert_eq!(u.customer("cus_c").await["credits"]["balance"], 11_000);

    let spent = u.count("cus_c", "credits", 8_500, "upscale-1").await;
    assert_eq!((spent.status, &spent.body["balance"]), (200, &json!(2_500)), "{}", spent.body);
    let short = u.count("cus_c", "credits", 2_501, "upscale-2").await;
    assert_eq!((short.status, code(&short.body)), (402, "insufficient_credits"), "{}", short.body);
    assert_eq!(short.body["error"]["balance"], 2_500);

    // The next cycle caps what is left (2,500 -> 2,000), not what was granted, then adds 1,000.
    u.post_event(&stripe::invoice_event("invoice.paid", base + 3_600, Shape::Basil, &cycle("in_2", base + 3_600)))
        .await;
    let customer = u.customer("cus_c").await;
    assert_eq!(customer["credits"]["balance"], 3_000, "{customer}");
    let kinds: Vec<&str> = customer["credits"]["transactions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["grant", "debit", "grant", "grant"], "newest first: {customer}");
    assert_eq!(customer["credits"]["transactions"][1]["idempotency_key"], "upscale-1");
    assert_eq!(customer["usage"]["credits"]["used"], 8_500);

    // A rebuild re-folds the grants; the debits stay and the balance is the same.
    let (catalog, config) = (catalog(), domain::fold::FoldConfig::default());
    let folded = store::rebuild::fold_log(&u.db.pool, &catalog, &config, &mut |_, _| {}).await.expect("fold the log");
    store::rebuild::swap_in(&u.db.pool, folded, &catalog, &config, false).await.expect("swap");
    assert_eq!(u.customer("cus_c").await["credits"]["balance"], 3_000);
    assert_eq!(u.rows("cus_c").await, 1);

    let all = u.count("cus_c", "credits", 3_000, "upscale-3").await;
    assert_eq!((all.status, &all.body["balance"]), (200, &json!(0)));
    let none = u.count("cus_c", "credits", 1, "upscale-4").await;
    assert_eq!((none.status, code(&none.body)), (402, "insufficient_credits"), "never negative");
    let lines = replay::audit::timeline(&u.db.pool, "cus_c", &catalog, &config).await.expect("timeline");
    assert!(
        lines.iter().any(|l| l.contains("credits debited 8500 by backend") && l.contains("balance 2500")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_counts_each_request_as_alone_duplicates_and_the_edge_included() {
    let db = TestDb::new().await;
    let rows: Vec<(i32, String, i64)> = sqlx::query_as(
        "SELECT ord, outcome, r_used FROM ledger.count_usage_batch(
           '{cus_a,cus_b,cus_a,cus_a,cus_c}', '{messages,messages,messages,messages,messages}', '{2,1,2,2,1}',
           '{k1,k1,k1,k2,k1}', '{backend,backend,backend,backend,backend}',
           ARRAY[current_date, current_date, current_date, current_date, current_date],
           ARRAY[now(), now(), now(), now(), now()], '{t,t,t,t,f}', '{1,2,3,4}', array_fill('day'::text, ARRAY[4]),
           array_fill(date_trunc('day', now(), 'UTC'), ARRAY[4]),
           array_fill(date_trunc('day', now(), 'UTC') + interval '1 day', ARRAY[4]), '{3,3,3,3}') ORDER BY ord",
    )
    .fetch_all(&db.pool)
    .await
    .expect("batch");
    let outcomes: Vec<(i32, &str, i64)> = rows.iter().map(|(o, s, u)| (*o, s.as_str(), *u)).collect();
    assert_eq!(
        outcomes,
        [(1, "counted", 2), (2, "counted", 1), (3, "replayed", 2), (4, "refused", 2), (5, "no_live_subscription", 0)],
        "per customer keys; the repeat gets the first count; 2 + 2 > 3 is refused; no tier, nothing counted"
    );
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.usage").fetch_one(&db.pool).await.expect("rows");
    assert_eq!(counted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_input_that_would_break_a_batch_is_refused_alone_with_400_naming_the_field() {
    let u = Arc::new(Usage::start().await);
    u.subscribe("sub_v", "cus_v", "price_starter_monthly", "customer.subscription.created").await;
    let bad = [
        (json!("nul\u{0}inside"), json!(1), "idempotency_key"),
        (json!("k".repeat(256)), json!(1), "idempotency_key"),
        (json!("caf\u{e9}"), json!(1), "idempotency_key"),
        (json!(""), json!(1), "idempotency_key"),
        (json!("q1"), json!(1_000_000_001_i64), "quantity"),
        (json!("q2"), json!(i64::MAX), "quantity"),
    ];
    // The good requests go at the same moment as the bad ones: they share batches.
    let good: Vec<_> = (0..24)
        .map(|i| {
            let u = u.clone();
            tokio::spawn(async move { u.count("cus_v", "api_calls", 1, &format!("good-{i}")).await.status })
        })
        .collect();
    for (key, quantity, field) in bad {
        let body = json!({ "customer": "cus_v", "metric": "api_calls", "quantity": quantity, "idempotency_key": key });
        let answer = u.post(BILLING_KEY, &body).await;
        assert_eq!((answer.status, code(&answer.body)), (400, "invalid_request"), "{key} {quantity}");
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "the message names {field}: {message}");
    }
    for task in good {
        assert_eq!(task.await.expect("task"), 200);
    }
    let most = u.count("cus_v", "api_calls", 1_000_000_000, "most").await;
    assert_eq!(
        (most.status, code(&most.body)),
        (429, "quota_exceeded"),
        "the largest quantity is valid: {}",
        most.body
    );
    let nul_customer = u.count("cus_\u{0}", "messages", 1, "n").await;
    assert_eq!((nul_customer.status, code(&nul_customer.body)), (404, "unknown_customer"));
    assert_eq!(u.rows("cus_v").await, 24, "exactly the good requests were counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_database_refuses_fails_alone_and_its_batch_mates_are_counted() {
    use api::access_cache::Notifier;
    use api::counter::{CountRequest, UsageBatcher};
    use futures::FutureExt as _;

    let u = Usage::start().await;
    u.subscribe("sub_b", "cus_b", "price_starter_monthly", "customer.subscription.created").await;
    let pool = u.db.service_pool(4);
    // One writer: while the first batch waits on a lock the test holds, the rest queue up and
    // then go as one batch.
    let counter = UsageBatcher::start(pool.clone(), Arc::new(catalog()), 1, Notifier::start(pool.clone()));
    let request = |key: &str| CountRequest {
        customer: "cus_b".into(),
        metric: "api_calls".into(),
        quantity: 1,
        key: key.into(),
        caller: "backend".into(),
        at: u.clock.now(),
    };
    let mut blocker = u.db.pool.begin().await.expect("tx");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('cus_b/blocker', 12))")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let first = tokio::spawn({
        let (counter, request) = (counter.clone(), request("blocker"));
        async move { counter.count(request).await }
    });
    ledger_tests::wait::until(std::time::Duration::from_secs(10), "the first batch waiting on the lock", || async {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                .fetch_one(&u.db.pool)
                .await
                .expect("locks");
        (waiting > 0).then_some(())
    })
    .await;
    // A key PostgreSQL refuses (NUL in text), bypassing the HTTP checks, among good requests.
    let keys: Vec<String> = (0..10)
        .map(|i| format!("mate-{i}"))
        .chain(["bad\u{0}key".to_owned()])
        .chain((10..20).map(|i| format!("mate-{i}")))
        .collect();
    let mut queued: Vec<_> = keys.iter().map(|k| Box::pin(counter.count(request(k)))).collect();
    for future in &mut queued {
        assert!(future.as_mut().now_or_never().is_none(), "queued behind the first batch");
    }
    blocker.commit().await.expect("release");
    assert_eq!(first.await.expect("task").expect("counted").outcome, "counted");
    let answers = futures::future::join_all(queued).await;
    for (key, answer) in keys.iter().zip(&answers) {
        match key.as_str() {
            "bad\u{0}key" => {
                assert_eq!(answer.as_ref().map_err(|e| e.code.as_str()).err(), Some("internal"), "{answer:?}")
            }
            _ => assert_eq!(answer.as_ref().map(|a| a.outcome.as_str()).ok(), Some("counted"), "{key}: {answer:?}"),
        }
    }
    assert_eq!(u.rows("cus_b").await, 21, "the blocker and its twenty batch mates");
}

/// Issue 33: one batch decided as a set answers as the requests would one after the other, in
/// arrival order: a key counted earlier in the batch is replayed, a key refused earlier is tried
/// again, the quota is never passed, and the counter and the usage rows say the same.
#[tokio::test]
async fn a_batch_decides_its_requests_in_arrival_order_as_one_by_one_would() {
    let db = TestDb::new().await;
    let rows: Vec<(i32, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT ord, outcome, r_used, r_quota FROM ledger.count_usage_batch(
           ARRAY['cus_b','cus_b','cus_b','cus_b','cus_b','cus_c','cus_b'],
           ARRAY['messages','messages','messages','messages','messages','messages','api_calls'],
           ARRAY[4,4,3,4,3,1,5]::bigint[],
           ARRAY['k1','k1','k2','k3','k4','k1','k5'],
           ARRAY['backend','backend','backend','backend','backend','backend','backend'],
           ARRAY[current_date,current_date,current_date,current_date,current_date,current_date,current_date],
           ARRAY[now(),now(),now(),now(),now(),now(),now()],
           ARRAY[true,true,true,true,true,false,true],
           ARRAY[1,2,3,4,5,7], array_fill('day'::text, ARRAY[6]), array_fill(date_trunc('day', now(), 'UTC'), ARRAY[6]),
           array_fill(date_trunc('day', now(), 'UTC') + interval '1 day', ARRAY[6]),
           ARRAY[10,10,10,10,10,NULL]::bigint[]) ORDER BY ord",
    )
    .fetch_all(&db.pool)
    .await
    .expect("batch");
    let got: Vec<(&str, i64, Option<i64>)> = rows.iter().map(|r| (r.1.as_str(), r.2, r.3)).collect();
    assert_eq!(
        got,
        [
            ("counted", 4, Some(10)),
            ("replayed", 4, Some(10)),
            ("counted", 7, Some(10)),
            ("refused", 7, Some(10)),
            ("counted", 10, Some(10)),
            ("no_live_subscription", 0, None),
            ("counted", 5, None),
        ]
    );
    // k3, refused in the batch, counts once there is room (here: a higher quota).
    let retried: (String, i64) = sqlx::query_as(
        "SELECT outcome, r_used FROM ledger.count_usage_batch(ARRAY['cus_b'], ARRAY['messages'], ARRAY[4]::bigint[],
           ARRAY['k3'], ARRAY['backend'], ARRAY[current_date], ARRAY[now()], ARRAY[true], ARRAY[1], ARRAY['day'],
           ARRAY[date_trunc('day', now(), 'UTC')], ARRAY[date_trunc('day', now(), 'UTC') + interval '1 day'],
           ARRAY[20]::bigint[])",
    )
    .fetch_one(&db.pool)
    .await
    .expect("retry");
    assert_eq!(retried, ("counted".to_owned(), 14));
    let (counter, rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT used FROM ledger.usage_counters WHERE stripe_customer_id = 'cus_b' AND metric = 'messages'),
                (SELECT sum(quantity)::bigint FROM ledger.usage WHERE stripe_customer_id = 'cus_b' AND metric = 'messages')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("sums");
    assert_eq!((counter, rows), (14, 14), "the counter is the sum of the usage rows");
}

impl Usage {
    /// `customer`'s subscription `sub` on `price` for the billing period `period` (unix seconds),
    /// as an event of the period's start (created, or updated when `sub` exists).
    async fn subscribe_for(&self, sub: &str, customer: &str, price: &str, period: (i64, i64)) {
        let snap = SubSnapshot::new(sub, customer, price, "active", period);
        let known: i64 =
            sqlx::query_scalar("SELECT count(*) FROM projection.subscriptions WHERE stripe_subscription_id = $1")
                .bind(sub)
                .fetch_one(&self.db.pool)
                .await
                .expect("known");
        let event_type = if known == 0 { "customer.subscription.created" } else { "customer.subscription.updated" };
        let created = period.0;
        self.post_event(&stripe::subscription_event(event_type, created, Shape::Basil, &snap)).await;
    }

    /// `customer`'s counters of `metric`: window -> used.
    async fn windows(&self, customer: &str, metric: &str) -> Vec<(String, i64)> {
        sqlx::query_as(
            "SELECT quota_window, used FROM ledger.usage_counters WHERE stripe_customer_id = $1 AND metric = $2
             ORDER BY array_position(ARRAY['period', 'day', 'hour', 'minute'], quota_window), starts_at",
        )
        .bind(customer)
        .bind(metric)
        .fetch_all(&self.db.pool)
        .await
        .expect("counters")
    }
}

fn windows_used(body: &Value) -> Vec<(String, u64)> {
    body["windows"]
        .as_array()
        .or_else(|| body["error"]["windows"].as_array())
        .expect("windows")
        .iter()
        .map(|w| (w["window"].as_str().unwrap_or_default().to_owned(), w["used"].as_u64().unwrap_or(u64::MAX)))
        .collect()
}

/// Issue 31: a minute window refuses while the period has room, and nothing is counted in any
/// window then; the period quota resets at the next `current_period_start` (not at midnight),
/// and a plan change that resets the period starts a fresh count under the new tier's quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_quota_follows_the_billing_period_and_a_minute_refuses_alone() {
    let u = Usage::start_with(windowed()).await;
    let noon = u.clock.now();
    let (start, end) = (noon.timestamp() - 10 * 86_400, noon.timestamp() + 20 * 86_400);
    u.subscribe_for("sub_w", "cus_w", "price_free_monthly", (start, end)).await;
    let call = |key: &'static str| u.count("cus_w", "api_calls", 1, key);

    for key in ["c1", "c2", "c3"] {
        assert_eq!(call(key).await.status, 200);
    }
    let third = call("c3").await;
    assert_eq!(third.status, 200, "a repeated key replays");
    assert_eq!(windows_used(&third.body), [("period".into(), 3), ("day".into(), 3), ("minute".into(), 3)]);
    assert_eq!(
        (third.body["limit"].clone(), third.body["remaining"].clone()),
        (json!(3), json!(0)),
        "the minute is the tightest"
    );
    assert_eq!(third.rate_limit(), ("api_calls_per_minute".to_owned(), [3, 60, 0, 60]));

    // The minute is used up; the period has room: refused, and nothing counted anywhere.
    let refused = call("c4").await;
    assert_eq!((refused.status, code(&refused.body)), (429, "quota_exceeded"));
    assert_eq!(refused.body["error"]["window"], "minute", "{}", refused.body);
    assert_eq!(refused.retry_after, Some(60));
    assert_eq!(refused.rate_limit(), ("api_calls_per_minute".to_owned(), [3, 60, 0, 60]));
    assert_eq!(u.windows("cus_w", "api_calls").await, [("period".into(), 3), ("day".into(), 3), ("minute".into(), 3)]);

    // The next minute: two more fit the period, the sixth does not, and waits for the period's end.
    u.clock.set(noon + Duration::seconds(60));
    for key in ["c4", "c5"] {
        assert_eq!(call(key).await.status, 200, "{key}");
    }
    let full = call("c6").await;
    assert_eq!((full.status, full.body["error"]["window"].as_str()), (429, Some("period")), "{}", full.body);
    let until_end = u64::try_from(end - (noon.timestamp() + 60)).expect("ahead");
    assert_eq!(full.retry_after, Some(until_end), "the period's end, not midnight");
    assert_eq!(
        full.rate_limit(),
        ("api_calls_per_period".to_owned(), [5, 30 * 86_400, 0, i64::try_from(until_end).expect("t")])
    );
    let customer = u.customer("cus_w").await;
    assert_eq!(
        windows_used(&customer["usage"]["api_calls"]),
        [("period".into(), 5), ("day".into(), 5), ("minute".into(), 2)]
    );
    let token = customer_token(&u.db.pool, "cus_w").await;
    let (status, access) = u.projector.get_json("/v1/access", &token).await;
    assert_eq!(status, 200, "{access}");
    assert_eq!(
        windows_used(&access["usage"]["api_calls"]),
        [("period".into(), 5), ("day".into(), 5), ("minute".into(), 2)]
    );

    // Midnight resets the day, not the period.
    u.clock.set(today_at(0, 0, 5) + Duration::days(1));
    let next_day = call("c7").await;
    assert_eq!((next_day.status, next_day.body["error"]["window"].as_str()), (429, Some("period")));

    // Stripe renews the subscription: the next period starts at the last one's end.
    let renewed = Utc.timestamp_opt(end, 0).single().expect("t");
    u.subscribe_for("sub_w", "cus_w", "price_free_monthly", (end, end + 30 * 86_400)).await;
    u.clock.set(renewed + Duration::seconds(5));
    let fresh = call("c8").await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(windows_used(&fresh.body)[0], ("period".into(), 1));

    // An upgrade that resets the billing cycle: a new period, under the starter's quota.
    let upgraded = end + 3_600;
    u.subscribe_for("sub_w", "cus_w", "price_starter_monthly", (upgraded, upgraded + 30 * 86_400)).await;
    u.clock.set(renewed + Duration::seconds(3_605));
    let after = call("c9").await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(
        after.body["windows"][0],
        json!({ "window": "period", "used": 1, "limit": 1000, "remaining": 999,
        "resets_at": Utc.timestamp_opt(upgraded + 30 * 86_400, 0).single().expect("t").to_rfc3339() })
    );
}

/// Issue 31: 64 concurrent requests against a metric whose minute, day and period quotas are all
/// 50: exactly 50 are counted, in every window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_requests_count_exactly_fifty_in_every_window() {
    let u = Arc::new(Usage::start_with(windowed()).await);
    let now = u.clock.now().timestamp();
    u.subscribe_for("sub_all", "cus_all", "price_free_monthly", (now - 86_400, now + 29 * 86_400)).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let u = u.clone();
            tokio::spawn(async move { u.count("cus_all", "messages", 1, &format!("m{i}")).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!((ok, statuses.len() - ok), (50, 14), "{statuses:?}");
    assert_eq!(
        u.windows("cus_all", "messages").await,
        [("period".into(), 50), ("day".into(), 50), ("minute".into(), 50)]
    );
    assert_eq!(u.rows("cus_all").await, 50);
}
