//! Reading a file for the core: "the bytes sent are the bytes hashed". A file is opened once per
//! upload (or hash, or after-action) through [`open_for_upload`] — beneath its mapped folder,
//! without links (`crate::files::SafeFile`) — checked against the identity the core recorded
//! (device, inode, size, modification time), and every byte read is hashed; nothing past the
//! recorded size is ever read. Runs on blocking threads.

use crate::config::Mapping;
use crate::core::model::{FileStat, HashResult};
use crate::files::{Expected, Identity, SafeFile};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Read buffer for hashing.
const BUF: usize = 256 * 1024;

pub use crate::watch::file_stat;

/// Why a file could not be opened as the version the core recorded.
#[derive(Debug)]
pub enum OpenError {
    /// No regular file at the path (deleted, renamed away, a link where links are not followed).
    Gone,
    /// Another file, or this one with another size or time.
    Changed,
    Unreadable(std::io::Error),
}

/// The core's identity of a file as `files` compares it. Records from before schema v2 know no
/// device and inode (0): size and time decide for them.
pub fn expected(stat: &FileStat) -> Expected {
    Expected {
        size: stat.size,
        mtime_ns: Some(stat.mtime_ns),
        dev_ino: (stat.dev != 0 || stat.ino != 0).then_some((stat.dev, stat.ino)),
    }
}

fn stat_of(id: Identity) -> FileStat {
    FileStat {
        dev: id.dev,
        ino: id.ino,
        size: id.size,
        mtime_ns: id.mtime_ns.unwrap_or(0),
        ctime_ns: id.ctime_ns.unwrap_or(0),
    }
}

/// ELOOP: a symbolic link where none is followed.
#[cfg(unix)]
fn link_refused(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

#[cfg(not(unix))]
fn link_refused(_: &std::io::Error) -> bool {
    false
}

/// Open `path` (under `mapping`'s folder) once, beneath the folder, following links only as the
/// mapping allows, and check through the descriptor that it is still `expected`.
pub fn open_for_upload(
    mapping: &Mapping,
    path: &Path,
    expected_stat: &FileStat,
) -> Result<(SafeFile, FileStat), OpenError> {
    if !path.starts_with(&mapping.folder) {
        return Err(OpenError::Gone);
    }
    let f = match SafeFile::open_beneath(&mapping.folder, path, mapping.follow_symlinks) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OpenError::Gone),
        // A link where none is followed, or not a regular file: not a file we send.
        Err(e) if link_refused(&e) || e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(OpenError::Gone)
        }
        Err(e) => return Err(OpenError::Unreadable(e)),
    };
    let now = stat_of(f.identity());
    // The status-change time too, where both know it: a rewrite with its time put back.
    let ctime_moved =
        expected_stat.ctime_ns != 0 && now.ctime_ns != 0 && expected_stat.ctime_ns != now.ctime_ns;
    if !f.matches(&expected(expected_stat)) || ctime_moved {
        return Err(OpenError::Changed);
    }
    Ok((f, now))
}

/// `Action::Hash`: open once, read exactly `stat.size` bytes, hash them.
pub fn hash_file(mapping: &Mapping, path: &Path, stat: &FileStat) -> HashResult {
    let (f, now) = match open_for_upload(mapping, path, stat) {
        Ok(x) => x,
        Err(OpenError::Gone) => return HashResult::Gone,
        Err(OpenError::Changed) => return HashResult::Changed,
        Err(OpenError::Unreadable(e)) => return unreadable(path, &e),
    };
    let mut h = Sha256::new();
    match read_hashing(&f, &mut h, 0, stat.size, |_| {}) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return HashResult::Changed,
        Err(e) => return unreadable(path, &e),
    }
    // Changed while it was read (another size or time now): settle it again.
    let meta = if mapping.follow_symlinks {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    match meta {
        Ok(m) if file_stat(&m) == now => {}
        Ok(_) => return HashResult::Changed,
        Err(_) => return HashResult::Gone,
    }
    HashResult::Hashed {
        sha256: hex::encode(h.finalize()),
        stat: now,
    }
}

fn unreadable(path: &Path, e: &std::io::Error) -> HashResult {
    HashResult::Unreadable(crate::core::model::Failure::new(
        "io",
        format!("cannot read {}: {e}", crate::outside::path(path)),
    ))
}

/// Read exactly `n` bytes at `offset` into the hasher (and `sink`).
fn read_hashing(
    f: &SafeFile,
    h: &mut Sha256,
    mut offset: u64,
    mut n: u64,
    mut sink: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF.min(n as usize).max(1)];
    while n > 0 {
        let want = buf.len().min(n as usize);
        f.read_exact_at(&mut buf[..want], offset)?;
        h.update(&buf[..want]);
        sink(&buf[..want]);
        n -= want as u64;
        offset += want as u64;
    }
    Ok(())
}

/// An upload in progress: the one descriptor it reads through and the running hash of bytes
/// `0..hashed_to`.
pub struct Upload {
    file: SafeFile,
    size: u64,
    hasher: Sha256,
    hashed_to: u64,
    /// The next piece, read (and hashed) while the previous one was on the wire.
    ahead: Option<(u64, u64, Result<bytes::Bytes, ReadProblem>)>,
    /// Mapped pieces sent and let go of, for the next ones.
    spare: Spare,
}

/// What reading a piece of an upload found.
#[derive(Debug)]
pub enum ReadProblem {
    /// The bytes do not hash to the record's SHA-256, or the file shrank.
    Changed,
    Gone,
    Unreadable(std::io::Error),
}

impl From<OpenError> for ReadProblem {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Gone => ReadProblem::Gone,
            OpenError::Changed => ReadProblem::Changed,
            OpenError::Unreadable(e) => ReadProblem::Unreadable(e),
        }
    }
}

fn io_problem(e: std::io::Error) -> ReadProblem {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ReadProblem::Changed
    } else {
        ReadProblem::Unreadable(e)
    }
}

impl Upload {
    pub fn open(
        mapping: &Mapping,
        path: &Path,
        expected: &FileStat,
    ) -> Result<Upload, ReadProblem> {
        // Between the hash and this open, the path may have been swapped (a test pauses here).
        crate::failpoint!("before-upload-open");
        let (file, _) = open_for_upload(mapping, path, expected)?;
        Ok(Upload {
            file,
            size: expected.size,
            hasher: Sha256::new(),
            hashed_to: 0,
            ahead: None,
            spare: Spare::default(),
        })
    }

    /// The whole file (a POST body), checked against `sha256` before anything is sent.
    pub fn read_all(&mut self, sha256: &str) -> Result<Vec<u8>, ReadProblem> {
        let mut body = Vec::with_capacity(self.size as usize);
        let mut h = Sha256::new();
        read_hashing(&self.file, &mut h, 0, self.size, |b| {
            body.extend_from_slice(b)
        })
        .map_err(io_problem)?;
        if !hex::encode(h.finalize()).eq_ignore_ascii_case(sha256) {
            return Err(ReadProblem::Changed);
        }
        Ok(body)
    }

    /// Read (and hash) the piece at `offset` now, to be taken by the next [`Upload::chunk`].
    pub fn read_ahead(&mut self, offset: u64, len: u64, sha256: &str) {
        let r = self.read_chunk(offset, len, sha256);
        self.ahead = Some((offset, len, r));
    }

    /// The piece at `offset`: the one read ahead when it is that piece, else read now.
    pub fn chunk(
        &mut self,
        offset: u64,
        len: u64,
        sha256: &str,
    ) -> Result<bytes::Bytes, ReadProblem> {
        match self.ahead.take() {
            Some((o, l, r)) if o == offset && l == len => r,
            _ => self.read_chunk(offset, len, sha256),
        }
    }

    /// Bytes `offset..offset+len`. Bytes before `offset` not hashed yet (a resume) are read and
    /// hashed first; a piece that ends the file is sent only if all `0..size` hash to `sha256`
    /// (an empty `sha256`: `send` has no recorded hash for a piece that does not end the file).
    pub fn read_chunk(
        &mut self,
        offset: u64,
        len: u64,
        sha256: &str,
    ) -> Result<bytes::Bytes, ReadProblem> {
        let end = offset.saturating_add(len).min(self.size);
        if self.hashed_to < offset {
            read_hashing(
                &self.file,
                &mut self.hasher,
                self.hashed_to,
                offset - self.hashed_to,
                |_| {},
            )
            .map_err(io_problem)?;
            self.hashed_to = offset;
        }
        let mut buf = PieceBuf::new((end - offset) as usize, &self.spare).map_err(io_problem)?;
        self.file
            .read_exact_at(buf.as_mut(), offset)
            .map_err(io_problem)?;
        if end > self.hashed_to {
            let from = (self.hashed_to - offset) as usize;
            self.hasher.update(&buf.as_ref()[from..]);
            self.hashed_to = end;
        }
        if end == self.size
            && !sha256.is_empty()
            && !hex::encode(self.hasher.clone().finalize()).eq_ignore_ascii_case(sha256)
        {
            return Err(ReadProblem::Changed);
        }
        Ok(buf.into_bytes())
    }
}

/// `Action::After`'s check: the file at `path` is still the version sent, by identity and by
/// its bytes.
pub fn still_the_version(
    mapping: &Mapping,
    path: &Path,
    expected: &FileStat,
    sha256: &str,
) -> Result<bool, std::io::Error> {
    match hash_file(mapping, path, expected) {
        HashResult::Hashed { sha256: h, .. } => Ok(h.eq_ignore_ascii_case(sha256)),
        HashResult::Changed | HashResult::Gone => Ok(false),
        HashResult::Unreadable(f) => Err(std::io::Error::other(f.message)),
    }
}

/// The buffer of one piece of an upload. A large one is an anonymous mapping, unmapped when
/// the request that sends it lets go, or kept for the upload's next pieces. Through malloc,
/// glibc's first free of a mapped 4 MiB buffer raises its mmap threshold, and every later piece
/// comes from (and stays resident in) its arenas: one 150 MiB upload peaked at 34 MiB RSS
/// instead of 25. A fresh mapping per piece costs a page fault per 4 KiB written (about 6 % of
/// a 150 MiB upload's time): the upload keeps up to [`PieceBuf::KEEP`] spare ones.
enum PieceBuf {
    Heap(Vec<u8>),
    Mapped {
        map: memmap2::MmapMut,
        len: usize,
        spare: std::sync::Weak<std::sync::Mutex<Vec<memmap2::MmapMut>>>,
    },
}

/// Mapped pieces an upload let go of (its in-flight ones come back here when sent).
type Spare = std::sync::Arc<std::sync::Mutex<Vec<memmap2::MmapMut>>>;

/// A sent piece on its way back to its upload's spares (or unmapped, when the upload is over
/// or has enough).
struct Returning {
    map: Option<memmap2::MmapMut>,
    len: usize,
    spare: std::sync::Weak<std::sync::Mutex<Vec<memmap2::MmapMut>>>,
}

impl AsRef<[u8]> for Returning {
    fn as_ref(&self) -> &[u8] {
        self.map.as_deref().map_or(&[], |m| &m[..self.len])
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let (Some(map), Some(spare)) = (self.map.take(), self.spare.upgrade()) {
            if let Ok(mut kept) = spare.lock() {
                if kept.len() < PieceBuf::KEEP {
                    kept.push(map);
                }
            }
        }
    }
}

impl PieceBuf {
    /// Below this a piece is an ordinary allocation (glibc maps nothing that small).
    const MAP_FROM: usize = 1 << 20;
    /// Spare mappings an upload keeps: one on the wire and one read ahead are all it uses.
    const KEEP: usize = 2;

    fn new(len: usize, spare: &Spare) -> std::io::Result<PieceBuf> {
        if len < Self::MAP_FROM {
            return Ok(PieceBuf::Heap(vec![0u8; len]));
        }
        let reused = spare.lock().ok().and_then(|mut kept| {
            let i = kept.iter().position(|m| m.len() >= len)?;
            Some(kept.swap_remove(i))
        });
        let map = match reused {
            Some(m) => m,
            None => memmap2::MmapMut::map_anon(len)?,
        };
        Ok(PieceBuf::Mapped {
            map,
            len,
            spare: std::sync::Arc::downgrade(spare),
        })
    }

    fn as_mut(&mut self) -> &mut [u8] {
        match self {
            PieceBuf::Heap(v) => v,
            PieceBuf::Mapped { map, len, .. } => &mut map[..*len],
        }
    }

    fn as_ref(&self) -> &[u8] {
        match self {
            PieceBuf::Heap(v) => v,
            PieceBuf::Mapped { map, len, .. } => &map[..*len],
        }
    }

    fn into_bytes(self) -> bytes::Bytes {
        match self {
            PieceBuf::Heap(v) => bytes::Bytes::from(v),
            PieceBuf::Mapped { map, len, spare } => bytes::Bytes::from_owner(Returning {
                map: Some(map),
                len,
                spare,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_holds_its_bytes_whether_mapped_or_allocated() {
        let spare = Spare::default();
        for len in [
            0,
            10,
            PieceBuf::MAP_FROM - 1,
            PieceBuf::MAP_FROM,
            4 << 20,
            3 << 20,
        ] {
            let mut b = PieceBuf::new(len, &spare).unwrap();
            assert_eq!(
                matches!(b, PieceBuf::Mapped { .. }),
                len >= PieceBuf::MAP_FROM,
                "{len}"
            );
            for (i, x) in b.as_mut().iter_mut().enumerate() {
                *x = (i % 251) as u8;
            }
            let bytes = b.into_bytes();
            assert_eq!(bytes.len(), len);
            assert!(bytes.iter().enumerate().all(|(i, x)| *x == (i % 251) as u8));
        }
        // Sent pieces come back as spares (at most KEEP) and are reused when big enough: the
        // 3 MiB piece took the 4 MiB mapping, and the 1 MiB one is too small for 4 MiB pieces.
        assert_eq!(spare.lock().unwrap().len(), 2);
        let held: Vec<bytes::Bytes> = (0..3)
            .map(|_| PieceBuf::new(4 << 20, &spare).unwrap().into_bytes())
            .collect();
        assert_eq!(spare.lock().unwrap().len(), 1);
        assert!(spare.lock().unwrap()[0].len() < 4 << 20);
        drop(held);
        assert_eq!(spare.lock().unwrap().len(), PieceBuf::KEEP);
        // Once the upload is over, a piece still in flight is unmapped when let go of.
        let late = PieceBuf::new(4 << 20, &spare).unwrap().into_bytes();
        drop(spare);
        assert_eq!(late.len(), 4 << 20);
        drop(late);
    }

    fn mapping(dir: &Path) -> Mapping {
        Mapping {
            name: "m".into(),
            folder: dir.to_path_buf(),
            kind: crate::config::ItemKind::Message,
            item_id: "i".into(),
            target: crate::config::Target::Item {
                kind: crate::config::ItemKind::Message,
                id: "i".into(),
            },
            user: "me".into(),
            include: globset::GlobSet::empty(),
            exclude: globset::GlobSet::empty(),
            include_patterns: Vec::new(),
            exclude_patterns: Vec::new(),
            recursive: false,
            after: crate::config::After::Keep,
            sent_dir: dir.join("sent"),
            failed_dir: None,
            follow_symlinks: false,
            if_exists: crate::config::IfExists::Skip,
            on_change: crate::config::OnChange::Add,
        }
    }

    #[test]
    fn bytes_sent_are_bytes_hashed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let m = mapping(dir.path());
        let p = dir.path().join("a.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap_or_else(|e| panic!("{e}"));
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{e}"));
        let st = file_stat(&meta);
        let HashResult::Hashed { sha256, .. } = hash_file(&m, &p, &st) else {
            panic!("not hashed")
        };
        let mut up = Upload::open(&m, &p, &st).unwrap_or_else(|_| panic!("open"));
        // A resume at 4000: 0..4000 is read and hashed first.
        let a = up
            .read_chunk(4000, 3000, &sha256)
            .unwrap_or_else(|_| panic!("chunk"));
        assert_eq!(&a[..], &data[4000..7000]);
        let b = up
            .read_chunk(7000, 3000, &sha256)
            .unwrap_or_else(|_| panic!("last"));
        assert_eq!(&b[..], &data[7000..]);
        let mut up = Upload::open(&m, &p, &st).unwrap_or_else(|_| panic!("open"));
        let wrong = "0".repeat(64);
        assert!(matches!(
            up.read_chunk(0, 10_000, &wrong),
            Err(ReadProblem::Changed)
        ));
        let mut up = Upload::open(&m, &p, &st).unwrap_or_else(|_| panic!("open"));
        assert!(matches!(up.read_all(&wrong), Err(ReadProblem::Changed)));
    }
}
