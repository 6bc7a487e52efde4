//! `replay verify`: walks the whole log and checks what makes it trustworthy: dense positions,
//! each row's body hash, the hash chain (format 1, then format 2 from the position in
//! `ledger.chain_formats`, which covers every stored column), every envelope column re-derived
//! from the raw body, and, optionally, every stored `Stripe-Signature`.
//!
//! The check of one row is a pure function ([`Verifier::check`]); the walk streams rows in
//! position order, so memory stays flat however long the log is.

use chrono::{DateTime, Utc};
use domain::envelope::Envelope;
use domain::signature::{self, Tolerance};
use futures::TryStreamExt;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
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
    /// Which process appended it (chain format 2).
    pub received_by: String,
    /// The envelope columns, each re-derived from the body and part of chain format 2.
    #[sqlx(flatten)]
    pub envelope: EnvelopeColumns,
    /// `subscription_id`: extracted at append (NULL before migration 0017), not in the chain;
    /// checked against the body.
    pub subscription_id: Option<String>,
}

/// The columns of a row that repeat what its body says.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnvelopeColumns {
    /// `stripe_event_id`.
    pub stripe_event_id: String,
    /// `event_type`.
    pub event_type: String,
    /// `api_version`.
    pub api_version: Option<String>,
    /// `livemode`.
    pub livemode: bool,
    /// `created`, unix seconds.
    pub created: i64,
    /// `object_type`.
    pub object_type: Option<String>,
    /// `object_id`.
    pub object_id: Option<String>,
    /// `customer_id`.
    pub customer_id: Option<String>,
}

impl EnvelopeColumns {
    /// What ingest (or backfill) stored for this body: the envelope decoder's reading, or, for a
    /// signed body it could not decode, the salvaged one (created from the signature's `t`).
    pub fn derive(raw_body: &[u8], signature: Option<&str>) -> Option<Self> {
        derive_envelope(raw_body, signature).map(Self::from)
    }

    /// The names of the columns that differ from `other`.
    fn differences(&self, other: &Self) -> Vec<&'static str> {
        let checks = [
            ("stripe_event_id", self.stripe_event_id == other.stripe_event_id),
            ("event_type", self.event_type == other.event_type),
            ("api_version", self.api_version == other.api_version),
            ("livemode", self.livemode == other.livemode),
            ("created", self.created == other.created),
            ("object_type", self.object_type == other.object_type),
            ("object_id", self.object_id == other.object_id),
            ("customer_id", self.customer_id == other.customer_id),
        ];
        checks.into_iter().filter(|(_, same)| !same).map(|(name, _)| name).collect()
    }
}

impl From<Envelope> for EnvelopeColumns {
    fn from(e: Envelope) -> Self {
        Self {
            stripe_event_id: e.id,
            event_type: e.event_type,
            api_version: e.api_version,
            livemode: e.livemode,
            created: e.created,
            object_type: e.object_type,
            object_id: e.object_id,
            customer_id: e.customer_id,
        }
    }
}

/// The envelope ingest (or backfill) stored for this body (see [`EnvelopeColumns::derive`]).
fn derive_envelope(raw_body: &[u8], signature: Option<&str>) -> Option<Envelope> {
    let signed_at = signature.and_then(signature::signed_at).unwrap_or(0);
    domain::envelope::decode(raw_body).ok().or_else(|| domain::envelope::salvage(raw_body, signed_at))
}

/// The chain hash of a row in format 1 (rows before `ledger.chain_formats`' format 2):
/// sha256(prev || int8(position) || body_sha256 || sha256(signature or "") || int8(received_at
/// in µs) || sha256(source)).
pub fn chain_hash(
    prev: Option<&[u8]>,
    position: i64,
    body_sha256: &[u8],
    signature: Option<&str>,
    received_at: DateTime<Utc>,
    source: &str,
) -> [u8; 32] {
    format_1(prev, position, body_sha256, signature, received_at, source).finalize().into()
}

fn format_1(
    prev: Option<&[u8]>,
    position: i64,
    body_sha256: &[u8],
    signature: Option<&str>,
    received_at: DateTime<Utc>,
    source: &str,
) -> Sha256 {
    let mut h = Sha256::new();
    h.update(prev.unwrap_or_default());
    h.update(position.to_be_bytes());
    h.update(body_sha256);
    h.update(Sha256::digest(signature.unwrap_or("").as_bytes()));
    h.update(received_at.timestamp_micros().to_be_bytes());
    h.update(Sha256::digest(source.as_bytes()));
    h
}

/// A text field of the envelope line: `<octet length>:<text>`, or `-` for NULL.
fn field(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{}:{v}", v.len()))
}

/// The envelope line chain format 2 hashes: stripe_event_id, event_type, api_version, livemode
/// (`t`/`f`), created (seconds), received_by, object_type, object_id, customer_id, joined by `|`.
pub fn envelope_line(row: &Row) -> String {
    let e = &row.envelope;
    [
        field(Some(&e.stripe_event_id)),
        field(Some(&e.event_type)),
        field(e.api_version.as_deref()),
        (if e.livemode { "t" } else { "f" }).to_owned(),
        e.created.to_string(),
        field(Some(&row.received_by)),
        field(e.object_type.as_deref()),
        field(e.object_id.as_deref()),
        field(e.customer_id.as_deref()),
    ]
    .join("|")
}

/// The chain hash of a row in format 2, as `ledger.append_events` computes it: format 1's terms,
/// then sha256 of the [`envelope_line`].
pub fn chain_hash_v2(prev: Option<&[u8]>, row: &Row, body_sha256: &[u8]) -> [u8; 32] {
    let mut h =
        format_1(prev, row.position, body_sha256, row.stripe_signature.as_deref(), row.received_at, &row.source);
    h.update(Sha256::digest(envelope_line(row).as_bytes()));
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
    format_2_from: i64,
    /// Bodies erasures redacted: position -> the sha256 each redaction row names.
    redactions: std::collections::BTreeMap<i64, Vec<Vec<u8>>>,
    /// The positions found redacted so far.
    redacted: Vec<i64>,
}

impl Verifier {
    /// A verifier; with `secrets`, signatures of webhook rows are checked too (tolerance off).
    /// Rows from `format_2_from` on use chain format 2.
    pub fn new(secrets: Option<Vec<SecretString>>, format_2_from: i64) -> Self {
        Self { expected: 1, prev: None, secrets, format_2_from, redactions: Default::default(), redacted: Vec::new() }
    }

    /// The bodies erasures redacted (`ledger.redactions`): such a body must hash to what its
    /// redaction row names (anything else is tampering); the chain covers its original hash,
    /// which stays stored; its signature, made over the original bytes, is not checked.
    pub fn with_redactions(mut self, redactions: impl IntoIterator<Item = (i64, Vec<u8>)>) -> Self {
        for (position, sha256) in redactions {
            self.redactions.entry(position).or_default().push(sha256);
        }
        self
    }

    /// The positions checked so far whose body an erasure redacted.
    pub fn redacted(&self) -> &[i64] {
        &self.redacted
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
        let redaction = self.redactions.get(&row.position);
        if let Some(allowed) = redaction {
            if !allowed.iter().any(|h| h.as_slice() == body.as_slice()) {
                return broken(format!(
                    "the raw body of a redacted event matches none of its redactions (body hashes to {}): \
                     it was changed outside an erasure",
                    hex::encode(body)
                ));
            }
        } else if body.as_slice() != row.body_sha256.as_slice() {
            return broken(format!(
                "the raw body does not match its stored sha256 (stored {}, body hashes to {})",
                hex::encode(&row.body_sha256),
                hex::encode(body)
            ));
        }
        if row.prev_hash.as_deref() != self.prev.as_deref() {
            return broken("prev_hash is not the chain hash of the previous position".to_owned());
        }
        // A redacted row's chain covers the original body's hash, which stays stored.
        let body = if redaction.is_some() { &row.body_sha256[..] } else { body.as_slice() };
        let expected = row_hash(self.prev.as_deref(), row, body, self.format_2_from);
        if expected.as_slice() != row.chain_hash.as_slice() {
            return broken("chain_hash does not match the row's content: a column was changed".to_owned());
        }
        // The columns audit queries filter on must say what the body says (format 1 rows are not
        // covered by their hash, so this is their only check).
        let Some(mut derived) = derive_envelope(&row.raw_body, row.stripe_signature.as_deref()) else {
            return broken("the raw body is not an event with an id, yet it is stored".to_owned());
        };
        let subscription_id = derived.subscription_id.take();
        let differ = row.envelope.differences(&EnvelopeColumns::from(derived));
        if !differ.is_empty() {
            return broken(format!("column(s) {} do not match the raw body", differ.join(", ")));
        }
        // NULL is what rows before the column have; the audit views then read the body.
        if row.subscription_id.is_some() && row.subscription_id != subscription_id {
            return broken("column(s) subscription_id do not match the raw body".to_owned());
        }
        if let (Some(secrets), Some(header), None) = (&self.secrets, &row.stripe_signature, redaction)
            && let Err(error) = signature::verify(header, &row.raw_body, secrets, Tolerance::Disabled, 0)
        {
            return broken(format!("the stored Stripe-Signature does not verify against the stored body: {error}"));
        }
        if redaction.is_some() {
            self.redacted.push(row.position);
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
    /// Positions whose body an erasure redacted (checked against their redaction rows).
    pub redacted: Vec<i64>,
    /// Erasures recorded (`ledger.erasures`).
    pub erasures: i64,
}

/// Every row of the log as [`Row`]s, in position order.
pub const ROWS: &str =
    "SELECT position, raw_body, stripe_signature, body_sha256, prev_hash, chain_hash, received_at, source,
        received_by, stripe_event_id, event_type, api_version, livemode,
        extract(epoch FROM created)::bigint AS created, object_type, object_id, customer_id, subscription_id
 FROM ledger.events ORDER BY position";

/// The position from which rows use chain format 2 (`i64::MAX`: none).
pub async fn format_2_from(pool: &PgPool) -> anyhow::Result<i64> {
    let from = sqlx::query_scalar!("SELECT from_position FROM ledger.chain_formats WHERE version = 2")
        .fetch_optional(pool)
        .await?;
    Ok(from.unwrap_or(i64::MAX))
}

/// The chain hash `row` must have after `prev`, in the format its position uses.
pub fn row_hash(prev: Option<&[u8]>, row: &Row, body_sha256: &[u8], format_2_from: i64) -> [u8; 32] {
    if row.position >= format_2_from {
        chain_hash_v2(prev, row, body_sha256)
    } else {
        chain_hash(prev, row.position, body_sha256, row.stripe_signature.as_deref(), row.received_at, &row.source)
    }
}

/// Walks the whole log, stopping at the first break; `progress` gets each checked position.
pub async fn walk(
    pool: &PgPool,
    secrets: Option<Vec<SecretString>>,
    progress: &mut dyn FnMut(i64),
) -> anyhow::Result<Report> {
    let redactions: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT position, redacted_sha256 FROM ledger.redactions").fetch_all(pool).await?;
    let erasures: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.erasures").fetch_one(pool).await?;
    let mut verifier = Verifier::new(secrets, format_2_from(pool).await?).with_redactions(redactions);
    let mut checked = 0;
    let mut broken = None;
    {
        // Not compile-checked: a streaming read into a FromRow struct.
        let mut rows = sqlx::query_as::<_, Row>(ROWS).fetch(pool);
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
    let head = (position, hash.map(<[u8]>::to_vec));
    Ok(Report { checked, head, broken, redacted: verifier.redacted().to_vec(), erasures })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Row> {
        chain_from(n, i64::MAX)
    }

    /// `n` rows, in chain format 2 from `format_2_from`.
    fn chain_from(n: i64, format_2_from: i64) -> Vec<Row> {
        let mut prev: Option<Vec<u8>> = None;
        (1..=n)
            .map(|position| {
                let raw_body = format!(
                    r#"{{"id":"evt_{position}","object":"event","type":"customer.updated","created":1700000000,"livemode":false,"data":{{"object":{{"id":"cus_{position}","object":"customer"}}}}}}"#
                )
                .into_bytes();
                let received_at = DateTime::from_timestamp(1_700_000_000 + position, 1_000).expect("valid");
                let body_sha256 = Sha256::digest(&raw_body).to_vec();
                let signature = signature::sign_header("whsec_v", 1_700_000_000, &raw_body);
                let envelope = EnvelopeColumns::derive(&raw_body, Some(&signature)).expect("an event");
                let mut row = Row {
                    position,
                    raw_body,
                    stripe_signature: Some(signature),
                    body_sha256,
                    prev_hash: prev.clone(),
                    chain_hash: Vec::new(),
                    received_at,
                    source: "webhook".into(),
                    received_by: "ingest-1".into(),
                    envelope,
                    subscription_id: None,
                };
                let hash = if position >= format_2_from {
                    chain_hash_v2(prev.as_deref(), &row, &row.body_sha256)
                } else {
                    chain_hash(prev.as_deref(), position, &row.body_sha256, row.stripe_signature.as_deref(), received_at, "webhook")
                };
                row.chain_hash = hash.to_vec();
                prev = Some(hash.to_vec());
                row
            })
            .collect()
    }

    fn first_break(rows: &[Row], secrets: Option<Vec<SecretString>>) -> Option<Broken> {
        first_break_from(rows, secrets, i64::MAX)
    }

    fn first_break_from(rows: &[Row], secrets: Option<Vec<SecretString>>, format_2_from: i64) -> Option<Broken> {
        let mut v = Verifier::new(secrets, format_2_from);
        rows.iter().find_map(|r| v.check(r).err())
    }

    #[test]
    fn a_clean_chain_passes_with_its_signatures() {
        let rows = chain(5);
        assert_eq!(first_break(&rows, Some(vec![SecretString::from("whsec_v")])), None);
        let mut v = Verifier::new(None, i64::MAX);
        rows.iter().for_each(|r| v.check(r).expect("clean"));
        assert_eq!(v.head(), (5, Some(rows[4].chain_hash.as_slice())));
    }

    #[test]
    fn a_body_an_erasure_redacted_passes_as_recorded_and_any_other_change_is_tampering() {
        let mut rows = chain_from(4, 1);
        let redacted = String::from_utf8(rows[1].raw_body.clone())
            .expect("utf-8")
            .replace(r#""object":"customer""#, r#""object":"customer","email":"[erased]""#)
            .into_bytes();
        // The stored body as an erasure rewrote it; its envelope columns are the same ids.
        rows[1].raw_body = redacted.clone();
        let recorded = vec![(2, Sha256::digest(&redacted).to_vec())];
        let secrets = Some(vec![SecretString::from("whsec_v")]);
        let mut v = Verifier::new(secrets.clone(), 1).with_redactions(recorded.clone());
        rows.iter().for_each(|r| v.check(r).expect("as its erasure recorded, signature skipped"));
        assert_eq!(v.redacted(), [2]);
        // Without the erasure's rows it is a changed body; changed again, it matches no redaction.
        assert_eq!(first_break_from(&rows, None, 1).expect("found").position, 2);
        rows[1].raw_body.push(b' ');
        let mut v = Verifier::new(None, 1).with_redactions(recorded);
        let broken = rows.iter().find_map(|r| v.check(r).err()).expect("found");
        assert_eq!(broken.position, 2);
        assert!(broken.what.contains("outside an erasure"), "{}", broken.what);
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

    #[test]
    fn format_2_covers_every_column_and_format_1_rows_still_verify() {
        let rows = chain_from(6, 4);
        assert_eq!(first_break_from(&rows, Some(vec![SecretString::from("whsec_v")]), 4), None);

        // An owner rewrites received_by of a format-2 row: only the chain can tell.
        let mut by = rows.clone();
        by[4].received_by = "someone-else".into();
        let b = first_break_from(&by, None, 4).expect("found");
        assert_eq!((b.position, b.what.contains("chain_hash")), (5, true), "{}", b.what);

        // A column audit queries filter on, in a format-1 row: the body says otherwise.
        let mut customer = rows.clone();
        customer[1].envelope.customer_id = Some("cus_other".into());
        let b = first_break_from(&customer, None, 4).expect("found");
        assert_eq!(b.position, 2);
        assert!(b.what.contains("customer_id"), "{}", b.what);

        // The switch point itself cannot be moved without breaking the chain.
        assert!(first_break_from(&rows, None, 5).is_some());
        assert!(first_break_from(&rows, None, 3).is_some());
    }
}
