//! `outbox sandbox`: serve the Graph stand-in until interrupted.

use crate::exit::{CommandError, ExitCode};
use crate::sandbox::{Sandbox, SandboxOptions};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Where the sandbox keeps its state: items, attachments, upload sessions, issued tokens and
    /// the --tls CA; a sandbox restarted on the same dir serves them again (default: a temp dir).
    #[arg(long, value_name = "D")]
    pub data_dir: Option<PathBuf>,
    /// Serve HTTPS with a throw-away CA written to DATA_DIR/ca.pem.
    #[arg(long)]
    pub tls: bool,
    /// Accept this fixed bearer token as a delegated token of the user `me`.
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
}

pub async fn run(args: SandboxArgs) -> Result<ExitCode, CommandError> {
    let opts = SandboxOptions {
        port: args.port,
        data_dir: args.data_dir,
        tls: args.tls,
        token: args.token,
    };
    let sandbox = Sandbox::start(opts).await.map_err(|e| {
        CommandError::new(ExitCode::Failed, format!("cannot start the sandbox: {e:#}"))
    })?;
    {
        // The first stdout line is a contract: scripts read the port from it.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening {}", sandbox.origin());
        let _ = out.flush();
    }
    tracing::info!(data_dir = %sandbox.data_dir().display(), "sandbox serving; admin API under /_admin");
    wait_for_signal().await;
    sandbox.shutdown().await;
    Ok(ExitCode::Ok)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
