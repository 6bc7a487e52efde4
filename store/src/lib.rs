//! `store`: the database side of the projections, shared by the `projector` service, the `api`
//! crate's reads and the `replay` tooling, with no HTTP, mail or HTML in it.
//!
//! - [`projections`] (re-exported at the root): the SQL image of the fold's `Projections`: load
//!   it, write a batch's changed rows, the intents outbox, the checkpoint, the access channel.
//! - [`rebuild`]: the same fold from position 1 into a new schema, swapped in atomically.
//! - [`leader`]: the advisory locks that make one runner and one dispatcher active, and who holds
//!   them as the database sees it.
//! - [`journal`]: the effects journal (`ledger.effects`), admin alerts and the operator's re-arm.
//! - [`revenue`]: MRR per day and currency from the movements.

pub mod journal;
pub mod leader;
pub mod projections;
pub mod rebuild;
pub mod revenue;

pub use self::projections::*;

/// The checkpoint row of the live projections.
pub const CHECKPOINT: &str = "main";
