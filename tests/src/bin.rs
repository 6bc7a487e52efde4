//! The workspace's real binaries as child processes, for tests that run the deployment as
//! deployed. `cargo test --workspace` builds every binary of the workspace before any test runs;
//! they are found beside the test executable's `deps/` directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait;

/// Path of the workspace binary `name` (`ingest`, `projector`, `replay`).
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo test --workspace` (it builds every binary)", path.display());
    path
}

/// A free port on 127.0.0.1 (bound, then released for the child to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A running child that is killed when dropped (a failing test leaves no process behind).
pub struct Running {
    /// The child.
    pub child: Child,
    /// Where it serves HTTP.
    pub url: String,
    /// Where it serves its admin listener (`/metrics`, the projector's console).
    pub admin_url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns binary `name` with exactly `env` (plus `PATH`); stdout is discarded, stderr goes to
/// `stderr`.
pub fn spawn(name: &str, env: &[(&str, &str)], stderr: impl Into<Stdio>) -> Child {
    Command::new(path(name))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"))
}

/// Runs binary `name` with exactly `env` (plus `PATH`) and `args` to its end: whether it
/// succeeded, and its stdout then stderr.
pub fn run(name: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let output = Command::new(path(name))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The variable naming the admin listener of the binary whose public listener `addr_var` names.
pub fn admin_var(addr_var: &str) -> &'static str {
    if addr_var.starts_with("INGEST") { "INGEST_ADMIN_ADDR" } else { "PROJECTOR_ADMIN_ADDR" }
}

/// Spawns the real `projector` on free ports with warnings logged, plus `env` (which may
/// override those).
pub fn spawn_projector(env: &[(&str, &str)], stderr: impl Into<Stdio>) -> Child {
    let defaults = [("PROJECTOR_ADDR", "127.0.0.1:0"), ("PROJECTOR_ADMIN_ADDR", "127.0.0.1:0"), ("RUST_LOG", "warn")];
    let env: Vec<(&str, &str)> = defaults.iter().chain(env).copied().collect();
    spawn("projector", &env, stderr)
}

/// Sends SIGTERM to `child`.
pub fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success(), "kill -TERM {}", child.id());
}

/// Waits (bounded) for `child` to exit; returns its status and how long it took.
pub async fn exit_within(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = std::time::Instant::now();
    let status = wait::until(limit, "the process to exit", || {
        let exited = child.try_wait().expect("wait");
        async move { exited }
    })
    .await;
    (status, started.elapsed())
}

/// Starts binary `name` with exactly `env` (plus `PATH`), serving on the port `addr_var` names
/// (and its admin listener on another free port),
/// and waits (bounded) until its `/readyz` answers 200. Its stderr goes to `log`.
pub async fn start(name: &str, addr_var: &str, env: &[(&str, &str)], log: std::fs::File) -> Running {
    let (port, admin_port) = (free_port(), free_port());
    let (addr, admin) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin_port}"));
    let listeners = [(addr_var, addr.as_str()), (admin_var(addr_var), admin.as_str())];
    let env: Vec<(&str, &str)> = listeners.iter().chain(env).copied().collect();
    let child = spawn(name, &env, log);
    let mut running =
        Running { child, url: format!("http://127.0.0.1:{port}"), admin_url: format!("http://127.0.0.1:{admin_port}") };
    let readyz = format!("{}/readyz", running.url);
    let child = &mut running.child;
    wait::until(Duration::from_secs(60), &format!("{name} to be ready"), || {
        let exited = child.try_wait().expect("wait");
        let readyz = readyz.clone();
        async move {
            assert!(exited.is_none(), "{name} exited at start-up: {exited:?}");
            let response = reqwest::get(&readyz).await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
    running
}
