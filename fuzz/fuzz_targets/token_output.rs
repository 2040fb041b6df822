//! What a token command prints and what the identity platform answers: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = outbox::auth::parse_token_output(&text, std::time::SystemTime::now());
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = outbox::auth::oauth::token_response(v);
    }
    let _ = outbox::secret::redact(&text);
});
