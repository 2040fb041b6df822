use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::windows::fs::OpenOptionsExt as _;
use std::os::windows::io::{AsRawHandle as _, FromRawHandle as _, OwnedHandle};
use std::path::{Path, PathBuf};
use tokio::net::windows::named_pipe::{NamedPipeClient, NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::{LocalFree, RtlNtStatusToDosError, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
    ConvertStringSidToSidW, GetSecurityInfo, SDDL_REVISION_1, SE_FILE_OBJECT, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    EqualSid, GetAce, GetTokenInformation, LookupAccountSidW, SetKernelObjectSecurity, TokenUser,
    ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES,
    SID_NAME_USE, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{
    FileAttributeTagInfo, FileBasicInfo, FileDispositionInfo, GetFileInformationByHandle,
    GetFileInformationByHandleEx, GetFinalPathNameByHandleW, SetFileInformationByHandle,
    BY_HANDLE_FILE_INFORMATION, FILE_ATTRIBUTE_REPARSE_POINT, FILE_ATTRIBUTE_TAG_INFO,
    FILE_BASIC_INFO, FILE_DISPOSITION_INFO, FILE_FLAG_BACKUP_SEMANTICS,
    FILE_FLAG_OPEN_REPARSE_POINT, FILE_NAME_NORMALIZED, FILE_READ_ATTRIBUTES, FILE_RENAME_INFO,
    FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, READ_CONTROL, VOLUME_NAME_DOS, WRITE_DAC,
};

/// Access rights and open flags outbox passes to std's `OpenOptionsExt`.
pub use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_FLAG_BACKUP_SEMANTICS as BACKUP_SEMANTICS,
    FILE_FLAG_OPEN_REPARSE_POINT as OPEN_REPARSE_POINT, FILE_READ_ATTRIBUTES as READ_ATTRIBUTES,
};
use windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// Which file, which version: what `fstat` tells on Unix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// The volume's serial number (the device).
    pub volume: u64,
    /// The file's index on its volume (the inode).
    pub index: u64,
    pub size: u64,
    /// Last write, ns since the Unix epoch (as std's `modified()` reads it).
    pub mtime_ns: i64,
    /// `ChangeTime`, ns since the Unix epoch; `None` when the file system keeps none (0).
    pub ctime_ns: Option<i64>,
    pub links: u32,
    pub attributes: u32,
}

/// 100 ns ticks since 1601-01-01 to ns since 1970-01-01.
fn unix_ns(ticks: i64) -> i64 {
    const EPOCH_DIFF_TICKS: i64 = 116_444_736_000_000_000;
    ticks.saturating_sub(EPOCH_DIFF_TICKS).saturating_mul(100)
}

/// What the handle of an open file says about it.
pub fn file_info(file: &std::fs::File) -> io::Result<FileInfo> {
    let handle = file.as_raw_handle() as HANDLE;
    let mut by = BY_HANDLE_FILE_INFORMATION::default();
    // SAFETY: `handle` is the open handle `file` owns for the whole call; `by` is a valid,
    // writable BY_HANDLE_FILE_INFORMATION.
    if unsafe { GetFileInformationByHandle(handle, &mut by) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut basic = FILE_BASIC_INFO::default();
    // SAFETY: as above; the buffer is a FILE_BASIC_INFO and its size is passed with it.
    let ok = unsafe {
        GetFileInformationByHandleEx(
            handle,
            FileBasicInfo,
            (&mut basic as *mut FILE_BASIC_INFO).cast(),
            std::mem::size_of::<FILE_BASIC_INFO>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let ft = by.ftLastWriteTime;
    let write = (i64::from(ft.dwHighDateTime) << 32) | i64::from(ft.dwLowDateTime);
    Ok(FileInfo {
        volume: u64::from(by.dwVolumeSerialNumber),
        index: (u64::from(by.nFileIndexHigh) << 32) | u64::from(by.nFileIndexLow),
        size: (u64::from(by.nFileSizeHigh) << 32) | u64::from(by.nFileSizeLow),
        mtime_ns: unix_ns(write),
        ctime_ns: (basic.ChangeTime != 0).then(|| unix_ns(basic.ChangeTime)),
        links: by.nNumberOfLinks,
        attributes: by.dwFileAttributes,
    })
}

/// What the file at `path` is, opened for its attributes only (no data access, so no sharing
/// mode of a writer's refuses it). `follow`: through a reparse point at the end of the path (a
/// symbolic link, a junction) to its target; without, the reparse point itself.
pub fn path_info(path: &Path, follow: bool) -> io::Result<FileInfo> {
    let mut flags = FILE_FLAG_BACKUP_SEMANTICS;
    if !follow {
        flags |= FILE_FLAG_OPEN_REPARSE_POINT;
    }
    let f = std::fs::OpenOptions::new()
        .access_mode(FILE_READ_ATTRIBUTES)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .custom_flags(flags)
        .open(path)?;
    file_info(&f)
}

/// The reparse tag of the file `file` is open on, `None` when it is no reparse point. Open it
/// with [`OPEN_REPARSE_POINT`] to ask about a link itself rather than its target.
pub fn reparse_tag(file: &std::fs::File) -> io::Result<Option<u32>> {
    let mut info = FILE_ATTRIBUTE_TAG_INFO::default();
    // SAFETY: the handle is `file`'s, open for the call; the buffer is a FILE_ATTRIBUTE_TAG_INFO
    // and its size is passed with it.
    let ok = unsafe {
        GetFileInformationByHandleEx(
            file.as_raw_handle() as HANDLE,
            FileAttributeTagInfo,
            (&mut info as *mut FILE_ATTRIBUTE_TAG_INFO).cast(),
            std::mem::size_of::<FILE_ATTRIBUTE_TAG_INFO>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((info.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT != 0).then_some(info.ReparseTag))
}

/// Whether a reparse tag names another place (a symbolic link, a junction, any tag with the
/// name-surrogate bit): a link. Other reparse points (OneDrive's placeholders, deduplicated
/// files) are files of their own.
pub fn is_name_surrogate(tag: u32) -> bool {
    tag & 0x2000_0000 != 0
}

/// The path the file `file` is open on, as the system resolved it: every link and junction on
/// the way followed, the names as the volume spells them (`\\?\C:\…`).
pub fn final_path(file: &std::fs::File) -> io::Result<PathBuf> {
    let handle = file.as_raw_handle() as HANDLE;
    let mut buf = vec![0u16; 512];
    loop {
        let cap = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        // SAFETY: the handle is `file`'s, open for the call; `buf` holds `cap` writable u16s.
        let n = unsafe {
            GetFinalPathNameByHandleW(
                handle,
                buf.as_mut_ptr(),
                cap,
                FILE_NAME_NORMALIZED | VOLUME_NAME_DOS,
            )
        };
        if n == 0 {
            let e = io::Error::last_os_error();
            // ERROR_MORE_DATA: Wine's GetFinalPathNameByHandleW asks for the object's name in
            // a buffer of MAX_PATH and fails past it (Windows answers the size needed instead).
            if e.raw_os_error() == Some(234) {
                return long_final_path(file).ok_or(e);
            }
            return Err(e);
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(PathBuf::from(std::ffi::OsString::from_wide(&buf)));
        }
        // Too small: `n` is the size needed, its NUL included.
        if n > 32_768 * 2 {
            return Err(io::Error::other("a final path longer than Windows allows"));
        }
        buf = vec![0u16; n + 1];
    }
}

// ntdll's NtQueryObject (windows-sys has it only behind its WDK features, a rebuild of every
// crate on windows-sys for one call).
#[link(name = "ntdll")]
extern "system" {
    fn NtQueryObject(
        handle: HANDLE,
        class: i32,
        info: *mut std::ffi::c_void,
        len: u32,
        returned: *mut u32,
    ) -> i32;
}

/// `ObjectNameInformation` of `OBJECT_INFORMATION_CLASS`.
const OBJECT_NAME_INFORMATION_CLASS: i32 = 1;

/// The final path of `file` as Wine's GetFinalPathNameByHandleW makes it (for VOLUME_NAME_DOS:
/// the object's name, `\??\C:\…`, as `\\?\C:\…`), without its MAX_PATH limit: the object's
/// name asked of ntdll in a buffer of 64 KiB. `None` when the name is not of that form (on
/// Windows it is a device's, `\Device\…`, and GetFinalPathNameByHandleW never needs this).
fn long_final_path(file: &std::fs::File) -> Option<PathBuf> {
    // u64s: aligned for OBJECT_NAME_INFORMATION (a UNICODE_STRING, a pointer in it).
    let mut buf = vec![0u64; 65_536 / 8];
    let len = u32::try_from(buf.len() * 8).ok()?;
    let mut returned = 0u32;
    // SAFETY: the handle is `file`'s, open for the call; `buf` holds `len` writable bytes,
    // aligned to 8; `returned` is a valid out place.
    let status = unsafe {
        NtQueryObject(
            file.as_raw_handle() as HANDLE,
            OBJECT_NAME_INFORMATION_CLASS,
            buf.as_mut_ptr().cast(),
            len,
            &mut returned,
        )
    };
    if status < 0 {
        return None;
    }
    // OBJECT_NAME_INFORMATION: a UNICODE_STRING { Length (bytes), MaximumLength, Buffer }.
    let head = buf.as_ptr().cast::<u8>();
    // SAFETY: the call succeeded, so the buffer starts with a UNICODE_STRING whose Buffer
    // points at `Length` bytes of the name inside `buf` (alive for the whole block); the
    // fields are read unaligned-safe at their offsets (u16, u16, then the pointer at 8).
    let name: Vec<u16> = unsafe {
        let bytes = head.cast::<u16>().read_unaligned() as usize;
        let at = head.add(8).cast::<*const u16>().read_unaligned();
        if at.is_null() {
            return None;
        }
        std::slice::from_raw_parts(at, bytes / 2).to_vec()
    };
    let prefix: Vec<u16> = "\\??\\".encode_utf16().collect();
    let rest = name.strip_prefix(prefix.as_slice())?;
    let mut out: Vec<u16> = "\\\\?\\".encode_utf16().collect();
    out.extend_from_slice(rest);
    Some(PathBuf::from(std::ffi::OsString::from_wide(&out)))
}

/// Delete the file `file` is open on (it must have been opened with [`DELETE`] access), by its
/// handle: whatever name it has now, never what another name leads to.
pub fn delete_by_handle(file: &std::fs::File) -> io::Result<()> {
    let info = FILE_DISPOSITION_INFO { DeleteFile: true };
    // SAFETY: the handle is `file`'s, open for the call; the buffer is a FILE_DISPOSITION_INFO
    // and its size is passed with it.
    let ok = unsafe {
        SetFileInformationByHandle(
            file.as_raw_handle() as HANDLE,
            FileDispositionInfo,
            (&info as *const FILE_DISPOSITION_INFO).cast(),
            std::mem::size_of::<FILE_DISPOSITION_INFO>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `IO_STATUS_BLOCK`: what `NtSetInformationFile` answers beside its status.
#[repr(C)]
struct IoStatusBlock {
    status: usize,
    information: usize,
}

/// `FileRenameInformation` of `FILE_INFORMATION_CLASS`.
const FILE_RENAME_INFORMATION_CLASS: i32 = 10;

// ntdll's own rename: `SetFileInformationByHandle(FileRenameInfo)` makes a name relative to the
// current directory absolute before passing it on (Wine's does), which defeats a name
// relative to `RootDirectory`; ntdll takes the name as given. windows-sys has it only behind
// its WDK features (a rebuild of every crate on windows-sys), hence this one declaration.
#[link(name = "ntdll")]
extern "system" {
    fn NtSetInformationFile(
        handle: HANDLE,
        io: *mut IoStatusBlock,
        info: *const std::ffi::c_void,
        len: u32,
        class: i32,
    ) -> i32;
}

/// Rename the file `file` is open on (opened with [`DELETE`] access) to `name` in the folder
/// `dir` is open on, never over anything there (an error of kind `AlreadyExists`). The folder
/// is named by its handle (`RootDirectory`, the name relative to it): wherever it is now, no
/// path to it is followed again.
pub fn rename_by_handle(file: &std::fs::File, dir: &std::fs::File, name: &OsStr) -> io::Result<()> {
    let wide: Vec<u16> = name.encode_wide().collect();
    if wide.is_empty()
        || wide
            .iter()
            .any(|&c| c == 0 || c == u16::from(b'\\') || c == u16::from(b'/'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ));
    }
    let head = std::mem::offset_of!(FILE_RENAME_INFO, FileName);
    let bytes = head + (wide.len() + 1) * 2;
    let (Ok(size), Ok(name_len)) = (u32::try_from(bytes), u32::try_from(wide.len() * 2)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a name too long",
        ));
    };
    // u64s: aligned for FILE_RENAME_INFO (a handle in it) whatever the length.
    let mut buf = vec![0u64; bytes.div_ceil(8)];
    let info = buf.as_mut_ptr().cast::<FILE_RENAME_INFO>();
    // SAFETY: `buf` is zeroed, 8-aligned and holds `bytes` bytes: the header up to FileName and
    // the name with its NUL after it. The fields are written in place through raw pointers (no
    // reference to the partly filled struct), and the name copied into the room after the
    // header, inside `buf`. (FILE_RENAME_INFO is laid out as ntdll's FILE_RENAME_INFORMATION;
    // ReplaceIfExists stays false.)
    unsafe {
        std::ptr::addr_of_mut!((*info).RootDirectory).write(dir.as_raw_handle() as HANDLE);
        std::ptr::addr_of_mut!((*info).FileNameLength).write(name_len);
        let to = buf.as_mut_ptr().cast::<u8>().add(head).cast::<u16>();
        std::ptr::copy_nonoverlapping(wide.as_ptr(), to, wide.len());
    }
    let mut io_status = IoStatusBlock {
        status: 0,
        information: 0,
    };
    // SAFETY: both handles are open for the call (`file`'s, and `dir`'s inside the buffer); the
    // buffer is the FILE_RENAME_INFORMATION built above, `size` bytes long; `io_status` is a
    // valid, writable IO_STATUS_BLOCK.
    let status = unsafe {
        NtSetInformationFile(
            file.as_raw_handle() as HANDLE,
            &mut io_status,
            buf.as_ptr().cast(),
            size,
            FILE_RENAME_INFORMATION_CLASS,
        )
    };
    if status < 0 {
        // SAFETY: a pure conversion of a status code.
        let code = unsafe { RtlNtStatusToDosError(status) };
        return Err(io::Error::from_raw_os_error(code as i32));
    }
    Ok(())
}

/// `TIME_ZONE_INFORMATION`, the biases in minutes (UTC = local time + bias).
#[repr(C)]
struct TimeZoneInformation {
    bias: i32,
    standard_name: [u16; 32],
    standard_date: [u16; 8],
    standard_bias: i32,
    daylight_name: [u16; 32],
    daylight_date: [u16; 8],
    daylight_bias: i32,
}

// windows-sys has it behind its Win32_System_Time feature (a rebuild of every crate on
// windows-sys for one call).
#[link(name = "kernel32")]
extern "system" {
    fn GetTimeZoneInformation(info: *mut TimeZoneInformation) -> u32;
}

/// The local time zone as Windows tells it now: which part of the year it is in (0 no daylight
/// saving, 1 standard time, 2 daylight time) and the biases in minutes (UTC = local + bias +
/// the part's bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone {
    pub id: u32,
    pub bias: i32,
    pub standard_bias: i32,
    pub daylight_bias: i32,
}

/// The local time zone (`GetTimeZoneInformation`).
pub fn time_zone() -> io::Result<TimeZone> {
    let mut info = TimeZoneInformation {
        bias: 0,
        standard_name: [0; 32],
        standard_date: [0; 8],
        standard_bias: 0,
        daylight_name: [0; 32],
        daylight_date: [0; 8],
        daylight_bias: 0,
    };
    // SAFETY: `info` is a valid, writable TIME_ZONE_INFORMATION (laid out as Windows has it).
    let id = unsafe { GetTimeZoneInformation(&mut info) };
    if id == u32::MAX {
        return Err(io::Error::last_os_error());
    }
    Ok(TimeZone {
        id,
        bias: info.bias,
        standard_bias: info.standard_bias,
        daylight_bias: info.daylight_bias,
    })
}

/// This process's user: the token's TOKEN_USER, its SID inside the same buffer.
struct TokenUserBuf(Vec<u64>);

impl TokenUserBuf {
    fn current() -> io::Result<TokenUserBuf> {
        let mut raw: HANDLE = std::ptr::null_mut();
        // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing; `raw` is a
        // valid place for the token handle.
        if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut raw) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: OpenProcessToken succeeded, so `raw` is a handle we own and close once (drop).
        let token = unsafe { OwnedHandle::from_raw_handle(raw) };
        let mut len = 0u32;
        // SAFETY: a size query: no buffer, `len` receives the size needed (the call "fails"
        // with ERROR_INSUFFICIENT_BUFFER, as documented).
        unsafe {
            GetTokenInformation(
                token.as_raw_handle() as HANDLE,
                TokenUser,
                std::ptr::null_mut(),
                0,
                &mut len,
            )
        };
        if (len as usize) < std::mem::size_of::<TOKEN_USER>() {
            return Err(io::Error::last_os_error());
        }
        // u64s: aligned for TOKEN_USER (pointers) whatever the length.
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        // SAFETY: `buf` holds at least `len` writable bytes, aligned to 8.
        let ok = unsafe {
            GetTokenInformation(
                token.as_raw_handle() as HANDLE,
                TokenUser,
                buf.as_mut_ptr().cast(),
                len,
                &mut len,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TokenUserBuf(buf))
    }

    /// The user's SID; valid while `self` lives.
    fn sid(&self) -> PSID {
        // SAFETY: GetTokenInformation(TokenUser) wrote a TOKEN_USER at the start of the buffer
        // (its SID follows it in the same buffer, owned by `self`).
        unsafe { (*self.0.as_ptr().cast::<TOKEN_USER>()).User.Sid }
    }

    /// The SID as a string (`S-1-5-21-…`).
    fn sid_string(&self) -> io::Result<String> {
        // SAFETY: the SID is valid while `self` lives.
        unsafe { sid_to_string(self.sid()) }
    }
}

/// A SID as a string (`S-1-5-21-…`).
///
/// # Safety
/// `sid` must point to a valid SID for the call.
unsafe fn sid_to_string(sid: PSID) -> io::Result<String> {
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: the caller vouches for `sid`; `text` receives a LocalAlloc'd string.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `text` is a NUL-terminated UTF-16 string from ConvertSidToStringSidW; it is
    // read up to its NUL, copied, then freed once with LocalFree as documented.
    let out = unsafe {
        let n = (0..).take_while(|&i| *text.add(i) != 0).count();
        let s = String::from_utf16_lossy(std::slice::from_raw_parts(text, n));
        LocalFree(text.cast());
        s
    };
    Ok(out)
}

/// A security descriptor made from SDDL, freed on drop.
struct Descriptor(PSECURITY_DESCRIPTOR);

impl Descriptor {
    fn from_sddl(sddl: &str) -> io::Result<Descriptor> {
        let wide: Vec<u16> = sddl.encode_utf16().chain(std::iter::once(0)).collect();
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `wide` is NUL-terminated and alive for the call; `sd` receives a
        // LocalAlloc'd descriptor, which Drop frees.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wide.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Descriptor(sd))
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: `self.0` is a LocalAlloc'd descriptor (from
            // ConvertStringSecurityDescriptorToSecurityDescriptorW or GetSecurityInfo), freed
            // only here, once.
            unsafe { LocalFree(self.0) };
        }
    }
}

/// The SDDL of an object only the current user may open: a protected DACL (nothing
/// inherited) with one ACE, generic all to the user's SID. Administrators and SYSTEM get no
/// ACE (an administrator could still take ownership, as on Unix root could read the socket).
pub fn owner_only_sddl() -> io::Result<String> {
    let sid = TokenUserBuf::current()?.sid_string()?;
    Ok(format!("O:{sid}D:P(A;;GA;;;{sid})"))
}

/// A named pipe server instance at `name` that only the current user can open; `opts` says
/// the rest (first instance, remote clients refused, …).
pub fn owner_only_pipe(opts: &ServerOptions, name: &OsStr) -> io::Result<NamedPipeServer> {
    let sd = Descriptor::from_sddl(&owner_only_sddl()?)?;
    let mut attrs = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0,
        bInheritHandle: 0,
    };
    // SAFETY: `attrs` is a valid SECURITY_ATTRIBUTES whose descriptor (`sd`) lives until
    // after the call, which copies what it needs.
    unsafe {
        opts.create_with_security_attributes_raw(
            name,
            (&mut attrs as *mut SECURITY_ATTRIBUTES).cast(),
        )
    }
}

/// Whether the pipe `client` opened belongs to this process's user (its owner SID is the
/// user's): a pipe name is global, so another user could have made one at the name first; such
/// a pipe is not the agent's and is told nothing.
pub fn pipe_owned_by_me(client: &NamedPipeClient) -> io::Result<bool> {
    let me = TokenUserBuf::current()?;
    let mut owner: PSID = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: the handle is `client`'s, open for the call; `owner` and `sd` receive pointers
    // into one LocalAlloc'd descriptor, freed below once compared.
    let err = unsafe {
        GetSecurityInfo(
            client.as_raw_handle() as HANDLE,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err as i32));
    }
    let _free = Descriptor(sd);
    if owner.is_null() {
        return Ok(false);
    }
    // SAFETY: both SIDs are valid: `owner` inside `sd` (alive until `_free` drops), the user's
    // inside `me`.
    Ok(unsafe { EqualSid(owner, me.sid()) } != 0)
}

/// The process id of the server at the other end of `client`'s pipe.
pub fn pipe_server_pid(client: &NamedPipeClient) -> io::Result<u32> {
    let mut pid = 0u32;
    // SAFETY: the handle is `client`'s, open for the call; `pid` is a valid out place.
    if unsafe { GetNamedPipeServerProcessId(client.as_raw_handle() as HANDLE, &mut pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// The current user's SID as a string (`S-1-5-21-…`), asked of the process token once (a
/// process's user does not change).
pub fn user_sid() -> io::Result<String> {
    static SID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(s) = SID.get() {
        return Ok(s.clone());
    }
    let s = TokenUserBuf::current()?.sid_string()?;
    Ok(SID.get_or_init(|| s).clone())
}

/// One entry of a file's DACL, as it is stored: an allow or deny of `mask` to `sid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    /// `ACCESS_ALLOWED_ACE_TYPE` (true) or `ACCESS_DENIED_ACE_TYPE` (false); entries of other
    /// types (object, callback, audit) are not returned.
    pub allow: bool,
    pub sid: String,
    pub mask: u32,
    /// The ACE's flags (`INHERIT_ONLY_ACE` 0x08: it applies to what is created inside only).
    pub flags: u8,
}

/// Who owns a file and its DACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSecurity {
    /// The owner's SID; `None` when the file system keeps none.
    pub owner: Option<String>,
    /// The DACL's entries in order; `None` for a NULL DACL (everyone may do anything).
    pub dacl: Option<Vec<Ace>>,
}

/// A handle on `path` for its security descriptor (`access`: READ_CONTROL and/or WRITE_DAC).
/// `follow`: through a link at the end of the path; without, the link itself.
fn open_for_security(path: &Path, access: u32, follow: bool) -> io::Result<std::fs::File> {
    let mut flags = FILE_FLAG_BACKUP_SEMANTICS;
    if !follow {
        flags |= FILE_FLAG_OPEN_REPARSE_POINT;
    }
    std::fs::OpenOptions::new()
        .access_mode(access)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .custom_flags(flags)
        .open(path)
}

/// The owner and DACL of the file or folder at `path` (`GetSecurityInfo` on a handle opened
/// for `READ_CONTROL` only).
pub fn file_security(path: &Path, follow: bool) -> io::Result<FileSecurity> {
    let f = open_for_security(path, READ_CONTROL, follow)?;
    let mut owner: PSID = std::ptr::null_mut();
    let mut dacl: *mut ACL = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: the handle is `f`'s, open for the call; `owner`, `dacl` and `sd` receive pointers
    // into one LocalAlloc'd descriptor, freed when `_free` drops, after every read below.
    let err = unsafe {
        GetSecurityInfo(
            f.as_raw_handle() as HANDLE,
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            &mut dacl,
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err as i32));
    }
    let _free = Descriptor(sd);
    let owner = if owner.is_null() {
        None
    } else {
        // SAFETY: `owner` points into `sd`, alive until `_free` drops.
        Some(unsafe { sid_to_string(owner) }?)
    };
    if dacl.is_null() {
        return Ok(FileSecurity { owner, dacl: None });
    }
    // SAFETY: `dacl` points to the ACL inside `sd` (alive, see above).
    let count = unsafe { (*dacl).AceCount };
    let mut aces = Vec::with_capacity(usize::from(count));
    for i in 0..u32::from(count) {
        let mut ace: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: `dacl` is a valid ACL (as above) and `i` is below its AceCount; `ace`
        // receives a pointer into it.
        if unsafe { GetAce(dacl, i, &mut ace) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: every ACE starts with an ACE_HEADER (GetAce pointed at one inside the ACL).
        let header = unsafe { *ace.cast::<ACE_HEADER>() };
        // ACCESS_ALLOWED_ACE_TYPE 0, ACCESS_DENIED_ACE_TYPE 1: both laid out as
        // ACCESS_ALLOWED_ACE (header, mask, the SID from SidStart on).
        let allow = match header.AceType {
            0 => true,
            1 => false,
            _ => continue,
        };
        let body = ace.cast::<ACCESS_ALLOWED_ACE>();
        // SAFETY: an ACE of type 0 or 1 is an ACCESS_ALLOWED_ACE/ACCESS_DENIED_ACE (the same
        // layout): its mask is read, and its SID starts at SidStart, inside the ACE, valid
        // while `sd` lives.
        let (mask, sid) = unsafe {
            let mask = std::ptr::addr_of!((*body).Mask).read_unaligned();
            let sid_at = std::ptr::addr_of_mut!((*body).SidStart).cast::<std::ffi::c_void>();
            (mask, sid_to_string(sid_at)?)
        };
        aces.push(Ace {
            allow,
            sid,
            mask,
            flags: header.AceFlags,
        });
    }
    Ok(FileSecurity {
        owner,
        dacl: Some(aces),
    })
}

/// Replace the DACL of the file or folder at `path` (never through a link at its end) with the
/// one of `sddl` (`D:P(A;OICI;FA;;;S-1-…)`); a `P` in it protects it from what its folder
/// passes down. The owner is left as it is.
pub fn set_file_dacl(path: &Path, sddl: &str) -> io::Result<()> {
    let sd = Descriptor::from_sddl(sddl)?;
    let f = open_for_security(path, READ_CONTROL | WRITE_DAC, false)?;
    let mut info = DACL_SECURITY_INFORMATION;
    if sddl.starts_with("D:P") {
        info |= PROTECTED_DACL_SECURITY_INFORMATION;
    }
    // SAFETY: the handle is `f`'s, open with WRITE_DAC for the call; `sd` is a valid
    // descriptor (from SDDL) alive until after the call, which copies what it needs.
    if unsafe { SetKernelObjectSecurity(f.as_raw_handle() as HANDLE, info, sd.0) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The SDDL of a DACL only the current user is in: full access, passed down to what is made
/// inside (for a folder), protected from what its own folder passes down.
pub fn owner_only_file_sddl(folder: bool) -> io::Result<String> {
    let sid = user_sid()?;
    let inherit = if folder { "OICI" } else { "" };
    Ok(format!("D:P(A;{inherit};FA;;;{sid})"))
}

/// The account a SID string names, as `DOMAIN\name` (or `name` when it has no domain, as
/// `Everyone`); `None` when the system does not know it.
pub fn account_name(sid: &str) -> Option<String> {
    let wide: Vec<u16> = sid.encode_utf16().chain(std::iter::once(0)).collect();
    let mut psid: PSID = std::ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated and alive for the call; `psid` receives a LocalAlloc'd
    // SID, freed below.
    if unsafe { ConvertStringSidToSidW(wide.as_ptr(), &mut psid) } == 0 {
        return None;
    }
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut n, mut d) = (name.len() as u32, domain.len() as u32);
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: `psid` is the valid SID made above; the buffers hold `n` and `d` u16s, which
    // the call replaces by the lengths written (without the NUL).
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            psid,
            name.as_mut_ptr(),
            &mut n,
            domain.as_mut_ptr(),
            &mut d,
            &mut kind,
        )
    };
    // SAFETY: `psid` was LocalAlloc'd by ConvertStringSidToSidW and is freed once, here.
    unsafe { LocalFree(psid) };
    if ok == 0 {
        return None;
    }
    let name = String::from_utf16_lossy(name.get(..n as usize)?);
    let domain = String::from_utf16_lossy(domain.get(..d as usize)?);
    Some(if domain.is_empty() {
        name
    } else {
        format!("{domain}\\{name}")
    })
}
