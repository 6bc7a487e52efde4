//! Who is calling the billing API: the product backend (`BILLING_API_KEY`, may act for any
//! customer) or a customer with its own API token (may act only for itself). Keys are compared
//! in constant time; every refusal is logged (never the key) and counted.

use axum::http::{HeaderMap, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;

use super::error::{ApiError, Code};
use domain::token::{TOKEN_PREFIX, token_hash};

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The product backend: any customer, named in the request.
    Backend,
    /// A customer, through its own API token.
    Customer(String),
}

impl Caller {
    /// How the command journal names the caller.
    pub fn journal_name(&self) -> String {
        match self {
            Self::Backend => "backend".to_owned(),
            Self::Customer(id) => format!("customer:{id}"),
        }
    }

    /// The customer a request acts for: the one it names (the backend), or the token's own (a
    /// customer may name only itself: another is 403).
    pub fn customer(&self, named: Option<&str>) -> Result<Option<String>, ApiError> {
        match (self, named) {
            (Self::Backend, named) => Ok(named.map(str::to_owned)),
            (Self::Customer(own), Some(other)) if other != own => Err(forbidden()),
            (Self::Customer(own), _) => Ok(Some(own.clone())),
        }
    }

    /// Refuses a customer acting on another customer's object.
    pub fn may_act_for(&self, customer: Option<&str>) -> Result<(), ApiError> {
        match self {
            Self::Customer(own) if customer != Some(own.as_str()) => Err(forbidden()),
            _ => Ok(()),
        }
    }
}

fn forbidden() -> ApiError {
    ApiError::new(Code::Forbidden, "this token acts only for its own customer")
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The backend keys (as SHA-256 digests, so comparing takes the same time whatever the length)
/// and the refusal counter.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    keys: Vec<[u8; 32]>,
    refusals: Family<ReasonLabel, Counter>,
}

impl Authenticator {
    /// Accepts `keys` (`BILLING_API_KEY`) for the backend; registers `api_auth_refusals_total`.
    pub fn new(keys: &[SecretString], registry: &mut prometheus_client::registry::Registry) -> Self {
        let refusals = Family::<ReasonLabel, Counter>::default();
        registry.register("api_auth_refusals", "Billing API requests refused, by reason", refusals.clone());
        let keys = keys.iter().map(|k| Sha256::digest(k.expose_secret().as_bytes()).into()).collect();
        Self { keys, refusals }
    }

    fn is_backend(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every key is compared, whichever matches.
        self.keys.iter().fold(subtle::Choice::from(0), |hit, key| hit | key.ct_eq(&digest)).into()
    }

    /// The caller of a request, or 401.
    pub async fn caller(
        &self,
        pool: &PgPool,
        headers: &HeaderMap,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Caller, ApiError> {
        let Some(presented) = bearer(headers) else { return Err(self.refuse("missing")) };
        if self.is_backend(presented) {
            return Ok(Caller::Backend);
        }
        if !presented.starts_with(TOKEN_PREFIX) {
            return Err(self.refuse("unknown_key"));
        }
        let customer = sqlx::query_scalar!(
            "SELECT stripe_customer_id FROM ledger.api_tokens
             WHERE token_sha256 = $1 AND revoked_at IS NULL AND expires_at > $2",
            token_hash(presented),
            now
        )
        .fetch_optional(pool)
        .await?;
        customer.map(Caller::Customer).ok_or_else(|| self.refuse("unknown_token"))
    }

    fn refuse(&self, reason: &'static str) -> ApiError {
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
        tracing::info!(reason, "billing API: request refused");
        ApiError::new(Code::Unauthorized, "a valid Authorization: Bearer key is required")
    }
}

/// The bearer credential of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_keys_match_exactly_and_rotation_accepts_each() {
        let mut registry = prometheus_client::registry::Registry::default();
        let keys =
            [SecretString::from("key-one-long-enough-for-tests"), SecretString::from("key-two-long-enough-for-tests")];
        let auth = Authenticator::new(&keys, &mut registry);
        assert!(auth.is_backend("key-one-long-enough-for-tests"));
        assert!(auth.is_backend("key-two-long-enough-for-tests"));
        assert!(!auth.is_backend("key-one-long-enough-for-test"));
        assert!(!auth.is_backend(""));
    }

    #[test]
    fn a_customer_acts_only_for_itself_and_the_backend_for_whom_it_names() {
        let customer = Caller::Customer("cus_1".into());
        assert_eq!(customer.customer(None), Ok(Some("cus_1".into())));
        assert_eq!(customer.customer(Some("cus_1")), Ok(Some("cus_1".into())));
        assert_eq!(customer.customer(Some("cus_2")).map_err(|e| e.code), Err(Code::Forbidden));
        assert_eq!(customer.may_act_for(Some("cus_2")).map_err(|e| e.code), Err(Code::Forbidden));
        assert_eq!(Caller::Backend.customer(Some("cus_2")), Ok(Some("cus_2".into())));
        assert_eq!(Caller::Backend.customer(None), Ok(None));
        assert!(Caller::Backend.may_act_for(None).is_ok());
    }
}
