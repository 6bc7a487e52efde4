//! The real `ingest` binary with no configuration: it creates the embedded PostgreSQL cluster,
//! prints its webhook URL and dev secret, stores a signed event, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::config::DEV_WEBHOOK_SECRET;
use shared::embedded::LocalCluster;

#[tokio::test]
async fn the_binary_runs_with_no_configuration_on_the_embedded_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The postgres user (we may be root) must be able to traverse it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data_dir = dir.path().join(".data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LEDGER_DATA_DIR", &data_dir)
        .env("INGEST_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ingest starts");

    // The banner names the URL and the secret; read it line by line (bounded by the child's output).
    let stdout = child.stdout.take().expect("piped stdout");
    // Keep draining stdout until the child exits, as a terminal would.
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let banner = tokio::time::timeout(Duration::from_secs(120), async {
        let mut seen = String::new();
        while let Some(line) = lines_rx.recv().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("readiness:") {
                return seen;
            }
        }
        panic!("ingest exited before printing its banner:\n{seen}");
    })
    .await
    .expect("banner in time");
    assert!(banner.contains(DEV_WEBHOOK_SECRET), "{banner}");
    let url = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("webhook URL:"))
        .map(|u| u.trim().to_owned())
        .expect("webhook URL line");

    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let body = format!(
        r#"{{"id":"evt_binary_{now}","object":"event","api_version":"2025-03-31.basil","created":{now},"livemode":false,"type":"customer.created","data":{{"object":{{"id":"cus_bin","object":"customer"}}}}}}"#
    );
    let signature = domain::signature::sign_header(DEV_WEBHOOK_SECRET, now, body.as_bytes());
    let response = reqwest::Client::new()
        .post(&url)
        .header("stripe-signature", signature)
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);

    ledger_tests::bin::terminate(&child);
    let (exit, _) = ledger_tests::bin::exit_within(&mut child, Duration::from_secs(30)).await;
    assert!(exit.success(), "ingest exited with {exit}");

    // The event is in the embedded cluster's database, byte for byte.
    let cluster = LocalCluster::new(&data_dir);
    let server = cluster.ensure_running().await.expect("cluster still there");
    let pool = sqlx::PgPool::connect_with(server.options(shared::db::EMBEDDED_DATABASE)).await.expect("connect");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT raw_body FROM ledger.events").fetch_one(&pool).await.expect("row");
    assert_eq!(stored, body.as_bytes());
    pool.close().await;
    cluster.stop().await.expect("cluster stops");
}
