//! The test harness: a fresh database per test, real ingest servers on port 0, and Stripe events
//! built around Stripe's published example objects.
//!
//! - [`bin`]: the workspace's real binaries as child processes.
//! - [`db`]: [`db::TestDb`], a freshly migrated database on the test server (`DATABASE_URL`, or the
//!   embedded cluster under `.data/` at the workspace root when it is unset).
//! - [`stripe`]: events shaped like Stripe's, and signing.
//! - [`lifecycle`]: realistic subscription lifecycles as event sequences.
//! - [`ingest`]: an ingest instance serving on 127.0.0.1:0.
//! - [`projector`]: a projector instance in-process, and the whole-log reference fold.
//! - [`provisioner`]: a fake provisioner (a real HTTP server on 127.0.0.1:0 that records calls).
//! - [`smtp`]: a small SMTP server on 127.0.0.1:0 that keeps what it receives.
//! - [`stripe_api`]: a fake Stripe API serving `GET /v1/events` pages, with scripted failures.
//! - [`tls`]: a private CA per test and an HTTPS server with its certificate (`SSL_CERT_FILE`).
//! - [`wait`]: waiting on a condition with a bound, instead of sleeping.

pub mod bench;
pub mod bin;
pub mod db;
pub mod ingest;
pub mod lifecycle;
pub mod projector;
pub mod provisioner;
pub mod smtp;
pub mod stripe;
pub mod stripe_api;
pub mod stripe_billing;
pub mod tls;
pub mod wait;
