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

/// `replay analytics mrr` prints what `GET /v1/analytics/mrr` answers, as CSV for scripts.
#[tokio::test]
async fn analytics_mrr_prints_each_day_of_each_currency_as_csv_or_text() {
    let db = TestDb::new().await;
    let url = db.url().await;
    db.execute(
        "INSERT INTO projection.mrr_movements (key, stripe_customer_id, currency, kind, amount, mrr_after, created, day,
           stripe_subscription_id, event_id, position) VALUES
           ('cus_a/000000', 'cus_a', 'usd', 'new', 2900, 2900, 1772366400, '2026-03-01', 'sub_a', 'evt_1', 1),
           ('cus_a/000001', 'cus_a', 'usd', 'expansion', 7000, 9900, 1772452800, '2026-03-02', 'sub_a', 'evt_2', 2)",
    )
    .await;
    let (code, out, err) =
        replay(&url, &[], &["analytics", "mrr", "--from", "2026-03-01", "--to", "2026-03-03", "--csv"]);
    assert_eq!((code, err.as_str()), (Some(0), ""), "{out}");
    assert_eq!(
        out,
        "date,currency,mrr,customers,new,expansion,reactivation,contraction,churn\n\
         2026-03-01,usd,2900,1,2900,0,0,0,0\n\
         2026-03-02,usd,9900,1,0,7000,0,0,0\n\
         2026-03-03,usd,9900,1,0,0,0,0,0\n"
    );
    let (code, text, _) = replay(&url, &[], &["analytics", "mrr", "--from", "2026-03-02", "--to", "2026-03-02"]);
    assert_eq!(code, Some(0));
    assert!(text.lines().nth(1).is_some_and(|l| l.starts_with("2026-03-02 usd") && l.contains("9900")), "{text}");
    let (code, _, err) = replay(&url, &[], &["analytics", "mrr", "--from", "2026-03-05", "--to", "2026-03-01"]);
    assert_eq!(code, Some(1), "{err}");
}
