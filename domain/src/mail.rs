//! What the mails say: one function per mail, pure (the transport is the projector's
//! `effects::mail`). The `Message-ID` of an effect's mail is derived from its key, so a resend
//! is recognisably the same mail.

use chrono::{DateTime, Utc};

/// A mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// The `Message-ID` of the mail of effect `key` (the same for every send of that key).
pub fn message_id(key: &str) -> String {
    let id: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '.' }).collect();
    format!("<{id}@stripe-ledger>")
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Welcome, on a subscription's first activation: the instance's address once it runs, and the
/// product's dashboard (`DASHBOARD_URL`) when there is one.
pub fn welcome(to: &str, tier: &str, url: Option<&str>, dashboard: Option<&str>) -> Mail {
    let where_ = match (url, dashboard) {
        (Some(url), _) => format!("Your instance is running at {url}."),
        (None, Some(_)) => "Your instance is being prepared; follow it on your dashboard.".to_owned(),
        (None, None) => "Your instance is being prepared.".to_owned(),
    };
    let link = dashboard.map(|d| format!("\nYour dashboard: {d}\n")).unwrap_or_default();
    Mail {
        to: to.to_owned(),
        subject: format!("Welcome to the {tier} plan"),
        body: format!("Welcome aboard!\n\nYou are on the {tier} plan. {where_}\n{link}"),
    }
}

/// A payment failed; the instance keeps running until `grace_until`.
pub fn payment_failed(to: &str, grace_until: Option<DateTime<Utc>>) -> Mail {
    let until = grace_until.map_or_else(|| "the end of the grace period".to_owned(), day);
    Mail {
        to: to.to_owned(),
        subject: "Your payment failed".to_owned(),
        body: format!(
            "We could not collect your last payment.\n\nYour instance keeps running until {until}. \
             Please update your payment method before then, or it will be shut down.\n"
        ),
    }
}

/// The subscription ended.
pub fn canceled(to: &str, subscription: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Your subscription has ended".to_owned(),
        body: format!("Your subscription {subscription} has ended and its instance is being shut down.\n"),
    }
}

/// An effect failed for good.
pub fn alert(to: &str, key: &str, detail: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("[stripe-ledger] effect failed: {key}"),
        body: format!(
            "The effect {key} failed after its last attempt and needs a person.\n\n{detail}\n\n\
             Its attempts are in ledger.effects (WHERE key = '{key}').\n"
        ),
    }
}

/// The API token: the one place its plaintext goes.
pub fn token(to: &str, tier: &str, plaintext: &str, expires_at: DateTime<Utc>) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Your API token".to_owned(),
        body: format!(
            "Your API token for the {tier} tier:\n\n    {plaintext}\n\nSend it as `Authorization: Bearer <token>`. \
             We store only its hash and cannot show it again. It is valid until {} and renewed while your \
             subscription is paid.\n",
            day(expires_at)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_carry_what_the_customer_needs() {
        let m = welcome("a@example.com", "professional", Some("https://x.example.com"), None);
        assert!(m.subject.contains("professional") && m.body.contains("https://x.example.com"));
        assert!(!m.body.contains("dashboard"), "no dashboard link without DASHBOARD_URL: {}", m.body);
        let waiting = welcome("a@example.com", "starter", None, Some("https://app.example.com/dashboard"));
        assert!(waiting.body.contains("being prepared") && waiting.body.contains("https://app.example.com/dashboard"));
        assert!(!welcome("a@example.com", "starter", None, None).body.contains("dashboard"));
        let deadline = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
        assert!(payment_failed("a@example.com", Some(deadline)).body.contains("2023-11-14 22:13 UTC"));
        assert!(token("a@example.com", "basic", "sl_secret", deadline).body.contains("sl_secret"));
        assert!(alert("ops@example.com", "instance:sub_1:3", "HTTP 500").body.contains("instance:sub_1:3"));
    }
}
