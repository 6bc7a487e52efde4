//! `replay portal-config [--apply]`: the Stripe Customer Portal configuration generated from the
//! catalog, so the portal's plan switcher offers exactly the catalog's tier prices. Created once
//! (per catalog) and reused: its id goes into `STRIPE_PORTAL_CONFIGURATION`, which every portal
//! session then names.

use std::collections::BTreeMap;

use anyhow::Context;
use domain::catalog::Catalog;
use shared::stripe_api::{Form, StripeApi};

/// Stripe's limit on products a portal configuration may offer.
const MAX_PRODUCTS: usize = 10;

/// The configuration's form: every price of a sellable tier (an unsellable one is sold by
/// contract, not switched to in the portal), grouped by the Stripe product it belongs to
/// (read from Stripe), switchable with prorations; cancellation at period end; payment methods
/// and invoice history.
pub async fn form(stripe: &StripeApi, catalog: &Catalog) -> anyhow::Result<Form> {
    let mut products: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for tier in catalog.tiers().iter().filter(|t| t.sellable) {
        for price in &tier.price_ids {
            let answer = stripe
                .get(&format!("/v1/prices/{price}"), &Form::new())
                .await
                .with_context(|| format!("reading price {price} of tier {} from Stripe", tier.name))?;
            let product = answer.body["product"].as_str().with_context(|| format!("price {price} has no product"))?;
            products.entry(product.to_owned()).or_default().push(price.clone());
        }
    }
    anyhow::ensure!(
        products.len() <= MAX_PRODUCTS,
        "the catalog's tiers span {} Stripe products; a portal configuration offers at most {MAX_PRODUCTS}",
        products.len()
    );
    let mut form = Form::new()
        .set("features[subscription_update][enabled]", true)
        .set("features[subscription_update][default_allowed_updates][0]", "price")
        .set("features[subscription_update][proration_behavior]", "create_prorations")
        .set("features[subscription_cancel][enabled]", true)
        .set("features[subscription_cancel][mode]", "at_period_end")
        .set("features[payment_method_update][enabled]", true)
        .set("features[invoice_history][enabled]", true)
        .set("metadata[catalog]", catalog.hash());
    for (i, (product, prices)) in products.iter().enumerate() {
        form = form.set(format!("features[subscription_update][products][{i}][product]"), product);
        for (j, price) in prices.iter().enumerate() {
            form = form.set(format!("features[subscription_update][products][{i}][prices][{j}]"), price);
        }
    }
    Ok(form)
}

/// Creates the configuration (idempotent per catalog: the same catalog creates it once) and
/// returns its id.
pub async fn apply(stripe: &StripeApi, catalog: &Catalog, form: &Form) -> anyhow::Result<String> {
    let key = format!("sl-portal-{}", &catalog.hash()[..32.min(catalog.hash().len())]);
    let answer = stripe.post("/v1/billing_portal/configurations", form, &key).await?;
    answer.body["id"].as_str().map(str::to_owned).context("Stripe answered without a configuration id")
}
