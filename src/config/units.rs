//! Sizes (`"4MiB"`, `"3840KiB"`, `"150MB"`, bytes as integers), durations (`"500ms"`, `"2s"`,
//! `"5m"`, `"1h30m"`, `"180d"`) and pacing budgets (`"10000/10m"`, `"150MB/5m"`, `"off"`).
//!
//! Pure string parsing: errors are one sentence saying what was wrong and what to write instead,
//! without the file or key (the caller adds those).

use super::Budget;
use std::time::Duration;

const SIZE_HELP: &str = "write a number of bytes or a size like \"4MiB\", \"3840KiB\" or \"150MB\"";
const DURATION_HELP: &str =
    "write a duration like \"500ms\", \"2s\", \"5m\", \"1h30m\" or \"180d\"";

/// A size for people, binary units, one decimal above bytes: "512 B", "1.5 KiB", "3.0 MiB".
/// The one formatter for sizes shown by `status`, `demo`, `check` and `send`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A size a config states (a limit), in the unit it was most likely written in and then in the
/// other kind (SPEC: `KB`/`MB` decimal, `KiB`/`MiB` binary): `35000000` → "35 MB = 33.4 MiB",
/// `33554432` → "32 MiB = 33.6 MB"; a size whole in neither, both to one decimal; under a
/// kilobyte, bytes.
pub fn size_both(bytes: u64) -> String {
    const DECIMAL: [(&str, u64); 4] = [
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1_000),
    ];
    const BINARY: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    // In its largest unit, to one decimal (approximate), or as written: whole, or with up to
    // two decimals that are exact ("1.5MB", "0.25MiB" are sizes a person writes).
    let largest = |units: &[(&'static str, u64)]| {
        *units
            .iter()
            .find(|(_, f)| bytes >= *f)
            .unwrap_or(&units[units.len() - 1])
    };
    let about = |units: &[(&'static str, u64)]| {
        let (u, f) = largest(units);
        format!("{:.1} {u}", bytes as f64 / f as f64)
    };
    let exact = |units: &[(&'static str, u64)]| {
        let (u, f) = largest(units);
        (u128::from(bytes) * 100 % u128::from(f) == 0).then(|| {
            let v = format!("{:.2}", bytes as f64 / f as f64);
            format!("{} {u}", v.trim_end_matches('0').trim_end_matches('.'))
        })
    };
    match (exact(&DECIMAL), exact(&BINARY)) {
        (Some(d), _) => format!("{d} = {}", about(&BINARY)),
        (None, Some(b)) => format!("{b} = {}", about(&DECIMAL)),
        (None, None) => format!("{} = {}", about(&DECIMAL), about(&BINARY)),
    }
}

/// Parse a size: an integer count of bytes, or a number with a unit. `KB`/`MB`/`GB`/`TB` are
/// decimal, `KiB`/`MiB`/`GiB`/`TiB` binary, `B` is bytes; units are case-insensitive and may follow
/// a space. A fraction is accepted when it comes to a whole number of bytes (`"1.5MiB"`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty size; {SIZE_HELP}"));
    }
    if t.starts_with('-') {
        return Err(format!("sizes cannot be negative (\"{t}\"); {SIZE_HELP}"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim_start());
    let Some(number) = Decimal::parse(number) else {
        return Err(format!("\"{t}\" is not a size; {SIZE_HELP}"));
    };
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit \"{unit}\" in \"{t}\"; use B, KB, MB, GB (powers of 1000) or \
                 KiB, MiB, GiB (powers of 1024), e.g. \"4MiB\""
            ))
        }
    };
    match number.times(multiplier as u128) {
        Some((bytes, true)) => {
            u64::try_from(bytes).map_err(|_| format!("\"{t}\" is too large for a size"))
        }
        Some((_, false)) => Err(format!(
            "\"{t}\" is not a whole number of bytes; use a smaller unit, e.g. \"1536KiB\" rather \
             than \"1.5MiB\" when the fraction does not divide evenly"
        )),
        None => Err(format!("\"{t}\" is too large for a size")),
    }
}

/// Parse a duration: one or more numbers each followed by a unit `ms`, `s`, `m`, `h` or `d`
/// (`"500ms"`, `"2s"`, `"1h30m"`, `"1.5h"`). A bare number is refused: its unit would be a guess.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty duration; {DURATION_HELP}"));
    }
    if t.starts_with('-') {
        return Err(format!(
            "durations cannot be negative (\"{t}\"); {DURATION_HELP}"
        ));
    }
    let mut rest = t;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let Some(number) = Decimal::parse(&rest[..split]) else {
            return Err(format!("\"{t}\" is not a duration; {DURATION_HELP}"));
        };
        rest = rest[split..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let unit_nanos: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "" => {
                return Err(format!(
                    "\"{t}\" needs a unit: ms, s, m, h or d (e.g. \"{}s\")",
                    number.text
                ))
            }
            _ => {
                return Err(format!(
                    "unknown duration unit \"{unit}\" in \"{t}\"; use ms, s, m, h or d, e.g. \"2s\""
                ))
            }
        };
        // Sub-nanosecond fractions are truncated: nothing here is that precise.
        let (nanos, _) = number
            .times(unit_nanos)
            .ok_or_else(|| format!("\"{t}\" is too long for a duration"))?;
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| format!("\"{t}\" is too long for a duration"))?;
        rest = rest[unit_len..].trim_start();
    }
    let nanos =
        u64::try_from(total_nanos).map_err(|_| format!("\"{t}\" is too long for a duration"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Parse a request budget: `"COUNT/WINDOW"` (`"10000/10m"`), or `"off"` for no pacing (`None`).
pub fn parse_count_budget(s: &str) -> Result<Option<Budget>, String> {
    parse_budget(s, "\"10000/10m\"", |amount| {
        let amount = amount.trim();
        amount
            .parse::<u64>()
            .map_err(|_| format!("\"{amount}\" is not a whole number of requests"))
    })
}

/// Parse a byte budget: `"SIZE/WINDOW"` (`"150MB/5m"`), or `"off"` for no pacing (`None`).
pub fn parse_size_budget(s: &str) -> Result<Option<Budget>, String> {
    parse_budget(s, "\"150MB/5m\"", parse_size)
}

fn parse_budget(
    s: &str,
    example: &str,
    amount: impl Fn(&str) -> Result<u64, String>,
) -> Result<Option<Budget>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let Some((a, w)) = t.split_once('/') else {
        return Err(format!(
            "\"{t}\" is not a budget; write AMOUNT/WINDOW, e.g. {example}, or \"off\" to disable pacing"
        ));
    };
    let amount = amount(a).map_err(|e| format!("{e}; a budget looks like {example}"))?;
    let window = parse_duration(w).map_err(|e| format!("{e}; a budget looks like {example}"))?;
    if amount == 0 || window.is_zero() {
        return Err(format!(
            "\"{t}\" allows nothing; use a positive amount and window, e.g. {example}, or \"off\" \
             to disable pacing"
        ));
    }
    Ok(Some(Budget { amount, window }))
}

/// A non-negative decimal as written (`"12"`, `"1.5"`, `".5"`), kept exact.
struct Decimal<'a> {
    text: &'a str,
    whole: u128,
    /// Fraction digits as an integer, and 10^(number of digits).
    frac: u128,
    scale: u128,
}

impl<'a> Decimal<'a> {
    fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let (w, f) = text.split_once('.').unwrap_or((text, ""));
        if (w.is_empty() && f.is_empty()) || !w.bytes().chain(f.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        // More digits than this cannot matter and would overflow the scale.
        if w.len() > 30 || f.len() > 18 {
            return None;
        }
        let whole = if w.is_empty() { 0 } else { w.parse().ok()? };
        let frac = if f.is_empty() { 0 } else { f.parse().ok()? };
        Some(Decimal {
            text,
            whole,
            frac,
            scale: 10u128.pow(f.len() as u32),
        })
    }

    /// `self * m`, and whether the product is a whole number. `None` on overflow.
    fn times(&self, m: u128) -> Option<(u128, bool)> {
        let whole = self.whole.checked_mul(m)?;
        let frac = self.frac.checked_mul(m)?;
        Some((
            whole.checked_add(frac / self.scale)?,
            frac % self.scale == 0,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_shown_in_the_unit_it_was_written_in_then_the_other() {
        assert_eq!(size_both(35_000_000), "35 MB = 33.4 MiB");
        assert_eq!(size_both(parse_size("35MB").unwrap()), "35 MB = 33.4 MiB");
        assert_eq!(size_both(parse_size("32MiB").unwrap()), "32 MiB = 33.6 MB");
        assert_eq!(
            size_both(parse_size("150MiB").unwrap()),
            "150 MiB = 157.3 MB"
        );
        assert_eq!(size_both(2_000_000), "2 MB = 1.9 MiB");
        assert_eq!(size_both(1_500_000), "1.5 MB = 1.4 MiB");
        assert_eq!(size_both(parse_size("1.5MiB").unwrap()), "1.5 MiB = 1.6 MB");
        assert_eq!(size_both(35_000_123), "35.0 MB = 33.4 MiB");
        assert_eq!(size_both(4096), "4 KiB = 4.1 KB");
        assert_eq!(size_both(999), "999 B");
    }

    #[test]
    fn sizes_with_every_unit() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("123B"), Ok(123));
        assert_eq!(parse_size("1KB"), Ok(1_000));
        assert_eq!(parse_size("150MB"), Ok(150_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1KiB"), Ok(1_024));
        assert_eq!(parse_size("3840KiB"), Ok(3_932_160));
        assert_eq!(parse_size("4MiB"), Ok(4_194_304));
        assert_eq!(parse_size("1GiB"), Ok(1_073_741_824));
        assert_eq!(parse_size("4 MiB"), Ok(4_194_304));
        assert_eq!(parse_size(" 4mib "), Ok(4_194_304));
        assert_eq!(parse_size("1.5MiB"), Ok(1_572_864));
        assert_eq!(parse_size("0.5KB"), Ok(500));
        assert_eq!(parse_size(".5KiB"), Ok(512));
    }

    #[test]
    fn sizes_refused_with_a_reason() {
        let err = |s: &str| parse_size(s).unwrap_err();
        assert!(err("-1").contains("negative"), "{}", err("-1"));
        assert!(err("-4MiB").contains("negative"));
        assert!(
            err("4 MiBs").contains("unknown size unit \"MiBs\""),
            "{}",
            err("4 MiBs")
        );
        assert!(err("4M").contains("unknown size unit \"M\""));
        assert!(err("MiB").contains("is not a size"));
        assert!(err("").contains("empty size"));
        assert!(err("1.2.3KB").contains("is not a size"));
        assert!(err("0.1KiB").contains("whole number of bytes"));
        assert!(err("99999999999TiB").contains("too large"));
        assert!(err("abc").contains("\"4MiB\""), "{}", err("abc"));
    }

    #[test]
    fn durations_with_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(
            parse_duration("180d"),
            Ok(Duration::from_secs(180 * 86_400))
        );
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2 s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_refused_with_a_reason() {
        let err = |s: &str| parse_duration(s).unwrap_err();
        assert!(err("5").contains("needs a unit"), "{}", err("5"));
        assert!(err("5").contains("\"5s\""));
        assert!(err("-2s").contains("negative"));
        assert!(
            err("2 secs").contains("unknown duration unit \"secs\""),
            "{}",
            err("2 secs")
        );
        assert!(err("2w").contains("unknown duration unit \"w\""));
        assert!(err("soon").contains("is not a duration"));
        assert!(err("").contains("empty duration"));
        assert!(err("1h30").contains("needs a unit"));
        assert!(err("99999999999999999d").contains("too long"));
    }

    #[test]
    fn budgets_count_size_and_off() {
        assert_eq!(
            parse_count_budget("10000/10m"),
            Ok(Some(Budget {
                amount: 10_000,
                window: Duration::from_secs(600)
            }))
        );
        assert_eq!(
            parse_size_budget("150MB/5m"),
            Ok(Some(Budget {
                amount: 150_000_000,
                window: Duration::from_secs(300)
            }))
        );
        assert_eq!(
            parse_size_budget("1 GiB / 1h"),
            Ok(Some(Budget {
                amount: 1 << 30,
                window: Duration::from_secs(3_600)
            }))
        );
        assert_eq!(parse_count_budget("off"), Ok(None));
        assert_eq!(parse_size_budget("OFF"), Ok(None));
    }

    #[test]
    fn budgets_refused_with_a_reason() {
        let count = |s: &str| parse_count_budget(s).unwrap_err();
        let size = |s: &str| parse_size_budget(s).unwrap_err();
        assert!(
            count("10000").contains("AMOUNT/WINDOW"),
            "{}",
            count("10000")
        );
        assert!(count("10k/10m").contains("not a whole number of requests"));
        assert!(count("10/0s").contains("allows nothing"));
        assert!(count("0/1m").contains("allows nothing"));
        assert!(count("10/10").contains("needs a unit"));
        assert!(size("150XB/5m").contains("unknown size unit"));
        assert!(size("150XB/5m").contains("\"150MB/5m\""));
    }
}
