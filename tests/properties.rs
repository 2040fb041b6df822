//! Property tests of every parser that reads the outside world: what Graph and upload URLs
//! answer (`nextExpectedRanges`, `Location`, `Retry-After`, error bodies), what token sources
//! print, what the user writes in the config, and the redaction of secrets. Each holds on
//! arbitrary input: no panic, and the documented meaning where the input is well-formed.
//! Case counts are modest so the file runs in seconds; `fuzz/` runs the same parsers longer.

use outbox::auth::{oauth::token_response, parse_token_output};
use outbox::config::units::{parse_count_budget, parse_size_budget};
use outbox::config::{parse_duration, parse_size, Settings};
use outbox::graph::error::parse_error_body;
use outbox::graph::ranges::{
    attachment_id_from_location, next_offset, parse_retry_after, ranges_from_json,
};
use outbox::graph::GraphError;
use outbox::secret::redact;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,12}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A key name in any casing.
fn any_casing(name: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<bool>(), name.len()).prop_map(move |up| {
        name.chars()
            .zip(up)
            .map(|(c, u)| {
                if u {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn next_offset_never_panics(v in prop::collection::vec("\\PC{0,24}", 0..6)) {
        let _ = next_offset(&v);
    }

    /// Every documented form: the lowest start wins.
    #[test]
    fn next_offset_is_the_lowest_start(
        ranges in prop::collection::vec((0u64..u64::MAX / 2, 0u8..3, 0u64..1000), 1..6),
        ws in "[ \t]{0,2}",
    ) {
        let texts: Vec<String> = ranges
            .iter()
            .map(|(start, form, len)| match form {
                0 => format!("{ws}{start}{ws}"),
                1 => format!("{start}-"),
                _ => format!("{start}-{}", start + len),
            })
            .collect();
        let want = ranges.iter().map(|r| r.0).min();
        prop_assert_eq!(next_offset(&texts), want);
    }

    #[test]
    fn ranges_from_json_never_panics(v in any_json()) {
        let _ = ranges_from_json(&v);
    }

    /// Found whatever the casing of the property name.
    #[test]
    fn ranges_from_json_any_casing(key in any_casing("nextExpectedRanges"), start in any::<u64>()) {
        let mut obj = serde_json::Map::new();
        obj.insert("ExpirationDateTime".into(), json!("2030-01-01T00:00:00.0000000Z"));
        obj.insert(key, json!([format!("{start}-")]));
        let got = ranges_from_json(&Value::Object(obj));
        prop_assert_eq!(got.as_deref().map(next_offset), Some(Some(start)));
    }

    #[test]
    fn location_never_panics(s in "\\PC{0,80}") {
        let _ = attachment_id_from_location(&s);
    }

    #[test]
    fn location_never_panics_near_the_pattern(
        pre in "\\PC{0,20}", id in "\\PC{0,20}", post in "\\PC{0,10}", open in "[aA]ttachments\\('?",
    ) {
        let _ = attachment_id_from_location(&format!("{pre}{open}{id}{post}"));
    }

    /// An Exchange-shaped id (base64url with padding), plain or percent-encoded, comes back whole
    /// from the last `Attachments('…')`.
    #[test]
    fn location_gives_back_the_id(
        id in "[A-Za-z0-9_=-]{1,60}",
        casing in any_casing("Attachments"),
        encode in any::<bool>(),
        user in "[a-z]{1,8}@[a-z]{1,8}\\.test",
    ) {
        let shown = if encode { id.replace('=', "%3D") } else { id.clone() };
        let loc = format!(
            "https://outlook.office.com/api/v2.0/Users('{user}')/Messages('AAMk=')/{casing}('{shown}')"
        );
        prop_assert_eq!(attachment_id_from_location(&loc), Some(id));
    }

    #[test]
    fn retry_after_never_panics(s in "\\PC{0,40}", now in any::<u32>()) {
        let _ = parse_retry_after(&s, UNIX_EPOCH + Duration::from_secs(now as u64));
    }

    #[test]
    fn retry_after_seconds_and_dates(secs in any::<u64>(), ahead in 0u64..100_000, now in 1_000_000u64..4_000_000_000) {
        let now = UNIX_EPOCH + Duration::from_secs(now);
        prop_assert_eq!(parse_retry_after(&format!(" {secs} "), now), Some(Duration::from_secs(secs)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(ahead));
        prop_assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(ahead)));
        // A date in the past means "now".
        let past = httpdate::fmt_http_date(now - Duration::from_secs(ahead));
        prop_assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    }

    #[test]
    fn error_body_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), v in any_json()) {
        let _ = parse_error_body(&bytes);
        let _ = parse_error_body(v.to_string().as_bytes());
    }

    /// Graph's error shape in any casing gives its code and message.
    #[test]
    fn error_body_any_casing(
        e in any_casing("error"), c in any_casing("code"), m in any_casing("message"),
        code in "[A-Za-z]{1,30}", message in "\\PC{0,60}",
    ) {
        let body = json!({ e: { c: code.clone(), m: message.clone(), "innerError": {"date": "x"} } });
        prop_assert_eq!(parse_error_body(body.to_string().as_bytes()), Some((code, message)));
    }

    /// Whatever the server answers, building the error never panics and its message carries no
    /// upload-URL authtoken or bearer token.
    #[test]
    fn graph_error_from_any_response(
        status in 100u16..600,
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        secret in "[A-Za-z0-9]{16,32}",
        wrap in any::<bool>(),
        upload in any::<bool>(),
        www in proptest::option::of("\\PC{0,40}"),
    ) {
        let body = if wrap {
            json!({"error": {"code": "X", "message": format!("see https://h/x?authtoken={secret} or Bearer {secret}")}})
                .to_string()
                .into_bytes()
        } else {
            let mut b = bytes.clone();
            b.extend_from_slice(format!(" authtoken={secret}").as_bytes());
            b
        };
        let e = GraphError::from_response(status, &body, None, www.as_deref(), upload);
        prop_assert!(!e.message.contains(&secret), "{}", e.message);
        prop_assert!(!e.to_string().contains(&secret), "{}", e);
    }

    #[test]
    fn token_output_never_panics(s in "\\PC{0,120}", v in any_json(), now in any::<u32>()) {
        let now = UNIX_EPOCH + Duration::from_secs(now as u64);
        let _ = parse_token_output(&s, now);
        let _ = parse_token_output(&v.to_string(), now);
    }

    /// Expiry fields of any size (a broken or hostile token tool) never panic.
    #[test]
    fn token_output_any_expiry(
        key in prop_oneof![Just("expires_on"), Just("expires_in"), Just("expiresOn")],
        n in any::<u64>(),
        as_string in any::<bool>(),
        exp in any::<u64>(),
    ) {
        use base64::Engine;
        let value = if as_string { json!(n.to_string()) } else { json!(n) };
        let out = json!({"accessToken": "tok", key: value}).to_string();
        let t = parse_token_output(&out, SystemTime::now());
        prop_assert_eq!(t.map(|t| t.secret), Some("tok".to_string()));
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"exp": exp}).to_string());
        let _ = parse_token_output(&format!("eyJhbGciOiJub25lIn0.{payload}.sig"), SystemTime::now());
    }

    #[test]
    fn token_response_never_panics(v in any_json(), n in any::<u64>(), s in "\\PC{0,20}") {
        let _ = token_response(v);
        let r = token_response(json!({"access_token": "a", "expires_in": n, "refresh_token": "r"}));
        prop_assert!(r.is_ok());
        let _ = token_response(json!({"access_token": "a", "expires_in": s}));
    }

    #[test]
    fn sizes_and_durations_never_panic(s in "\\PC{0,30}") {
        let _ = parse_size(&s);
        let _ = parse_duration(&s);
        let _ = parse_count_budget(&s);
        let _ = parse_size_budget(&s);
    }

    #[test]
    fn sizes_near_the_grammar_never_panic(
        n in "[0-9]{0,30}(\\.[0-9]{0,30})?", ws in " ?", unit in "(?i)(|b|kb|mb|gb|tb|kib|mib|gib|tib|ms|s|m|h|d|x)",
        window in "[0-9]{0,25}(ms|s|m|h|d)?",
    ) {
        let s = format!("{n}{ws}{unit}");
        let _ = parse_size(&s);
        let _ = parse_duration(&s);
        let _ = parse_count_budget(&format!("{n}/{window}"));
        let _ = parse_size_budget(&format!("{s}/{window}"));
    }

    /// Whole sizes round-trip through every unit.
    #[test]
    fn sizes_mean_what_they_say(n in 0u64..1_000_000, unit in 0usize..9) {
        let (name, mult) = [("", 1u64), ("B", 1), ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000),
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("kib", 1 << 10)][unit];
        prop_assert_eq!(parse_size(&format!("{n}{name}")), Ok(n * mult));
        prop_assert_eq!(parse_size(&format!("{n} {name}")), Ok(n * mult));
    }

    #[test]
    fn durations_mean_what_they_say(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, ms in 0u64..1000) {
        let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        prop_assert_eq!(parse_duration(&format!("{h}h{m}m{s}s{ms}ms")), Ok(want));
    }

    /// The redaction promise: no value that followed `authtoken=` (or another secret parameter,
    /// or `Bearer `) survives, whatever surrounds it.
    #[test]
    fn redact_removes_every_secret(
        pre in "\\PC{0,40}", post in "\\PC{0,40}",
        secret in "[A-Za-z0-9._~-]{12,40}",
        key in prop_oneof![
            any_casing("authtoken"), any_casing("access_token"), any_casing("refresh_token"),
            any_casing("client_secret"), Just("Bearer".to_string()),
        ],
        sep in prop_oneof![Just("?"), Just("&"), Just(" "), Just("\""), Just("'")],
        end in prop_oneof![Just(""), Just("&x=1"), Just(" "), Just("\""), Just(")"), Just("#f")],
    ) {
        prop_assume!(!pre.contains(&secret) && !post.contains(&secret));
        let joined = if key == "Bearer" { format!("{pre} Bearer {secret}{end}{post}") } else {
            format!("{pre}{sep}{key}={secret}{end}{post}")
        };
        let r = redact(&joined);
        prop_assert!(!r.contains(&secret), "{joined:?} -> {r:?}");
    }

    #[test]
    fn redact_never_panics_and_keeps_plain_text(s in "\\PC{0,200}") {
        let r = redact(&s);
        let lower = s.to_ascii_lowercase();
        if !["authtoken", "access_token", "refresh_token", "client_secret", "client_assertion", "device_code", "bearer", "code="]
            .iter()
            .any(|k| lower.contains(k))
        {
            prop_assert_eq!(r, s);
        }
    }
}

/// TOML-ish text from the config's own vocabulary: real sections and keys with values of every
/// type, some broken lines. Loading it gives settings or an error, never a panic.
fn tomlish() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[graph]"),
        Just("[auth]"),
        Just("[agent]"),
        Just("[[mapping]]"),
        Just("[mapping]"),
        Just("[nope]"),
        Just("[agent"),
    ]
    .prop_map(str::to_string);
    let key = prop_oneof![
        Just("base_url"),
        Just("ca_file"),
        Just("method"),
        Just("authority"),
        Just("tenant"),
        Just("client_id"),
        Just("token_env"),
        Just("command"),
        Just("client_secret_env"),
        Just("certificate_path"),
        Just("state_dir"),
        Just("concurrency"),
        Just("chunk_size"),
        Just("settle"),
        Just("max_settle"),
        Just("rescan"),
        Just("mailbox_requests"),
        Just("mailbox_upload_bytes"),
        Just("notify"),
        Just("keep_done"),
        Just("name"),
        Just("folder"),
        Just("message"),
        Just("event"),
        Just("user"),
        Just("include"),
        Just("exclude"),
        Just("recursive"),
        Just("after"),
        Just("sent_dir"),
        Just("failed_dir"),
        Just("follow_symlinks"),
        Just("if_exists"),
        Just("bogus"),
    ];
    let value = prop_oneof![
        "\"\\PC{0,16}\"".prop_map(|s| s),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("\"4MiB\"".to_string()),
        Just("\"5MiB\"".to_string()),
        Just("\"2s\"".to_string()),
        Just("\"10000/10m\"".to_string()),
        Just("\"off\"".to_string()),
        Just("\"/tmp\"".to_string()),
        Just("\"~/x\"".to_string()),
        Just("\"$HOME/y\"".to_string()),
        Just("[\"*\", \"[\"]".to_string()),
        Just("\"https://graph.microsoft.com/v1.0\"".to_string()),
        Just("1.5".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("".to_string()),
        Just("\"\\u0000\"".to_string()),
    ];
    let line = prop_oneof![
        3 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => section,
        1 => "\\PC{0,20}",
    ];
    prop::collection::vec(line, 0..24).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 250, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn config_load_never_panics(text in tomlish()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).expect("write");
        if let Err(e) = Settings::load(&path) {
            // Errors name the file.
            prop_assert!(e.to_string().contains("config.toml"), "{e}");
        }
    }
}

/// Regression: a token tool printing a far-future `expires_on`/`expires_in` (or a JWT with a huge
/// `exp`) panicked with "overflow when adding duration to instant", taking the agent down.
#[test]
fn token_output_with_a_far_future_expiry_does_not_panic() {
    use base64::Engine;
    let now = SystemTime::now();
    for out in [
        r#"{"accessToken":"tok","expires_on":18446744073709551615}"#.to_string(),
        r#"{"accessToken":"tok","expires_on":"9223372036854775808"}"#.to_string(),
        r#"{"access_token":"tok","expires_in":18446744073709551615}"#.to_string(),
        format!(
            "eyJhbGciOiJub25lIn0.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(r#"{"exp":18446744073709551615}"#)
        ),
    ] {
        assert!(parse_token_output(&out, now).is_some(), "{out}");
    }
}
