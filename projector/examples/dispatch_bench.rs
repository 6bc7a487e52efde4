//! Dispatcher throughput: N new subscriptions (customer + subscription events appended directly)
//! with a fake provisioner answering after a fixed latency, mails to SMTP on loopback. Prints the
//! time from the first event to the last instance running and to the last mail settled.
//!
//! usage: cargo run --release -p projector --example dispatch_bench -- [subscriptions] [latency_ms] [concurrency]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use domain::clock::SystemClock;
use ledger_tests::db::TestDb;
use ledger_tests::projector::{TestProjector, catalog, effect_settings};
use ledger_tests::provisioner::FakeProvisioner;
use ledger_tests::smtp::SmtpServer;
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::wait;
use projector::effects::provisioner::ProvisionerConfig;
use shared::log::{NewEvent, Source, append_events};

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.expect(sql)
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        shared::telemetry::init(shared::config::LogFormat::Pretty);
    }
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let latency_ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let concurrency: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(8);
    let db = TestDb::new().await;
    let provisioner = FakeProvisioner::start().await;
    provisioner.latency(Duration::from_millis(latency_ms));
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = effect_settings(dir.path());
    settings.provisioner =
        Some(ProvisionerConfig { url: provisioner.url.clone(), api_key: None, timeout: Duration::from_secs(30) });
    settings.mail.smtp_url = Some(smtp.url.clone().into());
    settings.concurrency = concurrency;
    settings.poll_interval = Duration::from_secs(1);

    let t = stripe::now();
    let events: Vec<NewEvent> = (0..n)
        .flat_map(|i| {
            let (cus, sub) = (format!("cus_b{i}"), format!("sub_b{i}"));
            let snap = SubSnapshot::new(&sub, &cus, "price_starter_monthly", "active", (t, t + 2_592_000));
            [
                stripe::customer_event("customer.created", t, Shape::Basil, &cus, &format!("{cus}@example.com")),
                stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap),
            ]
        })
        .map(|body| NewEvent::decode(Bytes::from(body), Some("t=0,v1=00".into())).expect("event"))
        .collect();
    for chunk in events.chunks(500) {
        append_events(&db.pool, chunk, Source::Webhook, "dispatch-bench").await.expect("append");
    }
    let started = Instant::now();
    let projector =
        TestProjector::start_with(db.service_pool(16), catalog(), 500, settings, Arc::new(SystemClock)).await;
    let expected = i64::try_from(n).expect("n");
    wait::until(Duration::from_secs(3600), "every instance running", || async {
        (count(&db, "SELECT count(*) FROM projection.instances WHERE status = 'running'").await == expected)
            .then_some(())
    })
    .await;
    let provisioned = started.elapsed();
    // A welcome and a token mail per subscription.
    wait::until(Duration::from_secs(3600), "every mail", || async { (smtp.received().len() >= 2 * n).then_some(()) })
        .await;
    let mailed = started.elapsed();
    projector.stop().await;
    let calls = provisioner.calls().len();
    println!(
        "{n} subscriptions, provisioner latency {latency_ms} ms, concurrency {concurrency}: all running after {:.2}s \
         ({:.1} provisions/s, {calls} calls), all {} mails after {:.2}s ({:.1} mails/s)",
        provisioned.as_secs_f64(),
        n as f64 / provisioned.as_secs_f64(),
        smtp.received().len(),
        mailed.as_secs_f64(),
        smtp.received().len() as f64 / mailed.as_secs_f64()
    );
}
