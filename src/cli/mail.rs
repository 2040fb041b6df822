//! `outbox mail FILE... --to ADDR...`: mail files now as one new message: a draft carrying a
//! marker is created, every file attached by the size rule, then the draft is sent (`--draft`
//! leaves it). Prints the sent message's `internetMessageId` on stdout (the draft's id with
//! `--draft`) and a sentence on stderr; a progress bar on a terminal (a line every 2 s
//! otherwise), moving with each chunk and POST, and a line for each wait that is not an upload
//! (Exchange's sending limit, the confirmation of a send in Sent Items). Ctrl-C deletes open upload
//! sessions and exits 130 (the draft stays, unsent). A send whose answer was lost is confirmed in
//! Sent Items by the marker, never repeated: when it cannot be told, exit 1 says so. Does not
//! touch the ledger (`agent::mailnow`).

use super::send::Progress;
use super::MailArgs;
use crate::agent::mailnow::{mail_files, MailFile, Watch};
use crate::agent::oneshot::OneShotError;
use crate::auth::Credentials;
use crate::cli::exit::{CommandError, ExitCode};
use crate::config::units::{human_size, size_both};
use crate::config::Settings;
use crate::config::{check_address, check_template};
use crate::core::mail::{render_body, render_str, FileFacts, RenderContext};
use crate::core::model::{Letter, MessageState, MAX_ATTACHMENT};
use crate::graph::GraphClient;
use std::sync::Arc;
use std::time::Instant;

const DEFAULT_SUBJECT: &str = "{names}";
const DEFAULT_BODY: &str = "Attached: {names}.";
/// Exchange Online's default `MaxSendSize`, and the most a tenant can raise it to.
const DEFAULT_SEND_SIZE: u64 = 35_000_000;
const MAX_SEND_SIZE: u64 = 150_000_000;

pub async fn run(settings: Settings, args: MailArgs) -> Result<ExitCode, CommandError> {
    let usage = |m: String| CommandError::new(ExitCode::Usage, m);
    if args.to.is_empty() && args.cc.is_empty() && args.bcc.is_empty() {
        return Err(usage(
            "mail to whom? give at least one of --to, --cc, --bcc (e.g. --to ap@contoso.com)"
                .into(),
        ));
    }
    for (flag, list) in [("--to", &args.to), ("--cc", &args.cc), ("--bcc", &args.bcc)] {
        for a in list {
            check_address(a).map_err(|e| usage(format!("{flag}: {e}")))?;
        }
    }
    let mut files = Vec::new();
    let mut facts = Vec::new();
    let mut total = 0u64;
    // Each file once, however it is spelled (`a.pdf`, `./a.pdf`, `../dir/a.pdf`, a link to
    // it): by the path it resolves to.
    let mut taken: Vec<(std::path::PathBuf, &std::path::Path)> = Vec::new();
    for path in &args.files {
        let meta = std::fs::metadata(path).map_err(|e| {
            CommandError::new(
                ExitCode::Failed,
                format!(
                    "cannot read {}: {e}; nothing was sent",
                    crate::outside::path(path)
                ),
            )
        })?;
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        if let Some((_, first)) = taken.iter().find(|(r, _)| *r == real) {
            errln!(
                "note: {} is the same file as {}, given before: it is attached once",
                crate::outside::path(path),
                crate::outside::path(first)
            );
            continue;
        }
        taken.push((real, path.as_path()));
        // The attachment's name as a mailing mapping's: no control character, no bidi
        // control (`core::mail::attachment_name`, the agent's and `send`'s rule).
        let name = crate::core::mail::attachment_name(
            &path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into()),
            true,
        );
        if meta.is_file() && meta.len() > MAX_ATTACHMENT {
            return Err(CommandError::new(
                ExitCode::Failed,
                format!(
                    "{} is {} ({} bytes), over Graph's 150 MiB attachment limit ({MAX_ATTACHMENT} \
                     bytes): no message can carry it; nothing was sent or created (split or \
                     compress it under 150 MiB and mail the parts)",
                    crate::outside::path(path),
                    human_size(meta.len()),
                    meta.len()
                ),
            ));
        }
        total += meta.len();
        facts.push(FileFacts {
            name: name.clone(),
            size: meta.len(),
        });
        files.push(MailFile {
            path: path.clone(),
            name,
        });
    }
    // Exchange counts the encoded message against the tenant's MaxSendSize: 35 MB by default,
    // 150 MB at most (GRAPH.md, tenant size limits).
    let encoded = facts
        .iter()
        .fold(crate::core::mail::MESSAGE_OVERHEAD, |n, f| {
            n.saturating_add(crate::core::mail::encoded_attachment_size(f.size, &f.name))
        });
    if !args.draft && encoded > MAX_SEND_SIZE {
        return Err(CommandError::new(
            ExitCode::Failed,
            format!(
                "{} make{} a message of about {} once encoded, over Exchange's largest maximum \
                 message size (150 MB, the most a tenant's MaxSendSize allows): no mailbox can \
                 send it; nothing was sent or created (mail the files in several messages, or \
                 `--draft` to leave it as a draft)",
                if files.len() == 1 {
                    "this file".to_owned()
                } else {
                    format!("these {} files", files.len())
                },
                if files.len() == 1 { "s" } else { "" },
                size_both(encoded)
            ),
        ));
    }
    if !args.draft && encoded > DEFAULT_SEND_SIZE {
        errln!(
            "note: this message is about {} once encoded, over Exchange Online's default maximum \
             message size (35 MB); unless your tenant's MaxSendSize was raised, the send will be \
             refused (and its draft deleted)",
            size_both(encoded)
        );
    }
    let (body, html) = match (&args.body, &args.body_file) {
        (Some(b), _) => (b.clone(), false),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                CommandError::new(
                    ExitCode::Usage,
                    format!("--body-file {}: {e}", crate::outside::path(f)),
                )
            })?;
            let html = f
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
            (text, html)
        }
        (None, None) => (DEFAULT_BODY.to_owned(), false),
    };
    // Placeholders as a mapping's config takes them: an unknown one is refused, not sent.
    let body_flag = match (&args.body, &args.body_file) {
        (None, Some(f)) => format!("--body-file {}", crate::outside::path(f)),
        _ => "--body".to_owned(),
    };
    for (flag, t) in [
        (
            "--subject".to_owned(),
            args.subject.as_deref().unwrap_or(DEFAULT_SUBJECT),
        ),
        (body_flag, body.as_str()),
    ] {
        check_template(t).map_err(|e| usage(format!("{flag}: {e}; nothing was sent")))?;
    }
    let today = crate::core::machine::civil_date(
        crate::core::model::Time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        ),
        crate::agent::policy_of(&settings).utc_offset_ms,
    );
    let ctx = RenderContext {
        files: &facts,
        mapping: "mail",
        date: &today,
    };
    let letter = Letter {
        to: args.to.clone(),
        cc: args.cc.clone(),
        bcc: args.bcc.clone(),
        subject: render_str(args.subject.as_deref().unwrap_or(DEFAULT_SUBJECT), &ctx),
        body: render_body(&body, &ctx, html),
        html,
    };
    let client = Arc::new(
        GraphClient::new(&settings, Credentials::from_settings_in(&settings))
            .map_err(|e| CommandError::new(ExitCode::Config, e))?,
    );
    let recipients = [&args.to, &args.cc, &args.bcc]
        .into_iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let count = files.len();
    let described = |subject: &str, recipients: &str| {
        format!(
            "\"{}\" to {} ({} file{}, {})",
            crate::outside::printable(subject),
            recipients,
            count,
            if count == 1 { "" } else { "s" },
            human_size(total)
        )
    };
    let what = described(&letter.subject, &recipients);
    let bar = Arc::new(Progress::new(total).named(&what));
    let (b, w) = (bar.clone(), bar.clone());
    let started = Instant::now();
    let outcome = mail_files(
        &settings,
        client,
        &args.user,
        letter,
        files,
        !args.draft,
        args.key.as_deref(),
        Watch {
            progress: Some(Arc::new(move |n| b.set(n))),
            waiting: Some(Arc::new(move |text: String| w.say(&text))),
        },
    )
    .await;
    bar.finish();
    // `--key`: an earlier run's message is told as it is in the mailbox (its subject and
    // recipients, read back).
    let earlier_what = |m: &crate::agent::mailnow::Mailed| match &m.found {
        Some(f) => described(
            &f.subject,
            &crate::agent::mailnow::recipients_text(&f.to, &f.cc, &f.bcc),
        ),
        None => what.clone(),
    };
    match outcome {
        Ok(m) if m.state == MessageState::Sent && m.earlier => {
            // `--key`: reported, not mailed again (SPEC: "finds the earlier message … and
            // reports it"): the same line on stdout as the run that sent it.
            errln!(
                "already sent by an earlier run with key {}: {} (found in Sent Items, \
                 marker {}); not sent again",
                crate::outside::printable(args.key.as_deref().unwrap_or_default()),
                earlier_what(&m),
                m.marker
            );
            outln!(
                "{}",
                crate::outside::printable(m.internet_message_id.as_deref().unwrap_or(&m.marker))
            );
            Ok(ExitCode::Ok)
        }
        Ok(m) if m.state == MessageState::Sent => {
            errln!(
                "sent {what} in {:.1} s (marker {})",
                started.elapsed().as_secs_f64(),
                m.marker
            );
            outln!(
                "{}",
                crate::outside::printable(m.internet_message_id.as_deref().unwrap_or(&m.marker))
            );
            Ok(ExitCode::Ok)
        }
        Ok(m) => {
            if m.earlier {
                errln!(
                    "found the draft an earlier run with key {} left (marker {}); left as a \
                     draft, fully attached: {}",
                    crate::outside::printable(args.key.as_deref().unwrap_or_default()),
                    m.marker,
                    earlier_what(&m)
                );
            } else {
                errln!("left as a draft, fully attached: {what}");
            }
            outln!(
                "{}",
                crate::outside::printable(m.draft_id.as_deref().unwrap_or(&m.marker))
            );
            Ok(ExitCode::Ok)
        }
        Err(OneShotError::MailInterrupted(left)) => Err(CommandError::new(
            ExitCode::Interrupted,
            format!("{}: {what} was not sent; {left}", interrupted()),
        )),
        Err(OneShotError::Interrupted) => Err(CommandError::new(
            ExitCode::Interrupted,
            format!("{}: {what} was not sent", interrupted()),
        )),
        Err(OneShotError::SignIn(m)) => Err(CommandError::new(ExitCode::SignIn, m)),
        Err(OneShotError::KeyTaken(why)) => Err(CommandError::new(ExitCode::Usage, why)),
        Err(OneShotError::MaybeSent {
            marker,
            internet_message_id,
            why,
        }) => {
            // On stdout too: what a script keeps to look for it (the marker is the message's
            // single-value extended property; the internetMessageId is in the sent copy). A
            // stdout gone (a closed pipe, the terminal of a SIGHUP) must not turn exit 4 into
            // outln!'s quiet exit 0 or its exit 1: the line is written if it can be.
            {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stdout(),
                    "{}",
                    crate::outside::printable(internet_message_id.as_deref().unwrap_or(&marker))
                );
            }
            Err(CommandError::new(
                ExitCode::MaybeSent,
                format!(
                    "{what} may have been sent: {}; it was NOT sent again (exit 4: do not mail \
                     it again). Look in Sent Items for internetMessageId {} (marker {marker})",
                    // (Not the agent's advice: no ledger keeps this message for `outbox retry`.)
                    crate::outside::printable(
                        why.message
                            .strip_suffix(crate::core::machine::UNCONFIRMED_ADVICE)
                            .unwrap_or(&why.message)
                    ),
                    crate::outside::printable(internet_message_id.as_deref().unwrap_or("unknown")),
                ),
            ))
        }
        Err(e) => Err(CommandError::new(
            ExitCode::Failed,
            format!("{what} was not sent: {e}"),
        )),
    }
}

/// How a one-shot command was interrupted, for its last line: by SIGHUP (named: nobody pressed
/// Ctrl-C), or plainly.
pub fn interrupted() -> String {
    match crate::agent::hangup_seen() {
        Some(sig) => format!("interrupted by {sig} (its terminal closed, or a `kill -HUP`)"),
        None => "interrupted".to_owned(),
    }
}
