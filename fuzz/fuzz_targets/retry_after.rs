//! `Retry-After` as seconds, fractions or HTTP dates: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let _ = outbox::graph::ranges::parse_retry_after(&String::from_utf8_lossy(data), now);
});
