//! Fills the log of `DATABASE_URL` with a synthetic history: the first `--per-customer` events of
//! a realistic lifecycle (signup, checkout, trial, paid cycles, plan changes, packs, failed and
//! recovered payments, cancellations; both API shapes) for each of `--customers` customers,
//! appended through the real append path in batches. Used by `scripts/bench-rebuild`.

use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use serde_json::{Value, json};
use shared::log::{NewEvent, Source, append_events};

#[derive(Debug, Parser)]
struct Args {
    /// Customers.
    #[arg(long, default_value_t = 100_000)]
    customers: u64,
    /// Events per customer (the start of its lifecycle).
    #[arg(long, default_value_t = 10)]
    per_customer: usize,
    /// Number of the first customer (a second run with another range adds other customers).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// When the lifecycles start, unix seconds.
    #[arg(long, default_value_t = 1_700_000_000)]
    t0: i64,
    /// Events per append call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Bodies as large as Stripe sends them (issue 33, item 3): each object gets the parts Stripe's
    /// full objects carry and the fold never reads (settings, automatic tax, items' `plan`,
    /// invoice lines' details), about 2.3x the example objects' size.
    #[arg(long)]
    stripe_sized: bool,
}

/// `body` with what Stripe's full objects carry besides what the lifecycle sets; nothing the
/// lifecycle wrote changes (only keys it lacks are added).
fn stripe_sized(body: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut event: Value = serde_json::from_slice(&body)?;
    let Some(object) = event["data"]["object"].as_object_mut() else { return Ok(body) };
    let settings = json!({
        "payment_method_options": { "card": { "request_three_d_secure": "automatic", "network": null,
            "mandate_options": null }, "acss_debit": null, "bancontact": null, "customer_balance": null,
            "konbini": null, "sepa_debit": null, "us_bank_account": { "financial_connections":
            { "permissions": ["payment_method"], "prefetch": [] }, "verification_method": "automatic" } },
        "payment_method_types": ["card", "us_bank_account"], "save_default_payment_method": "on_subscription"
    });
    let extra = [
        ("payment_settings", settings),
        ("automatic_tax", json!({ "enabled": false, "liability": null, "disabled_reason": null })),
        (
            "invoice_settings",
            json!({ "account_tax_ids": null, "issuer": { "type": "self" },
            "custom_fields": null, "footer": null, "rendering_options": null }),
        ),
        ("trial_settings", json!({ "end_behavior": { "missing_payment_method": "create_invoice" } })),
        ("billing_thresholds", Value::Null),
        ("pending_invoice_item_interval", Value::Null),
        ("transfer_data", Value::Null),
        ("test_clock", Value::Null),
        ("application", Value::Null),
        ("on_behalf_of", Value::Null),
        ("default_tax_rates", json!([])),
        ("next_pending_invoice_item_invoice", Value::Null),
        (
            "status_transitions",
            json!({ "finalized_at": 1_700_000_000, "marked_uncollectible_at": null,
            "paid_at": 1_700_000_100, "voided_at": null }),
        ),
        ("total_tax_amounts", json!([])),
        ("total_discount_amounts", json!([])),
        ("rendering", Value::Null),
        ("shipping_cost", Value::Null),
        ("shipping_details", Value::Null),
        ("from_invoice", Value::Null),
        ("custom_fields", json!([])),
        ("consent_collection", Value::Null),
        ("phone_number_collection", json!({ "enabled": false })),
        ("tax_id_collection", json!({ "enabled": false, "required": "never" })),
        ("cancellation_details", json!({ "comment": null, "feedback": null, "reason": null })),
        ("pending_setup_intent", Value::Null),
        ("schedule", Value::Null),
        ("presentment_details", Value::Null),
        ("billing_cycle_anchor_config", Value::Null),
        ("default_source", Value::Null),
        (
            "custom_text",
            json!({ "after_submit": null, "shipping_address": null, "submit": null,
            "terms_of_service_acceptance": null }),
        ),
        (
            "invoice_creation",
            json!({ "enabled": false, "invoice_data": { "account_tax_ids": null,
            "custom_fields": null, "description": null, "footer": null, "issuer": null, "metadata": {},
            "rendering_options": null } }),
        ),
        (
            "payment_method_options",
            json!({ "card": { "installments": null, "request_three_d_secure": "automatic",
            "setup_future_usage": null, "capture_method": null, "statement_descriptor_suffix_kana": null },
            "link": { "setup_future_usage": null }, "us_bank_account": { "financial_connections":
            { "permissions": ["payment_method"], "prefetch": [] }, "verification_method": "automatic" } }),
        ),
        ("payment_method_configuration_details", json!({ "id": "pmc_1OGdUMIg4uBVY2xCkHRJQGZq", "parent": null })),
        ("total_details", json!({ "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 })),
    ];
    for (key, value) in extra {
        object.entry(key).or_insert(value);
    }
    for list in ["items", "lines"] {
        for item in object.get_mut(list).and_then(|l| l["data"].as_array_mut()).into_iter().flatten() {
            let Some(item) = item.as_object_mut() else { continue };
            if let Some(price) = item.get("price").cloned().filter(Value::is_object) {
                let mut plan = price.clone();
                plan["object"] = json!("plan");
                plan["amount"] = price["unit_amount"].clone();
                plan["interval"] = price["recurring"]["interval"].clone();
                item.entry("plan").or_insert(plan);
            }
            item.entry("tax_rates").or_insert(json!([]));
            item.entry("tax_amounts").or_insert(json!([]));
            item.entry("discount_amounts").or_insert(json!([]));
            item.entry("billing_thresholds").or_insert(Value::Null);
            item.entry("metadata").or_insert(json!({}));
        }
    }
    Ok(serde_json::to_vec(&event)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("set DATABASE_URL"))?;
    let pool = sqlx::PgPool::connect(&url).await?;
    shared::db::migrate(&pool).await?;
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut pending = Vec::with_capacity(args.batch);
    let mut total = 0usize;
    for n in args.first..args.first + args.customers {
        for event in ledger_tests::lifecycle::lifecycle(n, &mut rng, args.t0).into_iter().take(args.per_customer) {
            let body = if args.stripe_sized { stripe_sized(event.body)? } else { event.body };
            pending.push(NewEvent::decode(Bytes::from(body), None)?);
            if pending.len() == args.batch {
                append_events(&pool, &pending, Source::Backfill, "synthetic").await?;
                total += pending.len();
                pending.clear();
            }
        }
    }
    append_events(&pool, &pending, Source::Backfill, "synthetic").await?;
    total += pending.len();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "appended {total} events for {} customers in {seconds:.1}s ({:.0} events/s)",
        args.customers,
        total as f64 / seconds
    );
    Ok(())
}
