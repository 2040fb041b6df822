//! `outbox sandbox`: serve the Graph stand-in until interrupted.

use crate::exit::{CommandError, ExitCode};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Where uploaded bytes (and the --tls CA) are stored (default: a temp dir).
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
    let _ = args;
    Err(CommandError::new(ExitCode::Usage, "sandbox not implemented yet"))
}
