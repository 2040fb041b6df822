//! outbox's Windows system calls that neither std (on stable) nor tokio wrap, behind safe
//! functions. outbox forbids `unsafe`; this crate is where it lives, and only on Windows (on any
//! other platform it is empty).
//!
//! - `file_info`/`path_info`: which file a handle or path is (volume serial number and file
//!   index, Windows' device and inode) and its change time (`ChangeTime`, Windows' ctime: it
//!   moves on every write and attribute change and cannot be set back). std's `MetadataExt`
//!   has them only behind unstable features.
//! - `reparse_tag`, `is_name_surrogate`, `final_path`: whether a handle opened with
//!   `OPEN_REPARSE_POINT` is a link or junction, and the path the system resolved it to
//!   (`GetFinalPathNameByHandleW`), so that outbox can check a file is beneath its folder.
//! - `time_zone`: the local time zone's biases now, for `{date}` in local time.
//! - `delete_by_handle`, `rename_by_handle`: a delete and a no-replace rename (into a folder
//!   named by its handle) of the file a handle is open on, never of what a path leads to.
//! - `owner_only_pipe`: a named pipe server only the current user can open (a protected DACL
//!   with one ACE, the process token's user), for the agent's control channel; and
//!   `pipe_owned_by_me` (whether a pipe a client opened is its own user's) and `pipe_server_pid`
//!   (the process at the other end of a client's pipe).
//! - `file_security`, `set_file_dacl`, `owner_only_file_sddl`, `user_sid`, `account_name`: a
//!   file's owner and DACL as they are stored (what outbox checks for owner-only: who else may
//!   write or read its config, state dir and secrets), a DACL of the user alone put on what
//!   outbox makes, and the names of the accounts the messages mention.

#[cfg(windows)]
mod imp;
#[cfg(windows)]
pub use imp::*;
