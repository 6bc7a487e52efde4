//! The API's error answers: `{"error": {"code": "<snake_case>", "message": "..."}}` with the
//! status the contract names.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code products branch on.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// Extra fields beside `code` and `message` (e.g. the `subscription` of `already_subscribed`).
    pub extra: Option<Value>,
    /// Response headers (`Retry-After`, `RateLimit`...), lowercase names.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), extra: None, headers: Vec::new() }
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
        let mut error = json!({ "code": self.code, "message": self.message });
        if let (Some(Value::Object(extra)), Some(object)) = (&self.extra, error.as_object_mut()) {
            object.extend(extra.clone());
        }
        json!({ "error": error })
    }

    /// 422 with `code`.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 503: the database cannot be reached.
    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is unavailable; retry later")
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if shared::db::is_unavailable(&error) {
            tracing::warn!(%error, "billing API: database unavailable");
            Self::unavailable()
        } else {
            tracing::error!(%error, "billing API: database error");
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an internal error; it was logged")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        for (name, value) in &self.headers {
            if let Ok(value) = axum::http::HeaderValue::from_str(value) {
                response.headers_mut().insert(*name, value);
            }
        }
        response
    }
}
