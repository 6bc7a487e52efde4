//! The API token format: how a customer's token is made and what is stored instead of it.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Prefix of every token (lets secret scanners recognise one).
pub const TOKEN_PREFIX: &str = "sl_";

/// A new token: 256 random bits from the OS, URL-safe base64, prefixed.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    // getrandom's error is not a std error without its `std` feature: named here instead.
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    Ok(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// What is stored instead of the token.
pub fn token_hash(token: &str) -> Vec<u8> {
    token_key(token).to_vec()
}

/// [`token_hash`] as a fixed-size key.
pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_url_safe_and_hashed() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43, "256 bits in unpadded base64");
        assert!(a[TOKEN_PREFIX.len()..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(token_hash(&a).len(), 32);
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
