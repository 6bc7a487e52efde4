//! `domain`: the pure core of stripe-ledger. Decisions live here as functions of their inputs;
//! the crates around it do the I/O (ingest, the projector's store, runner, dispatcher and API,
//! `replay`). Its dependency tree has no database driver, async runtime or HTTP stack, and a test
//! keeps it so (`tests/tests/e2e/deploy.rs`).
//!
//! - [`signature`]: Stripe webhook signature verification.
//! - [`envelope`]: the Stripe event envelope (id, type, created, object ids), what ingest stores.
//! - [`stripe`]: the typed event model (customers, subscriptions, invoices, checkout sessions)
//!   read from either API shape, with the subscription status and its predicates.
//! - [`fetched`]: the format of facts the projector fetches from Stripe into the log.
//! - [`catalog`]: the price catalog (tiers, limits, quotas, credits, credit packs).
//! - [`state`]: the fold's state: the projections' rows, `Delta`, the reads, the view the fold
//!   reads through, and the entitlement rule of a subscription row.
//! - [`fold`]: the fold `(state, event) -> Delta` (rules in `docs/projector.md`).
//! - [`window`]: the live projector's per-batch working set (window, cache, batch).
//! - [`keys`]: the effect vocabulary: idempotency keys, subjects, kinds and outcomes.
//! - [`plan`]: what an instance or a token needs now, retry delays.
//! - [`mail`]: what the mails say.
//! - [`credits`]: the credit balance rule (grants, debits, rollover caps).
//! - [`usage`]: the usage day and quota rules.
//! - [`revenue`]: a price's monthly amount, a subscription's MRR under the analytics policy, the
//!   movement a change of MRR is.
//! - [`token`]: the API token format: how a token is made and what is stored instead of it.
//! - [`access`]: what a customer's API token is granted, and until when.
//! - [`clock`]: where time comes from ([`clock::ManualClock`] in tests).

pub mod access;
pub mod catalog;
pub mod clock;
pub mod credits;
pub mod envelope;
pub mod erasure;
pub mod fetched;
pub mod fold;
pub mod keys;
pub mod mail;
pub mod plan;
pub mod revenue;
pub mod signature;
pub mod state;
pub mod stripe;
pub mod token;
pub mod usage;
pub mod window;
