//! The man page, `packaging/man/outbox.1`: the synopsis and options generated from the clap
//! definitions (clap_mangen), every command with its own options (generated here from the same
//! definitions), then the hand-written sections a man page is read for: CONFIGURATION, FILES,
//! ENVIRONMENT, EXIT STATUS, EXAMPLES. `commands::packaged_man_page_and_completions_are_current`
//! fails when the file is stale; `OUTBOX_BLESS=1` rewrites it.

use clap::CommandFactory;
use std::io::Write;

/// Roff-escape plain text: backslashes, leading dots and quotes, hyphens as minus signs.
fn esc(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// Help text as roff: paragraphs kept, line breaks inside them joined.
fn para(help: &str) -> String {
    help.split("\n\n")
        .map(|p| esc(&p.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect::<Vec<_>>()
        .join("\n.br\n")
}

fn arg_label(a: &clap::Arg) -> String {
    let value = || {
        a.get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| a.get_id().as_str().to_uppercase())
    };
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    match (a.get_short(), a.get_long()) {
        (_, Some(long)) if takes_value => {
            format!("\\fB\\-\\-{}\\fR \\fI{}\\fR", esc(long), esc(&value()))
        }
        (Some(s), Some(long)) => format!("\\fB\\-{s}\\fR, \\fB\\-\\-{}\\fR", esc(long)),
        (_, Some(long)) => format!("\\fB\\-\\-{}\\fR", esc(long)),
        _ => format!("\\fI{}\\fR", esc(&value())),
    }
}

/// `.SH COMMANDS`: each subcommand, its usage, what it does and its own options.
fn commands_section(w: &mut Vec<u8>) {
    let mut root = outbox::cli::Cli::command();
    root.build();
    writeln!(w, ".SH COMMANDS").unwrap();
    for sc in root.get_subcommands() {
        if sc.is_hide_set() || sc.get_name() == "help" {
            continue;
        }
        let mut usage = format!("\\fBoutbox {}\\fR", esc(sc.get_name()));
        for a in sc.get_arguments() {
            if a.is_hide_set() || a.is_global_set() || a.get_id() == "help" {
                continue;
            }
            if a.is_positional() && a.is_required_set() {
                usage.push_str(&format!(" {}", arg_label(a)));
            } else {
                usage.push_str(&format!(" [{}]", arg_label(a)));
            }
        }
        writeln!(w, ".TP\n{usage}").unwrap();
        let about = sc
            .get_long_about()
            .or(sc.get_about())
            .map(|s| s.to_string())
            .unwrap_or_default();
        writeln!(w, "{}", para(&about)).unwrap();
        let own: Vec<&clap::Arg> = sc
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help")
            .collect();
        if !own.is_empty() {
            writeln!(w, ".RS").unwrap();
            for a in own {
                let mut help = a
                    .get_long_help()
                    .or(a.get_help())
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                if !help.is_empty() && !help.ends_with('.') {
                    help.push('.');
                }
                let values: Vec<String> = a
                    .get_possible_values()
                    .iter()
                    .filter(|v| !v.is_hide_set())
                    .map(|v| v.get_name().to_string())
                    .collect();
                if !values.is_empty() {
                    help.push_str(&format!(" One of: {}.", values.join(", ")));
                }
                let defaults: Vec<String> = a
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                if !defaults.is_empty()
                    && !a.is_positional()
                    && a.get_num_args().is_some_and(|n| n.takes_values())
                {
                    help.push_str(&format!(" Default: {}.", defaults.join(", ")));
                }
                writeln!(w, ".TP\n{}\n{}", arg_label(a), para(&help)).unwrap();
            }
            writeln!(w, ".RE").unwrap();
        }
    }
}

const DESCRIPTION: &str = r#".SH DESCRIPTION
\fBoutbox\fR is a per\-user background agent. You map folders to Outlook items (a draft message
or an event) in a TOML file; every file that lands in a mapped folder is attached to its item
through Microsoft Graph, exactly once, byte for byte, and recorded in a local ledger, so a crash,
a reboot, a throttled mailbox or a file still being written never costs a file or attaches it
twice. \fBoutbox run\fR is the agent; \fBoutbox service install\fR runs it at login.
.PP
Start with \fBoutbox init\fR (a commented config), \fBoutbox login\fR, \fBoutbox items
messages\fR (to pick a target), then \fBoutbox check\fR.
"#;

const HAND_SECTIONS: &str = r#".SH CONFIGURATION
The config file is TOML: \fB[graph]\fR (base_url, ca_file), \fB[auth]\fR (method =
device_code | client_credentials | token_env | token_command, client_id, tenant, authority),
\fB[agent]\fR (state_dir, concurrency, chunk_size, settle, rescan, mailbox budgets, notify) and
one \fB[[mapping]]\fR per folder:
.PP
.nf
.RS 4
[auth]
method = "device_code"
client_id = "<app registration id>"

[[mapping]]
folder = "~/Outbox/reports"
message = "AAMkAD..."      # or: event = "..."
after = "keep"             # keep | move | delete
if_exists = "skip"         # skip | attach
.RE
.fi
.PP
Sizes take "4MiB", "3840KiB", "150MB" or bytes; durations "500ms", "2s", "5m", "1h".
\fB~\fR and \fB$VARS\fR expand in paths. Every key, its default and its meaning:
/usr/share/doc/outbox/config.example.toml. A bad config stops outbox with exit 78 and
\fIFILE\fR:\fILINE\fR: \fIKEY\fR: what to do, for every error in the file. \fBoutbox run\fR reads
the config again on SIGHUP (\fBsystemctl \-\-user reload outbox\fR, or \fBkill \-HUP\fR \fIPID\fR):
the mappings and [agent] settings; a config with errors is refused and the old one kept.
[graph], [auth] and state_dir take a restart (\fBsystemctl \-\-user restart outbox\fR).
.SH FILES
.TP
\fI~/.config/outbox/config.toml\fR
The config file on Linux (the platform config dir elsewhere), unless \fB\-\-config\fR or
\fBOUTBOX_CONFIG\fR names another.
.TP
\fI~/.local/state/outbox/\fR
The state dir (agent.state_dir): the ledger (sled), upload sessions (0600), the token cache
(0600) and the agent's socket \fIagent.sock\fR (0600). One agent per state dir.
.TP
\fI~/.config/systemd/user/outbox.service\fR
The user unit \fBoutbox service install\fR writes on Linux (a LaunchAgent on macOS, a Scheduled
Task on Windows).
.SH ENVIRONMENT
.TP
\fBOUTBOX_CONFIG\fR
The config file, when \fB\-\-config\fR is not given.
.TP
\fBOUTBOX_ACCESS_TOKEN\fR
With auth.method = "token_env" (the default variable), or for \fBoutbox send\fR without any
config file: a Graph bearer token.
.TP
\fBRUST_LOG\fR
Log filter for stderr (e.g. \fBoutbox=debug\fR); wins over \fB\-v\fR and \fB\-q\fR.
.TP
\fBNO_COLOR\fR
Set and not empty: no colour in logs or tables. Colour is used only on a terminal anyway.
.TP
\fBHTTPS_PROXY\fR, \fBNO_PROXY\fR
The proxy for Graph and the identity platform; a TLS\-inspecting proxy's root goes in
graph.ca_file.
.SH EXIT STATUS
.TP
\fB0\fR
Success (\fBcheck\fR: no error; warnings alone pass).
.TP
\fB1\fR
Some file could not be attached, or \fBcheck\fR/\fBverify\fR found an error.
.TP
\fB2\fR
Bad usage, or another agent holds the state dir.
.TP
\fB3\fR
Sign\-in needed or refused.
.TP
\fB4\fR
A message may have been sent but could not be confirmed (\fBmail\fR, \fBrun \-\-once\fR): never treat it as not sent; look for it in Sent Items.
.TP
\fB78\fR
Bad or missing configuration (EX_CONFIG: a service manager does not restart\-loop on it).
.TP
\fB130\fR
Interrupted (Ctrl\-C) before the work was done.
.SH EXAMPLES
.TP
\fBoutbox init && outbox login && outbox items messages \-\-search invoice\fR
Write a starter config, sign in, and find the draft to attach to.
.TP
\fBoutbox check && outbox service install\fR
Validate everything, then run the agent at login.
.TP
\fBoutbox send report.pdf \-\-message AAMkAD...\fR
Attach one file now; prints the attachment id.
.TP
\fBoutbox status \-\-state failed\fR, then \fBoutbox retry \-\-failed\fR
See what failed and why; queue it again once the cause is fixed.
.TP
\fBoutbox verify \-\-all\fR
Read every attached file back and compare its SHA\-256 with the ledger.
.TP
\fBoutbox completions zsh > ~/.zfunc/_outbox\fR
Install shell completion.
.TP
\fBoutbox demo\fR
A tour against the built\-in Graph sandbox, no account needed.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBloginctl\fR(1); docs/signin.md and docs/sandbox.md in
/usr/share/doc/outbox.
"#;

/// The whole page.
pub fn render() -> Vec<u8> {
    let man = clap_mangen::Man::new(outbox::cli::Cli::command()).manual("outbox manual");
    let mut w = Vec::new();
    man.render_title(&mut w).unwrap();
    man.render_name_section(&mut w).unwrap();
    man.render_synopsis_section(&mut w).unwrap();
    w.extend_from_slice(DESCRIPTION.as_bytes());
    man.render_options_section(&mut w).unwrap();
    commands_section(&mut w);
    w.extend_from_slice(HAND_SECTIONS.as_bytes());
    man.render_version_section(&mut w).unwrap();
    w
}

#[test]
fn the_man_page_has_the_sections_people_look_for() {
    let page = String::from_utf8(render()).unwrap();
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH COMMANDS",
        ".SH CONFIGURATION",
        ".SH FILES",
        ".SH ENVIRONMENT",
        ".SH EXIT STATUS",
        ".SH EXAMPLES",
    ] {
        assert!(page.contains(section), "{section} missing");
    }
    // Every command's own options are in it, with their help; no page it refers to is missing.
    for needle in [
        "\\-\\-once",
        "\\-\\-failed",
        "\\-\\-if\\-exists",
        "\\-\\-search",
        "\\-\\-json",
    ] {
        assert!(page.contains(needle), "{needle} missing");
    }
    assert!(
        !page.contains("outbox\\-run(1)"),
        "refers to pages that are not shipped"
    );
    // man(1) renders it without a warning, where man is installed.
    let path = std::env::temp_dir().join(format!("outbox-{}.1", std::process::id()));
    std::fs::write(&path, &page).unwrap();
    if let Ok(out) = std::process::Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l"])
        .arg(&path)
        .env("MANWIDTH", "100")
        .output()
    {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "man -l: {err}"
        );
    }
    let _ = std::fs::remove_file(&path);
}
