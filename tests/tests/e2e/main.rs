//! End-to-end tests: real PostgreSQL, real HTTP servers on loopback. One test binary.

mod access_cache;
mod admin;
mod analytics;
mod append_only;
mod bad_input;
mod billing;
mod catalog;
mod console;
mod deploy;
mod effects;
mod fetch;
mod ingest_http;
mod least_privilege;
mod limits;
mod migrations;
mod money_safety;
mod newcomer;
mod ordering;
mod outage;
mod outbound;
mod projection_store;
mod projector_runner;
mod rebuild;
mod shutdown;
mod usage;
