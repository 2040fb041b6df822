//! Crash points for tests: in debug builds, `OUTBOX_CRASH_AT=name` makes the process abort the
//! first time (or the Nth time, `name:N`) execution reaches `failpoint!("name")`, as a `kill -9`
//! would stop it there. Release builds compile them to nothing.

/// Abort here when `OUTBOX_CRASH_AT` names this point (debug builds only).
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(debug_assertions)]
        $crate::failpoint::hit($name);
    };
}

#[cfg(debug_assertions)]
pub fn hit(name: &str) {
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
