//! What every stripe-ledger binary shares.
//!
//! - [`config`]: the typed configuration of the public contract's environment variables, with
//!   embedded defaults, validated once.
//! - [`catalog`]: the price catalog (tiers, limits, credits, credit packs), validated at load.
//! - [`signature`]: Stripe webhook signature verification, a pure function.
//! - [`envelope`]: decoding of the Stripe event envelope (id, type, created, object ids).
//! - [`log`]: the one append path into `ledger.events` (group commit, dedupe, hash chain).
//! - [`stripe`]: the typed event model (customers, subscriptions, invoices, checkout sessions)
//!   read from either API shape.
//! - [`outbound`]: the HTTPS client for Stripe and the provisioner, and failure causes in words.
//! - [`server`]: the HTTP server with connection, header, body and request limits.
//! - [`db`]: the connection pool, the one migrator and the database URL resolution.
//! - [`embedded`]: the local PostgreSQL cluster under `./.data/` used when `DATABASE_URL` is unset.
//! - [`telemetry`]: the tracing subscriber.
//! - [`shutdown`]: the shutdown signal as a `CancellationToken`.

pub mod catalog;
pub mod config;
pub mod db;
pub mod embedded;
pub mod envelope;
pub mod fetched;
pub mod log;
pub mod outbound;
pub mod server;
pub mod shutdown;
pub mod signature;
pub mod stripe;
pub mod stripe_api;
pub mod telemetry;
