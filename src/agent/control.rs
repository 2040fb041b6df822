//! The agent's local socket (`STATE_DIR/agent.sock`, owner-only): while `outbox run` holds the
//! ledger, `status`, `retry` and `cancel` ask it over this socket; one JSON request per line,
//! one JSON answer per line. The answer to `status` (`more: true`) is followed by its rows, one
//! [`Chunk`] per line, made and written a batch at a time: the ledger's entries as they are read,
//! then the files not in the ledger yet, then the messages of `new_message` mappings. Building the whole answer first cost the agent a
//! transient ~110 MiB per `status` with 100,000 files.

use crate::config::Mapping;
use crate::core::model::MessageRecord;
use crate::ledger::{EntryState, Ledger, LedgerEntry};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Retry {
        id: String,
    },
    RetryFailed,
    /// `outbox retry --resend ID`: mail a done file of a mailing mapping again, on purpose.
    Resend {
        id: String,
    },
    Cancel {
        id: String,
    },
    /// `outbox verify`'s findings: done entries whose attachment it found wrong or missing
    /// (`retry` attaches them again), and ones marked so before found good now.
    Verified {
        wrong: Vec<String>,
        fine: Vec<String>,
    },
    /// `outbox pause`: take no new file from a mapping's folder (`None`: every mapping's), for
    /// `for_ms` or until `resume`; what is under way goes on.
    Pause {
        mapping: Option<String>,
        for_ms: Option<u64>,
    },
    /// `outbox resume`: take new files again, and those dropped while paused.
    Resume {
        mapping: Option<String>,
    },
    /// Which config file the agent read (`agent.config` of the answer): asks nothing else, so
    /// `check` can tell whether the running agent is this config's.
    Config,
    /// Test hook (honoured only with `OUTBOX_TEST_HOOKS=1`): behave as on a watcher overflow.
    Overflow,
    /// Test hook (honoured only with `OUTBOX_TEST_HOOKS=1`): drop watcher events from now on,
    /// as a kernel queue overflow loses them, until the next `overflow`.
    LoseEvents,
    /// Test hook (honoured only with `OUTBOX_TEST_HOOKS=1`): stop as on SIGTERM. The harness's
    /// clean stop on Windows, where no signal can be sent to another process (a console's
    /// Ctrl-Break reaches only processes sharing the sender's console).
    Stop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub entries: Vec<LedgerEntry>,
    /// Messages of `new_message` mappings (`status`: all of them; `retry`: the one retried).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<MessageRecord>,
    #[serde(default)]
    pub error: Option<String>,
    /// Exit code the CLI should end with on error.
    #[serde(default)]
    pub code: Option<i32>,
    /// More entries follow, one [`Chunk`] per line, up to [`Chunk::End`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// `status`: what the agent waits for, which only it knows (nothing of it is in the ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentView>,
}

/// What the running agent waits for: as a whole (a pause), and per entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentView {
    /// Uploads are held for every entry (sign-in, Graph out of reach, throttled).
    pub paused: Option<Wait>,
    /// By entry id (a `settling` row's too): what it waits for.
    pub waits: Vec<(String, Wait)>,
    /// `outbox pause`: what takes no new file, until when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// What scans left aside: mount points not entered, subfolders not watched (lines of
    /// `status`, escaped already).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<String>,
    /// The config file the agent read (its full path): a command run on another file that names
    /// the same state dir says the agent runs on this one, not on its own. `None` from an agent
    /// that does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// When the agent last read that file (Unix ms, taken just before reading it: at start, and
    /// at each reload it took): an edit of the file after it has not reached the agent. `None`
    /// from an agent that does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_read_ms: Option<u64>,
    /// `resume`: the mappings it took out of a pause (none: nothing it names was paused).
    /// `None` from an agent that does not say, and in every other answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Vec<String>>,
}

/// A pause asked for with `outbox pause`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Held {
    /// The mapping paused; `None`: every mapping.
    pub mapping: Option<String>,
    /// When it resumes by itself (Unix ms; `--for`); `None`: at `outbox resume`.
    pub until_ms: Option<u64>,
    /// Files seen in its folders since, left there until it resumes.
    pub files: usize,
}

/// One wait: for what, until when (Unix ms), after which error and how many attempts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Wait {
    pub reason: WaitReason,
    pub until_ms: Option<u64>,
    pub error: Option<String>,
    pub attempts: u32,
}

/// Why an entry (or the agent) waits; the names `status --json` shows in `waiting_for`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WaitReason {
    /// Sign-in is needed (or was refused); tried again at `until`.
    SignIn,
    /// Graph or the identity platform could not be reached.
    Unreachable,
    /// A 429/503 with `Retry-After`: the same request goes again at `until`.
    Throttled,
    /// An error before any effect could be pending (a refused or failed step): backing off.
    Backoff,
    /// The answer to an effect was lost (a drop, a timeout, a 5xx after a POST or a last
    /// chunk): the item is looked at, to see whether it took effect, once nothing of it can
    /// still land.
    Look,
    /// The file is still being written, or not unchanged for `settle` yet.
    Settle,
    /// No agent runs: an upload left mid-way goes on at the next start.
    NextStart,
    /// No agent runs: nothing moves until one starts.
    Agent,
    /// The mapping made its `max_messages` messages in their window: files wait for it.
    MaxMessages,
    /// `outbox pause`: the file waits in its folder until `outbox resume` (or `--for` ends).
    Paused,
    /// Mailed (accepted for sending), its move (`after = "move"`) waits until its message's
    /// copy is seen in Sent Items; `until`: when the looks stop (then it stays, unconfirmed).
    SentCopyMove,
    /// The same, before its delete (`after = "delete"`).
    SentCopyDelete,
    /// A file larger than the mailbox's whole upload budget (`mailbox_upload_bytes`), waiting
    /// for its turn to take the window (once what was sent before it has left it); `until`:
    /// then. Other files go on meanwhile.
    BudgetTurn,
    /// Waiting for room in the mailbox's upload budget (`mailbox_upload_bytes`) until `until`.
    UploadBudget,
    /// Waiting for room in the mailbox's request budget (`mailbox_requests`) until `until`.
    RequestBudget,
    /// Attached to a message whose send may have happened (its answer lost, a throttle, a
    /// `retry` of an unconfirmed one) and is not yet confirmed: `until`, when Sent Items is
    /// searched for its copy ([`send_doubt`]).
    SendConfirm,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::SignIn => "sign-in",
            WaitReason::Unreachable => "unreachable",
            WaitReason::Throttled => "throttled",
            WaitReason::Backoff => "backoff",
            WaitReason::Look => "look",
            WaitReason::Settle => "settle",
            WaitReason::NextStart => "next-start",
            WaitReason::Agent => "agent",
            WaitReason::MaxMessages => "max-messages",
            WaitReason::Paused => "paused",
            WaitReason::SentCopyMove | WaitReason::SentCopyDelete => "sent-copy",
            WaitReason::SendConfirm => "send-confirm",
            WaitReason::BudgetTurn | WaitReason::UploadBudget => "upload-budget",
            WaitReason::RequestBudget => "request-budget",
        }
    }
}

/// A message whose send may have happened and is not confirmed yet, as the core holds it:
/// when it next searches Sent Items for its copy (`core::machine::messages`, `message_remote`'s
/// waits: a lost answer `look_after` after it; a throttled send, or a `retry` of an
/// unconfirmed one, once its Retry-After and Exchange's move grace, five times `look_after`
/// after that send, are past — then, not there and its draft still a draft, sent again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendDoubt {
    pub look_at: crate::core::model::Time,
    /// Sent again if not found and its draft is still a draft (a throttle, a `retry`);
    /// otherwise not found means `unconfirmed`.
    pub resends: bool,
    /// The send's answer, as the core recorded it (`None`: a `retry`).
    pub answer: Option<crate::core::model::Failure>,
}

/// What message `m` waits for when its send may have happened and is not confirmed yet (its
/// answer lost, a throttle, a `retry` of an unconfirmed one); `None` for any other message, its
/// send still under way included. `status` and the agent's log say it ([`send_doubt_text`]).
pub fn send_doubt(m: &crate::core::model::MessageRecord, look_after_ms: u64) -> Option<SendDoubt> {
    if m.state != crate::core::model::MessageState::Sending {
        return None;
    }
    if !m.resend_if_draft && m.error.is_none() {
        // Its send under way (the intent is written before the request): no answer yet.
        return None;
    }
    let look_at = if m.resend_if_draft {
        let grace = m
            .last_send_at?
            .plus_ms(crate::core::machine::move_grace_ms(look_after_ms));
        m.not_before.map_or(grace, |t| t.max(grace))
    } else {
        m.send_at?.plus_ms(look_after_ms)
    };
    Some(SendDoubt {
        look_at,
        resends: m.resend_if_draft,
        answer: m.error.clone(),
    })
}

/// What a message whose send is in doubt waits for, and until when (`status`'s line under
/// the message, the agent's log line): `when`, the search's time in words; `running`, whether
/// an agent runs to do it.
pub fn send_doubt_text(d: &SendDoubt, when: &str, running: bool) -> String {
    let sanitize = |s: &str| crate::outside::printable(s).into_owned();
    let answer = match &d.answer {
        Some(f) if f.code == "throttled" => sanitize(f.message.trim_end_matches('.')),
        Some(f) if f.code == "ErrorExceededMessageLimit" => {
            "Exchange answered its send with its sending limit (ErrorExceededMessageLimit)"
                .to_owned()
        }
        Some(f) if !d.resends => format!(
            "its send's answer was lost ({})",
            sanitize(if f.code.is_empty() {
                &f.message
            } else {
                &f.code
            })
        ),
        Some(f) => format!(
            "its send was answered {}",
            sanitize(if f.code.is_empty() {
                &f.message
            } else {
                &f.code
            })
        ),
        None => "a send of it may have happened (`outbox retry` of it)".to_owned(),
    };
    let then = if d.resends {
        "there, it went; not there and its draft still a draft, it is sent again"
    } else {
        "there, it went; not there, it is unconfirmed (never sent again by itself)"
    };
    let agent = if running {
        ""
    } else {
        ", once an agent runs (`outbox run`)"
    };
    format!(
        "{answer}: it may have gone, so it is not sent again before its copy is searched for in \
         Sent Items {when}{agent}, {}; {then}",
        if d.resends {
            "once the Retry-After and Exchange's move of a sent draft (5 × look_after) are past"
        } else {
            "look_after after the send"
        }
    )
}

/// One line after a response with `more`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chunk {
    Entry(Box<LedgerEntry>),
    Message(Box<MessageRecord>),
    /// The last line; an error means the entries are incomplete.
    End {
        error: Option<String>,
    },
}

/// A file not in the ledger yet: settling, or finished and waiting for its hash.
pub struct Unledgered {
    pub mapping: usize,
    pub path: PathBuf,
    pub size: u64,
    /// Still changing after `max_settle`.
    pub still_changing: bool,
}

/// What the agent answers a request with.
pub enum Answer {
    /// One line.
    Line(Response),
    /// `status`: every entry of the ledger, then a `settling` row for each file not in it yet.
    Status {
        ledger: Arc<Ledger>,
        mappings: Vec<Mapping>,
        unledgered: Vec<Unledgered>,
        view: AgentView,
    },
}

impl Response {
    pub fn entries(entries: Vec<LedgerEntry>) -> Self {
        Response {
            ok: true,
            entries,
            messages: Vec::new(),
            error: None,
            code: None,
            more: false,
            agent: None,
        }
    }
    pub fn error(code: i32, msg: impl Into<String>) -> Self {
        Response {
            ok: false,
            entries: Vec::new(),
            messages: Vec::new(),
            error: Some(msg.into()),
            code: Some(code),
            more: false,
            agent: None,
        }
    }
}

/// A request and where its answer goes.
pub type Envelope = (Request, oneshot::Sender<Answer>);

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.sock")
}

/// The name of the agent's control pipe on Windows (`\\.\pipe\outbox-agent-…`): named by
/// the state dir (its canonical spelling, in lower case, hashed), so one name per state dir as
/// there is one socket per state dir on Unix. Pipe names are global to the machine: the pipe is
/// owner-only and a client checks its owner (`outbox_win::pipe_owned_by_me`).
pub fn pipe_name(state_dir: &Path) -> String {
    use sha2::Digest as _;
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let spelled = dir.to_string_lossy().to_lowercase();
    let hash = hex::encode(sha2::Sha256::digest(spelled.as_bytes()));
    format!(r"\\.\pipe\outbox-agent-{}", &hash[..32])
}

/// Serve the socket until the process ends; requests go to `tx`.
#[cfg(unix)]
pub fn serve(state_dir: &Path, tx: mpsc::Sender<Envelope>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(state_dir);
    // We hold the ledger's lock, so a socket file left here is from a dead agent.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(connection(stream, tx.clone()));
        }
    });
    Ok(())
}

/// Serve the control pipe until the process ends; requests go to `tx`. Only this user can open
/// it (a protected DACL with one ACE, the user's), remote clients are refused, and it must be
/// the pipe's first instance (a pipe someone else made at the name first is not served).
#[cfg(windows)]
pub fn serve(state_dir: &Path, tx: mpsc::Sender<Envelope>) -> std::io::Result<()> {
    use tokio::net::windows::named_pipe::ServerOptions;
    let name = pipe_name(state_dir);
    let mut opts = ServerOptions::new();
    opts.reject_remote_clients(true);
    let mut server = outbox_win::owner_only_pipe(
        opts.clone().first_pipe_instance(true),
        std::ffi::OsStr::new(&name),
    )?;
    tokio::spawn(async move {
        loop {
            let connected = server.connect().await;
            // The next instance before this one is handed on: a client never finds none.
            let next = loop {
                match outbox_win::owner_only_pipe(&opts, std::ffi::OsStr::new(&name)) {
                    Ok(s) => break s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the control pipe again; retrying in 1 s");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            };
            let this = std::mem::replace(&mut server, next);
            if connected.is_ok() {
                tokio::spawn(connection(this, tx.clone()));
            }
        }
    });
    Ok(())
}

/// One client: a request per line, each answered before the next is read.
async fn connection<S>(stream: S, tx: mpsc::Sender<Envelope>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let shutting_down = || Answer::Line(Response::error(1, "the agent is shutting down"));
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let (otx, orx) = oneshot::channel();
                if tx.send((req, otx)).await.is_err() {
                    shutting_down()
                } else {
                    orx.await.unwrap_or_else(|_| shutting_down())
                }
            }
            Err(e) => Answer::Line(Response::error(2, format!("bad request: {e}"))),
        };
        if write_answer(&mut w, answer).await.is_err() {
            break;
        }
    }
}

/// Write an answer; `status` rows are made and serialized a batch at a time.
async fn write_answer<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    answer: Answer,
) -> std::io::Result<()> {
    const BATCH: usize = 64 * 1024;
    let (ledger, mappings, unledgered, view) = match answer {
        Answer::Line(r) => {
            let mut out = serde_json::to_vec(&r)?;
            out.push(b'\n');
            return w.write_all(&out).await;
        }
        Answer::Status {
            ledger,
            mappings,
            unledgered,
            view,
        } => (ledger, mappings, unledgered, view),
    };
    let mut head = Response::entries(Vec::new());
    head.more = true;
    head.agent = Some(view);
    let mut out = serde_json::to_vec(&head)?;
    out.push(b'\n');
    let mut error = None;
    let mut entries = ledger.iter();
    let mut rows = unledgered
        .iter()
        .filter_map(|f| Some(super::settling_row(mappings.get(f.mapping)?, f)));
    let mut messages = ledger.messages();
    loop {
        while out.len() < BATCH {
            let chunk = match entries.next() {
                Some(Ok(e)) => Chunk::Entry(Box::new(e)),
                Some(Err(e)) => {
                    error = Some(e.to_string());
                    break;
                }
                None => match rows.next() {
                    Some(row) => Chunk::Entry(Box::new(row)),
                    None => match messages.next() {
                        Some(Ok(m)) => Chunk::Message(Box::new(m)),
                        Some(Err(e)) => {
                            error = Some(e.to_string());
                            break;
                        }
                        None => break,
                    },
                },
            };
            serde_json::to_writer(&mut out, &chunk)?;
            out.push(b'\n');
        }
        if out.len() < BATCH {
            break;
        }
        w.write_all(&out).await?;
        out.clear();
    }
    serde_json::to_writer(&mut out, &Chunk::End { error })?;
    out.push(b'\n');
    w.write_all(&out).await
}

#[cfg(not(any(unix, windows)))]
pub fn serve(_state_dir: &Path, _tx: mpsc::Sender<Envelope>) -> std::io::Result<()> {
    Ok(())
}

/// The running agent's pipe, if one answers and it is this user's (Windows).
#[cfg(windows)]
pub async fn connect_pipe(
    state_dir: &Path,
) -> Option<tokio::net::windows::named_pipe::NamedPipeClient> {
    use tokio::net::windows::named_pipe::ClientOptions;
    const ERROR_PIPE_BUSY: i32 = 231;
    let name = pipe_name(state_dir);
    // Every instance busy: the agent makes the next one as it hands a client on.
    for _ in 0..100 {
        match ClientOptions::new().open(&name) {
            Ok(client) => {
                return match outbox_win::pipe_owned_by_me(&client) {
                    Ok(true) => Some(client),
                    Ok(false) => {
                        tracing::warn!(pipe = %name, "the control pipe is not this user's; not asked");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(pipe = %name, error = %e, "cannot tell whose the control pipe is; not asked");
                        None
                    }
                };
            }
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(_) => return None,
        }
    }
    None
}

/// Ask a running agent; `None` when no agent answers on the socket.
#[cfg(any(unix, windows))]
pub async fn ask(state_dir: &Path, req: &Request) -> Option<Response> {
    #[cfg(unix)]
    let stream = tokio::net::UnixStream::connect(socket_path(state_dir))
        .await
        .ok()?;
    #[cfg(windows)]
    let stream = connect_pipe(state_dir).await?;
    let (r, mut w) = tokio::io::split(stream);
    let mut line = serde_json::to_vec(req).ok()?;
    line.push(b'\n');
    w.write_all(&line).await.ok()?;
    let mut lines = BufReader::new(r).lines();
    const WAIT: std::time::Duration = std::time::Duration::from_secs(60);
    let answer = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .ok()?
        .ok()??;
    let mut resp: Response = serde_json::from_str(&answer).ok()?;
    if !resp.more {
        return Some(resp);
    }
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .ok()?
            .ok()??;
        match serde_json::from_str::<Chunk>(&line).ok()? {
            Chunk::Entry(e) => resp.entries.push(*e),
            Chunk::Message(m) => resp.messages.push(*m),
            Chunk::End { error: None } => break,
            Chunk::End { error: Some(e) } => return Some(Response::error(1, e)),
        }
    }
    // The ledger's entries oldest first, then the files not in it yet (in the order sent).
    resp.entries
        .sort_by_key(|e| (e.state == EntryState::Settling, e.seq));
    resp.messages.sort_by_key(|m| m.seq);
    resp.more = false;
    Some(resp)
}

#[cfg(not(any(unix, windows)))]
pub async fn ask(_state_dir: &Path, _req: &Request) -> Option<Response> {
    None
}
