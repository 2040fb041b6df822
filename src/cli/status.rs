//! TEMPORARY placeholder until the ledger branch lands.
use crate::ledger::{EntryState, LedgerEntry};
pub fn parse_state_filter(s: &str) -> Result<EntryState, String> {
    s.parse()
}
pub fn render_json(entries: &[LedgerEntry]) -> String {
    serde_json::to_string(entries).unwrap_or_default()
}
pub fn render_table(entries: &[LedgerEntry], _now: time::OffsetDateTime, _color: bool) -> String {
    entries
        .iter()
        .map(|e| format!("{} {} {}\n", e.id, e.state, e.path.display()))
        .collect()
}
