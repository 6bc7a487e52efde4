//! `ingest`: the Stripe webhook endpoint.
//!
//! `POST /webhooks/stripe` verifies the signature over the raw body, decodes the event envelope and
//! hands the event to the [`appender`], which group-commits concurrent requests into one
//! `ledger.append_events()` call; each request is answered 200 only after the commit holding its
//! event. Module map:
//!
//! - [`startup`]: [`Application`] binds its listener, spawns the appender and serves until shutdown.
//! - [`routes`]: the router and handlers (`/webhooks/stripe`, `/healthz`, `/readyz`, `/metrics`).
//! - [`appender`]: the group-commit task.
//! - [`error`]: the one error enum of the HTTP boundary, status decided in one `match`.
//! - [`metrics`]: Prometheus metrics.

pub mod appender;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod startup;

pub use startup::{Application, IngestSettings};
