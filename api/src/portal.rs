//! `POST /v1/portal/sessions`: a Stripe Customer Portal session for the customer.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use shared::stripe_api::Form;

use super::BillingState;
use super::commands::{self, Command, Incoming, Reply};
use super::error::{ApiError, Code};

const ENDPOINT: &str = "POST /v1/portal/sessions";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalRequest {
    customer: Option<String>,
    return_url: String,
}

/// The handler.
pub async fn create(State(state): State<BillingState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    commands::respond(run(&state, &headers, &body).await)
}

async fn run(state: &BillingState, headers: &HeaderMap, body: &[u8]) -> Result<Reply, ApiError> {
    let Incoming { caller, key, request, parsed, slot: _slot } =
        commands::incoming::<PortalRequest>(state, headers, body).await?;
    let customer = caller
        .customer(parsed.customer.as_deref())?
        .ok_or_else(|| ApiError::new(Code::CustomerRequired, "name the customer whose portal to open"))?;
    let command = Command { caller: &caller, endpoint: ENDPOINT, request: &request, customer: Some(&customer) };
    let allowed = state.redirect_allowed("return_url", &parsed.return_url);
    let form = Form::new()
        .set("customer", &customer)
        .set("return_url", &parsed.return_url)
        .set_opt("configuration", state.portal_configuration.as_ref());
    commands::run(&state.pool, command, &key, |tx, stripe_key| async move {
        let reply = match allowed.and_then(|()| state.stripe()) {
            Err(error) => Reply::from(error),
            Ok(stripe) => match stripe.post("/v1/billing_portal/sessions", &form, &stripe_key).await {
                Ok(answer) => Reply::ok(json!({ "url": answer.body["url"] }), (answer.request_id, answer.status)),
                Err(error) => Reply::from(super::stripe_error(error)),
            },
        };
        (tx, reply)
    })
    .await
}
