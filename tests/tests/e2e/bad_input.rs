//! Bad input at the edges (docs/reliability.md's table): each kind gets its status and reason,
//! leaves no row, and the service goes on serving.

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{BILLING_KEY, TestProjector};
use ledger_tests::stripe;
use reqwest::header::HeaderValue;
use serde_json::Value;

async fn reason(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let reason = body["reason"].as_str().or(body["error"]["code"].as_str()).unwrap_or_default().to_owned();
    (status, reason)
}

#[tokio::test]
async fn ingest_refuses_unreadable_bodies_and_headers_with_a_reason_and_no_row() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_with_id = format!(r#"{{"id":"evt_deep","object":"event","data":{deep}}}"#);
    let cases: [(&str, Vec<u8>, (u16, &str)); 6] = [
        ("empty body", Vec::new(), (400, "not_an_event")),
        ("not JSON", b"hello".to_vec(), (400, "not_an_event")),
        ("a JSON array", b"[]".to_vec(), (400, "not_an_event")),
        ("100,000 nested arrays", deep.into_bytes(), (400, "not_an_event")),
        ("an event id over 100,000 nested arrays", deep_with_id.into_bytes(), (400, "not_an_event")),
        ("a JSON string, not an object", br#""evt_1""#.to_vec(), (400, "not_an_event")),
    ];
    for (what, body, expected) in cases {
        let answer = reason(ingest.post_signed(&body).await).await;
        assert_eq!(answer, (expected.0, expected.1.to_owned()), "{what}");
    }

    let body =
        serde_json::to_vec(&stripe::event("evt_headers", "customer.created", stripe::now(), stripe::customer("cus_h")))
            .expect("json");
    let url = ingest.url("/webhooks/stripe");
    let client = reqwest::Client::new();
    let with_signature = |value: HeaderValue| client.post(&url).header("stripe-signature", value).body(body.clone());
    let not_utf8 = HeaderValue::from_bytes(b"t=1,v1=\xff\xfe").expect("opaque bytes are a valid header value");
    let answer = reason(with_signature(not_utf8).send().await.expect("sent")).await;
    assert_eq!(answer.0, 400, "a signature header that is not UTF-8: {answer:?}");
    let long = HeaderValue::from_str(&format!("t=1,{}", "v1=00,".repeat(1_000))).expect("header");
    let answer = reason(with_signature(long).send().await.expect("sent")).await;
    assert_eq!(answer.0, 400, "6,000 bytes of signatures that do not match: {answer:?}");

    assert_eq!(db.event_count().await, 0, "no rejected request leaves a row");
    // Stripe's own header, without a content type: the signed bytes are what counts.
    let plain = client.post(&url).header("stripe-signature", stripe::sign(&body)).body(body.clone());
    assert_eq!(plain.send().await.expect("sent").status(), 200);
    assert_eq!(db.event_count().await, 1);
    ingest.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_nul_character_in_a_signed_event_is_stored_not_refused() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let mut event = stripe::event("evt_nul", "customer.updated", stripe::now(), stripe::customer("cus_nul"));
    event["data"]["object"]["name"] = Value::String("Null\u{0}Byte".to_owned());
    let body = serde_json::to_vec(&event).expect("json");
    assert!(body.windows(6).any(|w| w == b"\\u0000"), "serde_json escapes NUL as \\u0000");
    assert_eq!(ingest.post_signed(&body).await.status(), 200, "PostgreSQL's jsonb refuses \\u0000; the log must not");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT raw_body FROM ledger.events WHERE stripe_event_id = 'evt_nul'")
        .fetch_one(&db.pool)
        .await
        .expect("stored");
    assert_eq!(stored, body, "byte-exact");
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bad_bodies_and_credentials_and_counts_nothing() {
    let db = TestDb::new().await;
    let projector = TestProjector::start_billing_with(
        db.service_pool(8),
        ledger_tests::projector::catalog(),
        None,
        std::sync::Arc::new(domain::clock::SystemClock),
    )
    .await;
    let url = format!("http://{}/v1/usage", projector.addr);
    let client = reqwest::Client::new();
    let usage = |body: Vec<u8>| client.post(&url).bearer_auth(BILLING_KEY).body(body);
    let valid = |quantity: &str| {
        format!(r#"{{"customer":"cus_a","metric":"api_calls","quantity":{quantity},"idempotency_key":"k1"}}"#)
            .into_bytes()
    };
    let cases: [(&str, Vec<u8>, (u16, &str)); 7] = [
        ("not JSON", b"count one".to_vec(), (400, "invalid_request")),
        ("not UTF-8", b"{\"customer\":\"cus_\xff\"}".to_vec(), (400, "invalid_request")),
        ("a quantity that is text", valid(r#""ten""#), (400, "invalid_request")),
        ("a negative quantity", valid("-1"), (400, "invalid_request")),
        ("a quantity above 2^64", valid("18446744073709551616"), (400, "invalid_request")),
        ("a quantity of zero", valid("0"), (400, "invalid_request")),
        ("a JSON array", b"[]".to_vec(), (400, "invalid_request")),
    ];
    for (what, body, expected) in cases {
        let answer = reason(usage(body).send().await.expect("sent")).await;
        assert_eq!(answer, (expected.0, expected.1.to_owned()), "{what}");
    }
    assert_eq!(announced_body(projector.addr, 3 * 1024 * 1024).await, 413, "a body above the API's limit");
    let (_, metrics) = projector.admin_get("/metrics").await;
    assert!(metrics.contains("api_body_too_large_total 1"), "counted: {metrics}");
    let bearer = HeaderValue::from_bytes(b"Bearer sl_\xff\xfe").expect("opaque bytes");
    let stranger = client.post(&url).header("authorization", bearer).body(valid("1")).send().await.expect("sent");
    assert_eq!(reason(stranger).await, (401, "unauthorized".to_owned()), "a credential that is not UTF-8");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.usage").fetch_one(&db.pool).await.expect("rows");
    assert_eq!(rows, 0, "nothing counted");
    projector.stop().await;
}

/// The status answered to a POST that announces a `Content-Length` of `length` and sends nothing
/// more: the limit is enforced on the announcement (a client that kept writing 3 MiB would race
/// the server's close and might never read the 413).
async fn announced_body(addr: std::net::SocketAddr, length: usize) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/usage HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BILLING_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer before the body")
        .expect("read");
    let line = String::from_utf8_lossy(&answer[..n]).into_owned();
    line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {line:?}"))
}
