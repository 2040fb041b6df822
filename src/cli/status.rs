//! `outbox status`: rendering ledger entries as SPEC's JSON array or a table for terminals, under
//! a header that says whether an agent runs (its pid) and whether it is paused, why and until
//! when; each row says what it waits for and until when. Pure functions over entries and what
//! the agent said ([`AgentView`]); reading them (from the ledger or the agent) is the caller's.

use crate::agent::control::{AgentView, Wait, WaitReason};
use crate::ledger::{EntryError, EntryState, LedgerEntry};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What `status` knows besides the entries: is an agent running (its pid), what it said it waits
/// for, and the time now.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub running: bool,
    pub pid: Option<u32>,
    pub view: Option<&'a AgentView>,
    pub now: OffsetDateTime,
}

impl Facts<'_> {
    /// No agent, at `now`.
    pub fn offline(now: OffsetDateTime) -> Facts<'static> {
        Facts {
            running: false,
            pid: None,
            view: None,
            now,
        }
    }

    /// What entry `e` waits for, if anything: as the agent said, or (no agent) for one.
    fn wait_of(&self, e: &LedgerEntry) -> Option<Wait> {
        if let Some(v) = self.view {
            return v
                .waits
                .iter()
                .find(|(id, _)| *id == e.id)
                .map(|(_, w)| w.clone());
        }
        let reason = match e.state {
            _ if self.running => return None,
            EntryState::Uploading => WaitReason::NextStart,
            EntryState::Pending | EntryState::Settling => WaitReason::Agent,
            _ => return None,
        };
        Some(Wait {
            reason,
            until_ms: None,
            error: None,
            attempts: e.attempts,
        })
    }
}

/// One row of `status --json`: SPEC's keys, and what the row waits for, every one present
/// (`null` when unset).
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
    /// `sign-in`, `unreachable`, `throttled`, `backoff`, `look`, `settle`, `next-start`, `agent`.
    waiting_for: Option<&'static str>,
    waiting_until: Option<String>,
    /// The table's NOTE: what a person reads about the row.
    note: Option<String>,
    /// The running agent's pid (`null`: none runs, or the platform does not tell).
    agent_pid: Option<u32>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    // Formatting an in-range UTC timestamp cannot fail; fall back to the Debug form anyway.
    t.format(&Rfc3339).unwrap_or_else(|_| format!("{t:?}"))
}

fn time_of_ms(ms: u64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// The JSON array `outbox status --json` prints (pretty, no trailing newline).
pub fn render_json(entries: &[LedgerEntry], facts: &Facts<'_>) -> String {
    let rows: Vec<JsonRow<'_>> = entries
        .iter()
        .map(|e| {
            let wait = facts.wait_of(e);
            JsonRow {
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
                updated_at: rfc3339(e.updated_at),
                waiting_for: wait.as_ref().map(|w| w.reason.as_str()),
                waiting_until: wait
                    .as_ref()
                    .and_then(|w| w.until_ms)
                    .and_then(time_of_ms)
                    .map(rfc3339),
                note: note(e, facts),
                agent_pid: facts.pid.filter(|_| facts.running),
            }
        })
        .collect();
    // Plain strings, numbers and options: serialising cannot fail.
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned())
}

/// "at 14:02:05 UTC (in 25s)"; "now" once it is due.
fn at(until_ms: Option<u64>, now: OffsetDateTime) -> String {
    let Some(t) = until_ms.and_then(time_of_ms) else {
        return "soon".to_owned();
    };
    let secs = (t - now).whole_seconds();
    if secs <= 0 {
        return "now".to_owned();
    }
    let (h, m, s) = t.to_hms();
    let left = match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    };
    format!("at {h:02}:{m:02}:{s:02} UTC (in {left})")
}

/// What a wait says on a row (and in the header).
fn wait_text(w: &Wait, e: Option<&LedgerEntry>, now: OffsetDateTime) -> String {
    let error = w
        .error
        .as_deref()
        .map(|m| sanitize(&crate::secret::redact(m)));
    let when = at(w.until_ms, now);
    match w.reason {
        WaitReason::SignIn => match error {
            Some(m) => format!("waits for sign-in ({m}); tries again {when}"),
            None => format!("waits for sign-in; tries again {when}"),
        },
        WaitReason::Unreachable => match error {
            Some(m) => format!("Graph unreachable ({m}); tries again {when}"),
            None => format!("Graph unreachable; tries again {when}"),
        },
        WaitReason::Throttled => format!("throttled by Graph (Retry-After); sends again {when}"),
        WaitReason::Backoff => {
            let attempts = match w.attempts {
                0 => String::new(),
                n => format!(", attempt {n}"),
            };
            match error {
                Some(m) => {
                    format!("backing off after an error ({m}{attempts}); tries again {when}")
                }
                None => format!("backing off{attempts}; tries again {when}"),
            }
        }
        WaitReason::Look => {
            format!("an answer was lost; looks on the item {when} (when nothing more can land)")
        }
        WaitReason::Settle => {
            let still = e
                .and_then(|e| e.error.as_ref())
                .map(|x| format!("{}; ", sanitize(&x.message)))
                .unwrap_or_default();
            format!("{still}settling: checked again {when}")
        }
        WaitReason::NextStart => INTERRUPTED.to_owned(),
        WaitReason::Agent => "waits for the agent (`outbox run`)".to_owned(),
    }
}

/// A row's NOTE: its error, a failed after-action, or what it waits for.
fn note(e: &LedgerEntry, facts: &Facts<'_>) -> Option<String> {
    error_text(e)
        .or_else(|| after_failed_text(e))
        .or_else(|| facts.wait_of(e).map(|w| wait_text(&w, Some(e), facts.now)))
}

/// A done row whose move or delete failed: attached, and the file is still where it was.
fn after_failed_text(e: &LedgerEntry) -> Option<String> {
    if e.state != EntryState::Done || !e.after_failed {
        return None;
    }
    let why = e
        .error
        .as_ref()
        .map(|x| sanitize(&crate::secret::redact(&x.message)))
        .unwrap_or_else(|| "the after-action failed".to_owned());
    Some(format!(
        "{why}; not tried again by itself: fix it, then `outbox retry {}`",
        e.id
    ))
}

/// Parse `--state S` (case-insensitive); the error lists the valid states.
pub fn parse_state_filter(s: &str) -> Result<EntryState, String> {
    s.parse()
}

/// A table for terminals: id, state, progress, size, age, mapping, file, and a NOTE column when
/// any row has something to say (an error, a failed after-action, what it waits for). `color`
/// adds ANSI colours to the state column.
pub fn render_table(entries: &[LedgerEntry], facts: &Facts<'_>, color: bool) -> String {
    if entries.is_empty() {
        return "No entries.\n".to_owned();
    }
    let headers = [
        "ID", "STATE", "PROGRESS", "SIZE", "AGE", "MAPPING", "FILE", "NOTE",
    ];
    let notes: Vec<Option<String>> = entries.iter().map(|e| note(e, facts)).collect();
    let columns = if notes.iter().any(Option::is_some) {
        headers.len()
    } else {
        headers.len() - 1
    };
    let rows: Vec<[String; 8]> = entries
        .iter()
        .zip(&notes)
        .map(|(e, n)| {
            [
                e.id.clone(),
                e.state.to_string(),
                progress(e),
                human_size(e.size),
                age(e.updated_at, facts.now),
                e.mapping.clone(),
                sanitize(&e.file_name()),
                n.clone().unwrap_or_default(),
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

/// The lines above the table: is an agent working on these entries, and is it paused (a
/// `paused:` line: why, until when; none when it is not)?
pub fn agent_header(facts: &Facts<'_>, state_dir: &std::path::Path) -> String {
    let mut out = match (facts.running, facts.pid) {
        (true, Some(pid)) => format!("agent running (pid {pid}); state dir {}", state_dir.display()),
        (true, None) => format!("agent running; state dir {}", state_dir.display()),
        (false, _) => format!(
            "agent not running; state dir {} (`outbox run`, or `outbox service install`, starts it)",
            state_dir.display()
        ),
    };
    if let Some(w) = facts.view.and_then(|v| v.paused.as_ref()) {
        out.push_str("\npaused: ");
        out.push_str(&wait_text(w, None, facts.now));
    }
    out
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

    fn running(now: OffsetDateTime) -> Facts<'static> {
        Facts {
            running: true,
            pid: Some(42),
            view: None,
            now,
        }
    }

    const KEYS: [&str; 15] = [
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
        "waiting_for",
        "waiting_until",
        "note",
        "agent_pid",
    ];

    #[test]
    fn json_has_exactly_the_spec_keys_with_nulls() {
        let mut failed = entry(EntryState::Failed);
        failed.error = Some(EntryError::new(
            "ErrorItemNotFound",
            "The item was deleted.",
        ));
        failed.sha256 = Some("ab".repeat(32));
        let json = render_json(
            &[entry(EntryState::Pending), failed],
            &Facts::offline(at(1_700_000_000)),
        );
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
        assert_eq!(pending["waiting_for"], "agent");
        assert_eq!(pending["note"], "waits for the agent (`outbox run`)");
        for k in [
            "sha256",
            "attachment_id",
            "error",
            "waiting_until",
            "agent_pid",
        ] {
            assert!(pending[k].is_null(), "{k} should be null: {pending}");
        }
        assert_eq!(pending["state"], "pending");
        assert_eq!(pending["updated_at"], "2023-11-14T22:13:20Z");
        assert_eq!(pending["path"], "/home/u/Outbox/reports/Q3 report.pdf");
        assert_eq!(rows[1]["error"]["code"], "ErrorItemNotFound");
        assert_eq!(rows[1]["error"]["message"], "The item was deleted.");
        assert_eq!(render_json(&[], &Facts::offline(at(0))).trim(), "[]");
    }

    #[test]
    fn table_shows_progress_age_and_errors() {
        let mut up = entry(EntryState::Uploading);
        up.bytes_sent = 1024 * 1024;
        let mut failed = entry(EntryState::Failed);
        failed.error = Some(EntryError::new("ErrorAccessDenied", "Access is denied."));
        let table = render_table(&[up, failed], &running(at(1_700_000_000 + 180)), false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[0].starts_with("ID") && lines[0].ends_with("NOTE"),
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
        let plain = render_table(
            &[entry(EntryState::Done)],
            &running(at(1_700_000_000)),
            false,
        );
        assert!(
            !plain.contains("NOTE") && !plain.contains('\x1b'),
            "{plain}"
        );
        assert!(
            plain.contains("100%") && plain.contains("just now"),
            "{plain}"
        );
        let coloured = render_table(
            &[entry(EntryState::Done)],
            &running(at(1_700_000_000)),
            true,
        );
        assert!(coloured.contains("\x1b[32mdone\x1b[0m"), "{coloured:?}");
        assert_eq!(render_table(&[], &running(at(0)), false), "No entries.\n");
    }

    #[test]
    fn rows_and_header_say_what_the_agent_waits_for_and_until_when() {
        let now = at(1_700_000_000);
        let mut settling = entry(EntryState::Settling);
        settling.id = "settling0001".into();
        let pending = entry(EntryState::Pending);
        let wait = |reason, secs: u64, error: Option<&str>, attempts| Wait {
            reason,
            until_ms: Some((1_700_000_000 + secs) * 1000),
            error: error.map(str::to_owned),
            attempts,
        };
        let view = AgentView {
            paused: None,
            waits: vec![
                (
                    pending.id.clone(),
                    wait(WaitReason::Backoff, 75, Some("HTTP 500"), 2),
                ),
                (settling.id.clone(), wait(WaitReason::Settle, 2, None, 0)),
            ],
        };
        let facts = Facts {
            running: true,
            pid: Some(7),
            view: Some(&view),
            now,
        };
        let table = render_table(&[pending, settling], &facts, false);
        assert!(
            table.contains(
                "backing off after an error (HTTP 500, attempt 2); tries again at 22:14:35 UTC (in 1m 15s)"
            ),
            "{table}"
        );
        assert!(
            table.contains("settling: checked again at 22:13:22 UTC (in 2s)"),
            "{table}"
        );
        let header = agent_header(&facts, std::path::Path::new("/s"));
        assert_eq!(header, "agent running (pid 7); state dir /s");
        let paused = AgentView {
            paused: Some(wait(WaitReason::SignIn, 30, Some("no token"), 0)),
            waits: Vec::new(),
        };
        let facts = Facts {
            view: Some(&paused),
            ..facts
        };
        assert_eq!(
            agent_header(&facts, std::path::Path::new("/s")),
            "agent running (pid 7); state dir /s\npaused: waits for sign-in (no token); tries again at 22:13:50 UTC (in 30s)"
        );
        let mut moved = entry(EntryState::Done);
        moved.after_failed = true;
        moved.error = Some(EntryError::new("afterAction", "read-only"));
        let json = render_json(&[moved], &facts);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v[0]["note"],
            "read-only; not tried again by itself: fix it, then `outbox retry 0123456789ab`"
        );
        assert_eq!(v[0]["agent_pid"], 7);
        assert!(v[0]["waiting_for"].is_null());
    }

    #[test]
    fn error_column_redacts_upload_tokens() {
        let mut failed = entry(EntryState::Failed);
        failed.error = Some(EntryError::new(
            "io",
            "PUT https://x/up?authtoken=SECRET123 failed",
        ));
        let table = render_table(&[failed], &running(at(1_700_000_000)), false);
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
