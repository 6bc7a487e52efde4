//! The price catalog: what each Stripe price id buys. One TOML file, validated at load.
//!
//! The projector looks every price id up here; an id that is in no tier and no pack is an
//! anomaly (tier `unknown`), never a silent free tier. The catalog's [`Catalog::hash`] is stored
//! beside the projector's checkpoint, so projections built with another catalog are noticed.
//! `catalog.example.toml` at the workspace root is the shipped example.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::revenue::Policy;

/// The tier name used when a price id is not in the catalog. Reserved.
pub const UNKNOWN_TIER: &str = "unknown";

/// The shipped example catalog (`catalog.example.toml`): what a service uses when `CATALOG_PATH`
/// is unset, and what the tests project with.
pub const EXAMPLE: &str = include_str!("../../catalog.example.toml");

/// Why a catalog was refused. Each message names the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read the catalog {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or an entry has a missing, unknown or mistyped field.
    #[error("malformed catalog: {0}")]
    Malformed(#[from] toml::de::Error),
    /// An entry breaks a rule.
    #[error("invalid catalog entry {entry}: {reason}")]
    Invalid {
        /// The entry, e.g. `tiers[2] (professional)` or `price id price_x`.
        entry: String,
        /// What is wrong.
        reason: String,
    },
}

/// A limit: a number, or unlimited (written `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(into = "f64")]
pub enum Limit {
    /// No limit.
    Unlimited,
    /// At most this much.
    Max(f64),
}

impl From<Limit> for f64 {
    fn from(limit: Limit) -> Self {
        match limit {
            Limit::Unlimited => -1.0,
            Limit::Max(value) => value,
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if value == -1.0 {
            Ok(Self::Unlimited)
        } else if value.is_finite() && value >= 0.0 {
            Ok(Self::Max(value))
        } else {
            Err(serde::de::Error::custom(format!("{value} is neither -1 (unlimited) nor a non-negative number")))
        }
    }
}

/// A quota of one metric in one window: a whole number, or unlimited (written `-1`). Parsed
/// once, here; nothing else compares -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quota {
    /// No limit.
    Unlimited,
    /// At most this many per window.
    Max(u64),
}

/// The span a quota counts over: a tier limit `<metric>_per_<window>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// The subscription's current billing period (from `current_period_start`).
    Period,
    /// The UTC calendar day.
    Day,
    /// The UTC clock hour.
    Hour,
    /// The UTC clock minute.
    Minute,
}

impl Window {
    /// Every window, longest first.
    pub const ALL: [Window; 4] = [Window::Period, Window::Day, Window::Hour, Window::Minute];

    /// Its name in limits (`_per_<name>`), answers and the counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Period => "period",
            Window::Day => "day",
            Window::Hour => "hour",
            Window::Minute => "minute",
        }
    }

    /// The window a stored name means.
    pub fn parse(name: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == name)
    }

    /// `<metric>_per_<window>`: the tier limit naming this window's quota of `metric`.
    pub fn limit_name(self, metric: &str) -> String {
        format!("{metric}_per_{}", self.as_str())
    }

    /// The metric and window a tier limit name declares, if it is a quota's.
    fn of_limit(name: &str) -> Option<(&str, Window)> {
        Window::ALL.into_iter().find_map(|w| name.strip_suffix(&format!("_per_{}", w.as_str())).map(|m| (m, w)))
    }
}

/// A metric's quotas, by window (at least one).
pub type Quotas = BTreeMap<Window, Quota>;

/// The metric whose usage debits the credit balance instead of counting against a quota.
pub const CREDITS_METRIC: &str = "credits";

/// What an instance of a tier may use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    /// Agents.
    pub agents: Limit,
    /// Messages per day.
    pub messages_per_day: Limit,
    /// Memory in MB.
    pub memory_mb: Limit,
    /// CPUs (fractions allowed).
    pub cpu: Limit,
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tier {
    /// Its name, e.g. `professional`.
    pub name: String,
    /// Every Stripe price id that sells it.
    pub price_ids: Vec<String>,
    /// Limits of its instance.
    pub limits: Limits,
    /// Quotas by metric and window: every limit named `<metric>_per_<window>` (`period`, `day`,
    /// `hour`, `minute`; `messages_per_day` too).
    pub quotas: BTreeMap<String, Quotas>,
    /// Credits granted per paid billing cycle.
    pub credits_per_cycle: u64,
    /// Most credits a balance may carry into a new cycle.
    pub rollover_cap: u64,
    /// Whether checkout and plan changes may sell it (`sellable`, default true; an enterprise
    /// tier sold by contract says false). Not in the catalog's hash: it decides what may be
    /// bought, not what the fold makes of what was bought, so flipping it needs no rebuild.
    #[serde(skip)]
    pub sellable: bool,
    /// What the pricing page calls it (`display_name`, default: the name with a capital). Not in
    /// the hash either: the fold never reads it.
    #[serde(skip)]
    pub display_name: String,
}

/// A tier as written: `limits` may be missing, which validation refuses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierEntry {
    name: String,
    price_ids: Vec<String>,
    limits: Option<BTreeMap<String, Limit>>,
    #[serde(default)]
    credits_per_cycle: u64,
    #[serde(default)]
    rollover_cap: u64,
    #[serde(default = "yes")]
    sellable: bool,
    #[serde(default)]
    display_name: Option<String>,
}

fn yes() -> bool {
    true
}

/// A one-time purchase of credits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditPack {
    /// Its name.
    pub name: String,
    /// The Stripe price id.
    pub price_id: String,
    /// Credits granted per unit bought.
    pub credits: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    tiers: Vec<TierEntry>,
    #[serde(default)]
    credit_packs: Vec<CreditPack>,
    #[serde(default)]
    analytics: Policy,
}

/// The validated content (also what the hash is computed over).
#[derive(Debug, Clone, Serialize)]
struct Content {
    tiers: Vec<Tier>,
    credit_packs: Vec<CreditPack>,
    /// Hashed only when set: catalogs written before the section existed keep their hash.
    #[serde(skip_serializing_if = "Policy::is_default")]
    analytics: Policy,
}

/// What a price id buys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Product<'a> {
    /// A plan, with its rank (0 = lowest).
    Tier {
        /// The tier.
        tier: &'a Tier,
        /// Its position in the catalog's order.
        rank: usize,
    },
    /// A credit pack.
    CreditPack(&'a CreditPack),
}

/// A validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    content: Content,
    by_price: HashMap<String, (bool, usize)>,
    hash: String,
}

impl Catalog {
    /// The catalog at `path` (`CATALOG_PATH`), or the shipped example when there is none (with a
    /// warning: local development only).
    pub fn from_path(path: Option<&Path>) -> Result<Self, CatalogError> {
        match path {
            Some(path) => Self::load(path),
            None => {
                tracing::warn!("CATALOG_PATH is unset: using the example catalog (catalog.example.toml)");
                Self::example()
            }
        }
    }

    /// The shipped example catalog ([`EXAMPLE`]).
    pub fn example() -> Result<Self, CatalogError> {
        Self::parse(EXAMPLE)
    }

    /// Reads and validates a catalog file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CatalogError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    /// Parses and validates catalog text.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text)?;
        let invalid = |entry: String, reason: &str| CatalogError::Invalid { entry, reason: reason.to_owned() };
        let mut by_price: HashMap<String, (bool, usize)> = HashMap::new();
        let mut owners: HashMap<&str, String> = HashMap::new();
        let mut names: HashMap<&str, String> = HashMap::new();
        let mut tiers = Vec::with_capacity(file.tiers.len());
        for (i, tier) in file.tiers.iter().enumerate() {
            let entry = format!("tiers[{i}] ({})", tier.name);
            if tier.name.trim().is_empty() {
                return Err(invalid(entry, "the name is empty"));
            }
            if tier.name == UNKNOWN_TIER {
                return Err(invalid(entry, "`unknown` is reserved for prices missing from the catalog"));
            }
            let Some(written) = &tier.limits else {
                return Err(invalid(entry, "has no limits"));
            };
            let (limits, quotas) = tier_limits(written).map_err(|reason| invalid(entry.clone(), &reason))?;
            if let Some(first) = names.insert(&tier.name, entry.clone()) {
                return Err(invalid(entry, &format!("the name is already used by {first}")));
            }
            for price in &tier.price_ids {
                if let Some(first) = owners.insert(price, entry.clone()) {
                    return Err(invalid(
                        format!("price id {price}"),
                        &format!("is used twice: by {first} and by {entry}"),
                    ));
                }
                by_price.insert(price.clone(), (true, i));
            }
            tiers.push(Tier {
                name: tier.name.clone(),
                price_ids: tier.price_ids.clone(),
                limits,
                quotas,
                credits_per_cycle: tier.credits_per_cycle,
                rollover_cap: tier.rollover_cap,
                sellable: tier.sellable,
                display_name: tier.display_name.clone().unwrap_or_else(|| capitalized(&tier.name)),
            });
        }
        for (i, pack) in file.credit_packs.iter().enumerate() {
            let entry = format!("credit_packs[{i}] ({})", pack.name);
            if pack.credits == 0 {
                return Err(invalid(entry, "grants no credits"));
            }
            if pack.price_id.trim().is_empty() {
                return Err(invalid(entry, "has an empty price_id"));
            }
            if let Some(first) = owners.insert(&pack.price_id, entry.clone()) {
                return Err(invalid(
                    format!("price id {}", pack.price_id),
                    &format!("is used twice: by {first} and by {entry}"),
                ));
            }
            by_price.insert(pack.price_id.clone(), (false, i));
        }
        for price in owners.keys() {
            if price.trim().is_empty() {
                return Err(invalid(owners[price].clone(), "has an empty price id"));
            }
        }
        same_metrics(&tiers).map_err(|reason| invalid("tiers".into(), &reason))?;
        // The hash is of the meaning, not the text: comments and layout do not change it.
        let content = Content { tiers, credit_packs: file.credit_packs, analytics: file.analytics };
        let canonical = serde_json::to_vec(&content).map_err(|e| invalid("catalog".into(), &e.to_string()))?;
        let hash = hex::encode(Sha256::digest(&canonical));
        Ok(Self { content, by_price, hash })
    }

    /// What `price_id` buys, or `None` when the catalog does not know it (an anomaly).
    pub fn product(&self, price_id: &str) -> Option<Product<'_>> {
        let &(is_tier, index) = self.by_price.get(price_id)?;
        Some(if is_tier {
            Product::Tier { tier: &self.content.tiers[index], rank: index }
        } else {
            Product::CreditPack(&self.content.credit_packs[index])
        })
    }

    /// A tier by name.
    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.content.tiers.iter().find(|t| t.name == name)
    }

    /// The rank of a tier (0 = lowest), `None` for unknown names.
    pub fn rank(&self, name: &str) -> Option<usize> {
        self.content.tiers.iter().position(|t| t.name == name)
    }

    /// Tiers, lowest first.
    pub fn tiers(&self) -> &[Tier] {
        &self.content.tiers
    }

    /// Credit packs.
    pub fn credit_packs(&self) -> &[CreditPack] {
        &self.content.credit_packs
    }

    /// Whether `metric` is one a customer's usage may be counted in: a quota every tier names, or
    /// [`CREDITS_METRIC`].
    pub fn knows_metric(&self, metric: &str) -> bool {
        metric == CREDITS_METRIC || self.content.tiers.first().is_some_and(|t| t.quotas.contains_key(metric))
    }

    /// The quota metrics (the same in every tier), sorted.
    pub fn quota_metrics(&self) -> impl Iterator<Item = &str> {
        self.content.tiers.first().into_iter().flat_map(|t| t.quotas.keys().map(String::as_str))
    }

    /// How revenue is counted (`[analytics]`).
    pub fn analytics(&self) -> &Policy {
        &self.content.analytics
    }

    /// sha256 (hex) of the catalog's canonical content.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// `starter` -> `Starter`.
fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Splits a tier's written limits into the instance's [`Limits`] and its quotas.
fn tier_limits(written: &BTreeMap<String, Limit>) -> Result<(Limits, BTreeMap<String, Quotas>), String> {
    let mut quotas: BTreeMap<String, Quotas> = BTreeMap::new();
    for (name, limit) in written {
        if matches!(name.as_str(), "agents" | "memory_mb" | "cpu") {
            continue;
        }
        let Some((metric, window)) = Window::of_limit(name) else {
            return Err(format!(
                "unknown limit {name} (a quota is named <metric>_per_period, _per_day, _per_hour or _per_minute)"
            ));
        };
        if metric.is_empty() || !metric.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(format!("limit {name}: a metric is lowercase letters, digits and _"));
        }
        if metric == CREDITS_METRIC {
            return Err(format!("limit {name}: `credits` is the credit balance, not a quota"));
        }
        let quota = match *limit {
            Limit::Unlimited => Quota::Unlimited,
            Limit::Max(value) if value.fract() == 0.0 && value <= u32::MAX as f64 => Quota::Max(value as u64),
            Limit::Max(value) => return Err(format!("limit {name}: {value} is not a whole number of uses")),
        };
        quotas.entry(metric.to_owned()).or_default().insert(window, quota);
    }
    let instance = |name: &str| written.get(name).copied().ok_or_else(|| format!("has no limit {name}"));
    let limits = Limits {
        agents: instance("agents")?,
        messages_per_day: instance("messages_per_day")?,
        memory_mb: instance("memory_mb")?,
        cpu: instance("cpu")?,
    };
    Ok((limits, quotas))
}

/// Every tier names the same quotas (metric and window): a window one tier counts and another
/// does not would be neither limited nor refused for the second's customers.
fn same_metrics(tiers: &[Tier]) -> Result<(), String> {
    let Some(first) = tiers.first() else { return Ok(()) };
    let names = |t: &Tier| {
        t.quotas.iter().flat_map(|(m, windows)| windows.keys().map(move |w| w.limit_name(m))).collect::<Vec<_>>()
    };
    for tier in &tiers[1..] {
        if names(tier) != names(first) {
            return Err(format!(
                "every tier must name the same quotas: {} has [{}], {} has [{}]",
                first.name,
                names(first).join(", "),
                tier.name,
                names(tier).join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Catalog::parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn the_example_catalog_has_the_four_tiers_and_two_packs() {
        let catalog = Catalog::parse(EXAMPLE).expect("example is valid");
        let names: Vec<&str> = catalog.tiers().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["free", "starter", "professional", "enterprise"]);
        assert_eq!(catalog.credit_packs().len(), 2);
        let free = catalog.tier("free").map(|t| t.limits).expect("free limits");
        assert_eq!(
            free,
            Limits {
                agents: Limit::Max(1.0),
                messages_per_day: Limit::Max(100.0),
                memory_mb: Limit::Max(256.0),
                cpu: Limit::Max(0.25)
            }
        );
        let starter = catalog.tier("starter").map(|t| t.limits).expect("starter limits");
        assert_eq!(
            (starter.agents, starter.messages_per_day, starter.memory_mb, starter.cpu),
            (Limit::Max(3.0), Limit::Max(1000.0), Limit::Max(512.0), Limit::Max(0.5))
        );
        let pro = catalog.tier("professional").map(|t| t.limits).expect("professional limits");
        assert_eq!(
            (pro.agents, pro.messages_per_day, pro.memory_mb, pro.cpu),
            (Limit::Max(10.0), Limit::Max(10000.0), Limit::Max(2048.0), Limit::Max(2.0))
        );
        let enterprise = catalog.tier("enterprise").map(|t| t.limits).expect("enterprise limits");
        assert_eq!(
            (enterprise.agents, enterprise.messages_per_day, enterprise.memory_mb, enterprise.cpu),
            (Limit::Unlimited, Limit::Unlimited, Limit::Max(8192.0), Limit::Max(4.0))
        );
    }

    #[test]
    fn every_price_id_of_a_tier_finds_it_and_unknown_ids_find_nothing() {
        let catalog = Catalog::parse(EXAMPLE).expect("valid");
        for price in ["price_starter_monthly", "price_starter_yearly", "price_starter_legacy_2023"] {
            assert!(
                matches!(catalog.product(price), Some(Product::Tier { tier, rank: 1 }) if tier.name == "starter"),
                "{price}"
            );
        }
        assert!(matches!(catalog.product("price_credits_1000"), Some(Product::CreditPack(p)) if p.credits == 1000));
        assert_eq!(catalog.product("price_nobody_knows"), None);
        assert_eq!(catalog.rank("enterprise"), Some(3));
        assert_eq!(catalog.rank(UNKNOWN_TIER), None);
    }

    #[test]
    fn the_hash_follows_meaning_not_layout() {
        let a = Catalog::parse(EXAMPLE).expect("valid");
        let reformatted = EXAMPLE.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n\n");
        let b = Catalog::parse(&reformatted).expect("valid");
        assert_eq!(a.hash(), b.hash());
        let changed = Catalog::parse(&EXAMPLE.replace("credits = 1000\n", "credits = 1500\n")).expect("valid");
        assert_ne!(a.hash(), changed.hash());
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn the_analytics_policy_changes_the_hash_only_when_it_is_not_the_default() {
        let stated = Catalog::parse(EXAMPLE).expect("valid");
        let without = EXAMPLE.split("\n[analytics]").next().expect("text");
        let a = Catalog::parse(without).expect("valid");
        assert_eq!(a.hash(), stated.hash(), "stating the defaults changes nothing");
        let ignore =
            Catalog::parse(&EXAMPLE.replace("discounts = \"subtract\"", "discounts = \"ignore\"")).expect("valid");
        assert_ne!(a.hash(), ignore.hash(), "another policy asks for a rebuild");
        assert_eq!(ignore.analytics().discounts, crate::revenue::DiscountPolicy::Ignore);
        assert!(error(&EXAMPLE.replace("past_due = \"count\"", "churn = \"never\"")).contains("churn"));
    }

    #[test]
    fn a_price_id_used_twice_is_refused_naming_both_entries() {
        let text = EXAMPLE.replace("price_ids = [\"price_free_monthly\"]", "price_ids = [\"price_starter_yearly\"]");
        let message = error(&text);
        assert!(message.contains("price id price_starter_yearly"), "{message}");
        assert!(message.contains("tiers[0] (free)") && message.contains("tiers[1] (starter)"), "{message}");
        let pack_clash = EXAMPLE.replace("price_id = \"price_credits_10000\"", "price_id = \"price_credits_1000\"");
        assert!(error(&pack_clash).contains("credit_packs[0] (credits_1000) and by credit_packs[1] (credits_10000)"));
    }

    #[test]
    fn a_tier_without_limits_is_refused_naming_it() {
        let text = "[[tiers]]\nname = \"basic\"\nprice_ids = [\"price_basic\"]\n";
        assert_eq!(error(text), "invalid catalog entry tiers[0] (basic): has no limits");
    }

    #[test]
    fn malformed_entries_are_refused_with_their_location() {
        let typo = EXAMPLE.replace("agents = 1,", "agentz = 1,");
        let message = error(&typo);
        assert!(message.contains("tiers[0] (free): unknown limit agentz"), "{message}");
        assert!(error(&EXAMPLE.replace("cpu = 0.25", "cpu = -2")).contains("neither -1"));
        assert!(error(&EXAMPLE.replace("credits = 1000\n", "credits = \"many\"\n")).starts_with("malformed catalog"));
        assert!(
            error(&EXAMPLE.replace("credits = 1000\n", "credits = 0\n"))
                .contains("credit_packs[0] (credits_1000): grants no credits")
        );
        assert!(error(&EXAMPLE.replace("name = \"starter\"", "name = \"unknown\"")).contains("reserved"));
        assert!(error(&EXAMPLE.replace("name = \"starter\"", "name = \"free\"")).contains("already used by tiers[0]"));
        assert!(error("[[tiers]]\nname = \"x\"\nprice_ids = [\"\"]\nlimits = { agents = 1, messages_per_day = 1, memory_mb = 1, cpu = 1 }\n").contains("empty price id"));
    }

    #[test]
    fn daily_quotas_are_the_per_day_limits_and_minus_one_is_unlimited() {
        let catalog = Catalog::parse(EXAMPLE).expect("valid");
        assert_eq!(catalog.quota_metrics().collect::<Vec<_>>(), ["api_calls", "messages"]);
        let free = catalog.tier("free").expect("free");
        assert_eq!(free.quotas["messages"], BTreeMap::from([(Window::Day, Quota::Max(100))]));
        let enterprise = catalog.tier("enterprise").expect("enterprise");
        assert_eq!(enterprise.quotas["messages"][&Window::Day], Quota::Unlimited);
        assert!(catalog.knows_metric("api_calls") && catalog.knows_metric("credits"));
        assert!(!catalog.knows_metric("messages_per_day") && !catalog.knows_metric("agents"));
    }

    #[test]
    fn one_metric_may_have_several_windows_in_every_tier() {
        let mut text = EXAMPLE.to_owned();
        for (day, minute, period) in
            [("100", "5", "2000"), ("1000", "60", "20000"), ("10000", "600", "-1"), ("-1", "-1", "-1")]
        {
            text = text.replacen(
                &format!("messages_per_day = {day},"),
                &format!("messages_per_day = {day}, messages_per_minute = {minute}, messages_per_period = {period},"),
                1,
            );
        }
        let catalog = Catalog::parse(&text).expect("valid");
        let free = &catalog.tier("free").expect("free").quotas["messages"];
        assert_eq!(
            free.iter().map(|(w, q)| (*w, *q)).collect::<Vec<_>>(),
            [(Window::Period, Quota::Max(2000)), (Window::Day, Quota::Max(100)), (Window::Minute, Quota::Max(5))]
        );
        assert_eq!(Window::Minute.limit_name("messages"), "messages_per_minute");
        assert_eq!(Window::parse("period"), Some(Window::Period));
    }

    #[test]
    fn quotas_must_be_whole_named_and_the_same_in_every_tier() {
        let fraction = EXAMPLE.replace("messages_per_day = 100,", "messages_per_day = 100.5,");
        assert!(error(&fraction).contains("tiers[0] (free): limit messages_per_day: 100.5 is not a whole number"));
        let only_free = EXAMPLE.replace("messages_per_day = 100,", "messages_per_day = 100, uploads_per_day = 5,");
        assert!(error(&only_free).contains("every tier must name the same quotas"), "{}", error(&only_free));
        // A window one tier names for a metric, the others too.
        let minute = EXAMPLE.replace("messages_per_day = 100,", "messages_per_day = 100, messages_per_minute = 5,");
        assert!(error(&minute).contains("free has [api_calls_per_day, messages_per_day, messages_per_minute]"));
        assert!(
            error(&EXAMPLE.replace("messages_per_day = 100,", "messages_per_day = 100, messages_per_week = 5,"))
                .contains("unknown limit messages_per_week")
        );
        let credits = EXAMPLE.replace("messages_per_day = 100,", "messages_per_day = 100, credits_per_day = 5,");
        assert!(error(&credits).contains("`credits` is the credit balance"));
        assert!(error(&EXAMPLE.replace("agents = 1,", "")).contains("tiers[0] (free): has no limit agents"));
    }
}
