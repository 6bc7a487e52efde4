//! `MIGRATE_ON_START=false`: the binaries refuse an unmigrated database with a message naming
//! `replay migrate`, which applies the migrations with the owner role; then they start.

use std::process::Command;

use ledger_tests::db::{server_options, server_url};
use sqlx::postgres::PgPoolOptions;

async fn replay(url: &str, args: &[&str], migrate_on_start: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_replay"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("MIGRATE_ON_START", migrate_on_start)
        .args(args)
        .output()
        .expect("replay runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_start_up_migrations_the_binaries_wait_for_replay_migrate() {
    let name = format!("m_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPoolOptions::new().max_connections(1).connect_with(server_options().await).await.expect("server");
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&admin).await.expect("create");
    let url = format!("{}/{name}", server_url().await);

    let (ok, out) = replay(&url, &["verify"], "false").await;
    assert!(!ok, "{out}");
    assert!(out.contains("MIGRATE_ON_START=false") && out.contains("replay migrate"), "{out}");

    let (ok, out) = replay(&url, &["migrate"], "false").await;
    assert!(ok && out.contains("migrations applied"), "{out}");
    let (ok, out) = replay(&url, &["verify"], "false").await;
    assert!(ok && out.contains("verified 0 events"), "{out}");
}
