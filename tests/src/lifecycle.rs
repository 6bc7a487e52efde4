//! Realistic subscription lifecycles as event sequences, for fold, rebuild and shuffle tests.

use crate::stripe::{self, Shape, SubSnapshot};

/// Posts the lifecycles of `customers` (signed, in Stripe's order) to a test ingest; all must be 200.
pub async fn post(ingest: &crate::ingest::TestIngest, customers: std::ops::Range<u64>, seed: u64) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut posted = 0;
    for n in customers {
        for event in lifecycle(n, &mut rng, 1_750_000_000) {
            assert_eq!(ingest.post_signed(&event.body).await.status(), 200);
            posted += 1;
        }
    }
    posted
}

/// One event of a lifecycle, in Stripe's order.
#[derive(Debug, Clone)]
pub struct LifecycleEvent {
    /// Event type.
    pub event_type: String,
    /// Raw body.
    pub body: Vec<u8>,
}

const DAY: i64 = 86_400;
const MONTH: i64 = 30 * DAY;

/// A full lifecycle of customer `n`, chosen by `rng`: signup through checkout, a trial, paid cycles,
/// an upgrade or downgrade, a failed payment with recovery or not, a credit pack, and a
/// cancellation at period end. Several steps share a second, as Stripe's do.
pub fn lifecycle(n: u64, rng: &mut fastrand::Rng, t0: i64) -> Vec<LifecycleEvent> {
    let shape = if rng.bool() { Shape::Legacy } else { Shape::Basil };
    let customer = format!("cus_life{n:06}");
    let sub_id = format!("sub_life{n:06}");
    let mut events = Vec::new();
    let mut push =
        |event_type: &str, body: Vec<u8>| events.push(LifecycleEvent { event_type: event_type.to_owned(), body });
    let mut t = t0 + rng.i64(0..DAY);
    let tiers = [
        ("price_starter_monthly", "price_starter_yearly"),
        ("price_professional_monthly", "price_professional_yearly"),
        ("price_enterprise_monthly", "price_enterprise_yearly"),
    ];
    let (monthly, _) = tiers[rng.usize(0..tiers.len())];
    let mut snap = SubSnapshot {
        id: sub_id.clone(),
        customer: customer.clone(),
        price: monthly.to_owned(),
        status: "trialing".into(),
        period: (t, t + 14 * DAY),
        trial_end: Some(t + 14 * DAY),
        cancel_at_period_end: false,
        canceled_at: None,
        ended_at: None,
    };
    push(
        "customer.created",
        stripe::customer_event("customer.created", t, shape, &customer, &format!("{customer}@example.com")),
    );
    // Checkout completes in the same second as the subscription is created.
    push(
        "checkout.session.completed",
        stripe::checkout_completed(t, shape, &format!("cs_sub{n:06}"), &customer, "subscription", Some(&sub_id), None),
    );
    push("customer.subscription.created", stripe::subscription_event("customer.subscription.created", t, shape, &snap));
    let mut invoice_no = 0;
    let mut invoice = |event_type: &str, at: i64, price: &str, period: (i64, i64), next: bool| {
        if next {
            invoice_no += 1;
        }
        stripe::invoice_event(
            event_type,
            at,
            shape,
            &stripe::InvoiceOf {
                id: &format!("in_life{n:06}_{invoice_no}"),
                customer: &customer,
                subscription: &sub_id,
                price,
                period,
            },
        )
    };
    push("invoice.paid", invoice("invoice.paid", t, &snap.price, snap.period, true));

    // Trial ends: active, first paid cycle (invoice.paid and invoice.payment_succeeded, same second).
    t = snap.period.1;
    snap.status = "active".into();
    snap.trial_end = Some(t);
    snap.period = (t, t + MONTH);
    push("customer.subscription.updated", stripe::subscription_event("customer.subscription.updated", t, shape, &snap));
    push("invoice.paid", invoice("invoice.paid", t, &snap.price, snap.period, true));
    push("invoice.payment_succeeded", invoice("invoice.payment_succeeded", t, &snap.price, snap.period, false));

    // A plan change mid-cycle.
    if rng.bool() {
        t += rng.i64(DAY..20 * DAY);
        let (to, _) = tiers[rng.usize(0..tiers.len())];
        snap.price = to.to_owned();
        push(
            "customer.subscription.updated",
            stripe::subscription_event("customer.subscription.updated", t, shape, &snap),
        );
    }
    // A coupon (drawn from its own generator, so the other steps stay as they were): 20 % off for
    // three months on the subscription, or 10 % off the customer's subscriptions for good, created
    // in the same second as the change it came with; a limited one is deleted when it ends.
    let mut coupons = fastrand::Rng::with_seed(n ^ 0x000d_15c0_u64);
    if coupons.u8(0..3) == 0 {
        let id = format!("di_life{n:06}");
        let discount = if coupons.bool() {
            stripe::discount(&id, &customer, Some(&sub_id), 20.0, t, Some(3))
        } else {
            stripe::discount(&id, &customer, None, 10.0, t, None)
        };
        push("customer.discount.created", stripe::discount_event("customer.discount.created", t, discount.clone()));
        if let Some(end) = discount["end"].as_i64() {
            push("customer.discount.deleted", stripe::discount_event("customer.discount.deleted", end, discount));
        }
    }
    // A credit pack.
    if rng.bool() {
        t += rng.i64(1..DAY);
        let pack = if rng.bool() { "price_credits_1000" } else { "price_credits_10000" };
        push(
            "checkout.session.completed",
            stripe::checkout_completed(
                t,
                shape,
                &format!("cs_pack{n:06}"),
                &customer,
                "payment",
                None,
                Some((pack, rng.u64(1..4))),
            ),
        );
    }
    // Renewal: the payment fails, then is recovered (or not).
    t = snap.period.1;
    snap.period = (t, t + MONTH);
    push("invoice.payment_failed", invoice("invoice.payment_failed", t, &snap.price, snap.period, true));
    snap.status = "past_due".into();
    push("customer.subscription.updated", stripe::subscription_event("customer.subscription.updated", t, shape, &snap));
    let recovered = rng.u8(0..4) > 0;
    if recovered {
        t += rng.i64(DAY..6 * DAY);
        push("invoice.paid", invoice("invoice.paid", t, &snap.price, snap.period, false));
        snap.status = "active".into();
        push(
            "customer.subscription.updated",
            stripe::subscription_event("customer.subscription.updated", t + 1, shape, &snap),
        );
    } else {
        t += 8 * DAY;
        snap.status = "unpaid".into();
        push(
            "customer.subscription.updated",
            stripe::subscription_event("customer.subscription.updated", t, shape, &snap),
        );
    }
    // Cancellation at period end.
    if recovered && rng.bool() {
        t += rng.i64(DAY..10 * DAY);
        snap.cancel_at_period_end = true;
        snap.canceled_at = Some(t);
        push(
            "customer.subscription.updated",
            stripe::subscription_event("customer.subscription.updated", t, shape, &snap),
        );
        t = snap.period.1;
        snap.status = "canceled".into();
        snap.ended_at = Some(t);
        push(
            "customer.subscription.deleted",
            stripe::subscription_event("customer.subscription.deleted", t, shape, &snap),
        );
    }
    events
}
