//! Test harness: the real `outbox` binary, `outbox sandbox` as a separate process on a free
//! loopback port, temp folders and a temp state dir. No mocks.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-5e1f0c2a9d";
pub const MIB: u64 = 1024 * 1024;

/// The `outbox` binary under test: `$OUTBOX_TEST_BIN` when set (several worktrees sharing one
/// `CARGO_TARGET_DIR` overwrite each other's `target/debug/outbox`; point this at the hashed copy
/// in `target/debug/deps/`), else the one cargo built for this test run.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("OUTBOX_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_outbox").into())
    })
}

/// A running `outbox sandbox` process; killed on drop. `kill9`/`stop` and `restart` bring it
/// down and back on the same port and data dir (the sandbox keeps its state there).
pub struct Sandbox {
    child: Option<Child>,
    pub origin: String,
    pub data: tempfile::TempDir,
    http: reqwest::Client,
    extra: Vec<String>,
}

/// Spawn `outbox sandbox` and read its `listening ORIGIN` line; `None` if it exited first
/// (port still taken).
fn spawn_sandbox(data: &Path, port: u16, extra: &[String]) -> Option<(Child, String)> {
    let mut child = Command::new(bin())
        .args([
            "sandbox",
            "--token",
            TOKEN,
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "outbox=debug")
        .stdout(Stdio::piped())
        // Appended across restarts, next to the state it describes.
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data.join("sandbox.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .expect("spawn sandbox");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    match line.trim().strip_prefix("listening ") {
        Some(o) => Some((child, o.to_string())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

impl Sandbox {
    pub fn start() -> Sandbox {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Sandbox {
        let data = tempfile::tempdir().expect("tempdir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, origin) = spawn_sandbox(data.path(), 0, &extra).expect("sandbox did not start");
        let mut http = reqwest::Client::builder();
        if origin.starts_with("https") {
            let pem = std::fs::read(data.path().join("ca.pem")).expect("ca.pem");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"));
        }
        Sandbox {
            child: Some(child),
            origin,
            data,
            http: http.build().expect("client"),
            extra,
        }
    }

    pub fn port(&self) -> u16 {
        self.origin
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in origin")
    }

    /// `kill -9` the sandbox process, as a crash would stop it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (bounded).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(c.id());
            let start = Instant::now();
            while c.try_wait().expect("wait").is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("sandbox did not stop within 20 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Start it again on the same port and data dir (after `kill9` or `stop`), retrying while
    /// the port is still taken.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart: the sandbox is still running"
        );
        let port = self.port();
        let start = Instant::now();
        loop {
            if let Some((child, origin)) = spawn_sandbox(self.data.path(), port, &self.extra) {
                assert_eq!(origin, self.origin, "restarted on another origin");
                self.child = Some(child);
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sandbox could not bind port {port} again within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn graph_base(&self) -> String {
        format!("{}/v1.0", self.origin)
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}/_admin{path}", self.origin));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "admin {path}: {status} {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
    }

    pub async fn create_item(&self, kind: &str, user: &str) -> String {
        let v = self
            .admin(
                reqwest::Method::POST,
                "/items",
                Some(json!({"kind": kind, "user": user})),
            )
            .await;
        v["id"].as_str().expect("item id").to_string()
    }

    pub async fn attachments(&self, item: &str) -> Vec<Value> {
        let v = self
            .admin(
                reqwest::Method::GET,
                &format!("/items/{}/attachments", urlenc(item)),
                None,
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    pub async fn faults(&self, body: Value) -> Value {
        self.admin(reqwest::Method::POST, "/faults", Some(body))
            .await
    }

    pub async fn stats(&self) -> Value {
        self.admin(reqwest::Method::GET, "/stats", None).await
    }

    pub async fn delete_item(&self, item: &str) {
        self.admin(
            reqwest::Method::DELETE,
            &format!("/items/{}", urlenc(item)),
            None,
        )
        .await;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A temp workspace: folders, a state dir and a config pointing at the sandbox.
pub struct Env {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
}

/// `p` as a TOML string for a config line (`folder = {}`): a literal string (`'...'`), where a
/// Windows path's `\` is no escape; a path holding `'` (which a literal string cannot) as a
/// basic string with its `\` and `"` escaped.
pub fn toml_path(p: &Path) -> String {
    let s = p.display().to_string();
    if !s.contains('\'') && !s.chars().any(char::is_control) {
        format!("'{s}'")
    } else {
        toml::Value::String(s).to_string()
    }
}

impl Env {
    pub fn new() -> Env {
        Env {
            sandbox: Sandbox::start(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// Write `config.toml` with the sandbox as Graph, a token from the environment, fast settle,
    /// and the given `[[mapping]]` tables (and any extra `[agent]` lines, which may set
    /// `settle`, `look_after` or `rescan` in place of the harness's). Paths go in TOML literal
    /// strings (`'...'`, as every test's `folder = '{}'`): a Windows path's `\` would be an
    /// escape in a basic string.
    pub fn write_config(&self, agent_extra: &str, mappings: &str) -> PathBuf {
        let mut defaults = String::new();
        for (key, value) in [("settle", "300ms"), ("look_after", "2s"), ("rescan", "1h")] {
            let set = agent_extra
                .lines()
                .any(|l| l.split('=').next().is_some_and(|k| k.trim() == key));
            if !set {
                defaults.push_str(&format!("{key} = \"{value}\"\n"));
            }
        }
        let cfg = format!(
            "[graph]\nbase_url = \"{}\"\n\n[auth]\nmethod = \"token_env\"\ntoken_env = \"OUTBOX_TEST_TOKEN\"\n\n[agent]\nstate_dir = '{}'\n{defaults}{agent_extra}\n\n{mappings}\n",
            self.sandbox.graph_base(),
            self.state_dir().display()
        );
        let p = self.path("config.toml");
        std::fs::write(&p, cfg).expect("write config");
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("OUTBOX_CONFIG", self.path("config.toml"))
            .env("OUTBOX_TEST_TOKEN", TOKEN)
            .env("RUST_LOG", "outbox=debug")
            .env_remove("OUTBOX_CRASH_AT")
            .env_remove("OUTBOX_PAUSE_AT")
            .env_remove("OUTBOX_PAUSE_RELEASE");
        c
    }

    /// Run outbox with `args` to completion (bounded by `timeout`).
    pub fn run(&self, args: &[&str], timeout: Duration) -> Output {
        run_bounded(self.cmd().args(args), timeout)
    }
}

/// Whether `status` is that of a process that aborted (`std::process::abort`, as a failpoint
/// does): killed by SIGABRT (no code) or exit 134 on Unix; on Windows abort is a fast fail,
/// exit code 0xC0000409.
pub fn aborted(status: &std::process::ExitStatus) -> bool {
    if cfg!(windows) {
        status.code() == Some(0xC000_0409_u32 as i32)
    } else {
        status.code().is_none() || status.code() == Some(134)
    }
}

/// SIGTERM to `pid`. Windows has no such signal for a process outside the caller's console: there
/// it is ended at once (`taskkill /F`), so a test that expects a clean exit after it fails there
/// until outbox can be asked to stop another way (#26: the control channel on a named pipe).
pub fn terminate(pid: u32) {
    #[cfg(unix)]
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    #[cfg(not(unix))]
    kill(pid);
}

/// Windows' stand-in for SIGTERM to an agent: the `stop` test hook over its control pipe (no
/// signal reaches another process there); `taskkill /F` when no agent answers.
#[cfg(windows)]
pub fn stop_over_pipe(state_dir: &Path, pid: u32) {
    let dir = state_dir.to_path_buf();
    let asked = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(outbox::agent::control::ask(
            &dir,
            &outbox::agent::control::Request::Stop,
        ))
        .is_some_and(|r| r.ok)
    })
    .join()
    .unwrap_or(false);
    if !asked {
        kill(pid);
    }
}

/// SIGKILL to `pid` (`taskkill /F` on Windows).
pub fn kill(pid: u32) {
    #[cfg(unix)]
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    #[cfg(not(unix))]
    let _ = Command::new("taskkill")
        .args(["/F", "/PID", &pid.to_string()])
        .status();
}

/// Run a command, killing it after `timeout`. Output is drained while it runs (a chatty child
/// must never block on a full pipe).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    // No terminal for the child: stdin too (clap's help wraps to the first of stdout, stderr,
    // stdin that is one), so what it prints does not depend on where `cargo test` runs.
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn outbox");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            kill(pid);
            let out = rx.recv().expect("output after kill").expect("output");
            panic!(
                "timed out after {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Deterministic pseudo-random bytes: the first 64 KiB from xorshift, each later 64 KiB block
/// that one with its own number and the seed in its first 16 bytes (the tests build unoptimised:
/// xorshift over every byte of a 150 MiB file took seconds). Blocks, and files of other seeds,
/// all differ.
pub fn write_file(path: &Path, size: u64, seed: u64) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut h = Sha256::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 64 * 1024];
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let mut left = size;
    let mut block = 0u64;
    while left > 0 {
        if block > 0 {
            buf[..8].copy_from_slice(&block.to_le_bytes());
            buf[8..16].copy_from_slice(&seed.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write");
        h.update(&buf[..n]);
        left -= n as u64;
        block += 1;
    }
    f.flush().expect("flush");
    hex::encode(h.finalize())
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `outbox run` in the background; killed on drop.
pub struct Agent {
    pub child: Child,
    log: PathBuf,
    /// Where its control channel is (its clean stop on Windows).
    #[cfg_attr(not(windows), allow(dead_code))]
    state_dir: PathBuf,
}

impl Agent {
    pub fn start(env: &Env, extra_env: &[(&str, &str)]) -> Agent {
        let log = env.path(&format!("agent-{}.log", rand_suffix()));
        let f = std::fs::File::create(&log).expect("log file");
        let mut cmd = env.cmd();
        cmd.arg("run").stdout(Stdio::null()).stderr(f);
        // Windows: `stop` asks the agent over its pipe (the `stop` test hook) what SIGTERM
        // asks on Unix.
        if cfg!(windows) {
            cmd.env("OUTBOX_TEST_HOOKS", "1");
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().expect("spawn agent"),
            log,
            state_dir: env.state_dir(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (polling its log, bounded) until the agent says `watching`: its start-up scan is
    /// done and its folders are watched, so a file written now is an event it sees.
    pub async fn watching(&self) {
        let start = Instant::now();
        while !self.log().contains("watching") {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the agent never said `watching`:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        #[cfg(windows)]
        stop_over_pipe(&self.state_dir, self.child.id());
        #[cfg(not(windows))]
        terminate(self.child.id());
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "agent did not stop within 30 s after SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash or power loss would stop it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Wait until a running agent answers on its control channel (the socket on Unix, the named
/// pipe on Windows), as `status` would reach it.
pub async fn wait_for_agent(env: &Env, timeout: Duration) {
    let dir = env.state_dir();
    wait_until(timeout, "the agent's control channel", || {
        let dir = dir.clone();
        async move {
            outbox::agent::control::ask(&dir, &outbox::agent::control::Request::Status)
                .await
                .is_some()
        }
    })
    .await;
}

/// Poll `cond` every 100 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// name -> sha256 of the attachments on `item`, asserting no name appears twice.
pub async fn attached(sandbox: &Sandbox, item: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for a in sandbox.attachments(item).await {
        let name = a["name"].as_str().unwrap_or_default().to_string();
        let sha = a["sha256"].as_str().unwrap_or_default().to_string();
        assert!(
            out.insert(name.clone(), sha).is_none(),
            "{name} is attached twice"
        );
    }
    out
}

/// Run `f` on each of `items`, `width` at a time, each on a thread of its own with a runtime of
/// its own (`run_bounded` blocks its thread, so futures on one task would take turns): for the
/// independent cases of one test (each with its own sandbox and state), which mostly wait on
/// timers and child processes. A panic in one is raised here once the others are done.
pub fn in_parallel<T, F, Fut>(items: Vec<T>, width: usize, f: F)
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let queue = std::sync::Arc::new(std::sync::Mutex::new(items.into_iter()));
    let f = std::sync::Arc::new(f);
    let workers: Vec<_> = (0..width.max(1))
        .map(|_| {
            let (queue, f) = (queue.clone(), f.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                loop {
                    let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                    match next {
                        Some(item) => rt.block_on(f(item)),
                        None => break,
                    }
                }
            })
        })
        .collect();
    let mut panicked = None;
    for w in workers {
        if let Err(p) = w.join() {
            panicked.get_or_insert(p);
        }
    }
    if let Some(p) = panicked {
        std::panic::resume_unwind(p);
    }
}
