//! What every stripe-ledger binary shares at its edges (I/O): configuration, the database, the
//! log's append path, outbound HTTP, the server, telemetry. The pure core is the `domain` crate.
//!
//! - [`config`]: the typed configuration of the public contract's environment variables, with
//!   embedded defaults, validated once.
//! - [`log`]: the one append path into `ledger.events` (group commit, dedupe, hash chain).
//! - [`outbound`]: the HTTPS client for Stripe and the provisioner, and failure causes in words.
//! - `server` (feature `server`): the HTTP server with connection, header, body and request limits.
//! - [`db`]: the connection pool, the one migrator and the database URL resolution.
//! - [`embedded`]: the local PostgreSQL cluster under `./.data/` used when `DATABASE_URL` is unset.
//! - [`telemetry`]: the tracing subscriber.
//! - [`shutdown`]: the shutdown signal as a `CancellationToken`.

pub mod config;
pub mod db;
pub mod embedded;
pub mod log;
pub mod outbound;
#[cfg(feature = "server")]
pub mod server;
pub mod shutdown;
pub mod stripe_api;
pub mod telemetry;
