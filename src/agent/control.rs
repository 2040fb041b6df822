//! The agent's local socket (`STATE_DIR/agent.sock`, owner-only): while `outbox run` holds the
//! ledger, `status`, `retry` and `cancel` ask it over this socket; one JSON request per line,
//! one JSON answer per line.

use crate::ledger::LedgerEntry;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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
    Cancel {
        id: String,
    },
    /// Test hook (honoured only with `OUTBOX_TEST_HOOKS=1`): behave as on a watcher overflow.
    Overflow,
    /// Test hook (honoured only with `OUTBOX_TEST_HOOKS=1`): drop watcher events from now on,
    /// as a kernel queue overflow loses them, until the next `overflow`.
    LoseEvents,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub entries: Vec<LedgerEntry>,
    #[serde(default)]
    pub error: Option<String>,
    /// Exit code the CLI should end with on error.
    #[serde(default)]
    pub code: Option<i32>,
}

impl Response {
    pub fn entries(entries: Vec<LedgerEntry>) -> Self {
        Response {
            ok: true,
            entries,
            error: None,
            code: None,
        }
    }
    pub fn error(code: i32, msg: impl Into<String>) -> Self {
        Response {
            ok: false,
            entries: Vec::new(),
            error: Some(msg.into()),
            code: Some(code),
        }
    }
}

/// A request and where its answer goes.
pub type Envelope = (Request, oneshot::Sender<Response>);

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.sock")
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
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let resp = match serde_json::from_str::<Request>(&line) {
                        Ok(req) => {
                            let (otx, orx) = oneshot::channel();
                            if tx.send((req, otx)).await.is_err() {
                                Response::error(1, "the agent is shutting down")
                            } else {
                                orx.await.unwrap_or_else(|_| {
                                    Response::error(1, "the agent is shutting down")
                                })
                            }
                        }
                        Err(e) => Response::error(2, format!("bad request: {e}")),
                    };
                    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
                    out.push(b'\n');
                    if w.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub fn serve(_state_dir: &Path, _tx: mpsc::Sender<Envelope>) -> std::io::Result<()> {
    Ok(())
}

/// Ask a running agent; `None` when no agent answers on the socket.
#[cfg(unix)]
pub async fn ask(state_dir: &Path, req: &Request) -> Option<Response> {
    let stream = tokio::net::UnixStream::connect(socket_path(state_dir))
        .await
        .ok()?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req).ok()?;
    line.push(b'\n');
    w.write_all(&line).await.ok()?;
    let mut lines = BufReader::new(r).lines();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
        .await
        .ok()?
        .ok()??;
    serde_json::from_str(&answer).ok()
}

#[cfg(not(unix))]
pub async fn ask(_state_dir: &Path, _req: &Request) -> Option<Response> {
    None
}
