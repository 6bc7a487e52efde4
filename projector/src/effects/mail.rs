//! Mails: SMTP when `SMTP_URL` is set, else `.eml` files under `MAIL_DIR` (local use). The texts
//! are pure functions; the token mail is the only place a token's plaintext ever goes.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::plan::Verdict;

/// How mails leave.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `SMTP_URL` (e.g. `smtp://user:pass@host:587?tls=required`); None: files.
    pub smtp_url: Option<SecretString>,
    /// `MAIL_FROM`.
    pub from: String,
    /// `MAIL_DIR`: where files go without SMTP.
    pub dir: PathBuf,
}

/// Sender of `MAIL_FROM` when unset.
pub const DEFAULT_FROM: &str = "stripe-ledger <billing@localhost>";

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

/// A configured mail transport.
#[derive(Clone)]
pub enum Mailer {
    /// SMTP.
    Smtp(AsyncSmtpTransport<Tokio1Executor>, String),
    /// `.eml` files in a directory.
    Files(AsyncFileTransport<Tokio1Executor>, String),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp(..) => f.write_str("Mailer::Smtp"),
            Self::Files(..) => f.write_str("Mailer::Files"),
        }
    }
}

impl Mailer {
    /// Builds the transport `config` names.
    pub fn new(config: &MailConfig) -> anyhow::Result<Self> {
        match &config.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| anyhow::anyhow!("invalid SMTP_URL: {e}"))?
                    .timeout(Some(Duration::from_secs(20)))
                    .build();
                Ok(Self::Smtp(transport, config.from.clone()))
            }
            None => {
                std::fs::create_dir_all(&config.dir)
                    .map_err(|e| anyhow::anyhow!("creating MAIL_DIR {}: {e}", config.dir.display()))?;
                tracing::warn!(dir = %config.dir.display(), "SMTP_URL is unset: mails are written as .eml files");
                Ok(Self::Files(AsyncFileTransport::new(&config.dir), config.from.clone()))
            }
        }
    }

    /// Sends one mail with a Message-ID made from the effect key (a resend after a crash carries
    /// the same one, so mail systems can drop the copy); the verdict says whether a retry may help.
    pub async fn send(&self, key: &str, mail: &Mail) -> (Verdict, Option<String>) {
        let from = match self {
            Self::Smtp(_, from) | Self::Files(_, from) => from,
        };
        let message = match build(from, key, mail) {
            Ok(message) => message,
            Err(error) => return (Verdict::Failed, Some(error)),
        };
        match self {
            Self::Smtp(transport, _) => match transport.send(message).await {
                Ok(_) => (Verdict::Succeeded, None),
                Err(e) if e.is_permanent() => (Verdict::Failed, Some(format!("SMTP: {e}"))),
                Err(e) => (Verdict::Retry, Some(format!("SMTP: {e}"))),
            },
            Self::Files(transport, _) => match transport.send(message).await {
                Ok(_) => (Verdict::Succeeded, None),
                Err(e) => (Verdict::Retry, Some(format!("mail file: {e}"))),
            },
        }
    }
}

fn build(from: &str, key: &str, mail: &Mail) -> Result<Message, String> {
    let id: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '.' }).collect();
    Message::builder()
        .message_id(Some(format!("<{id}@stripe-ledger>")))
        .from(from.parse().map_err(|e| format!("MAIL_FROM `{from}`: {e}"))?)
        .to(mail.to.parse().map_err(|e| format!("recipient `{}`: {e}", mail.to))?)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| e.to_string())
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Welcome, on a subscription's first activation.
pub fn welcome(to: &str, tier: &str, url: Option<&str>) -> Mail {
    let where_ = match url {
        Some(url) => format!("Your instance is running at {url}."),
        None => "Your instance is being prepared; we will not mail again, so bookmark your dashboard.".to_owned(),
    };
    Mail {
        to: to.to_owned(),
        subject: format!("Welcome to the {tier} plan"),
        body: format!("Welcome aboard!\n\nYou are on the {tier} plan. {where_}\n"),
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
        let m = welcome("a@example.com", "professional", Some("https://x.example.com"));
        assert!(m.subject.contains("professional") && m.body.contains("https://x.example.com"));
        let deadline = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
        assert!(payment_failed("a@example.com", Some(deadline)).body.contains("2023-11-14 22:13 UTC"));
        assert!(token("a@example.com", "basic", "sl_secret", deadline).body.contains("sl_secret"));
        assert!(alert("ops@example.com", "instance:sub_1:3", "HTTP 500").body.contains("instance:sub_1:3"));
    }

    #[test]
    fn a_bad_address_is_a_permanent_failure() {
        assert!(build(DEFAULT_FROM, "email:canceled:sub_1", &canceled("not an address", "sub_1")).is_err());
        assert!(build(DEFAULT_FROM, "email:canceled:sub_1", &canceled("a@example.com", "sub_1")).is_ok());
    }
}
