//! Failed console logins per address: after [`MAX_FAILURES`] within [`WINDOW`], the address gets
//! 429 for [`LOCKOUT`] whatever it sends, so a guessing script tries ten passwords a minute at
//! most (a 16-character password is out of its reach). Per replica and in memory: a restart
//! forgets, which costs an attacker a restart they cannot cause. A pure state machine over
//! explicit instants, tested without waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins an address may make within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long an address that reached [`MAX_FAILURES`] is refused.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Addresses remembered before old windows are forgotten.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// The failures of every address seen recently.
#[derive(Debug, Default)]
pub struct Logins {
    by_address: Mutex<HashMap<IpAddr, Window>>,
}

impl Logins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // Plain counts: a panic elsewhere leaves the map consistent.
        self.by_address.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `address` is still refused at `now`, if it is.
    pub fn blocked(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.lock().get(&address)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failed login of `address` at `now`.
    pub fn failed(&self, address: IpAddr, now: Instant) {
        let mut windows = self.lock();
        if windows.len() >= MAX_ADDRESSES {
            windows.retain(|_, w| now.duration_since(w.started) < WINDOW || w.blocked_until.is_some_and(|u| u > now));
        }
        let window = windows.entry(address).or_insert(Window { started: now, failures: 0, blocked_until: None });
        let blocked = window.blocked_until.is_some_and(|until| until > now);
        if !blocked && now.duration_since(window.started) >= WINDOW {
            *window = Window { started: now, failures: 0, blocked_until: None };
        }
        window.failures += 1;
        if window.failures >= MAX_FAILURES && !blocked {
            window.blocked_until = Some(now + LOCKOUT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_in_a_minute_block_the_address_for_a_minute_and_others_stay_free() {
        let logins = Logins::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t0 = Instant::now();
        for i in 0..9 {
            logins.failed(a, t0 + Duration::from_secs(i));
            assert_eq!(logins.blocked(a, t0 + Duration::from_secs(i)), None, "failure {}", i + 1);
        }
        logins.failed(a, t0 + Duration::from_secs(30));
        assert_eq!(logins.blocked(a, t0 + Duration::from_secs(30)), Some(LOCKOUT));
        assert_eq!(logins.blocked(a, t0 + Duration::from_secs(89)), Some(Duration::from_secs(1)));
        assert_eq!(logins.blocked(a, t0 + Duration::from_secs(90)), None, "a minute later it may try again");
        assert_eq!(logins.blocked(b, t0 + Duration::from_secs(30)), None, "another address is not blocked");
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_never_block() {
        let logins = Logins::default();
        let a: IpAddr = "::1".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..30 {
            let at = t0 + Duration::from_secs(i * 7);
            logins.failed(a, at);
            assert_eq!(logins.blocked(a, at), None, "failure {} at {}s", i + 1, i * 7);
        }
    }
}
