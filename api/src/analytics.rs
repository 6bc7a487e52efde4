//! `GET /v1/analytics/mrr?from=YYYY-MM-DD&to=YYYY-MM-DD` (the backend key only): MRR and its
//! movements per day and currency (`store::revenue::daily`; docs/analytics.md).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate};
use domain::revenue::Policy;
use serde::Deserialize;
use serde_json::{Value, json};

use super::BillingState;
use super::auth::Caller;
use super::error::{ApiError, Code};

/// Most days one answer spans.
const MAX_DAYS: u64 = 3_660;

/// `?from=&to=` (both optional: the last 30 days up to today, UTC).
#[derive(Debug, Deserialize)]
pub struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// The handler.
pub async fn mrr(State(state): State<BillingState>, headers: HeaderMap, Query(range): Query<Range>) -> Response {
    match answer(&state, &headers, &range).await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &BillingState, headers: &HeaderMap, range: &Range) -> Result<Value, ApiError> {
    if let Caller::Customer(_) = state.caller(headers).await? {
        return Err(ApiError::new(Code::Forbidden, "revenue is for the backend key, not a customer's token"));
    }
    let today = state.clock.now().date_naive();
    let (from, to) = days(range, today)?;
    let currencies = store::revenue::daily(&state.pool, from, to).await?;
    Ok(json!({ "policy": policy(state.catalog.analytics()), "from": from, "to": to, "currencies": currencies }))
}

/// The range asked for: both days valid, `from` not after `to`, at most [`MAX_DAYS`].
fn days(range: &Range, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let parse = |field: &str, text: &Option<String>, default: NaiveDate| match text {
        None => Ok(default),
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| ApiError::new(Code::InvalidRequest, format!("{field}: a date as YYYY-MM-DD"))),
    };
    let to = parse("to", &range.to, today)?;
    let from = parse("from", &range.from, to.checked_sub_days(Days::new(29)).unwrap_or(to))?;
    let span = (to - from).num_days();
    if span < 0 {
        return Err(ApiError::new(Code::InvalidRequest, "from: on or before to"));
    }
    if span.unsigned_abs() >= MAX_DAYS {
        return Err(ApiError::new(Code::InvalidRequest, format!("at most {MAX_DAYS} days at once")));
    }
    Ok((from, to))
}

fn policy(policy: &Policy) -> Value {
    serde_json::to_value(policy).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).expect("day")
    }

    #[test]
    fn the_range_defaults_to_the_last_30_days_and_refuses_what_is_not_a_range() {
        let range = |from: Option<&str>, to: Option<&str>| Range { from: from.map(Into::into), to: to.map(Into::into) };
        assert_eq!(days(&range(None, None), day(31)).expect("range"), (day(2), day(31)));
        assert!(days(&range(Some("2026-03-05"), Some("2026-03-01")), day(31)).is_err());
        assert!(days(&range(Some("March"), None), day(31)).is_err());
        assert!(days(&range(Some("2000-01-01"), Some("2026-01-01")), day(31)).is_err(), "too long");
    }
}
