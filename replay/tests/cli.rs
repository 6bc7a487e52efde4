//! `replay` as people script it: data on stdout and nothing else, errors as one message (never a
//! backtrace), an unknown id as a failure.

use ledger_tests::db::TestDb;

/// The real binary with `env` (plus `DATABASE_URL`) and `args`: (exit code, stdout, stderr).
fn replay(url: &str, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("replay runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test]
async fn data_commands_print_only_data_and_failures_print_one_message_without_a_backtrace() {
    let db = TestDb::new().await;
    let url = db.url().await;

    let (code, out, err) = replay(&url, &[], &["database-url"]);
    assert_eq!((code, out.trim(), err.as_str()), (Some(0), url.as_str(), ""), "only the URL, no log line");

    let catalog = ledger_tests::db::workspace_root().join("catalog.example.toml");
    let catalog = catalog.to_str().expect("utf-8 path");
    let backtrace = [("RUST_BACKTRACE", "1"), ("CATALOG_PATH", catalog)];
    let (code, out, err) = replay(&url, &backtrace, &["timeline", "cus_nobody"]);
    assert_eq!(code, Some(1), "an unknown id fails: {out}{err}");
    assert_eq!(out, "", "no report for an unknown id");
    assert!(err.contains("cus_nobody") && err.contains("unknown id"), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "one message, no backtrace: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let (code, _, err) = replay(&url, &backtrace, &["rebuild", "--dry-rn"]);
    assert_eq!(code, Some(2), "a mistyped argument is a usage error: {err}");
    assert!(err.contains("--dry-rn") && !err.to_lowercase().contains("backtrace"), "{err}");
    let (code, _, err) = replay(&url, &backtrace, &["rebuild", "--json"]);
    assert_eq!(code, Some(2), "--json needs --dry-run: {err}");
    assert!(err.contains("--dry-run"), "{err}");
}
