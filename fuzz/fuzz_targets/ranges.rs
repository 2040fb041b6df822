//! `nextExpectedRanges` from any JSON and from any strings: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some(r) = outbox::graph::ranges::ranges_from_json(&v) {
            let _ = outbox::graph::ranges::next_offset(&r);
        }
    }
    let text = String::from_utf8_lossy(data);
    let parts: Vec<&str> = text.split(',').collect();
    let _ = outbox::graph::ranges::next_offset(&parts);
});
