//! `outbox man`: the manual page built into the binary (`packaging/man/outbox.1`, generated from
//! the clap definitions and checked current by the tests), so a cargo build has it too. On a
//! terminal it is shown with `man -l -`; otherwise (or without `man`) the roff text is printed.

use crate::cli::exit::{CommandError, ExitCode};
use std::io::{IsTerminal, Write};

const PAGE: &str = include_str!("../../packaging/man/outbox.1");

pub fn run() -> Result<ExitCode, CommandError> {
    if std::io::stdout().is_terminal() {
        let shown = std::process::Command::new("man")
            .args(["-l", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                if let Some(mut stdin) = child.stdin.take() {
                    // `man` may quit before reading it all (`q` in the pager): not an error.
                    let _ = stdin.write_all(PAGE.as_bytes());
                }
                child.wait()
            });
        if matches!(shown, Ok(s) if s.success()) {
            return Ok(ExitCode::Ok);
        }
    }
    verbatim!("{PAGE}");
    Ok(ExitCode::Ok)
}
