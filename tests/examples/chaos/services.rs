//! The processes under fault: release binaries on fixed loopback ports, restarted like a
//! supervisor would (systemd, Kubernetes) when they exit, killed with SIGKILL on purpose. (The
//! PostgreSQL crash is `LocalCluster::crash_restart`.)

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use ledger_tests::bin;

/// One supervised process.
pub struct Service {
    /// `ingest`, `projector-a`, `projector-b`.
    pub name: &'static str,
    binary: &'static str,
    addr_var: &'static str,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its admin listener's port (`/metrics`).
    pub admin_port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// SIGKILLs sent on purpose.
    pub kills: u32,
    /// Exits nobody asked for (then restarted).
    pub crashes: u32,
}

impl Service {
    /// A service of `binary` serving on a free port, its stderr appended to `logs/<name>.log`.
    pub fn new(
        name: &'static str,
        binary: &'static str,
        addr_var: &'static str,
        env: &[(String, String)],
        logs: &Path,
    ) -> Self {
        Self {
            name,
            binary,
            addr_var,
            port: bin::free_port(),
            admin_port: bin::free_port(),
            env: env.to_vec(),
            log: logs.join(format!("{name}.log")),
            child: None,
            kills: 0,
            crashes: 0,
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (not waiting for it to be ready).
    pub fn spawn(&mut self) {
        let log = std::fs::File::options().create(true).append(true).open(&self.log).expect("log file");
        let addr = format!("127.0.0.1:{}", self.port);
        let admin = format!("127.0.0.1:{}", self.admin_port);
        let mut env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push((self.addr_var, &addr));
        env.push((bin::admin_var(self.addr_var), &admin));
        self.child = Some(bin::spawn(self.binary, &env, log));
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
        }
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            bin::terminate(&child);
            let _ = bin::exit_within(&mut child, Duration::from_secs(30)).await;
        }
    }

    /// Restarts it if it exited by itself; true if it had.
    pub fn revive(&mut self) -> bool {
        let exited = self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            self.crashes += 1;
            eprintln!("chaos: {} exited by itself; restarting it", self.name);
            self.spawn();
        }
        exited
    }

    /// `GET /readyz`: status and body, None while it does not answer.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}/readyz", self.url())).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// True when it is the active projector.
    pub async fn is_active(&self) -> bool {
        matches!(self.readyz().await, Some((200, body)) if body.contains("active"))
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        ledger_tests::wait::until(limit, &format!("{} to be ready", self.name), || async {
            matches!(self.readyz().await, Some((200, _))).then_some(())
        })
        .await;
    }
}

/// A run that fails or is interrupted leaves no process behind.
impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
