//! Writing to stdout and stderr without `println!`'s panic: a reader that has gone (`outbox
//! status | head`) ends the command quietly with exit 0, as a pipeline expects; any other write
//! error on stdout is said once on stderr, exit 1. Use the `outln!`/`out!`/`errln!` macros of
//! `cli/mod.rs`.

use std::io::Write;

/// Write to stdout; on a closed pipe, exit 0 at once (nothing left to say to anyone).
pub fn stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        gone(&e);
    }
}

/// After a failed write to stdout: a closed pipe ends the process quietly (exit 0); anything
/// else (a full disk) is said on stderr, exit 1.
pub fn gone(e: &std::io::Error) -> ! {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        stderr(format_args!(
            "outbox: cannot write to standard output: {e}\n"
        ));
        std::process::exit(crate::cli::exit::ExitCode::Failed as i32);
    }
    std::process::exit(0)
}

/// Write to stderr; if that fails too there is no one left to tell, so nothing happens.
pub fn stderr(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}
