//! The API's error answers: `{"error": {"code": "<snake_case>", "message": "..."}}` with the
//! status the contract names.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Every error code the API answers, each with its status: the one place they are paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// `customer_required` (bad request).
    CustomerRequired,
    /// `idempotency_key_required` (bad request).
    IdempotencyKeyRequired,
    /// `invalid_request` (bad request).
    InvalidRequest,
    /// `invalid_request` too, as unprocessable: parameters each valid that Stripe refuses
    /// together (`allow_promotion_codes` with a `promotion_code`; the contract says 422).
    ConflictingParameters,
    /// `unauthorized` (unauthorized).
    Unauthorized,
    /// `insufficient_credits` (payment required).
    InsufficientCredits,
    /// `no_live_subscription` (payment required).
    NoLiveSubscription,
    /// `forbidden` (forbidden).
    Forbidden,
    /// `tier_too_low` (forbidden).
    TierTooLow,
    /// `not_found` (not found).
    NotFound,
    /// `unknown_customer` (not found).
    UnknownCustomer,
    /// `unknown_subscription` (not found).
    UnknownSubscription,
    /// `method_not_allowed` (method not allowed).
    MethodNotAllowed,
    /// `already_subscribed` (conflict).
    AlreadySubscribed,
    /// `customer_exists` (conflict).
    CustomerExists,
    /// `subscription_not_changeable` (conflict).
    SubscriptionNotChangeable,
    /// `body_too_large` (payload too large).
    BodyTooLarge,
    /// `idempotency_key_reused` (unprocessable entity).
    IdempotencyKeyReused,
    /// `invalid_proration_date` (unprocessable entity).
    InvalidProrationDate,
    /// `invalid_quantity` (unprocessable entity).
    InvalidQuantity,
    /// `not_sellable` (unprocessable entity).
    NotSellable,
    /// `redirect_not_allowed` (unprocessable entity).
    RedirectNotAllowed,
    /// `stripe_error` (unprocessable entity).
    StripeError,
    /// `unknown_metric` (unprocessable entity).
    UnknownMetric,
    /// `unknown_price` (unprocessable entity).
    UnknownPrice,
    /// `quota_exceeded` (too many requests).
    QuotaExceeded,
    /// `rate_limited` (too many requests).
    RateLimited,
    /// `internal` (internal server error).
    Internal,
    /// `stripe_unavailable` (bad gateway).
    StripeUnavailable,
    /// `catalog_mismatch` (service unavailable).
    CatalogMismatch,
    /// `rebuild_needed` (service unavailable).
    RebuildNeeded,
    /// `stopping` (service unavailable).
    Stopping,
    /// `stripe_not_configured` (service unavailable).
    StripeNotConfigured,
    /// `unavailable` (service unavailable).
    Unavailable,
}

impl Code {
    /// The HTTP status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::CustomerRequired => StatusCode::BAD_REQUEST,
            Code::IdempotencyKeyRequired => StatusCode::BAD_REQUEST,
            Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::ConflictingParameters => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            Code::NoLiveSubscription => StatusCode::PAYMENT_REQUIRED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::TierTooLow => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::UnknownCustomer => StatusCode::NOT_FOUND,
            Code::UnknownSubscription => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::AlreadySubscribed => StatusCode::CONFLICT,
            Code::CustomerExists => StatusCode::CONFLICT,
            Code::SubscriptionNotChangeable => StatusCode::CONFLICT,
            Code::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Code::InvalidProrationDate => StatusCode::UNPROCESSABLE_ENTITY,
            Code::InvalidQuantity => StatusCode::UNPROCESSABLE_ENTITY,
            Code::NotSellable => StatusCode::UNPROCESSABLE_ENTITY,
            Code::RedirectNotAllowed => StatusCode::UNPROCESSABLE_ENTITY,
            Code::StripeError => StatusCode::UNPROCESSABLE_ENTITY,
            Code::UnknownMetric => StatusCode::UNPROCESSABLE_ENTITY,
            Code::UnknownPrice => StatusCode::UNPROCESSABLE_ENTITY,
            Code::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::StripeUnavailable => StatusCode::BAD_GATEWAY,
            Code::CatalogMismatch => StatusCode::SERVICE_UNAVAILABLE,
            Code::RebuildNeeded => StatusCode::SERVICE_UNAVAILABLE,
            Code::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            Code::StripeNotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable snake_case code products branch on.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::CustomerRequired => "customer_required",
            Code::IdempotencyKeyRequired => "idempotency_key_required",
            Code::InvalidRequest | Code::ConflictingParameters => "invalid_request",
            Code::Unauthorized => "unauthorized",
            Code::InsufficientCredits => "insufficient_credits",
            Code::NoLiveSubscription => "no_live_subscription",
            Code::Forbidden => "forbidden",
            Code::TierTooLow => "tier_too_low",
            Code::NotFound => "not_found",
            Code::UnknownCustomer => "unknown_customer",
            Code::UnknownSubscription => "unknown_subscription",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::AlreadySubscribed => "already_subscribed",
            Code::CustomerExists => "customer_exists",
            Code::SubscriptionNotChangeable => "subscription_not_changeable",
            Code::BodyTooLarge => "body_too_large",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::InvalidProrationDate => "invalid_proration_date",
            Code::InvalidQuantity => "invalid_quantity",
            Code::NotSellable => "not_sellable",
            Code::RedirectNotAllowed => "redirect_not_allowed",
            Code::StripeError => "stripe_error",
            Code::UnknownMetric => "unknown_metric",
            Code::UnknownPrice => "unknown_price",
            Code::QuotaExceeded => "quota_exceeded",
            Code::RateLimited => "rate_limited",
            Code::Internal => "internal",
            Code::StripeUnavailable => "stripe_unavailable",
            Code::CatalogMismatch => "catalog_mismatch",
            Code::RebuildNeeded => "rebuild_needed",
            Code::Stopping => "stopping",
            Code::StripeNotConfigured => "stripe_not_configured",
            Code::Unavailable => "unavailable",
        }
    }
}

/// An answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status (the code's).
    pub status: StatusCode,
    /// The stable code products branch on.
    pub code: Code,
    /// A sentence for people.
    pub message: String,
    /// Extra fields beside `code` and `message` (e.g. the `subscription` of `already_subscribed`).
    pub extra: Option<Value>,
    /// Response headers (`Retry-After`, `RateLimit`...), lowercase names.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// An error with `code` (and its status) and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into(), extra: None, headers: Vec::new() }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds fields to the error object.
    pub fn with(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let (Some(Value::Object(extra)), Some(object)) = (&self.extra, error.as_object_mut()) {
            object.extend(extra.clone());
        }
        json!({ "error": error })
    }

    /// 503: the database cannot be reached.
    pub fn unavailable() -> Self {
        Self::new(Code::Unavailable, "the database is unavailable; retry later")
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if shared::db::is_unavailable(&error) {
            tracing::warn!(%error, "billing API: database unavailable");
            Self::unavailable()
        } else {
            tracing::error!(%error, "billing API: database error");
            Self::new(Code::Internal, "an internal error; it was logged")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        with_headers((self.status, axum::Json(self.body())).into_response(), &self.headers)
    }
}

/// `response` with `headers` set (lowercase names; a value that is not a valid header is left out).
pub fn with_headers(mut response: Response, headers: &[(&'static str, String)]) -> Response {
    for (name, value) in headers {
        if let Ok(value) = axum::http::HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}
