//! `outbox sandbox`: a local Microsoft Graph stand-in on 127.0.0.1, one origin serving Graph
//! (`/v1.0`, OneDrive included), Outlook upload URLs (`/api/v2.0/...AttachmentSessions('ID')?authtoken=`),
//! OneDrive upload URLs (`/api/v2.0/drives/...?guid=&tempauth=`), sharing links (`/s/`), the
//! identity platform (`/{tenant}/oauth2/v2.0/`) and an admin API (`/_admin`). See
//! docs/sandbox.md for routes, defaults and the faults document.
//!
//! It runs its own accept loop (hyper-util) rather than `axum::serve` so that an injected fault
//! can close one connection in the middle of a request body without answering, like a real
//! network drop.

// Handlers short-circuit with a ready Graph error `Response`; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

mod admin;
mod content;
mod drive;
mod faults;
mod graph_api;
mod identity;
mod mail;
mod peer;
mod persist;
mod state;
mod tls;
mod upload;

pub use faults::{Faults, DEFAULT_CLIENT_SECRET};
pub use state::{ME_ID, ME_UPN};

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use state::{AppState, Shared};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How to start a sandbox.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Where bytes (and `ca.pem`) live; `None` = a temp dir removed with the sandbox.
    pub data_dir: Option<PathBuf>,
    pub tls: bool,
    /// A fixed delegated bearer token of the user `me`.
    pub token: Option<String>,
}

/// A running sandbox.
pub struct Sandbox {
    origin: String,
    data_dir: PathBuf,
    ca_pem: Option<PathBuf>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _tmp: Option<tempfile::TempDir>,
}

/// Per-connection handle put in every request's extensions: cancelling it closes the
/// connection at once, without a response (fault injection).
#[derive(Clone)]
pub(crate) struct ConnCtl(CancellationToken);

impl ConnCtl {
    /// Close this request's connection without answering; never returns a response.
    pub(crate) async fn drop_now(&self) -> Response {
        self.0.cancel();
        std::future::pending::<Response>().await
    }
}

impl Sandbox {
    /// Bind 127.0.0.1:`port`, spawn the server task and return.
    pub async fn start(opts: SandboxOptions) -> anyhow::Result<Sandbox> {
        Sandbox::start_serving(opts, Vec::new()).await
    }

    /// [`Sandbox::start`], serving the local users `also` besides its own (and root): an agent
    /// run as another user on purpose (`outbox sandbox --allow-uid`).
    pub async fn start_serving(opts: SandboxOptions, also: Vec<u32>) -> anyhow::Result<Sandbox> {
        let (data_dir, tmp) = match opts.data_dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("outbox-sandbox-")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        // Owner-only, like the agent's state dir: attachment bytes and issued tokens live here.
        persist::private_dir(&data_dir)?;
        persist::private_dir(&data_dir.join("blobs"))?;
        persist::private_dir(&data_dir.join("sessions"))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let port = listener.local_addr()?.port();
        let (origin, tls_cfg, ca_pem) = if opts.tls {
            let (cfg, ca) = tls::setup(&data_dir)?;
            (format!("https://127.0.0.1:{port}"), Some(cfg), Some(ca))
        } else {
            (format!("http://127.0.0.1:{port}"), None, None)
        };
        let state: Shared = Arc::new(AppState::open(
            origin.clone(),
            data_dir.clone(),
            opts.token,
        )?);
        let app = router(state);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, app, tls_cfg, cancel.clone(), also));
        Ok(Sandbox {
            origin,
            data_dir,
            ca_pem,
            cancel,
            task,
            _tmp: tmp,
        })
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        self.origin.clone()
    }

    /// `origin + "/v1.0"`.
    pub fn graph_base(&self) -> String {
        format!("{}/v1.0", self.origin)
    }

    /// `DATA_DIR/ca.pem` when serving TLS.
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        self.ca_pem.clone()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// Stop accepting, close every connection, wait for the server task.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1.0", any(graph_api::handle))
        .route("/v1.0/{*rest}", any(graph_api::handle))
        .route("/api/v2.0/{*rest}", any(upload::handle))
        .route("/s/{token}", get(drive::open_link))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(identity::devicecode),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(identity::token))
        .route(
            "/devicelogin",
            get(identity::devicelogin).post(identity::devicelogin_submit),
        )
        .nest(
            "/_admin",
            admin::router().layer(middleware::from_fn(admin::loopback_host_only)),
        )
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Route label used by the stats; `None` for admin calls (not counted).
pub(crate) fn route_label(method: &axum::http::Method, path: &str) -> Option<String> {
    let m = method.as_str().to_ascii_lowercase();
    if path.starts_with("/_admin") {
        return None;
    }
    if path.starts_with("/api/v2.0/drives/") {
        return Some(format!("drive_upload_{m}"));
    }
    if path.starts_with("/api/v2.0/") {
        return Some(format!("upload_{m}"));
    }
    if path.starts_with("/s/") {
        return Some("open_link".to_string());
    }
    if path.contains("/oauth2/v2.0/") {
        return Some(format!(
            "identity_{}",
            path.rsplit('/').next().unwrap_or("")
        ));
    }
    if path.starts_with("/v1.0") {
        let last = path.rsplit('/').next().unwrap_or("");
        let drive =
            path.contains("/drive/") || path.ends_with("/drive") || path.contains("/drives/");
        let label = if drive && last.ends_with("createUploadSession") {
            "drive_create_session".to_string()
        } else if drive && last.ends_with("createLink") {
            "create_link".to_string()
        } else if drive {
            format!("drive_{m}")
        } else if last == "send" && m == "post" {
            "send_message".to_string()
        } else if last == "messages" && m == "post" {
            "create_draft".to_string()
        } else if last.ends_with("createUploadSession") {
            "create_session".to_string()
        } else if last == "$value" {
            "get_value".to_string()
        } else if last == "attachments" {
            format!("{m}_attachments")
        } else if path.contains("/attachments/") {
            format!("{m}_attachment")
        } else {
            format!("graph_{m}")
        };
        return Some(label);
    }
    Some("other".to_string())
}

async fn record(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let label = route_label(req.method(), req.uri().path());
    let resp = next.run(req).await;
    if let Some(l) = label {
        state.lock().stats.record(&l, resp.status().as_str());
    }
    resp
}

type TlsConfig = Arc<rustls::ServerConfig>;

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<TlsConfig>,
    cancel: CancellationToken,
    also: Vec<u32>,
) {
    let acceptor = tls.map(|cfg| {
        axum_server::tls_rustls::RustlsAcceptor::new(
            axum_server::tls_rustls::RustlsConfig::from_config(cfg),
        )
    });
    let mut refused = std::collections::HashSet::new();
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    // Loopback is every local user's: another's connection is closed unanswered.
                    let allowed = listener.local_addr().map_or(Ok(()), |l| peer::allowed(l, peer));
                    if let Err(uid) = allowed.or_else(|uid| if also.contains(&uid) { Ok(()) } else { Err(uid) }) {
                        if refused.insert(uid) {
                            tracing::warn!(uid, "refused a connection from another local user: the sandbox serves only its own user (and root)");
                        }
                        continue;
                    }
                    s
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("sandbox accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let conn_cancel = cancel.child_token();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acc) => {
                    use axum_server::accept::Accept;
                    if let Ok((tls_stream, ())) = acc.accept(stream, ()).await {
                        serve_conn(tls_stream, app, conn_cancel).await;
                    }
                }
                None => serve_conn(stream, app, conn_cancel).await,
            }
        });
    }
}

async fn serve_conn<I>(io: I, app: Router, kill: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctl = ConnCtl(kill.clone());
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ctl.clone());
        let app = app.clone();
        async move { app.oneshot(req.map(axum::body::Body::new)).await }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        _ = conn => {}
        _ = kill.cancelled() => {}
    }
}
