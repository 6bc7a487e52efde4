//! The pure fold, given/when/then, on Stripe-shaped payloads in both API shapes (no database).

use domain::catalog::{Catalog, Limit, UNKNOWN_TIER};
use domain::fetched::Part;
use domain::fold::FoldConfig;
use domain::keys::Subject;
use domain::state::{Desired, Intent, Projections};
use domain::window;
use ledger_tests::lifecycle;
use ledger_tests::projector::without_positions;
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use proptest::prelude::*;

const SHAPES: [Shape; 2] = [Shape::Legacy, Shape::Basil];
const T: i64 = 1_750_000_000;
const DAY: i64 = 86_400;

use ledger_tests::projector::catalog;

/// A log being folded: positions are assigned in the order events are given.
struct Given {
    state: Projections,
    catalog: Catalog,
    position: i64,
    intents: Vec<Intent>,
}

impl Given {
    fn new() -> Self {
        Self { state: Projections::default(), catalog: catalog(), position: 0, intents: Vec::new() }
    }

    fn event(&mut self, body: &[u8]) -> &mut Self {
        self.position += 1;
        let intents = self.state.fold_and_apply(self.position, body, &self.catalog, &FoldConfig::default());
        self.intents.extend(intents);
        self
    }

    fn intent_keys(&self) -> Vec<String> {
        self.intents.iter().map(|i| i.key.to_string()).collect()
    }

    fn fetch_keys(&self) -> Vec<String> {
        self.intent_keys().into_iter().filter(|k| k.starts_with("fetch:")).collect()
    }
}

/// The open anomalies events raised (without the catalog's `price_amount_unknown`, a function of
/// the catalog and the prices alone, tested on its own).
fn raised(state: &Projections) -> Vec<&String> {
    state.anomalies.values().filter(|a| a.kind != "price_amount_unknown").map(|a| &a.key).collect()
}

fn snap(status: &str, price: &str) -> SubSnapshot {
    SubSnapshot::new("sub_1", "cus_1", price, status, (T, T + 30 * DAY))
}

fn sub_event(event_type: &str, created: i64, shape: Shape, s: &SubSnapshot) -> Vec<u8> {
    stripe::subscription_event(event_type, created, shape, s)
}

#[test]
fn customers_are_created_updated_and_deleted_for_good() {
    for shape in SHAPES {
        let mut g = Given::new();
        g.event(&stripe::customer_event("customer.created", T, shape, "cus_1", "a@example.com"));
        g.event(&stripe::customer_event("customer.updated", T + 10, shape, "cus_1", "b@example.com"));
        let account = &g.state.accounts["cus_1"];
        assert_eq!(account.email.as_deref(), Some("b@example.com"));
        assert_eq!(account.name.as_deref(), Some("Customer cus_1"));
        assert!(!account.deleted);
        g.event(&stripe::customer_event("customer.deleted", T + 20, shape, "cus_1", ""));
        // A late, older update does not bring it back.
        g.event(&stripe::customer_event("customer.updated", T + 15, shape, "cus_1", "c@example.com"));
        let account = &g.state.accounts["cus_1"];
        assert!(account.deleted, "{shape:?}");
        assert_eq!(account.email.as_deref(), Some("b@example.com"), "the deleted stub keeps the last known email");
        let created = stripe::customer("cus_1")["created"].as_i64();
        assert!(created.is_some());
        assert_eq!(account.created, created, "when Stripe created it, kept through the stub that omits it");
    }
}

#[test]
fn a_new_subscription_gets_its_tier_limits_instance_token_and_welcome() {
    for shape in SHAPES {
        let mut g = Given::new();
        g.event(&sub_event("customer.subscription.created", T, shape, &snap("active", "price_professional_yearly")));
        let sub = &g.state.subscriptions["sub_1"];
        assert_eq!((sub.tier.as_str(), sub.status.as_str()), ("professional", "active"), "{shape:?}");
        assert_eq!(sub.price_id.as_deref(), Some("price_professional_yearly"));
        assert_eq!(sub.current_period_end, Some(T + 30 * DAY), "{shape:?}: period read from either shape");
        let limits = sub.limits.expect("limits");
        assert_eq!((limits.agents, limits.memory_mb), (Limit::Max(10.0), Limit::Max(2048.0)));
        let instance = &g.state.instances["sub_1"];
        assert_eq!(instance.desired, Desired::Running);
        assert_eq!(instance.limits, Some(limits));
        let token = &g.state.tokens["cus_1"];
        assert!(token.wanted);
        assert_eq!(token.tier.as_deref(), Some("professional"));
        assert!(g.state.accounts.contains_key("cus_1"), "the customer row is created from the id");
        assert_eq!(g.intent_keys(), ["instance:sub_1:1", "email:welcome:sub_1", "token:cus_1:1"]);
    }
}

/// Issue 30, item 5: a price the catalog sells whose amount no Stripe object has stated yet is an
/// open anomaly (the pricing page shows `amount: null`); the price's own event resolves it.
#[test]
fn a_sold_price_never_seen_is_an_anomaly_until_stripe_states_its_amount() {
    let mut g = Given::new();
    g.event(&stripe::customer_event("customer.created", T, Shape::Basil, "cus_1", "a@example.com"));
    let unknown = |g: &Given| -> Vec<String> {
        g.state.anomalies.values().filter(|a| a.kind == "price_amount_unknown").map(|a| a.key.clone()).collect()
    };
    let open = unknown(&g);
    assert!(open.contains(&"price_amount_unknown:price_starter_yearly".to_owned()), "{open:?}");
    assert!(open.contains(&"price_amount_unknown:price_credits_1000".to_owned()), "packs too: {open:?}");
    assert!(g.state.anomalies.values().all(|a| a.position == 0 || a.kind != "price_amount_unknown"));
    // Seen again with the next event: not written again.
    let position = g.position;
    let delta = domain::fold::fold(
        &g.state,
        position + 1,
        &stripe::customer_event("customer.updated", T + 1, Shape::Basil, "cus_1", "b@example.com"),
        &g.catalog,
        &FoldConfig::default(),
    );
    assert!(delta.anomalies.is_empty() && delta.resolved.is_empty(), "{delta:?}");
    // `replay reconcile --objects prices` appends Stripe's price: resolved.
    g.event(&stripe::price_event("price.updated", T + 2, stripe::price("price_starter_yearly", 29_000)));
    let open = unknown(&g);
    assert!(!open.contains(&"price_amount_unknown:price_starter_yearly".to_owned()), "resolved: {open:?}");
    assert!(open.contains(&"price_amount_unknown:price_credits_1000".to_owned()));
}

#[test]
fn an_unknown_price_is_loud_and_a_fixed_catalog_repairs_it() {
    for shape in SHAPES {
        let body = sub_event("customer.subscription.created", T, shape, &snap("active", "price_new_team_plan"));
        let mut g = Given::new();
        g.event(&body);
        let sub = &g.state.subscriptions["sub_1"];
        assert_eq!(sub.tier, UNKNOWN_TIER);
        assert_eq!(sub.limits, None);
        assert_eq!(g.state.instances["sub_1"].desired, Desired::Absent, "never a running instance, never free");
        assert!(!g.state.tokens["cus_1"].wanted);
        let anomaly = &g.state.anomalies["unknown_price:sub_1"];
        assert_eq!((anomaly.kind.as_str(), anomaly.position), ("unknown_price", 1));
        assert!(anomaly.detail.contains("price_new_team_plan"));
        assert!(!g.intent_keys().iter().any(|k| k.starts_with("email:welcome")));

        // Fix the catalog and rebuild from position 0.
        let fixed = domain::catalog::EXAMPLE
            .replace("\"price_professional_yearly\"]", "\"price_professional_yearly\", \"price_new_team_plan\"]");
        let mut rebuilt = Given { catalog: Catalog::parse(&fixed).expect("fixed catalog"), ..Given::new() };
        rebuilt.event(&body);
        assert_eq!(rebuilt.state.subscriptions["sub_1"].tier, "professional");
        assert!(raised(&rebuilt.state).is_empty());
        assert_eq!(rebuilt.state.instances["sub_1"].desired, Desired::Running);
        // A later snapshot with a known price also resolves it live.
        g.event(&sub_event("customer.subscription.updated", T + 5, shape, &snap("active", "price_starter_monthly")));
        assert!(raised(&g.state).is_empty());
        assert_eq!(g.state.instances["sub_1"].desired, Desired::Running);
    }
}

#[test]
fn an_older_snapshot_never_overwrites_a_newer_one() {
    let mut g = Given::new();
    g.event(&sub_event(
        "customer.subscription.updated",
        T + 200,
        Shape::Basil,
        &snap("active", "price_enterprise_monthly"),
    ));
    g.event(&sub_event(
        "customer.subscription.updated",
        T + 100,
        Shape::Legacy,
        &snap("past_due", "price_starter_monthly"),
    ));
    let sub = &g.state.subscriptions["sub_1"];
    assert_eq!((sub.status.as_str(), sub.tier.as_str()), ("active", "enterprise"));
}

#[test]
fn within_one_second_the_later_lifecycle_state_wins_in_either_order() {
    let active = sub_event("customer.subscription.updated", T, Shape::Legacy, &snap("active", "price_starter_monthly"));
    let past_due =
        sub_event("customer.subscription.updated", T, Shape::Legacy, &snap("past_due", "price_starter_monthly"));
    let deleted =
        sub_event("customer.subscription.deleted", T, Shape::Legacy, &snap("canceled", "price_starter_monthly"));
    for order in [[&active, &past_due, &deleted], [&deleted, &past_due, &active], [&past_due, &deleted, &active]] {
        let mut g = Given::new();
        g.event(order[0]).event(order[1]);
        let status = g.state.subscriptions["sub_1"].status.clone();
        g.event(order[2]);
        let sub = &g.state.subscriptions["sub_1"];
        assert!(sub.deleted);
        assert_eq!(sub.status.as_str(), "canceled");
        assert_eq!(g.state.instances["sub_1"].desired, Desired::Deprovisioned);
        assert!(matches!(status.as_str(), "past_due" | "canceled"), "after two events: {status}");
    }
}

#[test]
fn a_deleted_subscription_stays_deleted() {
    let mut g = Given::new();
    g.event(&sub_event("customer.subscription.created", T, Shape::Legacy, &snap("active", "price_starter_monthly")));
    g.event(&sub_event(
        "customer.subscription.deleted",
        T + 10,
        Shape::Legacy,
        &snap("canceled", "price_starter_monthly"),
    ));
    g.event(&sub_event(
        "customer.subscription.updated",
        T + 20,
        Shape::Legacy,
        &snap("active", "price_starter_monthly"),
    ));
    let sub = &g.state.subscriptions["sub_1"];
    assert!(sub.deleted);
    assert_eq!(g.state.instances["sub_1"].desired, Desired::Deprovisioned);
    assert!(!g.state.tokens["cus_1"].wanted, "token revoked");
    let keys = g.intent_keys();
    assert!(
        keys.iter().any(|k| k == "email:canceled:sub_1")
            && keys.iter().any(|k| k == "instance:sub_1:2")
            && keys.iter().any(|k| k == "token:cus_1:2"),
        "{keys:?}"
    );
    assert_eq!(keys.len(), 6, "nothing after the deletion: {keys:?}");
}

#[test]
fn paid_invoices_grant_cycle_credits_once_with_the_rollover_cap() {
    for shape in SHAPES {
        let mut g = Given::new();
        g.event(&sub_event("customer.subscription.created", T, shape, &snap("active", "price_starter_monthly")));
        for cycle in 0..4 {
            let period = (T + cycle * 30 * DAY, T + (cycle + 1) * 30 * DAY);
            let invoice = format!("in_{cycle}");
            g.event(&stripe::invoice_event(
                "invoice.paid",
                period.0,
                shape,
                &stripe::InvoiceOf {
                    id: &invoice,
                    customer: "cus_1",
                    subscription: "sub_1",
                    price: "price_starter_monthly",
                    period,
                },
            ));
            g.event(&stripe::invoice_event(
                "invoice.payment_succeeded",
                period.0,
                shape,
                &stripe::InvoiceOf {
                    id: &invoice,
                    customer: "cus_1",
                    subscription: "sub_1",
                    price: "price_starter_monthly",
                    period,
                },
            ));
        }
        // starter: 1,000 per cycle, at most 2,000 carried over: 1000, 2000, 3000, 3000.
        assert_eq!(g.state.granted_balance("cus_1"), 3_000, "{shape:?}");
        assert_eq!(g.state.credit_grants.len(), 4, "once per invoice, not per event");
    }
}

#[test]
fn a_failed_payment_opens_a_grace_period_that_a_payment_closes() {
    for shape in SHAPES {
        let mut g = Given::new();
        g.event(&sub_event("customer.subscription.created", T, shape, &snap("active", "price_professional_monthly")));
        let period = (T + 30 * DAY, T + 60 * DAY);
        let failed_at = T + 30 * DAY;
        g.event(&stripe::invoice_event(
            "invoice.payment_failed",
            failed_at,
            shape,
            &stripe::InvoiceOf {
                id: "in_2",
                customer: "cus_1",
                subscription: "sub_1",
                price: "price_professional_monthly",
                period,
            },
        ));
        g.event(&sub_event(
            "customer.subscription.updated",
            failed_at,
            shape,
            &snap("past_due", "price_professional_monthly"),
        ));
        let sub = &g.state.subscriptions["sub_1"];
        assert_eq!(sub.grace_until, Some(failed_at + 7 * DAY), "{shape:?}");
        assert_eq!(g.state.instances["sub_1"].desired, Desired::Running, "kept running during the grace period");
        assert!(g.state.tokens["cus_1"].wanted, "token valid while in grace");
        assert!(g.intent_keys().iter().any(|k| k == "email:payment_failed:in_2"));
        let mail = g.intents.iter().find(|i| i.key.to_string() == "email:payment_failed:in_2").expect("intent");
        assert_eq!(
            mail.subject,
            domain::keys::Subject::Subscription("sub_1".into()),
            "the key names the invoice, the intent the subscription"
        );

        g.event(&stripe::invoice_event(
            "invoice.paid",
            failed_at + 3 * DAY,
            shape,
            &stripe::InvoiceOf {
                id: "in_2",
                customer: "cus_1",
                subscription: "sub_1",
                price: "price_professional_monthly",
                period,
            },
        ));
        assert_eq!(g.state.subscriptions["sub_1"].grace_until, None, "recovered");
        assert_eq!(g.state.granted_balance("cus_1"), 10_000);
    }
}

#[test]
fn a_late_failure_older_than_the_payment_opens_no_grace() {
    let mut g = Given::new();
    let period = (T, T + 30 * DAY);
    g.event(&stripe::invoice_event(
        "invoice.paid",
        T + 100,
        Shape::Basil,
        &stripe::InvoiceOf {
            id: "in_1",
            customer: "cus_1",
            subscription: "sub_1",
            price: "price_starter_monthly",
            period,
        },
    ));
    g.event(&stripe::invoice_event(
        "invoice.payment_failed",
        T + 50,
        Shape::Basil,
        &stripe::InvoiceOf {
            id: "in_1",
            customer: "cus_1",
            subscription: "sub_1",
            price: "price_starter_monthly",
            period,
        },
    ));
    assert_eq!(g.state.subscriptions["sub_1"].grace_until, None);
    assert!(!g.intent_keys().iter().any(|k| k.starts_with("email:payment_failed")), "no stale dunning email");
}

#[test]
fn checkouts_link_subscriptions_and_sell_credit_packs() {
    for shape in SHAPES {
        let mut g = Given::new();
        g.event(&stripe::checkout_completed(T, shape, "cs_1", "cus_1", "subscription", Some("sub_1"), None));
        assert_eq!(g.state.subscriptions["sub_1"].stripe_customer_id.as_deref(), Some("cus_1"));
        assert_eq!(
            g.state.instances["sub_1"].desired,
            Desired::Absent,
            "nothing runs before the subscription itself arrives"
        );
        g.event(&stripe::checkout_completed(
            T + 1,
            shape,
            "cs_2",
            "cus_1",
            "payment",
            None,
            Some(("price_credits_10000", 2)),
        ));
        assert_eq!(g.state.granted_balance("cus_1"), 20_000);
        g.event(&stripe::checkout_completed(
            T + 2,
            shape,
            "cs_3",
            "cus_1",
            "payment",
            None,
            Some(("price_mystery_pack", 1)),
        ));
        assert_eq!(g.state.granted_balance("cus_1"), 20_000, "an unknown pack grants nothing");
        assert_eq!(g.state.anomalies["unknown_price:cs_3"].kind, "unknown_price");
        g.event(&stripe::checkout_completed(T + 3, shape, "cs_4", "cus_1", "payment", None, None));
        assert_eq!(g.state.anomalies["checkout_without_items:cs_4"].kind, "checkout_without_items");
    }
}

#[test]
fn a_session_without_items_asks_for_a_fetch_and_the_fetched_fact_credits_it_once() {
    for shape in SHAPES {
        let mut g = Given::new();
        let original = stripe::checkout_completed(T, shape, "cs_9", "cus_9", "payment", None, None);
        g.event(&original);
        assert_eq!(g.intent_keys(), ["fetch:checkout_items:cs_9"]);
        assert!(
            g.state.anomalies["checkout_without_items:cs_9"].detail.contains("waiting for fetch:checkout_items:cs_9")
        );
        let items = vec![serde_json::json!({ "id": "li_1", "price": { "id": "price_credits_1000" }, "quantity": 2 })];
        let fetched = domain::fetched::Fetched { items, requests: vec![] };
        let fact =
            domain::fetched::event(&original, "fetch:checkout_items:cs_9", Part::CheckoutLineItems, fetched, T + 60)
                .expect("fact");
        g.event(&fact);
        assert_eq!(g.state.granted_balance("cus_9"), 2_000);
        assert!(!g.state.anomalies.contains_key("checkout_without_items:cs_9"), "resolved");
        g.event(&fact).event(&original);
        assert_eq!(g.state.granted_balance("cus_9"), 2_000, "credited once, whatever comes again");
        assert_eq!(g.intent_keys().len(), 1, "once credited, neither the original nor the fact asks again");

        // A fact that carries no items either: the anomaly stays and says so; no new fetch.
        let mut g = Given::new();
        g.event(&original);
        let empty = domain::fetched::event(
            &original,
            "fetch:checkout_items:cs_9",
            Part::CheckoutLineItems,
            Default::default(),
            T,
        )
        .expect("fact");
        g.event(&empty);
        assert!(g.state.anomalies["checkout_without_items:cs_9"].detail.contains("not even as fetched"));
        assert_eq!(g.intent_keys(), ["fetch:checkout_items:cs_9"]);
    }
}

#[test]
fn a_live_snapshot_without_a_period_asks_for_the_subscription_once_per_event() {
    let mut g = Given::new();
    let original = stripe::without_period(&sub_event(
        "customer.subscription.created",
        T,
        Shape::Basil,
        &snap("active", "price_starter_monthly"),
    ));
    g.event(&original);
    let id =
        serde_json::from_slice::<serde_json::Value>(&original).expect("json")["id"].as_str().expect("id").to_owned();
    let key = format!("fetch:subscription_period:{id}");
    assert_eq!(g.fetch_keys(), std::slice::from_ref(&key));
    assert!(g.state.anomalies[&format!("subscription_without_period:{id}")].detail.contains(&key));
    assert_eq!(g.state.subscriptions["sub_1"].status.as_str(), "active", "the rest of the snapshot is projected");

    let held = serde_json::json!({ "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
        "items": { "data": [{ "id": "si_1", "price": { "id": "price_starter_monthly" }, "current_period_end": T + 30 * DAY }] } });
    let fetched = domain::fetched::Fetched { items: vec![held], requests: vec![] };
    let fact = domain::fetched::event(&original, &key, Part::SubscriptionPeriod, fetched, T + 5).expect("fact");
    g.event(&fact).event(&fact);
    assert_eq!(g.state.subscriptions["sub_1"].current_period_end, Some(T + 30 * DAY));
    assert!(raised(&g.state).is_empty(), "resolved: {:?}", g.state.anomalies);
    assert_eq!(g.fetch_keys().len(), 1, "the fact asks for nothing");

    // A canceled snapshot needs no period.
    let mut g = Given::new();
    g.event(&stripe::without_period(&sub_event(
        "customer.subscription.deleted",
        T,
        Shape::Legacy,
        &snap("canceled", "price_starter_monthly"),
    )));
    assert!(g.fetch_keys().is_empty(), "{:?}", g.intent_keys());
}

#[test]
fn a_thin_event_asks_for_its_object_and_the_fact_projects_it() {
    let mut g = Given::new();
    let thin = stripe::thin_event("v1.customer.subscription.updated", T, "subscription", "sub_1");
    g.event(&thin);
    let id = serde_json::from_slice::<serde_json::Value>(&thin).expect("json")["id"].as_str().expect("id").to_owned();
    assert_eq!(g.intent_keys(), [format!("fetch:thin_object:{id}")]);
    assert_eq!(g.intents[0].subject, Subject::Subscription("sub_1".into()));
    assert_eq!(g.state.anomalies[&format!("thin_event:{id}")].kind, "thin_event");
    assert!(g.state.subscriptions.is_empty(), "nothing is guessed from a reference");

    let held = serde_json::json!({ "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "past_due",
        "current_period_end": T + 30 * DAY, "items": { "data": [{ "id": "si_1", "price": { "id": "price_starter_monthly" } }] } });
    let fetched = domain::fetched::Fetched { items: vec![held], requests: vec![] };
    let key = format!("fetch:thin_object:{id}");
    let fact = domain::fetched::event(&thin, &key, Part::ThinObject, fetched, T + 5).expect("fact");
    g.event(&fact);
    assert_eq!(g.state.subscriptions["sub_1"].status.as_str(), "past_due");
    assert!(!g.state.anomalies.contains_key(&format!("thin_event:{id}")), "resolved");

    // Types and objects the fold does not project are stored and ask for nothing.
    let mut g = Given::new();
    g.event(&stripe::thin_event("v1.invoice.created", T, "invoice", "in_1"));
    g.event(&stripe::thin_event("v1.billing.meter.error_report_triggered", T, "billing.meter", "mtr_1"));
    g.event(&stripe::thin_event("v2.core.account.updated", T, "v2.core.account", "acct_1"));
    assert!(g.intents.is_empty() && raised(&g.state).is_empty());
}

#[test]
fn an_undecodable_payload_is_an_anomaly_not_a_crash() {
    let mut g = Given::new();
    let mut broken: serde_json::Value = serde_json::from_slice(&sub_event(
        "customer.subscription.updated",
        T,
        Shape::Legacy,
        &snap("active", "price_starter_monthly"),
    ))
    .expect("json");
    broken["data"]["object"]["status"] = serde_json::json!(42);
    g.event(&serde_json::to_vec(&broken).expect("json"));
    g.event(b"not even json");
    assert_eq!(g.state.anomalies["undecodable:1"].kind, "undecodable");
    assert!(g.state.anomalies["undecodable:1"].detail.contains("a subscription"));
    assert!(g.state.anomalies.contains_key("undecodable:2"));
    assert!(g.state.subscriptions.is_empty());
}

#[test]
fn folding_the_same_event_twice_changes_nothing_the_second_time() {
    let body = sub_event("customer.subscription.created", T, Shape::Basil, &snap("active", "price_starter_monthly"));
    let invoice = stripe::invoice_event(
        "invoice.paid",
        T,
        Shape::Basil,
        &stripe::InvoiceOf {
            id: "in_1",
            customer: "cus_1",
            subscription: "sub_1",
            price: "price_starter_monthly",
            period: (T, T + 30 * DAY),
        },
    );
    let catalog = catalog();
    let mut state = Projections::default();
    state.fold_and_apply(1, &body, &catalog, &FoldConfig::default());
    state.fold_and_apply(2, &invoice, &catalog, &FoldConfig::default());
    let before = state.clone();
    let again = state.fold_and_apply(1, &body, &catalog, &FoldConfig::default());
    let again_invoice = state.fold_and_apply(2, &invoice, &catalog, &FoldConfig::default());
    assert_eq!(state, before);
    assert!(again.is_empty() && again_invoice.is_empty(), "no intents either");
}

#[test]
fn shuffled_and_duplicated_lifecycles_end_in_the_in_order_projections() {
    let catalog = catalog();
    let config = FoldConfig::default();
    let mut checked = 0;
    for seed in 0..300u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let events: Vec<Vec<u8>> =
            (0..3).flat_map(|n| lifecycle::lifecycle(seed * 10 + n, &mut rng, T)).map(|e| e.body).collect();
        let mut in_order = Projections::default();
        for (i, body) in events.iter().enumerate() {
            in_order.fold_and_apply(i as i64 + 1, body, &catalog, &config);
        }
        // Deliver in a random order, some events twice (a redelivery refolded at its first position).
        let mut order: Vec<usize> = (0..events.len()).collect();
        rng.shuffle(&mut order);
        let mut shuffled = Projections::default();
        let mut delivered: Vec<(i64, usize)> = Vec::new();
        for (arrival, &index) in order.iter().enumerate() {
            let position = arrival as i64 + 1;
            shuffled.fold_and_apply(position, &events[index], &catalog, &config);
            delivered.push((position, index));
            if rng.u8(0..5) == 0 {
                let (position, index) = delivered[rng.usize(0..delivered.len())];
                shuffled.fold_and_apply(position, &events[index], &catalog, &config);
            }
        }
        assert_eq!(without_positions(&shuffled), without_positions(&in_order), "seed {seed}");
        assert!(raised(&in_order).is_empty(), "seed {seed}: {:?}", in_order.anomalies);
        checked += events.len();
    }
    assert!(checked > 10_000, "only {checked} events checked");
}

/// Two customers' lifecycles (seeded) and a strategy of delivery orders for them: any permutation,
/// plus redeliveries (after arrival `at`, the `k`-th event delivered so far comes again and is
/// refolded at its first position, as the log's dedupe does). Shrinks to a minimal order.
/// Event bodies, the order they arrive in (indices), and redeliveries `(at arrival, k-th delivered)`.
type Deliveries = (Vec<Vec<u8>>, Vec<usize>, Vec<(usize, usize)>);

fn deliveries() -> impl Strategy<Value = Deliveries> {
    (0u64..100_000).prop_flat_map(|seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        let events: Vec<Vec<u8>> =
            (0..2).flat_map(|n| lifecycle::lifecycle(seed * 2 + n, &mut rng, T)).map(|e| e.body).collect();
        let n = events.len();
        let order = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        let redeliveries = proptest::collection::vec((0..n, 0..n), 0..n / 3);
        (Just(events), order, redeliveries)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_delivery_order_with_redeliveries_folds_to_the_in_order_projections(
        (events, order, redeliveries) in deliveries()
    ) {
        let (catalog, config) = (catalog(), FoldConfig::default());
        let mut in_order = Projections::default();
        for (i, body) in events.iter().enumerate() {
            in_order.fold_and_apply(i as i64 + 1, body, &catalog, &config);
        }
        let mut arrived = Projections::default();
        let mut delivered: Vec<(i64, usize)> = Vec::new();
        for (arrival, &index) in order.iter().enumerate() {
            let position = arrival as i64 + 1;
            arrived.fold_and_apply(position, &events[index], &catalog, &config);
            delivered.push((position, index));
            for &(_, k) in redeliveries.iter().filter(|(at, _)| *at == arrival) {
                let (position, index) = delivered[k % delivered.len()];
                arrived.fold_and_apply(position, &events[index], &catalog, &config);
            }
        }
        prop_assert_eq!(without_positions(&arrived), without_positions(&in_order));
    }
}

#[test]
fn a_plan_change_resizes_the_instance_and_the_token_tier() {
    for shape in SHAPES {
        let mut g = Given::new();
        g.event(&sub_event("customer.subscription.created", T, shape, &snap("active", "price_starter_monthly")));
        g.event(&sub_event(
            "customer.subscription.updated",
            T + 100,
            shape,
            &snap("active", "price_enterprise_yearly"),
        ));
        let instance = &g.state.instances["sub_1"];
        assert_eq!((instance.desired, instance.tier.as_str()), (Desired::Running, "enterprise"), "{shape:?}");
        assert_eq!(instance.limits.map(|l| l.agents), Some(Limit::Unlimited));
        assert_eq!(g.state.tokens["cus_1"].tier.as_deref(), Some("enterprise"));
        let keys = g.intent_keys();
        assert!(
            keys.iter().any(|k| k == "instance:sub_1:2") && keys.iter().any(|k| k == "token:cus_1:2"),
            "resize asked for: {keys:?}"
        );
        assert_eq!(keys.iter().filter(|k| k.starts_with("email:welcome")).count(), 1, "one welcome: {keys:?}");
    }
}

#[test]
fn a_paused_subscription_stops_its_instance_and_resuming_starts_it_again() {
    for shape in SHAPES {
        let mut g = Given::new();
        let mut trial = snap("trialing", "price_professional_monthly");
        trial.trial_end = Some(T + 14 * DAY);
        g.event(&sub_event("customer.subscription.created", T, shape, &trial));
        // trial_will_end carries a snapshot like any other: nothing changes but the version.
        g.event(&sub_event("customer.subscription.trial_will_end", T + 11 * DAY, shape, &trial));
        assert_eq!(g.state.subscriptions["sub_1"].trial_end, Some(T + 14 * DAY));
        assert_eq!(g.state.instances["sub_1"].desired, Desired::Running, "{shape:?}");
        g.event(&sub_event(
            "customer.subscription.paused",
            T + 14 * DAY,
            shape,
            &snap("paused", "price_professional_monthly"),
        ));
        assert_eq!(g.state.subscriptions["sub_1"].status.as_str(), "paused");
        assert_eq!(g.state.instances["sub_1"].desired, Desired::Absent, "paused: not running, not torn down");
        assert!(!g.state.tokens["cus_1"].wanted);
        g.event(&sub_event(
            "customer.subscription.resumed",
            T + 20 * DAY,
            shape,
            &snap("active", "price_professional_monthly"),
        ));
        assert_eq!(g.state.instances["sub_1"].desired, Desired::Running);
        assert!(g.state.tokens["cus_1"].wanted);
    }
}

/// `event` with its `livemode` set to `live`.
fn in_mode(body: &[u8], live: bool) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(body).expect("json");
    value["livemode"] = serde_json::Value::Bool(live);
    serde_json::to_vec(&value).expect("json")
}

#[test]
fn stripe_livemode_projects_one_mode_and_records_the_other_as_wrong_mode() {
    let live = in_mode(
        &sub_event("customer.subscription.created", T, Shape::Basil, &snap("active", "price_starter_monthly")),
        true,
    );
    let test_snap = SubSnapshot::new("sub_2", "cus_2", "price_starter_monthly", "active", (T, T + 30 * DAY));
    let test = in_mode(&sub_event("customer.subscription.created", T, Shape::Basil, &test_snap), false);
    for (mode, projected, wrong) in [(Some(true), "sub_1", "sub_2"), (Some(false), "sub_2", "sub_1")] {
        let mut state = Projections::default();
        let config = FoldConfig { livemode: mode, ..FoldConfig::default() };
        let mut intents = state.fold_and_apply(1, &live, &catalog(), &config);
        intents.extend(state.fold_and_apply(2, &test, &catalog(), &config));
        assert!(state.subscriptions.contains_key(projected), "{mode:?}");
        assert!(!state.subscriptions.contains_key(wrong), "the other mode drives nothing: {mode:?}");
        assert!(
            intents.iter().all(|i| !i.key.to_string().contains(wrong)),
            "no effect for the other mode: {intents:?}"
        );
        let anomalies: Vec<_> = state.anomalies.values().filter(|a| a.kind == "wrong_mode").collect();
        assert_eq!(anomalies.len(), 1, "{mode:?}");
        assert!(anomalies[0].detail.contains("mode event"), "{}", anomalies[0].detail);
    }
    // Unset: both modes are projected.
    let mut g = Given::new();
    g.event(&live).event(&test);
    assert!(g.state.subscriptions.contains_key("sub_1") && g.state.subscriptions.contains_key("sub_2"));
    assert!(g.state.anomalies.values().all(|a| a.kind != "wrong_mode"));
}

#[test]
fn extreme_values_saturate_instead_of_overflowing_the_fold() {
    // A pack bought u64::MAX times, and a payment failed at the last storable second: no panic,
    // and every value stays one a table can hold.
    let mut g = Given::new();
    g.event(&stripe::checkout_completed(
        T,
        Shape::Basil,
        "cs_huge",
        "cus_1",
        "payment",
        None,
        Some(("price_credits_10000", u64::MAX)),
    ));
    assert!(g.state.granted_balance("cus_1") > 0);
    let s = snap("active", "price_starter_monthly");
    g.event(&sub_event("customer.subscription.created", T, Shape::Basil, &s));
    let of = stripe::InvoiceOf {
        id: "in_late",
        customer: "cus_1",
        subscription: "sub_1",
        price: "price_starter_monthly",
        period: (T, T + 30 * DAY),
    };
    g.event(&stripe::invoice_event("invoice.payment_failed", domain::stripe::MAX_TIME, Shape::Basil, &of));
    let grace = g.state.subscriptions["sub_1"].grace_until.expect("a grace deadline");
    assert!(grace <= domain::stripe::MAX_TIME);
}

/// Events that read more than one customer's lifecycle does: a second subscription of the
/// customer (the token's tier is the best of both), an unknown price fixed by a later snapshot, an
/// invoice paid first without a known price then with one (a prefix of anomalies resolved), and a
/// credit pack with an unknown price (an anomaly that stays).
fn extras(n: u64, shape: Shape) -> Vec<Vec<u8>> {
    let (customer, sub) = (format!("cus_life{n:06}"), format!("sub_extra{n:06}"));
    let period = (T, T + 30 * DAY);
    let mut snapshot = SubSnapshot::new(&sub, &customer, "price_nope", "active", period);
    let unknown = stripe::subscription_event("customer.subscription.created", T + 5, shape, &snapshot);
    snapshot.price = "price_enterprise_monthly".into();
    let known = stripe::subscription_event("customer.subscription.updated", T + 6, shape, &snapshot);
    let invoice = |event_type: &str, at: i64, price: &str| {
        let of = stripe::InvoiceOf {
            id: &format!("in_extra{n:06}"),
            customer: &customer,
            subscription: &sub,
            price,
            period,
        };
        stripe::invoice_event(event_type, at, shape, &of)
    };
    let pack = stripe::checkout_completed(
        T + 9,
        shape,
        &format!("cs_extra{n:06}"),
        &customer,
        "payment",
        None,
        Some(("price_nope", 1)),
    );
    vec![
        unknown,
        known,
        invoice("invoice.paid", T + 7, "price_nope"),
        invoice("invoice.payment_succeeded", T + 8, "price_enterprise_monthly"),
        pack,
    ]
}

/// The live runner folds each batch over a window of only the rows it reads, loaded from the
/// tables, with a bounded cache in between (`domain::window`). Under shuffled and repeated
/// deliveries, in batches of any size and with caches of any size (none, tiny, unbounded), the
/// tables it writes and the intents it raises are those of the fold over the whole state.
#[test]
fn folding_batches_over_windows_of_what_they_read_equals_folding_the_whole_state() {
    let (catalog, config) = (catalog(), FoldConfig::default());
    let (mut batches, mut rounds, mut anomalies) = (0, 0, 0);
    for seed in 0..200u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut events: Vec<Vec<u8>> =
            (0..3).flat_map(|n| lifecycle::lifecycle(seed * 10 + n, &mut rng, T)).map(|e| e.body).collect();
        events.extend(extras(seed * 10, SHAPES[rng.usize(0..2)]));
        rng.shuffle(&mut events);
        for _ in 0..events.len() / 5 {
            let again = events[rng.usize(0..events.len())].clone();
            events.insert(rng.usize(0..events.len()), again);
        }
        let delivered: Vec<(i64, &[u8])> = events.iter().enumerate().map(|(i, b)| (i as i64 + 1, &b[..])).collect();

        let mut whole = Projections::default();
        let mut whole_intents = Vec::new();
        for &(position, body) in &delivered {
            let intents = whole.fold_and_apply(position, body, &catalog, &config);
            whole_intents.extend(intents.into_iter().map(|i| (position, i)));
        }

        let mut tables = Projections::default();
        let mut cache = window::Cache::new([0, 3, 64, usize::MAX][seed as usize % 4]);
        let mut live_intents = Vec::new();
        let mut rest = &delivered[..];
        while !rest.is_empty() {
            let (batch, tail) = rest.split_at(rng.usize(1..=rest.len().min(40)));
            let folded = window::fold_with(&cache, &tables, batch, &catalog, &config);
            window::write_changes(&mut tables, &folded.state, &folded.changes);
            cache.keep(&folded.state, &folded.loaded, &folded.changes);
            live_intents.extend(folded.intents);
            (batches, rounds) = (batches + 1, rounds + folded.rounds);
            rest = tail;
        }
        assert_eq!(tables, whole, "seed {seed}");
        assert_eq!(live_intents, whole_intents, "seed {seed}");
        anomalies += whole.anomalies.len();
    }
    assert!(anomalies >= 200, "the extras' anomalies were folded: {anomalies}");
    assert!(rounds >= 2 * batches, "every batch loaded its window: {rounds} rounds, {batches} batches");
}

/// A price event with Stripe's example price under another id and amount.
fn price_event(event_type: &str, created: i64, id: &str, unit_amount: i64) -> Vec<u8> {
    stripe::price_event(event_type, created, stripe::price(id, unit_amount))
}

/// Issue 30, item 1: what a price charges comes from Stripe's objects: price events (the newest
/// snapshot wins, whatever the delivery order), legacy plans, and the prices subscriptions carry.
#[test]
fn prices_are_what_stripes_newest_price_objects_say() {
    let mut g = Given::new();
    g.event(&price_event("price.created", T, "price_a", 900));
    g.event(&price_event("price.updated", T + 20, "price_a", 1_200));
    g.event(&price_event("price.updated", T + 10, "price_a", 1_000));
    let a = &g.state.prices["price_a"].price;
    assert_eq!((a.unit_amount, a.currency.as_deref(), a.active), (Some(1_200), Some("usd"), true), "the newest");
    let recurring = a.recurring.as_ref().expect("recurring");
    assert_eq!(
        (recurring.interval.as_str(), recurring.interval_count, recurring.usage_type.as_str()),
        ("month", 1, "licensed")
    );
    assert_eq!(a.product.as_deref(), Some("prod_NZbFOV0OmNHxwl"));
    g.event(&price_event("price.deleted", T + 30, "price_a", 1_200));
    assert!(!g.state.prices["price_a"].price.active, "a deleted price is no longer sellable");

    // A legacy plan: amount and the cycle at the top level.
    let plan = serde_json::json!({ "id": "plan_y", "object": "plan", "amount": 12_000, "currency": "EUR",
        "interval": "year", "interval_count": 1, "usage_type": "licensed", "active": true, "product": "prod_y" });
    g.event(&serde_json::to_vec(&stripe::event(&stripe::event_id(), "plan.created", T, plan)).expect("json"));
    let y = &g.state.prices["plan_y"].price;
    assert_eq!((y.unit_amount, y.currency.as_deref()), (Some(12_000), Some("eur")));
    assert_eq!(y.recurring.as_ref().map(|r| r.interval.as_str()), Some("year"));

    // A subscription carries its items' prices; a price event of the same second outranks it.
    for shape in SHAPES {
        let mut g = Given::new();
        g.event(&sub_event("customer.subscription.created", T, shape, &snap("active", "price_starter_monthly")));
        let starter = &g.state.prices["price_starter_monthly"];
        assert_eq!(starter.price.unit_amount, Some(2000), "{shape:?}: Stripe's example price, as embedded");
        g.event(&price_event("price.updated", T, "price_starter_monthly", 2_500));
        g.event(&sub_event("customer.subscription.updated", T, shape, &snap("active", "price_starter_monthly")));
        assert_eq!(g.state.prices["price_starter_monthly"].price.unit_amount, Some(2_500), "{shape:?}");
    }

    // An invoice's lines carry their prices expanded (before basil); a checkout's fetched line
    // items do too.
    let mut g = Given::new();
    let of = stripe::InvoiceOf {
        id: "in_p",
        customer: "cus_p",
        subscription: "sub_p",
        price: "price_professional_yearly",
        period: (T, T + 365 * DAY),
    };
    g.event(&stripe::invoice_event("invoice.paid", T, Shape::Legacy, &of));
    assert!(g.state.prices.contains_key("price_professional_yearly"), "{:?}", g.state.prices.keys());
    let mut session = stripe::object("checkout.session");
    session["id"] = serde_json::json!("cs_p");
    session["line_items"] = serde_json::json!({ "object": "list", "has_more": false, "data": [
        { "id": "li_1", "quantity": 1, "price": { "id": "price_credits_1000", "object": "price", "unit_amount": 1_500,
          "currency": "usd", "recurring": null, "active": true, "product": "prod_c" } } ] });
    g.event(
        &serde_json::to_vec(&stripe::event(&stripe::event_id(), "checkout.session.completed", T, session))
            .expect("json"),
    );
    let pack = &g.state.prices["price_credits_1000"].price;
    assert_eq!((pack.unit_amount, pack.recurring.is_none()), (Some(1_500), true), "a one-time price");
}

/// A subscription snapshot whose item charges `amount` every `interval`, `quantity` times, with an
/// optional discount (Stripe's discount object: a coupon, an end).
struct Priced<'a> {
    id: &'a str,
    customer: &'a str,
    status: &'a str,
    price: &'a str,
    amount: i64,
    currency: &'a str,
    interval: &'a str,
    quantity: u64,
    discount: Option<serde_json::Value>,
    cancel_at_period_end: bool,
}

impl Priced<'_> {
    fn event(&self, event_type: &str, created: i64) -> Vec<u8> {
        let snap = SubSnapshot::new(self.id, self.customer, self.price, self.status, (created, created + 30 * DAY));
        let body = stripe::subscription_event(event_type, created, Shape::Basil, &snap);
        let mut event: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let item = &mut event["data"]["object"]["items"]["data"][0];
        item["price"]["unit_amount"] = serde_json::json!(self.amount);
        item["price"]["currency"] = serde_json::json!(self.currency);
        item["price"]["recurring"]["interval"] = serde_json::json!(self.interval);
        item["quantity"] = serde_json::json!(self.quantity);
        event["data"]["object"]["discount"] = self.discount.clone().unwrap_or(serde_json::Value::Null);
        event["data"]["object"]["cancel_at_period_end"] = serde_json::json!(self.cancel_at_period_end);
        serde_json::to_vec(&event).expect("json")
    }
}

fn starter<'a>(id: &'a str, customer: &'a str, status: &'a str) -> Priced<'a> {
    Priced {
        id,
        customer,
        status,
        price: "price_starter_monthly",
        amount: 2_900,
        currency: "usd",
        interval: "month",
        quantity: 1,
        discount: None,
        cancel_at_period_end: false,
    }
}

/// `(kind, amount, mrr_after, day offset from T)` of a customer's movements, in time order.
fn movements_of(g: &Given, customer: &str) -> Vec<(String, i64, i64, i64)> {
    g.state
        .mrr_movements
        .values()
        .filter(|m| m.stripe_customer_id == customer)
        .map(|m| {
            let m = &m.movement;
            (m.kind.as_str().to_owned(), m.amount, m.mrr_after, (m.created - T).div_euclid(DAY))
        })
        .collect()
}

fn moves(list: &[(&str, i64, i64, i64)]) -> Vec<(String, i64, i64, i64)> {
    list.iter().map(|(k, a, m, d)| ((*k).to_owned(), *a, *m, *d)).collect()
}

/// Issue 30: MRR and its movements, as the glossary defines them (docs/analytics.md).
#[test]
fn a_trial_converts_upgrades_downgrades_churns_at_the_end_and_comes_back() {
    let mut g = Given::new();
    g.event(&starter("sub_m", "cus_m", "trialing").event("customer.subscription.created", T));
    assert!(movements_of(&g, "cus_m").is_empty(), "a trial counts 0");
    g.event(&starter("sub_m", "cus_m", "active").event("customer.subscription.updated", T + 14 * DAY));
    let mut pro = starter("sub_m", "cus_m", "active");
    (pro.price, pro.amount) = ("price_professional_monthly", 9_900);
    g.event(&pro.event("customer.subscription.updated", T + 20 * DAY));
    g.event(&starter("sub_m", "cus_m", "active").event("customer.subscription.updated", T + 40 * DAY));
    // Cancel at period end: nothing moves when asked, churn when it ends.
    let mut asked = starter("sub_m", "cus_m", "active");
    asked.cancel_at_period_end = true;
    g.event(&asked.event("customer.subscription.updated", T + 50 * DAY));
    assert!(g.state.subscriptions["sub_m"].cancel_at_period_end);
    g.event(&starter("sub_m", "cus_m", "canceled").event("customer.subscription.deleted", T + 70 * DAY));
    // A new subscription later: reactivation, not new.
    g.event(&starter("sub_m2", "cus_m", "active").event("customer.subscription.created", T + 90 * DAY));
    assert_eq!(
        movements_of(&g, "cus_m"),
        moves(&[
            ("new", 2_900, 2_900, 14),
            ("expansion", 7_000, 9_900, 20),
            ("contraction", 7_000, 2_900, 40),
            ("churn", 2_900, 0, 70),
            ("reactivation", 2_900, 2_900, 90),
        ])
    );
}

#[test]
fn yearly_weekly_quantities_discounts_and_currencies_are_normalized_and_kept_apart() {
    let mut g = Given::new();
    let mut yearly = starter("sub_y", "cus_y", "active");
    (yearly.price, yearly.amount, yearly.interval) = ("price_starter_yearly", 24_000, "year");
    g.event(&yearly.event("customer.subscription.created", T));
    let mut weekly = starter("sub_w", "cus_w", "active");
    (weekly.amount, weekly.interval, weekly.quantity) = (1_000, "week", 3);
    g.event(&weekly.event("customer.subscription.created", T));
    assert_eq!(movements_of(&g, "cus_y"), moves(&[("new", 2_000, 2_000, 0)]), "a year is 12 months");
    assert_eq!(movements_of(&g, "cus_w"), moves(&[("new", 13_000, 13_000, 0)]), "3 x 10.00 x 52 / 12");

    // 20 % off for 3 months: the discount's end passes, Stripe's next snapshot drops it: expansion.
    let mut coupon = starter("sub_d", "cus_d", "active");
    coupon.amount = 5_000;
    coupon.discount = Some(serde_json::json!({ "id": "di_1", "object": "discount",
        "coupon": { "id": "3MONTHS20", "percent_off": 20.0, "duration": "repeating", "duration_in_months": 3 },
        "start": T, "end": T + 90 * DAY }));
    g.event(&coupon.event("customer.subscription.created", T));
    g.event(&coupon.event("customer.subscription.updated", T + 91 * DAY));
    assert_eq!(
        movements_of(&g, "cus_d"),
        moves(&[("new", 4_000, 4_000, 0), ("expansion", 1_000, 5_000, 91)]),
        "the snapshot after the end counts the full price"
    );

    // One customer paying in two currencies: two MRRs, never added up.
    let mut eur = starter("sub_e", "cus_y", "active");
    (eur.amount, eur.currency) = (3_000, "eur");
    g.event(&eur.event("customer.subscription.created", T + DAY));
    let y = movements_of(&g, "cus_y");
    assert_eq!(y.len(), 2);
    let currencies: Vec<&str> = g
        .state
        .mrr_movements
        .values()
        .filter(|m| m.stripe_customer_id == "cus_y")
        .map(|m| m.movement.currency.as_str())
        .collect();
    assert_eq!(currencies, ["usd", "eur"]);
    assert_eq!(y[1], ("new".to_owned(), 3_000, 3_000, 1), "new in euros, beside the dollars");
}

/// A basil snapshot of `p` that names its discounts by id only (as webhooks carry them).
fn naming(p: &Priced<'_>, event_type: &str, created: i64, ids: &[&str]) -> Vec<u8> {
    let mut event: serde_json::Value = serde_json::from_slice(&p.event(event_type, created)).expect("json");
    event["data"]["object"]["discounts"] = serde_json::json!(ids);
    serde_json::to_vec(&event).expect("json")
}

/// Issue 30, item 2: discounts from `customer.discount.*` events, in every delivery order.
#[test]
fn discount_events_reprice_the_subscriptions_they_name_for_their_duration_in_any_delivery_order() {
    let sub = starter("sub_n", "cus_n", "active");
    let mut twenty = stripe::discount("di_n", "cus_n", Some("sub_n"), 20.0, T, Some(3));
    twenty["promotion_code"] = serde_json::json!("promo_FALL20");
    let events = [
        naming(&sub, "customer.subscription.created", T, &["di_n"]),
        stripe::discount_event("customer.discount.created", T, twenty.clone()),
        stripe::discount_event("customer.discount.deleted", T + 90 * DAY, twenty.clone()),
        naming(&sub, "customer.subscription.updated", T + 90 * DAY, &[]),
    ];
    let expected = moves(&[("new", 2_320, 2_320, 0), ("expansion", 580, 2_900, 90)]);
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
        let mut g = Given::new();
        for i in order {
            g.event(&events[i]);
        }
        assert_eq!(movements_of(&g, "cus_n"), expected, "delivered as {order:?}");
        let row = &g.state.discounts["di_n"];
        assert!(row.deleted, "{order:?}: the deletion is final");
        let d = &row.discount;
        assert_eq!(
            (d.coupon.as_deref(), d.percent_off, d.duration.as_deref(), d.duration_in_months),
            (Some("Z4OV52SU"), Some(2_000), Some("repeating"), Some(3))
        );
        assert_eq!((d.promotion_code.as_deref(), d.subscription.as_deref()), (Some("promo_FALL20"), Some("sub_n")));
    }

    // The customer's own discount (no subscription) re-prices every subscription without one; a
    // subscription carrying its own discount (100 % off) keeps it; `ignore` counts list prices.
    let ignoring = Catalog::parse(
        &include_str!("../../../catalog.example.toml").replace("discounts = \"subtract\"", "discounts = \"ignore\""),
    )
    .expect("catalog");
    for (catalog, expected) in [
        (catalog(), moves(&[("new", 2_900, 2_900, 0), ("contraction", 290, 2_610, 5)])),
        (ignoring, moves(&[("new", 2_900, 2_900, 0), ("expansion", 2_900, 5_800, 0)])),
    ] {
        let mut g = Given::new();
        g.catalog = catalog;
        g.event(&starter("sub_c1", "cus_c", "active").event("customer.subscription.created", T));
        let mut free = starter("sub_c2", "cus_c", "active");
        free.discount = Some(serde_json::json!({ "id": "di_own", "object": "discount",
            "coupon": { "id": "FREE", "percent_off": 100.0, "duration": "forever" }, "start": T }));
        g.event(&free.event("customer.subscription.created", T));
        let ten = stripe::discount("di_c", "cus_c", None, 10.0, T + 5 * DAY, None);
        g.event(&stripe::discount_event("customer.discount.created", T + 5 * DAY, ten));
        assert_eq!(movements_of(&g, "cus_c"), expected);
        assert_eq!(g.state.discounts["di_own"].discount.subscription.as_deref(), Some("sub_c2"), "carried: a row too");
        assert_eq!(g.state.subscriptions["sub_c2"].discount.as_ref().and_then(|d| d.percent_off), Some(10_000));
    }
}

#[test]
fn past_due_counts_or_churns_after_the_grace_as_the_catalog_policy_says() {
    let churning = Catalog::parse(&format!(
        "{}\n",
        include_str!("../../../catalog.example.toml")
            .replace("past_due = \"count\"", "past_due = \"churn_after_grace\"")
    ))
    .expect("catalog");
    for (catalog, expected) in [
        (catalog(), moves(&[("new", 2_900, 2_900, 0)])),
        (churning, moves(&[("new", 2_900, 2_900, 0), ("churn", 2_900, 0, 10)])),
    ] {
        let mut g = Given::new();
        g.catalog = catalog;
        g.event(&starter("sub_p", "cus_p", "active").event("customer.subscription.created", T));
        // Past due with no grace running (no failed payment folded): the policy decides.
        g.event(&starter("sub_p", "cus_p", "past_due").event("customer.subscription.updated", T + 10 * DAY));
        assert_eq!(movements_of(&g, "cus_p"), expected);
    }
}

/// For random lifecycles: per customer and currency, each movement's MRR after is the one before
/// plus (or minus) its amount, so the movements add up to the MRR at every point (and any
/// delivery order gives these same rows: the shuffled-delivery tests above compare them too).
#[test]
fn movements_add_up_to_the_mrr_for_random_lifecycles() {
    let catalog = catalog();
    let mut moved = 0;
    for seed in 0..200u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let events: Vec<Vec<u8>> =
            (0..3).flat_map(|n| lifecycle::lifecycle(seed * 10 + n, &mut rng, T)).map(|e| e.body).collect();
        let mut state = Projections::default();
        for (i, body) in events.iter().enumerate() {
            state.fold_and_apply(i as i64 + 1, body, &catalog, &FoldConfig::default());
        }
        let mut mrr: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for row in state.mrr_movements.values() {
            let m = &row.movement;
            let current = mrr.entry((row.stripe_customer_id.clone(), m.currency.clone())).or_default();
            *current += m.kind.sign() * m.amount;
            assert_eq!(*current, m.mrr_after, "seed {seed}: {row:?}");
            assert!(m.amount > 0 && m.mrr_after >= 0, "seed {seed}: {row:?}");
            moved += 1;
        }
    }
    assert!(moved > 300, "only {moved} movements checked");
}
