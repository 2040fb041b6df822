//! placeholder
use crate::exit::{CommandError, ExitCode};
pub fn run(
    _c: Option<&std::path::Path>,
    _a: &str,
    _d: bool,
    _p: Option<&str>,
) -> Result<ExitCode, CommandError> {
    todo!()
}
