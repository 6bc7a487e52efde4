//! A small SMTP server on 127.0.0.1:0 (enough of RFC 5321 for one client: EHLO/HELO, MAIL, RCPT,
//! DATA, RSET, NOOP, QUIT) that keeps every message it accepts.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `MAIL FROM` address.
    pub from: String,
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message (headers and body) as sent, dot-unstuffed.
    pub data: String,
}

impl Received {
    /// The message with quoted-printable soft line breaks joined (enough for ASCII texts).
    pub fn text(&self) -> String {
        self.data.replace("=\n", "")
    }

    /// The `Message-ID` header's value (the projector makes it from the effect key).
    pub fn message_id(&self) -> Option<&str> {
        self.data
            .lines()
            .take_while(|line| !line.is_empty())
            .find_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("message-id")))
            .map(|(_, value)| value.trim())
    }
}

/// The server.
#[derive(Clone)]
pub struct SmtpServer {
    /// `smtp://127.0.0.1:<port>` (no TLS, no auth).
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    stall: Arc<Mutex<Option<String>>>,
}

fn address(arg: &str) -> String {
    arg.split_once(':')
        .map_or(arg, |(_, a)| a)
        .trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_owned()
}

impl SmtpServer {
    /// Starts one.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = Self { url: format!("smtp://127.0.0.1:{port}"), received: Arc::default(), stall: Arc::default() };
        let (received, stall) = (server.received.clone(), server.stall.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (received, stall) = (received.clone(), stall.clone());
                tokio::spawn(async move {
                    let _ = session(stream, received, stall).await;
                });
            }
        });
        server
    }

    /// While set, a message whose data contains `text` is taken (it counts as received) and
    /// never answered: its sender cannot know whether it was delivered, as when it dies between
    /// the answer and its record. Other messages are answered as usual.
    pub fn stall_messages_containing(&self, text: Option<&str>) {
        *self.stall.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = text.map(str::to_owned);
    }

    /// What it accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    stall: Arc<Mutex<Option<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 ledger-tests ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-ledger-tests\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 ok\r\n"
        } else if upper.starts_with("RSET") {
            (from, to) = (String::new(), Vec::new());
            b"250 ok\r\n"
        } else if upper.starts_with("MAIL FROM") {
            from = address(&line);
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO") {
            to.push(address(&line));
            b"250 ok\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            while let Some(line) = lines.next_line().await? {
                if line == "." {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                data.push('\n');
            }
            let message = Received { from: std::mem::take(&mut from), to: std::mem::take(&mut to), data };
            let stalls = stall
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_deref()
                .is_some_and(|text| message.data.contains(text));
            received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(message);
            if stalls {
                std::future::pending::<()>().await;
            }
            b"250 queued\r\n"
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
    Ok(())
}
