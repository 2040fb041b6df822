//! Any config file text: `Settings::load` gives settings or an error, never a panic. Sizes,
//! durations and budgets are fed the raw text too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = outbox::config::parse_size(&text);
    let _ = outbox::config::parse_duration(&text);
    let _ = outbox::config::units::parse_count_budget(&text);
    let _ = outbox::config::units::parse_size_budget(&text);
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("tempdir");
    }
    DIR.with(|d| {
        let p = d.path().join("config.toml");
        if std::fs::write(&p, data).is_ok() {
            let _ = outbox::config::Settings::load(&p);
        }
    });
});
