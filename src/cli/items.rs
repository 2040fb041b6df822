//! placeholder
use crate::exit::{CommandError, ExitCode};
pub async fn run(
    _s: crate::config::Settings,
    _k: &str,
    _q: Option<&str>,
    _t: u32,
    _u: &str,
) -> Result<ExitCode, CommandError> {
    todo!()
}
