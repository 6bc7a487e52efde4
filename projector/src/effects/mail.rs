//! Mails: SMTP when `SMTP_URL` is set, else `.eml` files under `MAIL_DIR` (local use). The texts
//! are pure functions; the token mail is the only place a token's plaintext ever goes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use domain::mail::{Mail, message_id};
use domain::plan::Verdict;

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

/// A configured mail transport.
#[derive(Clone)]
pub enum Mailer {
    /// SMTP.
    Smtp {
        /// The connection pool to the server.
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// `MAIL_FROM`.
        from: String,
    },
    /// `.eml` files in a directory (0700; each file 0600: token mails hold plaintext tokens).
    Files {
        /// `MAIL_DIR`.
        dir: PathBuf,
        /// `MAIL_FROM`.
        from: String,
    },
}

/// How sending one mail went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Whether a retry may help.
    pub verdict: Verdict,
    /// Why it did not succeed.
    pub error: Option<String>,
}

impl Delivery {
    fn new(verdict: Verdict, error: Option<String>) -> Self {
        Self { verdict, error }
    }
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp { .. } => f.write_str("Mailer::Smtp"),
            Self::Files { .. } => f.write_str("Mailer::Files"),
        }
    }
}

impl Mailer {
    /// Builds the transport `config` names.
    pub fn new(config: &MailConfig) -> anyhow::Result<Self> {
        match &config.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .context("invalid SMTP_URL")?
                    .timeout(Some(Duration::from_secs(20)))
                    .build();
                Ok(Self::Smtp { transport, from: config.from.clone() })
            }
            None => {
                private_dir(&config.dir).with_context(|| format!("preparing MAIL_DIR {}", config.dir.display()))?;
                tracing::warn!(dir = %config.dir.display(), "SMTP_URL is unset: mails are written as .eml files");
                Ok(Self::Files { dir: config.dir.clone(), from: config.from.clone() })
            }
        }
    }

    /// Sends one mail with a Message-ID made from the effect key (a resend after a crash carries
    /// the same one, so mail systems can drop the copy); the verdict says whether a retry may help.
    pub async fn send(&self, key: &str, mail: &Mail) -> Delivery {
        let from = match self {
            Self::Smtp { from, .. } | Self::Files { from, .. } => from,
        };
        let message = match build(from, key, mail) {
            Ok(message) => message,
            Err(error) => return Delivery::new(Verdict::Failed, Some(error)),
        };
        match self {
            Self::Smtp { transport, .. } => match transport.send(message).await {
                Ok(_) => Delivery::new(Verdict::Succeeded, None),
                Err(e) if e.is_permanent() => Delivery::new(Verdict::Failed, Some(format!("SMTP: {e}"))),
                Err(e) => Delivery::new(Verdict::Retry, Some(format!("SMTP: {e}"))),
            },
            Self::Files { dir, .. } => match write_private(dir, &message.formatted()).await {
                Ok(()) => Delivery::new(Verdict::Succeeded, None),
                Err(e) => Delivery::new(Verdict::Retry, Some(format!("mail file: {e}"))),
            },
        }
    }
}

/// Creates `dir` if needed and makes it readable by its owner only.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    // An existing directory keeps its mode through create(): tighten it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes one mail as `<uuid>.eml`, created 0600 (never readable by others, even for a moment).
async fn write_private(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let path = dir.join(format!("{}.eml", uuid::Uuid::new_v4()));
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).await?;
    file.write_all(bytes).await?;
    file.sync_all().await
}

fn build(from: &str, key: &str, mail: &Mail) -> Result<Message, String> {
    Message::builder()
        .message_id(Some(message_id(key)))
        .from(from.parse().map_err(|e| format!("MAIL_FROM `{from}`: {e}"))?)
        .to(mail.to.parse().map_err(|e| format!("recipient `{}`: {e}", mail.to))?)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use domain::mail::{canceled, token};

    #[test]
    fn a_bad_address_is_a_permanent_failure() {
        assert!(build(DEFAULT_FROM, "email:canceled:sub_1", &canceled("not an address", "sub_1")).is_err());
        assert!(build(DEFAULT_FROM, "email:canceled:sub_1", &canceled("a@example.com", "sub_1")).is_ok());
    }

    #[tokio::test]
    async fn mail_files_are_private_to_the_owner_even_in_an_open_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().expect("dir");
        let dir = root.path().join("mail");
        std::fs::create_dir(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let config = MailConfig { smtp_url: None, from: DEFAULT_FROM.to_owned(), dir: dir.clone() };
        let mailer = Mailer::new(&config).expect("mailer");
        let deadline = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
        let delivery = mailer.send("token:cus_1:1", &token("a@example.com", "basic", "sl_secret", deadline)).await;
        assert_eq!(delivery, Delivery { verdict: Verdict::Succeeded, error: None });
        let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "the directory is tightened");
        let files: Vec<_> = std::fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").path()).collect();
        assert_eq!(files.len(), 1);
        assert_eq!(mode(&files[0]), 0o600);
        assert!(std::fs::read_to_string(&files[0]).expect("read").contains("sl_secret"));
    }
}
