//! `outbox sandbox`: serve the Graph stand-in until interrupted.

use crate::cli::exit::{CommandError, ExitCode};
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
    /// Also serve this local user (a uid; repeatable): the sandbox serves only its own user
    /// and root (on Linux), so an agent run as another user needs this.
    #[arg(long, value_name = "UID")]
    pub allow_uid: Vec<u32>,
}

pub async fn run(args: SandboxArgs) -> Result<ExitCode, CommandError> {
    let has_token = args.token.is_some();
    let opts = SandboxOptions {
        port: args.port,
        data_dir: args.data_dir,
        tls: args.tls,
        token: args.token,
    };
    let sandbox = Sandbox::start_serving(opts, args.allow_uid)
        .await
        .map_err(|e| {
            CommandError::new(ExitCode::Failed, format!("cannot start the sandbox: {e:#}"))
        })?;
    {
        // The first stdout line is a contract: scripts read the port from it.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening {}", sandbox.origin());
        let _ = write!(
            out,
            "{}",
            config_lines(
                &sandbox.origin(),
                sandbox.ca_pem_path().as_deref(),
                has_token
            )
        );
        let _ = out.flush();
    }
    tracing::info!(data_dir = %crate::outside::path(&sandbox.data_dir()), "sandbox serving; admin API under /_admin");
    wait_for_signal().await;
    sandbox.shutdown().await;
    Ok(ExitCode::Ok)
}

/// What a newcomer puts in a config to point outbox at this sandbox, printed after the
/// `listening` line (which stays first: scripts read the origin from it). TOML, so it can be
/// pasted as is; the comments say the rest.
pub fn config_lines(origin: &str, ca_pem: Option<&std::path::Path>, has_token: bool) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut t = String::from(
        "\n# To point outbox at this sandbox, start its config with these lines; a config that has\n\
         # [graph] and [auth] already (`outbox init` writes both): set these keys in those tables.\n",
    );
    t.push_str(&format!(
        "[graph]\nbase_url = {}\n",
        q(&format!("{origin}/v1.0"))
    ));
    if let Some(ca) = ca_pem {
        t.push_str(&format!(
            "ca_file = {}   # the sandbox's CA (--tls)\n",
            q(&ca.to_string_lossy())
        ));
    }
    t.push_str(&format!("[auth]\nauthority = {}\n", q(origin)));
    if has_token {
        t.push_str(
            "method = \"token_env\"\ntoken_env = \"OUTBOX_SANDBOX_TOKEN\"   # export OUTBOX_SANDBOX_TOKEN=<the --token value>\n",
        );
    } else {
        t.push_str(&format!(
            "method = \"device_code\"\nclient_id = \"5a4db0c0-0000-4000-8000-000000000001\"   # any id will do here\n\
             # `outbox login` then shows a code: approve it at {origin}/devicelogin\n"
        ));
    }
    t.push_str(&format!(
        "# Items to attach to: POST {origin}/_admin/items {{\"kind\":\"message\"}}; all of it: docs/sandbox.md\n"
    ));
    t
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
