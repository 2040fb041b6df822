//! placeholder
use crate::exit::{CommandError, ExitCode};
pub async fn run(
    _s: crate::config::Settings,
    _id: Option<String>,
) -> Result<ExitCode, CommandError> {
    todo!()
}
