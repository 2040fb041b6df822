//! Many files in one mapped folder, dropped while the agent runs: every one attached exactly
//! once, with the agent's memory, open descriptors and `outbox status` latency measured along
//! the way. `scripts/soak ci` (as CI) runs 3,000 files (debug build); `scripts/soak many` runs
//! 100,000 on a release build (`many_files_long`, sized by `SOAK_FILES`).

use crate::common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Default)]
struct Figures {
    files: usize,
    attached: usize,
    lost: usize,
    duplicated: usize,
    wrong: usize,
    wall: Duration,
    write_time: Duration,
    peak_rss_kib: u64,
    /// Resident set once every file is attached (is the peak transient?).
    end_rss_kib: u64,
    peak_fds: usize,
    status_calls: usize,
    status_max: Duration,
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `agent_extra`: lines for `[agent]` (the long run turns pacing off, see `many_files_long`).
async fn many_files(n: usize, agent_extra: &str, timeout: Duration) -> Figures {
    let started = Instant::now();
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).expect("mkdir");
    // `SOAK_IF_EXISTS=attach` skips the look at the item before each first upload, to tell
    // its cost (a listing of every attachment on the item) from the agent's own.
    let if_exists = std::env::var("SOAK_IF_EXISTS")
        .map(|v| format!("if_exists = \"{v}\"\n"))
        .unwrap_or_default();
    env.write_config(
        agent_extra,
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\n{if_exists}",
            folder.display()
        ),
    );
    // info, not debug: a debug line per request for 100,000 files is the log's cost, not the
    // agent's.
    let agent = Agent::start(&env, &[("RUST_LOG", "outbox=info")]);
    let pid = agent.child.id();
    agent.watching().await;
    let mut f = Figures {
        files: n,
        ..Figures::default()
    };
    // Dropped while the agent watches: a burst far larger than the watcher's queue.
    let mut want: HashMap<String, String> = HashMap::with_capacity(n);
    let w = Instant::now();
    for i in 0..n {
        let name = format!("f{i:06}.txt");
        let sha = write_file(&folder.join(&name), 64 + (i as u64 % 512), i as u64);
        want.insert(name, sha);
    }
    f.write_time = w.elapsed();
    let mut last_status = Instant::now();
    loop {
        f.peak_fds = f.peak_fds.max(open_fds(pid));
        if last_status.elapsed() >= Duration::from_secs(3) {
            let t = Instant::now();
            let out = env.run(&["status"], Duration::from_secs(60));
            let took = t.elapsed();
            assert!(out.status.success(), "status: {}", stderr(&out));
            f.status_calls += 1;
            f.status_max = f.status_max.max(took);
            last_status = Instant::now();
        }
        let stats = env.sandbox.stats().await;
        if stats["attachments_created"].as_u64().unwrap_or(0) >= n as u64 {
            break;
        }
        if started.elapsed() > timeout {
            let log = agent.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "{} of {n} attached after {timeout:?}; agent log tail:\n{}",
                stats["attachments_created"],
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    f.wall = started.elapsed();
    f.peak_rss_kib = peak_rss_kib(pid);
    // A moment for the last batch's buffers to be freed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.end_rss_kib = proc_status_kib(pid, "VmRSS:");
    // The running agent streams its ledger to `status`: every entry arrives, once, done.
    let out = env.run(&["status", "--json"], Duration::from_secs(120));
    assert!(out.status.success(), "status --json: {}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("status json");
    let mut names: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        assert_eq!(r["state"], "done", "{r}");
        let p = r["path"].as_str().unwrap_or_default();
        let name = p.rsplit('/').next().unwrap_or_default().to_string();
        *names.entry(name).or_default() += 1;
    }
    assert_eq!(rows.len(), n, "status rows");
    assert!(names.values().all(|&c| c == 1) && names.len() == n);
    let log = agent.log();
    assert!(
        agent.stop().success(),
        "{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for a in env.sandbox.attachments(&item).await {
        f.attached += 1;
        let name = a["name"].as_str().unwrap_or_default().to_string();
        let sha = a["sha256"].as_str().unwrap_or_default();
        if want.get(&name).map(String::as_str) != Some(sha) {
            f.wrong += 1;
        }
        *seen.entry(name).or_default() += 1;
    }
    f.duplicated = seen.values().filter(|&&c| c > 1).map(|c| c - 1).sum();
    f.lost = want.keys().filter(|k| !seen.contains_key(*k)).count();
    let overflow = log.contains("overflow") || log.contains("rescan");
    println!(
        "SOAK many: files {}, attached {}, lost {}, duplicated {}, wrong bytes {}, wall time {:.1}s (writing {:.1}s), agent peak RSS {} MiB (at the end {} MiB), peak open fds {}, status max {:.2}s over {} calls{}",
        f.files,
        f.attached,
        f.lost,
        f.duplicated,
        f.wrong,
        f.wall.as_secs_f64(),
        f.write_time.as_secs_f64(),
        f.peak_rss_kib / 1024,
        f.end_rss_kib / 1024,
        f.peak_fds,
        f.status_max.as_secs_f64(),
        f.status_calls,
        if overflow { ", watcher overflow -> rescan seen" } else { "" }
    );
    f
}

fn assert_clean(f: &Figures) {
    assert!(
        f.lost == 0 && f.duplicated == 0 && f.wrong == 0 && f.attached == f.files,
        "{f:?}"
    );
    // Responsive: a status call answers within seconds even while thousands are queued.
    assert!(f.status_max < Duration::from_secs(10), "{f:?}");
}

/// CI (`scripts/soak ci`): 3,000 files dropped at once into one watched folder.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak tier: scripts/soak ci"]
async fn thousands_of_files_dropped_into_one_folder_are_each_attached_once() {
    let f = many_files(3_000, "", Duration::from_secs(300)).await;
    assert_clean(&f);
}

/// `scripts/soak many`: `SOAK_FILES` (default 100,000) files. Pacing off: under Outlook's
/// default budget of 10,000 requests per 10 minutes per mailbox, 100,000 POSTs take at least
/// 100 minutes by design (a first run stood still at 9,999 attached, waiting for the window);
/// this run is about the agent at scale, not about waiting (`SOAK_PACED=1` keeps the budgets).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long; run by scripts/soak many"]
async fn many_files_long() {
    let n = std::env::var("SOAK_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000usize);
    let paced = std::env::var("SOAK_PACED").is_ok_and(|v| v == "1");
    let extra = if paced {
        ""
    } else {
        "mailbox_requests = \"off\"\nmailbox_upload_bytes = \"off\""
    };
    let f = many_files(n, extra, Duration::from_secs(3 * 3600)).await;
    assert_clean(&f);
}
