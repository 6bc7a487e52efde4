//! `replay check-catalog`: the catalog against Stripe's prices. Every catalog price must exist, be
//! active and have the right type (recurring for a tier, one-time for a pack): otherwise an error,
//! found before a customer pays. Stripe's active prices in no tier and no pack are warnings: each
//! would become an `unknown_price` anomaly the day someone sells it.

use anyhow::Context;
use domain::catalog::Catalog;
use serde::Deserialize;

use crate::stripe_read::Reader;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// An error (exit 1) or a warning.
    pub error: bool,
    /// What a person reads.
    pub line: String,
}

/// What the catalog sells a price as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sold {
    /// A tier's recurring price.
    Tier,
    /// A pack's one-time price.
    Pack,
}

/// A Stripe price, as far as the check reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    /// `price_...`.
    pub id: String,
    /// Archived prices are inactive.
    #[serde(default)]
    pub active: bool,
    /// `recurring` or `one_time`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// Checks one catalog price against what Stripe answered (`None`: no such price).
pub fn check(id: &str, owner: &str, sold: Sold, stripe: Option<&Price>) -> Option<Finding> {
    let error = |why: String| Some(Finding { error: true, line: format!("error: {id} ({owner}): {why}") });
    let Some(price) = stripe else { return error("Stripe has no such price".into()) };
    if !price.active {
        return error("archived in Stripe (inactive): it cannot be sold".into());
    }
    let wanted = match sold {
        Sold::Tier => "recurring",
        Sold::Pack => "one_time",
    };
    if price.kind != wanted {
        return error(format!("Stripe's price is {}, the catalog sells it as {wanted}", price.kind));
    }
    None
}

/// Every price id of the catalog: who sells it and as what.
pub fn catalog_prices(catalog: &Catalog) -> Vec<(String, String, Sold)> {
    let tiers = catalog
        .tiers()
        .iter()
        .flat_map(|t| t.price_ids.iter().map(|p| (p.clone(), format!("tier {}", t.name), Sold::Tier)));
    let packs = catalog.credit_packs().iter().map(|p| (p.price_id.clone(), format!("pack {}", p.name), Sold::Pack));
    tiers.chain(packs).collect()
}

#[derive(Debug, Deserialize)]
struct Page {
    data: Vec<Price>,
    has_more: bool,
}

/// Runs the check; `on_retry` gets a line per retried request.
pub async fn run(
    reader: &mut Reader,
    catalog: &Catalog,
    on_retry: &mut dyn FnMut(String),
) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let listed = catalog_prices(catalog);
    for (id, owner, sold) in &listed {
        let body = reader.get(&format!("/v1/prices/{id}"), &[], on_retry).await?;
        let price: Option<Price> = body.map(|b| serde_json::from_slice(&b)).transpose().context("not a price")?;
        findings.extend(check(id, owner, *sold, price.as_ref()));
    }
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("active".to_owned(), "true".to_owned()), ("limit".to_owned(), "100".to_owned())];
        query.extend(cursor.iter().map(|c| ("starting_after".to_owned(), c.clone())));
        let body = reader.get("/v1/prices", &query, on_retry).await?.context("GET /v1/prices: 404")?;
        let page: Page = serde_json::from_slice(&body).context("not a list of prices")?;
        for price in &page.data {
            if !listed.iter().any(|(id, _, _)| id == &price.id) {
                findings.push(Finding {
                    error: false,
                    line: format!(
                        "warning: {} ({}) is active in Stripe and in no tier or pack: selling it would be an unknown_price anomaly",
                        price.id, price.kind
                    ),
                });
            }
        }
        cursor = page.data.last().map(|p| p.id.clone());
        if !page.has_more || cursor.is_none() {
            return Ok(findings);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(active: bool, kind: &str) -> Price {
        Price { id: "price_x".into(), active, kind: kind.into() }
    }

    #[test]
    fn missing_archived_and_mistyped_prices_are_errors() {
        assert_eq!(check("price_x", "tier starter", Sold::Tier, Some(&price(true, "recurring"))), None);
        assert_eq!(check("price_x", "pack p", Sold::Pack, Some(&price(true, "one_time"))), None);
        let line = |f: Option<Finding>| f.filter(|f| f.error).map(|f| f.line).unwrap_or_default();
        assert!(line(check("price_x", "tier starter", Sold::Tier, None)).contains("Stripe has no such price"));
        assert!(
            line(check("price_x", "tier starter", Sold::Tier, Some(&price(false, "recurring")))).contains("archived")
        );
        assert!(
            line(check("price_x", "tier starter", Sold::Tier, Some(&price(true, "one_time"))))
                .contains("Stripe's price is one_time, the catalog sells it as recurring")
        );
    }

    #[test]
    fn the_example_catalog_sells_eight_tier_prices_and_two_packs() {
        let prices = catalog_prices(&Catalog::example().expect("catalog"));
        assert_eq!(prices.iter().filter(|p| p.2 == Sold::Tier).count(), 8);
        assert_eq!(prices.iter().filter(|p| p.2 == Sold::Pack).count(), 2);
    }
}
