//! Parsers for what the server says about an upload: `nextExpectedRanges` (every form Graph and
//! OneDrive use), the attachment id inside a completion `Location`, and `Retry-After`.

use std::time::{Duration, SystemTime};

/// The next byte the server expects, from a `nextExpectedRanges` array: `"N"`, `"N-"`, `"N-M"`,
/// several ranges (the lowest start wins: bytes are sent in order). `None` when the array is
/// empty or no entry parses.
pub fn next_offset<S: AsRef<str>>(ranges: &[S]) -> Option<u64> {
    ranges
        .iter()
        .filter_map(|r| {
            let r = r.as_ref().trim();
            let start = r.split('-').next()?.trim();
            start.parse::<u64>().ok()
        })
        .min()
}

/// Find `nextExpectedRanges` in a JSON object whatever its casing.
pub fn ranges_from_json(v: &serde_json::Value) -> Option<Vec<String>> {
    let obj = v.as_object()?;
    let (_, arr) = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("nextExpectedRanges"))?;
    Some(
        arr.as_array()?
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
    )
}

/// Find a string property whatever its casing (`uploadUrl` / `UploadUrl`, ...).
pub fn string_prop<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))?
        .1
        .as_str()
}

/// The attachment id in a completion `Location`: the text inside the last `Attachments('…')`
/// (case-insensitive), percent-decoded. Exchange ids may contain `=`, `-`, `_`.
pub fn attachment_id_from_location(location: &str) -> Option<String> {
    let lower = location.to_ascii_lowercase();
    let start = lower.rfind("attachments('")? + "attachments('".len();
    let rest = &location[start..];
    let end = rest.find("')")?;
    let raw = &rest[..end];
    if raw.is_empty() {
        return None;
    }
    Some(percent_decode(raw))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `Retry-After` as delta-seconds or an HTTP date (relative to `now`). A date in the past is zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
        return None;
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_in_every_form() {
        assert_eq!(next_offset(&["0-"]), Some(0));
        assert_eq!(next_offset(&["2097152"]), Some(2_097_152));
        assert_eq!(next_offset(&["26-"]), Some(26));
        assert_eq!(next_offset(&["100-199"]), Some(100));
        assert_eq!(next_offset(&["500-599", "100-199"]), Some(100));
        assert_eq!(next_offset(&[" 7 - "]), Some(7));
        assert_eq!(next_offset::<&str>(&[]), None);
        assert_eq!(next_offset(&["abc"]), None);
    }

    #[test]
    fn ranges_any_casing() {
        let v: serde_json::Value =
            serde_json::json!({"NextExpectedRanges": ["42"], "ExpirationDateTime": "x"});
        assert_eq!(ranges_from_json(&v), Some(vec!["42".to_string()]));
        let v: serde_json::Value = serde_json::json!({"nextexpectedranges": ["1-"]});
        assert_eq!(
            ranges_from_json(&v).as_deref().and_then(next_offset),
            Some(1)
        );
        assert_eq!(
            string_prop(&serde_json::json!({"UploadUrl": "u"}), "uploadUrl"),
            Some("u")
        );
    }

    #[test]
    fn location_forms() {
        let l = "https://outlook.office.com/api/v2.0/Users('ddfcd489-628b-40d7-b48b-57002df800e5@1717622f-1d94-4d0c-9d74-709fad664b77')/Messages('AAMkADI5MAAIT3drCAAA=')/Attachments('AAMkADI5MAAIT3drCAAABEgAQANAqbAe7qaROhYdTnUQwXm0=')";
        assert_eq!(
            attachment_id_from_location(l).as_deref(),
            Some("AAMkADI5MAAIT3drCAAABEgAQANAqbAe7qaROhYdTnUQwXm0=")
        );
        assert_eq!(
            attachment_id_from_location("/Events('e')/attachments('a-b_c')").as_deref(),
            Some("a-b_c")
        );
        assert_eq!(
            attachment_id_from_location("/Attachments('a%3D')").as_deref(),
            Some("a=")
        );
        assert_eq!(attachment_id_from_location("/Messages('x')"), None);
        assert_eq!(attachment_id_from_location("/Attachments('')"), None);
        assert_eq!(
            attachment_id_from_location("/Attachments('unterminated"),
            None
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
