//! The auditors' interface over a known lifecycle: the `ledger_auditor` role reads `audit` and
//! nothing else (no token hashes, no writes), the views survive a rebuild, and the real `replay
//! timeline` and `replay export` binaries give the expected lines and byte-identical bodies.

use std::process::Command;
use std::time::Duration;

use sha2::Digest as _;

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{TestProjector, catalog};
use ledger_tests::stripe::{self, InvoiceOf, Shape, SubSnapshot};
use ledger_tests::wait;

const DAY: i64 = 86_400;

/// A known lifecycle of cus_x / sub_x, as posted (bodies in order), and its start time.
fn lifecycle() -> (Vec<Vec<u8>>, i64) {
    let t = stripe::now() - 40 * DAY;
    let snap = SubSnapshot::new("sub_x", "cus_x", "price_starter_monthly", "active", (t, t + 30 * DAY));
    let of = InvoiceOf {
        id: "in_x1",
        customer: "cus_x",
        subscription: "sub_x",
        price: "price_starter_monthly",
        period: snap.period,
    };
    let mut ended = snap.clone();
    ended.status = "canceled".into();
    ended.ended_at = Some(t + 30 * DAY);
    let bodies = vec![
        stripe::customer_event("customer.created", t, Shape::Basil, "cus_x", "x@example.com"),
        stripe::subscription_event("customer.subscription.created", t + 1, Shape::Basil, &snap),
        stripe::invoice_event("invoice.paid", t + 2, Shape::Basil, &of),
        stripe::subscription_event("customer.subscription.deleted", t + 30 * DAY, Shape::Basil, &ended),
        // Someone else's event, which must stay out of cus_x's timeline and export.
        stripe::customer_event("customer.created", t + 3, Shape::Basil, "cus_y", "y@example.com"),
    ];
    (bodies, t)
}

struct Logged {
    db: TestDb,
    bodies: Vec<Vec<u8>>,
    t: i64,
}

async fn logged() -> Logged {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let (bodies, t) = lifecycle();
    let projector = TestProjector::start(db.service_pool(4), catalog(), 50).await;
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(ingest.post_signed(body).await.status(), 200);
        if i == 2 {
            // Let the token and the welcome happen before the cancellation.
            wait::until(Duration::from_secs(30), "the token", || async {
                let n: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM ledger.api_tokens WHERE delivered_at IS NOT NULL")
                        .fetch_one(&db.pool)
                        .await
                        .expect("n");
                (n == 1).then_some(())
            })
            .await;
        }
    }
    projector.caught_up(&db.pool).await;
    wait::until(Duration::from_secs(30), "the cancellation mail and the revocation", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM ledger.effects WHERE key = 'email:canceled:sub_x' AND outcome = 'succeeded')
                  + (SELECT count(*) FROM ledger.api_tokens WHERE revoked_at IS NOT NULL)",
        )
        .fetch_one(&db.pool)
        .await
        .expect("n");
        (n == 2).then_some(())
    })
    .await;
    projector.stop().await;
    ingest.stop().await.expect("stop");
    Logged { db, bodies, t }
}

async fn replay(db: &TestDb, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_replay"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url().await)
        .args(args)
        .output()
        .expect("replay runs");
    assert!(output.status.success(), "replay {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Runs `sql` as ledger_auditor; returns the SQLSTATE of its error, if any.
async fn as_auditor(db: &TestDb, sql: &str) -> Option<String> {
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL ROLE ledger_auditor").execute(&mut *tx).await.expect("role");
    let result = sqlx::query(sql).execute(&mut *tx).await;
    let _ = tx.rollback().await;
    result.err().map(|e| e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned()).unwrap_or(e.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_reads_audit_only_never_token_hashes_and_writes_nothing() {
    let Logged { db, .. } = logged().await;
    for view in [
        "events",
        "customer_timeline",
        "subscription_timeline",
        "intents",
        "effects",
        "anomalies",
        "accounts",
        "subscriptions",
        "instances",
        "credits",
        "credit_grants",
        "usage",
        "commands",
        "tokens",
        "backfill_runs",
        "erasures",
    ] {
        assert_eq!(as_auditor(&db, &format!("SELECT * FROM audit.{view}")).await, None, "audit.{view}");
    }
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL ROLE ledger_auditor").execute(&mut *tx).await.expect("role");
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.effects WHERE stripe_subscription_id = 'sub_x'")
        .fetch_one(&mut *tx)
        .await
        .expect("effects");
    assert!(effects >= 2, "welcome and cancellation mails: {effects}");
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.tokens WHERE stripe_customer_id = 'cus_x'")
        .fetch_one(&mut *tx)
        .await
        .expect("tokens");
    assert_eq!(tokens, 1);
    tx.rollback().await.expect("rollback");

    // 42501: permission denied; 55000: a view that cannot be written at all.
    let denied = ["42501", "55000"];
    assert_eq!(
        as_auditor(&db, "SELECT token_sha256 FROM audit.tokens").await.as_deref(),
        Some("42703"),
        "no hash column"
    );
    for sql in [
        "SELECT * FROM ledger.api_tokens",
        "SELECT * FROM ledger.events",
        "SELECT * FROM ledger.effects",
        "SELECT * FROM projection.accounts",
        "INSERT INTO audit.accounts (stripe_customer_id, deleted) VALUES ('cus_z', false)",
        "UPDATE audit.events SET source = 'backfill'",
        "DELETE FROM audit.effects",
        "DELETE FROM audit.tokens",
        "CREATE TABLE audit.notes (t text)",
        "CREATE TABLE public.notes (t text)",
        "CREATE VIEW audit.hashes AS SELECT 1",
    ] {
        let code = as_auditor(&db, sql).await;
        assert!(code.as_deref().is_some_and(|c| denied.contains(&c)), "{sql}: {code:?}");
    }

    // The views follow a rebuild (they are re-pointed at the new tables, not dropped), an
    // operator's report with an awkward name too: the swap quotes every identifier it splices.
    sqlx::query(r#"CREATE SCHEMA "ops ""reports""""#).execute(&db.pool).await.expect("schema");
    sqlx::query(r#"CREATE VIEW "ops ""reports"""."Live subs; --" AS SELECT * FROM projection.subscriptions"#)
        .execute(&db.pool)
        .await
        .expect("an operator's view");
    let pool = db.service_pool(2);
    let config = domain::fold::FoldConfig::default();
    let folded = store::rebuild::fold_log(&pool, &catalog(), &config, &mut |_, _| {}).await.expect("fold");
    store::rebuild::swap_in(&pool, folded, &catalog(), &config, false).await.expect("swap");
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL ROLE ledger_auditor").execute(&mut *tx).await.expect("role");
    let status: String =
        sqlx::query_scalar("SELECT status FROM audit.subscriptions WHERE stripe_subscription_id = 'sub_x'")
            .fetch_one(&mut *tx)
            .await
            .expect("audit.subscriptions after a rebuild");
    assert_eq!(status, "canceled");
    let instances: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit.instances").fetch_one(&mut *tx).await.expect("n");
    assert_eq!(instances, 1);
    drop(tx);
    let reported: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "ops ""reports"""."Live subs; --""#)
        .fetch_one(&db.pool)
        .await
        .expect("the operator's view after a rebuild");
    assert_eq!(reported, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_and_export_tell_the_known_story_with_byte_identical_bodies() {
    let Logged { db, bodies, t } = logged().await;
    let timeline = replay(&db, &["timeline", "cus_x"]).await;
    let lines: Vec<&str> = timeline.lines().collect();
    assert!(lines[0].starts_with("timeline of cus_x: 0 commands and debits, 4 events"), "{timeline}");
    let find = |needle: &str| {
        lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("`{needle}` in:\n{timeline}"))
    };
    let order = [
        find("customer.created"),
        find("account cus_x: new email x@example.com"),
        find("customer.subscription.created"),
        find("subscription sub_x: active starter (new)"),
        find("instance sub_x: desired running (starter)"),
        find("intent email:welcome:sub_x"),
        find("effect email #1 succeeded"),
        find("invoice.paid"),
        find("credits cus_x: cycle grant +1000 (invoice:in_x1)"),
        find("customer.subscription.deleted"),
        find("subscription sub_x: canceled starter (was active starter)"),
        find("intent email:canceled:sub_x"),
        find("effects not caused by one event"),
        find("revoke the token of cus_x"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in this order: {order:?}\n{timeline}");
    assert!(!timeline.contains(" sending: "), "a delivered mail's `sending` row is not shown: {timeline}");
    assert!(!timeline.contains("cus_y"), "{timeline}");
    let by_sub = replay(&db, &["timeline", "sub_x"]).await;
    assert!(by_sub.starts_with("timeline of sub_x: 0 commands and debits, 3 events"), "{by_sub}");

    // JSON Lines: every event, bodies exactly as posted.
    let jsonl = replay(&db, &["export", "--format", "jsonl"]).await;
    let exported: Vec<serde_json::Value> =
        jsonl.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(exported.len(), bodies.len());
    for (line, body) in exported.iter().zip(&bodies) {
        assert_eq!(line["raw_body"].as_str().expect("raw_body").as_bytes(), body.as_slice(), "byte-identical");
        assert_eq!(line["body_sha256"].as_str(), Some(hex::encode(sha2::Sha256::digest(body)).as_str()));
    }
    // One customer, one time range.
    let customer = replay(&db, &["export", "--customer", "cus_x"]).await;
    assert_eq!(customer.lines().count(), 4);
    let from = (t + 1).to_string();
    let to = (t + 3).to_string();
    let range = replay(&db, &["export", "--from", &from, "--to", &to]).await;
    let types: Vec<String> = range
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["event_type"].as_str().expect("type").to_owned()
        })
        .collect();
    assert_eq!(types, ["customer.subscription.created", "invoice.paid"]);

    // CSV: a header and one record per event, the raw body intact through the quoting.
    let csv_text = replay(&db, &["export", "--format", "csv", "--customer", "cus_x"]).await;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().expect("headers").clone();
    let raw_at = headers.iter().position(|h| h == "raw_body").expect("raw_body column");
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert_eq!(records.len(), 4);
    for (record, body) in records.iter().zip(&bodies) {
        assert_eq!(record[raw_at].as_bytes(), body.as_slice());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_utf8_is_exported_exactly_and_breaks_no_other_row() {
    use base64::Engine as _;
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let t = stripe::now();
    let mut latin1 =
        format!(r#"{{"id":"evt_latin1","object":"event","type":"customer.updated","created":{t},"livemode":false,"data":{{"object":{{"id":"cus_l","object":"customer","name":""#)
            .into_bytes();
    latin1.extend_from_slice(b"Jos\xe9\"}}}");
    let clean = stripe::subscription_updated(&stripe::event_id(), 1);
    for body in [&latin1, &clean] {
        assert_eq!(ingest.post_signed(body).await.status(), 200);
    }
    let out = replay(&db, &["export"]).await;
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 2, "every row exported: {out}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(lines[0]["raw_body_base64"].as_str().expect("base64 for the non-UTF-8 body"))
        .expect("base64");
    assert_eq!(bytes, latin1, "exact bytes");
    assert_eq!(lines[1]["raw_body"].as_str().expect("text").as_bytes(), clean.as_slice());
    ingest.stop().await.expect("stop");
}

/// Issue 32: `replay erase` forgets cus_x everywhere the log and the projections held them, leaves
/// cus_y byte-identical, and `replay verify` still proves the log, naming the redacted positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_customer_is_forgotten_and_verify_still_proves_the_log() {
    let Logged { db, .. } = logged().await;
    let holding = |needle: &'static str| {
        let pool = db.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM ledger.events WHERE position(convert_to($1, 'UTF8') IN raw_body) > 0)
                      + (SELECT count(*) FROM projection.accounts a WHERE strpos(a::text, $1) > 0)
                      + (SELECT count(*) FROM audit.events e WHERE strpos(e::text, $1) > 0)",
            )
            .bind(needle)
            .fetch_one(&pool)
            .await
            .expect("scan");
            n
        }
    };
    let of_y = "SELECT position, raw_body FROM ledger.events WHERE customer_id = 'cus_y' OR object_id = 'cus_y' ORDER BY position";
    let y_before: Vec<(i64, Vec<u8>)> = sqlx::query_as(of_y).fetch_all(&db.pool).await.expect("cus_y");
    assert!(holding("x@example.com").await > 0);

    // Without --yes: what it would do, nothing done.
    let planned = replay(&db, &["erase", "cus_x", "--reason", "GDPR request 17"]).await;
    assert!(planned.contains("cus_x: 4 events") && planned.contains("nothing was changed"), "{planned}");
    assert!(holding("x@example.com").await > 0);

    // Local development's outbox: a mail to cus_x and one to cus_y.
    let outbox = tempfile::tempdir().expect("dir");
    std::fs::write(outbox.path().join("a.eml"), "To: X@example.com\r\nSubject: Your token\r\n\r\n...").expect("mail");
    std::fs::write(outbox.path().join("b.eml"), "To: y@example.com\r\nSubject: Welcome\r\n\r\n...").expect("mail");
    let mail_dir = outbox.path().to_str().expect("utf-8").to_owned();
    let done = replay(&db, &["erase", "cus_x", "--reason", "GDPR request 17", "--yes", "--mail-dir", &mail_dir]).await;
    assert!(done.contains("erasure 1 recorded") && done.contains("1 mail files"), "{done}");
    assert!(!outbox.path().join("a.eml").exists() && outbox.path().join("b.eml").exists(), "only cus_x's mail");
    for needle in ["x@example.com", "Customer cus_x"] {
        assert_eq!(holding(needle).await, 0, "{needle} is gone from the log, the projections and audit");
    }
    let export = replay(&db, &["export", "--customer", "cus_x"]).await;
    assert!(!export.contains("x@example.com") && export.contains("[erased]"), "{export}");
    let y_after: Vec<(i64, Vec<u8>)> = sqlx::query_as(of_y).fetch_all(&db.pool).await.expect("cus_y");
    assert_eq!(y_after, y_before, "the other customer's events are untouched");
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM ledger.api_tokens WHERE stripe_customer_id = 'cus_x' AND revoked_at IS NULL"
        )
        .fetch_one(&db.pool)
        .await
        .expect("tokens"),
        0
    );
    let erasure: (String, String, Vec<i64>) =
        sqlx::query_as("SELECT stripe_customer_id, reason, positions FROM audit.erasures")
            .fetch_one(&db.pool)
            .await
            .expect("row");
    assert_eq!((erasure.0.as_str(), erasure.1.as_str()), ("cus_x", "GDPR request 17"));

    // The log still proves itself, and says what was redacted; a rebuild finds nothing to change.
    let verified = replay(&db, &["verify"]).await;
    let named: Vec<String> = erasure.2.iter().map(i64::to_string).collect();
    assert!(
        verified.contains(&format!("{} bodies redacted by 1 erasures", erasure.2.len()))
            && verified.contains(&named.join(", ")),
        "{verified}"
    );
    let dry: serde_json::Value =
        serde_json::from_str(&replay(&db, &["rebuild", "--dry-run", "--json"]).await).expect("json");
    assert_eq!(dry["rows"], serde_json::json!([]), "rebuild == live after an erasure: {dry}");

    // Stripe still writes about cus_x: stored redacted, on the original body's hash, and proven.
    let later = stripe::customer_event("customer.updated", stripe::now(), Shape::Basil, "cus_x", "x2@example.com");
    let ingest = TestIngest::start(db.service_pool(2)).await;
    assert_eq!(ingest.post_signed(&later).await.status(), 200);
    ingest.stop().await.expect("stop");
    let projector = TestProjector::start(db.service_pool(4), catalog(), 50).await;
    projector.caught_up(&db.pool).await;
    projector.stop().await;
    let (arrived, sha, by): (i64, Vec<u8>, i64) = sqlx::query_as(
        "SELECT e.position, e.body_sha256, r.erasure_id FROM ledger.events e
         JOIN ledger.redactions r USING (position) WHERE e.event_type = 'customer.updated'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("the new event, marked redacted");
    assert_eq!((sha, by), (sha2::Sha256::digest(&later).to_vec(), 1), "the original's hash, under erasure 1");
    assert_eq!(holding("x2@example.com").await, 0, "nowhere in the log, the projections or audit");
    let verified = replay(&db, &["verify"]).await;
    assert!(
        verified.contains(&format!("{} bodies redacted by 1 erasures", erasure.2.len() + 1))
            && verified.contains(&format!("{}, {arrived}", named.join(", "))),
        "{verified}"
    );
    let dry: serde_json::Value =
        serde_json::from_str(&replay(&db, &["rebuild", "--dry-run", "--json"]).await).expect("json");
    assert_eq!(dry["rows"], serde_json::json!([]), "rebuild == live after a redacted arrival: {dry}");

    // A redacted body changed outside an erasure is refused, even naming the erasure.
    let position = erasure.2[0];
    for sql in [
        "UPDATE ledger.events SET raw_body = convert_to('{}', 'UTF8') WHERE position = $1".to_owned(),
        "SELECT set_config('ledger.redacting', '1', true), (SELECT 1 FROM ledger.events WHERE position = $1)"
            .to_owned(),
    ] {
        let mut tx = db.pool.begin().await.expect("tx");
        let first = sqlx::query(&sql).bind(position).execute(&mut *tx).await;
        let second = sqlx::query("UPDATE ledger.events SET raw_body = convert_to('{}', 'UTF8') WHERE position = $1")
            .bind(position)
            .execute(&mut *tx)
            .await;
        assert!(first.is_err() || second.is_err(), "{sql}: refused");
        let _ = tx.rollback().await;
    }
}

/// The redaction rule (`ledger.redact_body`, kept once in the database): every value under a
/// personal key at any depth and every `metadata` value become "[erased]"; nothing else changes;
/// a body with nothing to erase, already erased or not JSON gives NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redaction_rule_erases_personal_values_at_any_depth_and_keeps_the_rest() {
    let db = TestDb::new().await;
    let redact = |body: Vec<u8>| {
        let pool = db.pool.clone();
        async move {
            let out: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT ledger.redact_body($1)").bind(body).fetch_one(&pool).await.expect("rule");
            out
        }
    };
    let event = serde_json::json!({
        "id": "evt_1", "created": 1_700_000_000, "type": "checkout.session.completed",
        "data": { "object": {
            "id": "cs_1", "customer": "cus_1", "amount_total": 2_900, "customer_email": "a@example.com",
            "customer_details": { "email": "a@example.com", "address": { "city": "Paris" } },
            "metadata": { "user": "42", "note": { "nested": true }, "none": null },
            "line_items": { "data": [ { "description": "Ada's seat", "price": { "id": "price_1", "unit_amount": 2_900 } } ] },
            "shipping": null, "phone": 33_100_000, "tax": 0.1
        } }
    });
    let raw = serde_json::to_vec(&event).expect("json");
    let out: serde_json::Value = serde_json::from_slice(&redact(raw).await.expect("changed")).expect("json");
    let o = &out["data"]["object"];
    assert_eq!(o["customer_email"], "[erased]");
    assert_eq!(o["customer_details"], "[erased]", "the whole object");
    assert_eq!(o["metadata"], serde_json::json!({ "user": "[erased]", "note": "[erased]", "none": null }));
    assert_eq!(o["line_items"]["data"][0]["description"], "[erased]");
    assert_eq!(o["phone"], "[erased]", "whatever its type");
    assert_eq!(o["shipping"], serde_json::Value::Null, "nothing was there");
    let mut kept = event.clone();
    for key in ["customer_email", "customer_details", "metadata", "line_items", "phone"] {
        kept["data"]["object"].as_object_mut().expect("object").remove(key);
    }
    let mut left = out.clone();
    for key in ["customer_email", "customer_details", "metadata", "line_items", "phone"] {
        left["data"]["object"].as_object_mut().expect("object").remove(key);
    }
    assert_eq!(left, kept, "everything else means what it meant");
    assert_eq!(o["line_items"]["data"][0]["price"], event["data"]["object"]["line_items"]["data"][0]["price"]);

    let once = redact(br#"{"data":{"object":{"email":"a@example.com"}}}"#.to_vec()).await.expect("erased");
    for nothing in [
        br#"{"id":"evt_1","data":{"object":{"id":"sub_1","email":null,"metadata":{},"items":[]}}}"#.to_vec(),
        once,
        b"{ not json".to_vec(),
        b"\xff\xfe".to_vec(),
    ] {
        assert_eq!(redact(nothing.clone()).await, None, "{}", String::from_utf8_lossy(&nothing));
    }
}
