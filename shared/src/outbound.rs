//! Outbound HTTP: the one place that builds the clients that call Stripe and the provisioner, and
//! that says in words why a call failed.
//!
//! TLS is rustls with the platform's trust store (`rustls-native-certs`), so `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` point it at a private CA. Redirects are never followed: a redirect would carry
//! the `Authorization` or `X-API-Key` header to wherever the answer points. Whether plain
//! `http://` is allowed at all is decided once, in [`crate::config`].

use std::error::Error as _;
use std::time::Duration;

/// A client for calls that carry credentials: the given per-request timeout, no redirects.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| anyhow::anyhow!("building the HTTP client: {}", describe(&error)))
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No answer within the timeout.
    Timeout,
    /// The TLS handshake failed (an unknown CA, a wrong host name, an expired certificate).
    Tls,
    /// The host name did not resolve.
    Dns,
    /// Nothing listens at that address.
    Refused,
    /// Any other failure to connect.
    Connection,
    /// Anything else (a body that could not be sent or read).
    Other,
}

impl Cause {
    /// Whether trying again later may help. A TLS failure is a configuration or an attack, not a
    /// blip: retrying it only delays the message an operator needs.
    pub fn is_transient(self) -> bool {
        !matches!(self, Self::Tls)
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Tls => "TLS",
            Self::Dns => "DNS",
            Self::Refused => "connection refused",
            Self::Connection => "connection error",
            Self::Other => "request error",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cause of a failed request and the error chain below reqwest's message (which never holds
/// a header value).
pub fn classify(error: &reqwest::Error) -> (Cause, String) {
    let mut chain = Vec::new();
    let mut refused = false;
    let mut source = error.source();
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        chain.push(inner.to_string());
        source = inner.source();
    }
    let detail = if chain.is_empty() { error.to_string() } else { chain.join(": ") };
    let text = detail.to_ascii_lowercase();
    let cause = if error.is_timeout() {
        Cause::Timeout
    } else if refused {
        Cause::Refused
    } else if text.contains("dns error") || text.contains("failed to lookup address") {
        Cause::Dns
    } else if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
        Cause::Tls
    } else if error.is_connect() {
        Cause::Connection
    } else {
        Cause::Other
    };
    (cause, detail)
}

/// `<cause>: <detail>`, for logs and the effects journal.
pub fn describe(error: &reqwest::Error) -> String {
    let (cause, detail) = classify(error);
    format!("{cause}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_named_as_such() {
        // Bind then drop: nothing listens on that port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let http = client(Duration::from_secs(2)).expect("client");
        let error = http.get(format!("http://127.0.0.1:{port}/")).send().await.expect_err("refused");
        assert!(describe(&error).starts_with("connection refused: "), "{}", describe(&error));
    }

    #[tokio::test]
    async fn an_unknown_host_is_named_as_dns() {
        let http = client(Duration::from_secs(5)).expect("client");
        let error = http.get("https://no-such-host.invalid/").send().await.expect_err("no such host");
        assert!(describe(&error).starts_with("DNS: "), "{}", describe(&error));
    }
}
