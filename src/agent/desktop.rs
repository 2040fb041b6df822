//! Desktop notifications (`agent.notify = "off" | "failures" | "all"`): a file failed, or was
//! attached (or replaced its earlier version); a message was sent, was not sent, or its send
//! could not be confirmed. They go
//! through the platform's own notifier command (`notify-send` on Linux, `osascript` on macOS,
//! PowerShell on Windows) so no D-Bus or GUI stack is linked into an agent that mostly runs
//! headless; when the command is missing, nothing happens. Bursts are coalesced: at most one
//! notification every few seconds, counting what was folded in.

use crate::config::NotifyLevel;
use std::time::Duration;
use tokio::time::Instant;

const MIN_GAP: Duration = Duration::from_secs(5);

pub struct Notifier {
    level: NotifyLevel,
    last: Option<Instant>,
    folded: usize,
    /// Environment variables the config names as holding a token or a secret.
    secret_vars: Vec<String>,
}

impl Notifier {
    pub fn new(level: NotifyLevel) -> Self {
        Notifier {
            level,
            last: None,
            folded: 0,
            secret_vars: Vec::new(),
        }
    }

    /// Variables the config reads a token or secret from (`token_env`, a client secret's):
    /// never passed on to the notifier, whatever their names.
    pub fn with_secret_vars(mut self, auth: &crate::config::AuthMethod) -> Self {
        use crate::config::{AuthMethod, ClientCredential};
        match auth {
            AuthMethod::TokenEnv { var } => self.secret_vars.push(var.clone()),
            AuthMethod::ClientCredentials {
                secret: ClientCredential::SecretEnv(var),
            } => self.secret_vars.push(var.clone()),
            _ => {}
        }
        self
    }

    // A file name and a subject (made of file names) are outside text: each is shown quoted
    // (`quoted`), so a name such as `x.pdf attached. Payment details changed` cannot read as
    // outbox's own words.

    pub fn attached(&mut self, name: &str) {
        if self.level == NotifyLevel::All {
            self.send("outbox: attached", &attached_text(name));
        }
    }

    /// Attached, and the attachment of its earlier version (of the same owner's) deleted.
    pub fn replaced(&mut self, name: &str) {
        if self.level == NotifyLevel::All {
            self.send("outbox: replaced", &replaced_text(name));
        }
    }

    /// File `name` was not attached, for `why` (outbox's words).
    pub fn failed(&mut self, name: &str, why: &str) {
        if self.level != NotifyLevel::Off {
            self.send("outbox: could not attach a file", &failed_text(name, why));
        }
    }

    /// A mapping's files wait (its item refused them, or its `max_messages` was reached).
    pub fn mapping_waits(&mut self, mapping: &str, why: &str) {
        if self.level != NotifyLevel::Off {
            self.send(
                "outbox: could not attach a file",
                &format!("mapping {}: {why}", quoted(mapping)),
            );
        }
    }

    pub fn sent(&mut self, subject: &str) {
        if self.level == NotifyLevel::All {
            self.send("outbox: sent", &quoted(subject));
        }
    }

    /// A message not sent: what to do is about the message (its draft, `outbox retry ID`).
    /// `draft`: what became of the draft it made (it stays in Drafts, or it is deleted).
    pub fn message_failed(&mut self, subject: &str, why: &str, id: &str, draft: &str) {
        if self.level != NotifyLevel::Off {
            self.send(
                "outbox: a message was not sent",
                &format!(
                    "{}: {why}; fix the cause, then `outbox retry {id}` ({draft})",
                    quoted(subject)
                ),
            );
        }
    }

    /// A send whose outcome could not be told: a person must look (never folded away silently:
    /// it still counts in the folded total).
    pub fn unconfirmed(&mut self, subject: &str, id: &str) {
        if self.level != NotifyLevel::Off {
            self.send(
                "outbox: a send could not be confirmed",
                &format!("{}: not sent again; look in Sent Items, then `outbox retry {id}` if it is not there", quoted(subject)),
            );
        }
    }

    fn send(&mut self, title: &str, body: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < MIN_GAP) {
            self.folded += 1;
            return;
        }
        self.last = Some(now);
        let body = match std::mem::take(&mut self.folded) {
            0 => body.to_string(),
            n => format!("{body} (and {n} more since the last notice; see `outbox status`)"),
        };
        let body = crate::outside::shown(&body);
        let mut cmd = platform_command(title, &body);
        // The notifier (and whatever it runs) gets no token or secret of ours.
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if self.secret_vars.iter().any(|v| *v == name) || secret_name(&name) {
                cmd.env_remove(&k);
            }
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match cmd.spawn() {
            // Reap it in the background so no zombie is left.
            Ok(mut child) => {
                tokio::task::spawn_blocking(move || child.wait());
            }
            Err(e) => tracing::debug!(error = %e, "no desktop notifier available"),
        }
    }
}

/// Outside text (a file name, a subject) as a notification shows it: between “ and ”, escaped
/// as the log escapes it (`outside::printable`: a newline is `\n`, a bidi control `\u{202e}`),
/// and a quotation mark of its own written `\u{201d}`, so it cannot end the quote early.
fn quoted(text: &str) -> String {
    let mut out = String::from("\u{201c}");
    for c in crate::outside::printable(text).chars() {
        match c {
            '\u{201c}' | '\u{201d}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\u{201d}');
    out
}

fn attached_text(name: &str) -> String {
    format!("{} was attached", quoted(name))
}

fn replaced_text(name: &str) -> String {
    format!(
        "{} was attached; its earlier version's attachment is deleted",
        quoted(name)
    )
}

fn failed_text(name: &str, why: &str) -> String {
    format!("{}: {why}", quoted(name))
}

/// A variable whose name says it holds a credential (`*TOKEN*`, `*SECRET*`, `*PASSWORD*`,
/// `*CREDENTIAL*`, `*API_KEY*`, `*PRIVATE_KEY*`, `*AUTH*`), or one of outbox's own (`OUTBOX_*`,
/// but the texts the Windows notifier reads).
fn secret_name(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    if up.starts_with("OUTBOX_NOTIFY_") {
        return false;
    }
    up.starts_with("OUTBOX_")
        || [
            "TOKEN",
            "SECRET",
            "PASSWORD",
            "PASSWD",
            "CREDENTIAL",
            "API_KEY",
            "APIKEY",
            "PRIVATE_KEY",
            "AUTH",
        ]
        .iter()
        .any(|w| up.contains(w))
}

// Names come from a shared folder: they are passed to the notifier as data (arguments after
// `--`, `argv` of a fixed AppleScript, environment variables read by a fixed PowerShell script),
// never spliced into code or options.

#[cfg(target_os = "macos")]
fn platform_command(title: &str, body: &str) -> std::process::Command {
    let mut c = std::process::Command::new("osascript");
    c.args([
        "-e",
        "on run argv",
        "-e",
        "display notification (item 2 of argv) with title (item 1 of argv)",
        "-e",
        "end run",
        "--",
        title,
        body,
    ]);
    c
}

#[cfg(windows)]
fn platform_command(title: &str, body: &str) -> std::process::Command {
    let mut c = std::process::Command::new("powershell");
    c.args(["-NoProfile", "-NonInteractive", "-Command", WINDOWS_TOAST])
        .env("OUTBOX_NOTIFY_TITLE", title)
        .env("OUTBOX_NOTIFY_BODY", body);
    c
}

/// A constant script: the texts arrive as environment variables and are only ever values.
#[cfg(any(windows, test))]
const WINDOWS_TOAST: &str = "[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, ContentType = WindowsRuntime] > $null; \
     $t = [Windows.UI.Notifications.ToastNotificationManager]::GetTemplateContent([Windows.UI.Notifications.ToastTemplateType]::ToastText02); \
     $x = $t.GetElementsByTagName('text'); $x.Item(0).AppendChild($t.CreateTextNode($env:OUTBOX_NOTIFY_TITLE)) > $null; $x.Item(1).AppendChild($t.CreateTextNode($env:OUTBOX_NOTIFY_BODY)) > $null; \
     [Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier('outbox').Show([Windows.UI.Notifications.ToastNotification]::new($t))";

#[cfg(not(any(target_os = "macos", windows)))]
fn platform_command(title: &str, body: &str) -> std::process::Command {
    let mut c = std::process::Command::new("notify-send");
    // `--`: a name starting with `-` is text, not an option. The body is markup to servers with
    // `body-markup` (a name's `<a href>` or `<img>` would be rendered): escaped as text.
    c.args(["--app-name=outbox", "--", title, &markup_escaped(body)]);
    c
}

/// `text` as the Desktop Notifications markup shows it literally: `&`, `<` and `>` escaped.
#[cfg(any(not(any(target_os = "macos", windows)), test))]
fn markup_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_toast_script_holds_no_text_of_its_own_to_escape() {
        let s = super::WINDOWS_TOAST;
        assert!(s.contains("$env:OUTBOX_NOTIFY_BODY") && !s.contains("{}"));
    }

    #[cfg(not(any(target_os = "macos", windows)))]
    #[test]
    fn notify_send_gets_names_after_double_dash() {
        let c = super::platform_command("t", "--help; $(x) \u{2019}");
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args[1], "--");
        assert_eq!(args[3], "--help; $(x) \u{2019}");
    }

    #[test]
    fn credential_variables_are_known_by_name() {
        for n in [
            "OUTBOX_TEST_TOKEN",
            "GITHUB_TOKEN",
            "AZURE_CLIENT_SECRET",
            "PGPASSWORD",
            "OPENAI_API_KEY",
            "SSH_AUTH_SOCK",
        ] {
            assert!(super::secret_name(n), "{n}");
        }
        for n in [
            "PATH",
            "HOME",
            "DISPLAY",
            "DBUS_SESSION_BUS_ADDRESS",
            "OUTBOX_NOTIFY_BODY",
        ] {
            assert!(!super::secret_name(n), "{n}");
        }
    }

    /// A file name cannot pose as the notification's own words: it is quoted, its controls
    /// escaped as the log escapes them, and a quotation mark of its own cannot end the quote.
    #[test]
    fn a_file_name_is_quoted_and_escaped_never_outboxs_words() {
        let name = "x.pdf attached. Payment details changed";
        assert_eq!(
            super::attached_text(name),
            "\u{201c}x.pdf attached. Payment details changed\u{201d} was attached"
        );
        let forged = "x.pdf\u{201d} was attached\nPayment details changed\u{202e}";
        let text = super::failed_text(forged, "why");
        assert_eq!(
            text,
            "\u{201c}x.pdf\\u{201d} was attached\\nPayment details changed\\u{202e}\u{201d}: why"
        );
        assert_eq!(text.matches('\u{201d}').count(), 1, "{text}");
        assert!(super::replaced_text(name).starts_with('\u{201c}'));
    }

    #[test]
    fn markup_in_a_name_is_escaped_as_text() {
        assert_eq!(
            super::markup_escaped("<a href=\"x\">&amp;</a>"),
            "&lt;a href=\"x\"&gt;&amp;amp;&lt;/a&gt;"
        );
    }
}
