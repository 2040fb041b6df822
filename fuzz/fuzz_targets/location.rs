//! The attachment id in a completion `Location`: never panics on any header value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = outbox::graph::ranges::attachment_id_from_location(&String::from_utf8_lossy(data));
});
