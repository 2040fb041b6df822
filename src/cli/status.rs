//! `outbox status`: rendering ledger entries as SPEC's JSON array or a table for terminals.
//! Pure functions over entries; reading the ledger (directly or from the running agent) is the
//! caller's job.

use crate::ledger::{EntryError, EntryState, LedgerEntry};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One row of `status --json`: exactly SPEC's keys, every one present (`null` when unset).
#[derive(Serialize)]
struct JsonRow<'a> {
    id: &'a str,
    mapping: &'a str,
    path: String,
    size: u64,
    sha256: Option<&'a str>,
    state: EntryState,
    bytes_sent: u64,
    attachment_id: Option<&'a str>,
    attempts: u32,
    error: Option<&'a EntryError>,
    updated_at: String,
}

/// The JSON array `outbox status --json` prints (pretty, no trailing newline).
pub fn render_json(entries: &[LedgerEntry]) -> String {
    let rows: Vec<JsonRow<'_>> = entries
        .iter()
        .map(|e| JsonRow {
            id: &e.id,
            mapping: &e.mapping,
            path: e.path.to_string_lossy().into_owned(),
            size: e.size,
            sha256: e.sha256.as_deref(),
            state: e.state,
            bytes_sent: e.bytes_sent,
            attachment_id: e.attachment_id.as_deref(),
            attempts: e.attempts,
            error: e.error.as_ref(),
            // Formatting an in-range UTC timestamp cannot fail; fall back to the Debug form anyway.
            updated_at: e
                .updated_at
                .format(&Rfc3339)
                .unwrap_or_else(|_| format!("{:?}", e.updated_at)),
        })
        .collect();
    // Plain strings, numbers and options: serialising cannot fail.
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned())
}

/// Parse `--state S` (case-insensitive); the error lists the valid states.
pub fn parse_state_filter(s: &str) -> Result<EntryState, String> {
    s.parse()
}

/// A table for terminals: id, state, progress, size, age, mapping, file, and the error message
/// when any shown entry failed or was rejected. `color` adds ANSI colours to the state column.
pub fn render_table(entries: &[LedgerEntry], now: OffsetDateTime, color: bool) -> String {
    render_table_for(entries, now, color, true)
}

/// [`render_table`], knowing whether an agent is running: without one, a row left `uploading`
/// is not moving, and says so (a NOTE column, which also carries the errors).
pub fn render_table_for(
    entries: &[LedgerEntry],
    now: OffsetDateTime,
    color: bool,
    agent_running: bool,
) -> String {
    if entries.is_empty() {
        return "No entries.\n".to_owned();
    }
    let note = |e: &LedgerEntry| {
        error_text(e).or_else(|| {
            (!agent_running && e.state == EntryState::Uploading).then(|| INTERRUPTED.to_owned())
        })
    };
    let any_note = entries
        .iter()
        .any(|e| error_text(e).is_none() && note(e).is_some());
    let headers = [
        "ID",
        "STATE",
        "PROGRESS",
        "SIZE",
        "AGE",
        "MAPPING",
        "FILE",
        if any_note { "NOTE" } else { "ERROR" },
    ];
    let show_error = entries.iter().any(|e| note(e).is_some());
    let columns = if show_error {
        headers.len()
    } else {
        headers.len() - 1
    };
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            [
                e.id.clone(),
                e.state.to_string(),
                progress(e),
                human_size(e.size),
                age(e.updated_at, now),
                e.mapping.clone(),
                sanitize(&e.file_name()),
                note(e).unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = [0usize; 8];
    for (i, h) in headers.iter().enumerate() {
        widths[i] = h.chars().count();
    }
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    push_line(&mut out, &header, &widths, columns, None);
    for (row, entry) in rows.iter().zip(entries) {
        let paint = if color {
            Some(state_color(entry.state))
        } else {
            None
        };
        push_line(&mut out, row, &widths, columns, paint);
    }
    out
}

/// One line: cells padded to their column (the last one not), the state cell coloured after
/// padding so escape codes do not upset the alignment.
fn push_line(
    out: &mut String,
    cells: &[String],
    widths: &[usize; 8],
    columns: usize,
    paint: Option<&str>,
) {
    let mut line = String::new();
    for (i, cell) in cells.iter().take(columns).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let pad = widths[i].saturating_sub(cell.chars().count());
        let last = i + 1 == columns;
        // Numbers read better right-aligned.
        let right = i == 2 || i == 3;
        if right {
            line.push_str(&" ".repeat(pad));
        }
        match (i, paint) {
            (1, Some(code)) => {
                line.push_str(code);
                line.push_str(cell);
                line.push_str("\x1b[0m");
            }
            _ => line.push_str(cell),
        }
        if !right && !last {
            line.push_str(&" ".repeat(pad));
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn state_color(state: EntryState) -> &'static str {
    match state {
        EntryState::Done => "\x1b[32m",
        EntryState::Failed | EntryState::Rejected => "\x1b[31m",
        EntryState::Uploading => "\x1b[36m",
        EntryState::Pending => "\x1b[33m",
        EntryState::Settling | EntryState::Canceled => "\x1b[2m",
    }
}

fn progress(e: &LedgerEntry) -> String {
    match e.state {
        EntryState::Uploading if e.size > 0 => {
            format!(
                "{}%",
                (u128::from(e.bytes_sent.min(e.size)) * 100 / u128::from(e.size))
            )
        }
        EntryState::Uploading => "0%".to_owned(),
        EntryState::Done => "100%".to_owned(),
        _ => "-".to_owned(),
    }
}

fn error_text(e: &LedgerEntry) -> Option<String> {
    match e.state {
        EntryState::Failed | EntryState::Rejected => e.error.as_ref().map(|err| {
            // The agent's message may already start with the code ("ErrorItemNotFound (HTTP
            // 404): ..."): say it once.
            let text = if err.code.is_empty() || err.message.starts_with(&err.code) {
                err.message.clone()
            } else {
                format!("{}: {}", err.code, err.message)
            };
            sanitize(&crate::secret::redact(&text))
        }),
        _ => None,
    }
}

/// A row left `uploading` when no agent runs: the next `outbox run` asks the upload session
/// where it stands and goes on from there.
pub const INTERRUPTED: &str = "interrupted; resumes at next start";

/// The line above the table: is an agent working on these entries?
pub fn agent_header(pid: Option<u32>, running: bool, state_dir: &std::path::Path) -> String {
    match (running, pid) {
        (true, Some(pid)) => format!("agent running (pid {pid}); state dir {}", state_dir.display()),
        (true, None) => format!("agent running; state dir {}", state_dir.display()),
        (false, _) => format!(
            "agent not running; state dir {} (`outbox run`, or `outbox service install`, starts it)",
            state_dir.display()
        ),
    }
}

/// Control characters in file names or messages would break the table (or the terminal).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

pub use crate::config::units::human_size;

/// How long ago `then` was: "just now", "42s ago", "3m ago", "5h ago", "12d ago".
pub fn age(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds();
    match secs {
        s if s < 1 => "just now".to_owned(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{NewEntry, Target};

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    fn entry(state: EntryState) -> LedgerEntry {
        let mut e = LedgerEntry::new(
            NewEntry {
                mapping: "reports".into(),
                path: "/home/u/Outbox/reports/Q3 report.pdf".into(),
                name: "Q3 report.pdf".into(),
                target: Target::default(),
                size: 4 * 1024 * 1024,
                mtime_ns: 0,
            },
            state,
            at(1_700_000_000),
        );
        e.id = "0123456789ab".into();
        e
    }

    const KEYS: [&str; 11] = [
        "id",
        "mapping",
        "path",
        "size",
        "sha256",
        "state",
        "bytes_sent",
        "attachment_id",
        "attempts",
        "error",
        "updated_at",
    ];

    #[test]
    fn json_has_exactly_the_spec_keys_with_nulls() {
        let mut failed = entry(EntryState::Failed);
        failed.error = Some(EntryError::new(
            "ErrorItemNotFound",
            "The item was deleted.",
        ));
        failed.sha256 = Some("ab".repeat(32));
        let json = render_json(&[entry(EntryState::Pending), failed]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let rows = value.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            let obj = row.as_object().unwrap();
            let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
            keys.sort();
            let mut want = KEYS.to_vec();
            want.sort();
            assert_eq!(keys, want);
        }
        let pending = &rows[0];
        for k in ["sha256", "attachment_id", "error"] {
            assert!(pending[k].is_null(), "{k} should be null: {pending}");
        }
        assert_eq!(pending["state"], "pending");
        assert_eq!(pending["updated_at"], "2023-11-14T22:13:20Z");
        assert_eq!(pending["path"], "/home/u/Outbox/reports/Q3 report.pdf");
        assert_eq!(rows[1]["error"]["code"], "ErrorItemNotFound");
        assert_eq!(rows[1]["error"]["message"], "The item was deleted.");
        assert_eq!(render_json(&[]).trim(), "[]");
    }

    #[test]
    fn table_shows_progress_age_and_errors() {
        let mut up = entry(EntryState::Uploading);
        up.bytes_sent = 1024 * 1024;
        let mut failed = entry(EntryState::Failed);
        failed.error = Some(EntryError::new("ErrorAccessDenied", "Access is denied."));
        let table = render_table(&[up, failed], at(1_700_000_000 + 180), false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[0].starts_with("ID") && lines[0].ends_with("ERROR"),
            "{table}"
        );
        assert!(
            lines[1].contains("uploading") && lines[1].contains("25%"),
            "{table}"
        );
        assert!(
            lines[1].contains("4.0 MiB") && lines[1].contains("3m ago"),
            "{table}"
        );
        assert!(lines[1].contains("Q3 report.pdf"), "{table}");
        assert!(
            lines[2].contains("ErrorAccessDenied: Access is denied."),
            "{table}"
        );
        // Columns line up: the state column starts at the same offset in every row.
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(lines[1].find("uploading"), Some(col));
        assert_eq!(lines[2].find("failed"), Some(col));
    }

    #[test]
    fn table_without_errors_has_no_error_column_and_colour_is_optional() {
        let plain = render_table(&[entry(EntryState::Done)], at(1_700_000_000), false);
        assert!(
            !plain.contains("ERROR") && !plain.contains('\x1b'),
            "{plain}"
        );
        assert!(
            plain.contains("100%") && plain.contains("just now"),
            "{plain}"
        );
        let coloured = render_table(&[entry(EntryState::Done)], at(1_700_000_000), true);
        assert!(coloured.contains("\x1b[32mdone\x1b[0m"), "{coloured:?}");
        assert_eq!(render_table(&[], at(0), false), "No entries.\n");
    }

    #[test]
    fn error_column_redacts_upload_tokens() {
        let mut failed = entry(EntryState::Failed);
        failed.error = Some(EntryError::new(
            "io",
            "PUT https://x/up?authtoken=SECRET123 failed",
        ));
        let table = render_table(&[failed], at(1_700_000_000), false);
        assert!(!table.contains("SECRET123"), "{table}");
    }

    #[test]
    fn sizes_ages_and_state_filter() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(157_286_400), "150.0 MiB");
        assert_eq!(age(at(100), at(100)), "just now");
        assert_eq!(age(at(200), at(100)), "just now");
        assert_eq!(age(at(0), at(59)), "59s ago");
        assert_eq!(age(at(0), at(7200)), "2h ago");
        assert_eq!(age(at(0), at(3 * 86_400)), "3d ago");
        assert_eq!(parse_state_filter("Failed"), Ok(EntryState::Failed));
        assert!(parse_state_filter("sent")
            .unwrap_err()
            .contains("expected one of"));
    }
}
