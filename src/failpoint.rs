//! Crash and pause points for tests: in debug builds, `OUTBOX_CRASH_AT=name` makes the process
//! abort the first time (or the Nth time, `name:N`) execution reaches `failpoint!("name")`, as a
//! `kill -9` would stop it there; `OUTBOX_PAUSE_AT=name:MS` makes the thread that reaches it
//! sleep MS milliseconds each time, after saying so on stderr, to hold a window open (a file
//! swapped between its hash and its upload); with `OUTBOX_PAUSE_RELEASE=FILE` a pause ends as
//! soon as FILE exists, so a test holds the window open for as long as its own step takes and
//! then lets the agent go on (no race between a fixed pause and a loaded machine). Release
//! builds compile them to nothing.

/// Abort here when `OUTBOX_CRASH_AT` names this point (debug builds only).
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(debug_assertions)]
        $crate::failpoint::hit($name);
    };
    // A pause point about one path: `OUTBOX_PAUSE_AT=name:MS:TEXT` pauses only where the path
    // contains TEXT (a stat that never answers for that path alone).
    ($name:literal, $path:expr) => {
        #[cfg(debug_assertions)]
        $crate::failpoint::hit_at($name, $path);
    };
}

#[cfg(debug_assertions)]
pub fn hit_at(name: &str, path: &std::path::Path) {
    let Ok(spec) = std::env::var("OUTBOX_PAUSE_AT") else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (Some(point), Some(ms)) = (parts.next(), parts.next()) else {
        return;
    };
    let about = parts.next().unwrap_or("");
    if point == name && path.to_string_lossy().contains(about) {
        let ms = ms.parse::<u64>().unwrap_or(1000);
        eprintln!("outbox: failpoint {name}: pausing {ms} ms (OUTBOX_PAUSE_AT)");
        hold(ms);
    }
}

/// Sleep `ms`, or less: until the file `OUTBOX_PAUSE_RELEASE` names exists.
#[cfg(debug_assertions)]
fn hold(ms: u64) {
    use std::time::{Duration, Instant};
    let until = Instant::now() + Duration::from_millis(ms);
    let release = std::env::var_os("OUTBOX_PAUSE_RELEASE").map(std::path::PathBuf::from);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || release.as_ref().is_some_and(|f| f.exists()) {
            return;
        }
        let step = if release.is_some() {
            Duration::from_millis(10)
        } else {
            left
        };
        std::thread::sleep(left.min(step));
    }
}

#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    pause(name);
    crash(name);
}

#[cfg(debug_assertions)]
fn pause(name: &str) {
    let Ok(spec) = std::env::var("OUTBOX_PAUSE_AT") else {
        return;
    };
    let Some((point, ms)) = spec.split_once(':') else {
        return;
    };
    if point == name {
        let ms = ms.parse::<u64>().unwrap_or(1000);
        eprintln!("outbox: failpoint {name}: pausing {ms} ms (OUTBOX_PAUSE_AT)");
        hold(ms);
    }
}

#[cfg(debug_assertions)]
fn crash(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("OUTBOX_CRASH_AT") else {
        return;
    };
    let (point, nth) = match spec.split_once(':') {
        Some((p, n)) => (p.to_string(), n.parse::<u64>().unwrap_or(1)),
        None => (spec.clone(), 1),
    };
    if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        eprintln!("outbox: failpoint {name}: aborting (OUTBOX_CRASH_AT)");
        std::process::abort();
    }
}
