//! `replay verify`: walks the whole log and checks what makes it trustworthy: dense positions,
//! each row's body hash, the hash chain and, optionally, every stored `Stripe-Signature`.
//!
//! The check of one row is a pure function ([`Verifier::check`]); the walk streams rows in
//! position order, so memory stays flat however long the log is.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use shared::signature::{self, Tolerance};
use sqlx::PgPool;

/// One stored row, as verify reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    /// Position.
    pub position: i64,
    /// Exact body.
    pub raw_body: Vec<u8>,
    /// `Stripe-Signature` as received.
    pub stripe_signature: Option<String>,
    /// Stored sha256 of the body.
    pub body_sha256: Vec<u8>,
    /// Stored hash of the previous row.
    pub prev_hash: Option<Vec<u8>>,
    /// Stored chain hash.
    pub chain_hash: Vec<u8>,
    /// Append time (part of the chain).
    pub received_at: DateTime<Utc>,
    /// `webhook` or `backfill` (part of the chain).
    pub source: String,
}

/// The chain hash of a row, as `ledger.append_events` computes it: sha256(prev || int8(position)
/// || body_sha256 || sha256(signature or "") || int8(received_at in µs) || sha256(source)).
pub fn chain_hash(
    prev: Option<&[u8]>,
    position: i64,
    body_sha256: &[u8],
    signature: Option<&str>,
    received_at: DateTime<Utc>,
    source: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev.unwrap_or_default());
    h.update(position.to_be_bytes());
    h.update(body_sha256);
    h.update(Sha256::digest(signature.unwrap_or("").as_bytes()));
    h.update(received_at.timestamp_micros().to_be_bytes());
    h.update(Sha256::digest(source.as_bytes()));
    h.finalize().into()
}

/// The first thing found broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Where.
    pub position: i64,
    /// What.
    pub what: String,
}

/// Walks rows in order, remembering the previous row's hash.
#[derive(Debug)]
pub struct Verifier {
    expected: i64,
    prev: Option<Vec<u8>>,
    secrets: Option<Vec<SecretString>>,
}

impl Verifier {
    /// A verifier; with `secrets`, signatures of webhook rows are checked too (tolerance off).
    pub fn new(secrets: Option<Vec<SecretString>>) -> Self {
        Self { expected: 1, prev: None, secrets }
    }

    /// The head so far: last position and its chain hash.
    pub fn head(&self) -> (i64, Option<&[u8]>) {
        (self.expected - 1, self.prev.as_deref())
    }

    /// Checks the next row.
    pub fn check(&mut self, row: &Row) -> Result<(), Broken> {
        let broken = |what: String| Err(Broken { position: row.position, what });
        if row.position != self.expected {
            return if row.position > self.expected {
                Err(Broken {
                    position: self.expected,
                    what: format!(
                        "position {} is missing (the next row is {}): rows were deleted",
                        self.expected, row.position
                    ),
                })
            } else {
                broken(format!("position {} appears out of order (expected {})", row.position, self.expected))
            };
        }
        let body = Sha256::digest(&row.raw_body);
        if body.as_slice() != row.body_sha256.as_slice() {
            return broken(format!(
                "the raw body does not match its stored sha256 (stored {}, body hashes to {})",
                hex::encode(&row.body_sha256),
                hex::encode(body)
            ));
        }
        if row.prev_hash.as_deref() != self.prev.as_deref() {
            return broken("prev_hash is not the chain hash of the previous position".to_owned());
        }
        let expected = chain_hash(
            self.prev.as_deref(),
            row.position,
            &body,
            row.stripe_signature.as_deref(),
            row.received_at,
            &row.source,
        );
        if expected.as_slice() != row.chain_hash.as_slice() {
            return broken("chain_hash does not match the row's content: a column was changed".to_owned());
        }
        if let (Some(secrets), Some(header)) = (&self.secrets, &row.stripe_signature)
            && let Err(error) = signature::verify(header, &row.raw_body, secrets, Tolerance::Disabled, 0)
        {
            return broken(format!("the stored Stripe-Signature does not verify against the stored body: {error}"));
        }
        self.expected += 1;
        self.prev = Some(row.chain_hash.clone());
        Ok(())
    }
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rows checked before the first break (or all).
    pub checked: i64,
    /// Head: last good position and its chain hash.
    pub head: (i64, Option<Vec<u8>>),
    /// The first break.
    pub broken: Option<Broken>,
}

/// Walks the whole log, stopping at the first break; `progress` gets each checked position.
pub async fn walk(
    pool: &PgPool,
    secrets: Option<Vec<SecretString>>,
    progress: &mut dyn FnMut(i64),
) -> anyhow::Result<Report> {
    let mut verifier = Verifier::new(secrets);
    let mut checked = 0;
    let mut broken = None;
    {
        // Not compile-checked: a streaming read into a FromRow struct.
        let mut rows = sqlx::query_as::<_, Row>(
            "SELECT position, raw_body, stripe_signature, body_sha256, prev_hash, chain_hash, received_at, source
             FROM ledger.events ORDER BY position",
        )
        .fetch(pool);
        while let Some(row) = rows.try_next().await? {
            if let Err(b) = verifier.check(&row) {
                broken = Some(b);
                break;
            }
            checked += 1;
            progress(row.position);
        }
    }
    let (position, hash) = verifier.head();
    Ok(Report { checked, head: (position, hash.map(<[u8]>::to_vec)), broken })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Row> {
        let mut prev: Option<Vec<u8>> = None;
        (1..=n)
            .map(|position| {
                let raw_body = format!("{{\"id\":\"evt_{position}\"}}").into_bytes();
                let received_at = DateTime::from_timestamp(1_700_000_000 + position, 1_000).expect("valid");
                let body_sha256 = Sha256::digest(&raw_body).to_vec();
                let signature = signature::sign_header("whsec_v", 1_700_000_000, &raw_body);
                let hash =
                    chain_hash(prev.as_deref(), position, &body_sha256, Some(&signature), received_at, "webhook");
                let row = Row {
                    position,
                    raw_body,
                    stripe_signature: Some(signature),
                    body_sha256,
                    prev_hash: prev.clone(),
                    chain_hash: hash.to_vec(),
                    received_at,
                    source: "webhook".into(),
                };
                prev = Some(hash.to_vec());
                row
            })
            .collect()
    }

    fn first_break(rows: &[Row], secrets: Option<Vec<SecretString>>) -> Option<Broken> {
        let mut v = Verifier::new(secrets);
        rows.iter().find_map(|r| v.check(r).err())
    }

    #[test]
    fn a_clean_chain_passes_with_its_signatures() {
        let rows = chain(5);
        assert_eq!(first_break(&rows, Some(vec![SecretString::from("whsec_v")])), None);
        let mut v = Verifier::new(None);
        rows.iter().for_each(|r| v.check(r).expect("clean"));
        assert_eq!(v.head(), (5, Some(rows[4].chain_hash.as_slice())));
    }

    #[test]
    fn each_kind_of_tampering_is_found_at_its_position() {
        let mut altered = chain(5);
        altered[2].raw_body[3] ^= 1;
        let b = first_break(&altered, None).expect("found");
        assert_eq!(b.position, 3);
        assert!(b.what.contains("sha256"), "{}", b.what);

        // The owner also rewrote the stored body hash: the chain catches it.
        let mut rehashed = altered.clone();
        rehashed[2].body_sha256 = Sha256::digest(&rehashed[2].raw_body).to_vec();
        assert_eq!(first_break(&rehashed, None).expect("found").position, 3);
        // ... and the signature no longer verifies.
        let mut sig = chain(5);
        sig[1].raw_body = b"{\"id\":\"evt_X\"}".to_vec();
        sig[1].body_sha256 = Sha256::digest(&sig[1].raw_body).to_vec();
        let b = first_break(&sig, Some(vec![SecretString::from("whsec_v")])).expect("found");
        assert_eq!(b.position, 2);

        let mut deleted = chain(5);
        deleted.remove(3);
        let b = first_break(&deleted, None).expect("found");
        assert_eq!(b.position, 4);
        assert!(b.what.contains("missing"), "{}", b.what);

        let mut swapped = chain(5);
        swapped.swap(1, 2);
        (swapped[1].position, swapped[2].position) = (2, 3);
        assert_eq!(first_break(&swapped, None).expect("found").position, 2);
    }
}
