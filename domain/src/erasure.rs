//! What an erased value reads as (issue 32, docs/auditing.md "Erasure").
//!
//! `replay erase` and the log's redaction on arrival replace every personal value of a stored body
//! by [`ERASED`]; the rule (which keys, at any depth, and every `metadata` value) is kept once, in
//! the database, as `ledger.redact_body` (migration 0037), so that a body appended after an
//! erasure is redacted in the same transaction and under the same lock as its append. The fold
//! reads an erased value as absent ([`unless_erased`]).

/// What an erased value reads as.
pub const ERASED: &str = "[erased]";

/// `text`, unless it is an erased value (read as absent: no mail goes to `[erased]`).
pub fn unless_erased(text: Option<String>) -> Option<String> {
    text.filter(|t| t != ERASED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erased_value_reads_as_absent() {
        assert_eq!(unless_erased(Some(ERASED.to_owned())), None);
        assert_eq!(unless_erased(Some("a@example.com".to_owned())).as_deref(), Some("a@example.com"));
    }
}
