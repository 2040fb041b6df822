//! placeholder
use crate::exit::{CommandError, ExitCode};
pub async fn run(_c: Option<&std::path::Path>) -> Result<ExitCode, CommandError> {
    todo!()
}
