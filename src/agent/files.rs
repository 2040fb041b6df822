//! Reading a file for the core: "the bytes sent are the bytes hashed". A file is opened once per
//! upload (or hash, or after-action) through [`open_for_upload`] — beneath its mapped folder,
//! without links (`crate::files::SafeFile`) — checked against the identity the core recorded
//! (device, inode, size, modification time), and every byte read is hashed; nothing past the
//! recorded size is ever read. Runs on blocking threads.

use crate::config::Mapping;
use crate::core::model::{FileStat, HashResult};
use crate::core::read::{self, Reader};
use crate::files::{Expected, SafeFile};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// A file outbox does not send from this mapping (a hard link): why, after the path.
    Refused(String),
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
    let (f, now) = open_to_read(mapping, path, expected_stat)?;
    match hard_link_refusal(mapping, &f) {
        Some(why) => Err(OpenError::Refused(why)),
        None => Ok((f, now)),
    }
}

/// Why `f` is not sent from `mapping`, if it is not: a second name for a file, perhaps a
/// private file of the user's linked into a shared folder by a neighbour (macOS and FreeBSD
/// allow it, Linux without `fs.protected_hardlinks`). Refused unless the mapping allows them.
fn hard_link_refusal(mapping: &Mapping, f: &SafeFile) -> Option<String> {
    (f.links() > 1 && !mapping.allow_hard_links).then(|| {
        format!(
            "is refused: it is a hard link (the file has {} names, so it may be a file from outside the folder); set allow_hard_links = true on mapping \"{}\" if this folder needs them",
            f.links(),
            crate::outside::printable(&mapping.name)
        )
    })
}

/// [`open_for_upload`] without the hard-link refusal: for reading only (a hash sends nothing).
fn open_to_read(
    mapping: &Mapping,
    path: &Path,
    expected_stat: &FileStat,
) -> Result<(SafeFile, FileStat), OpenError> {
    if !path.starts_with(&mapping.folder) {
        return Err(OpenError::Gone);
    }
    let opened = SafeFile::open_within(
        &mapping.folder,
        path,
        mapping.follow_symlinks,
        mapping.cross_mounts,
    );
    let f = match opened {
        Ok(f) => f,
        // Gone, or now on a mount a neighbour made over its folder: not a file we send.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::CrossesDevices =>
        {
            return Err(OpenError::Gone)
        }
        // A link where none is followed, or not a regular file: not a file we send.
        Err(e) if link_refused(&e) || e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(OpenError::Gone)
        }
        Err(e) => return Err(OpenError::Unreadable(e)),
    };
    let now = f.identity().file_stat();
    // The status-change time too, where both know it: a rewrite with its time put back.
    let ctime_moved =
        expected_stat.ctime_ns != 0 && now.ctime_ns != 0 && expected_stat.ctime_ns != now.ctime_ns;
    if !f.matches(&expected(expected_stat)) || ctime_moved {
        return Err(OpenError::Changed);
    }
    Ok((f, now))
}

/// `Action::Hash`: open once, read exactly `stat.size` bytes, hash them. A file the mapping does
/// not send (a hard link) is hashed too, and answered `Refused`: the core keeps a done version
/// whose bytes these are (a link made elsewhere to it is no new version) and refuses any other.
pub fn hash_file(mapping: &Mapping, path: &Path, stat: &FileStat) -> HashResult {
    hash_file_until(mapping, path, stat, &AtomicBool::new(false))
}

/// How often a hash looks whether its path is still the file it reads (a stat).
const LOOK_EVERY: u64 = 4 * 1024 * 1024;

/// [`hash_file`], given up (`Gone`) as soon as `stop` is set (the agent is stopping), and
/// (`Gone` or `Changed`) when its path no longer names the file being read: a deleted or
/// replaced file is not read on to its end.
pub fn hash_file_until(
    mapping: &Mapping,
    path: &Path,
    stat: &FileStat,
    stop: &AtomicBool,
) -> HashResult {
    let (f, mut now) = match open_to_read(mapping, path, stat) {
        Ok(x) => x,
        Err(OpenError::Gone) => return HashResult::Gone,
        Err(OpenError::Changed) => return HashResult::Changed,
        Err(OpenError::Unreadable(e)) => return unreadable(path, &e),
        // Not from `open_to_read`: the refusal is answered below, with the hash.
        Err(OpenError::Refused(why)) => return unreadable(path, &std::io::Error::other(why)),
    };
    let refused = hard_link_refusal(mapping, &f);
    // A followed link's version is not its target owner's alone (`watch::version_owner`).
    now.owner = crate::watch::version_owner(mapping, path, now.owner);
    let still = || {
        let meta = if mapping.follow_symlinks {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        match meta {
            Ok(m) if crate::watch::version_stat(mapping, path, &m) == Some(now) => None,
            Ok(_) => Some(HashResult::Changed),
            Err(_) => Some(HashResult::Gone),
        }
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF.min(stat.size as usize).max(1)];
    let (mut at, mut looked) = (0u64, 0u64);
    while at < stat.size {
        if stop.load(Ordering::Relaxed) {
            return HashResult::Gone;
        }
        crate::failpoint!("hash-read");
        let want = buf.len().min((stat.size - at) as usize);
        match f.read_exact_at(&mut buf[..want], at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return HashResult::Changed,
            Err(e) => return unreadable(path, &e),
        }
        h.update(&buf[..want]);
        at += want as u64;
        if at - looked >= LOOK_EVERY && at < stat.size {
            looked = at;
            if let Some(r) = still() {
                return r;
            }
        }
    }
    // Changed while it was read (another size or time now): settle it again.
    if let Some(r) = still() {
        return r;
    }
    let sha256 = hex::encode(h.finalize());
    match refused {
        Some(why) => HashResult::Refused {
            sha256,
            stat: now,
            failure: crate::core::model::Failure::new(
                crate::core::machine::HARD_LINK,
                format!("{} {why}", crate::outside::path(path)),
            ),
        },
        None => HashResult::Hashed { sha256, stat: now },
    }
}

fn unreadable(path: &Path, e: &std::io::Error) -> HashResult {
    HashResult::Unreadable(crate::core::model::Failure::new(
        "io",
        format!("cannot read {}: {e}", crate::outside::path(path)),
    ))
}

/// Read exactly `n` bytes at `offset`, a buffer at a time, into `sink`.
fn read_into(
    f: &SafeFile,
    mut offset: u64,
    mut n: u64,
    mut sink: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF.min(n as usize).max(1)];
    while n > 0 {
        let want = buf.len().min(n as usize);
        f.read_exact_at(&mut buf[..want], offset)?;
        sink(&buf[..want]);
        n -= want as u64;
        offset += want as u64;
    }
    Ok(())
}

/// An upload in progress: the core's reader of it (`core::read::Reader`: every byte read is
/// hashed, a piece read again is checked block by block against what was hashed before, and the
/// piece that ends the file goes only if the whole hashes to the record) over the one
/// descriptor it reads through, with SHA-256.
pub struct Upload {
    reader: Reader<FileSource, read::Sha256>,
    /// The next piece, read (and hashed) while the previous one was on the wire.
    ahead: Option<(u64, u64, Result<bytes::Bytes, ReadProblem>)>,
}

/// The one descriptor an upload reads through, as the core's reader sees it, and the mapped
/// pieces sent and let go of, for the next ones.
struct FileSource {
    file: SafeFile,
    spare: Spare,
}

impl read::Source for FileSource {
    type Piece = [u8];
    type Read = PieceBuf;
    type Error = std::io::Error;

    fn read(&mut self, offset: u64, len: u64) -> std::io::Result<PieceBuf> {
        let mut buf = PieceBuf::new(len as usize, &self.spare)?;
        self.file.read_exact_at(buf.as_mut(), offset)?;
        Ok(buf)
    }

    fn scan(&mut self, offset: u64, len: u64, each: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
        read_into(&self.file, offset, len, each)
    }
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
            OpenError::Refused(why) => ReadProblem::Unreadable(std::io::Error::other(why)),
        }
    }
}

impl From<read::Problem<std::io::Error>> for ReadProblem {
    fn from(p: read::Problem<std::io::Error>) -> Self {
        match p {
            read::Problem::Changed => ReadProblem::Changed,
            // The file is shorter than the version: it changed.
            read::Problem::Source(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                ReadProblem::Changed
            }
            read::Problem::Source(e) => ReadProblem::Unreadable(e),
        }
    }
}

impl Upload {
    pub fn open(
        mapping: &Mapping,
        path: &Path,
        expected: &FileStat,
    ) -> Result<Upload, ReadProblem> {
        // Between the hash and this open, the path may have been swapped (a test pauses here,
        // for every path or for those containing a text: `before-upload-open:MS:TEXT`).
        crate::failpoint!("before-upload-open", path);
        let (file, _) = open_for_upload(mapping, path, expected)?;
        let source = FileSource {
            file,
            spare: Spare::default(),
        };
        Ok(Upload {
            reader: Reader::new(source, expected.size),
            ahead: None,
        })
    }

    /// The whole file (a POST body), checked against `sha256` before anything is sent.
    pub fn read_all(&mut self, sha256: &str) -> Result<bytes::Bytes, ReadProblem> {
        Ok(self.reader.read_all(sha256)?.into_bytes())
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

    /// Bytes `offset..offset+len`, through the core's reader (`core::read::Reader::read`: every
    /// byte read is hashed, a piece read again must be the bytes hashed before, a piece that
    /// ends the file goes only if all `0..size` hash to `sha256`; an empty `sha256`: `send` has
    /// no recorded hash for a piece that does not end the file).
    pub fn read_chunk(
        &mut self,
        offset: u64,
        len: u64,
        sha256: &str,
    ) -> Result<bytes::Bytes, ReadProblem> {
        Ok(self.reader.read(offset, len, sha256)?.into_bytes())
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
        // A done file's second name is no reason to leave it where it is (nothing is sent).
        HashResult::Hashed { sha256: h, .. } | HashResult::Refused { sha256: h, .. } => {
            Ok(h.eq_ignore_ascii_case(sha256))
        }
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

impl AsRef<[u8]> for PieceBuf {
    fn as_ref(&self) -> &[u8] {
        match self {
            PieceBuf::Heap(v) => v,
            PieceBuf::Mapped { map, len, .. } => &map[..*len],
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
    // (Its tests are Unix-only: a file edited in place under an open descriptor.)
    #[cfg(unix)]
    use crate::core::read::BLOCK;

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
            allow_hard_links: false,
            cross_mounts: false,
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
        let st = file_stat(&p, &meta).unwrap();
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

    /// A file, its stat and its hash, and an upload of it.
    #[cfg(unix)]
    fn upload_of(m: &Mapping, p: &Path, data: &[u8]) -> (Upload, String) {
        std::fs::write(p, data).unwrap();
        let st = file_stat(p, &std::fs::metadata(p).unwrap()).unwrap();
        let HashResult::Hashed { sha256, .. } = hash_file(m, p, &st) else {
            panic!("not hashed")
        };
        let up = Upload::open(m, p, &st).unwrap_or_else(|_| panic!("open"));
        (up, sha256)
    }

    /// Write `bytes` at `at` in place (same size; the upload's descriptor sees it).
    #[cfg(unix)]
    fn edit(p: &Path, at: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.write_all_at(bytes, at).unwrap();
    }

    /// Issue 21: a piece read again (after a 429, a 5xx, a partial commit) was read afresh and
    /// not hashed again, so bytes edited in place between the two reads went out and the final
    /// check passed.
    #[cfg(unix)]
    #[test]
    fn a_piece_edited_between_two_reads_is_changed_and_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let m = mapping(dir.path());
        let p = dir.path().join("a.bin");
        let size = 5 * BLOCK as usize + 1234;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        // Pieces on the block grain and off it, edits inside the piece and beside it in a block
        // the piece shares, and in the block the hashing stopped in.
        for (piece, at) in [
            ((0, 2 * BLOCK), 100),
            ((BLOCK / 2, BLOCK), BLOCK / 2 + 10),
            ((BLOCK / 2, BLOCK), 10),
            ((BLOCK, 3 * BLOCK / 2), 2 * BLOCK + 5),
        ] {
            let (mut up, sha) = upload_of(&m, &p, &data);
            let (o, l) = piece;
            let first = up
                .read_chunk(o, l, &sha)
                .unwrap_or_else(|_| panic!("first"));
            assert_eq!(&first[..], &data[o as usize..(o + l) as usize]);
            edit(&p, at, b"edited");
            assert!(
                matches!(up.read_chunk(o, l, &sha), Err(ReadProblem::Changed)),
                "{piece:?} edited at {at}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_piece_read_again_unchanged_is_sent_again_and_the_upload_completes() {
        let dir = tempfile::tempdir().unwrap();
        let m = mapping(dir.path());
        let p = dir.path().join("a.bin");
        let size = 5 * BLOCK + 1234;
        let data: Vec<u8> = (0..size as usize).map(|i| (i % 241) as u8).collect();
        let (mut up, sha) = upload_of(&m, &p, &data);
        let piece = 320 * 1024 / 2;
        let mut offset = 0;
        let mut again = true;
        while offset < size {
            let len = piece.min(size - offset);
            let got = up
                .read_chunk(offset, len, &sha)
                .unwrap_or_else(|_| panic!("{offset}"));
            assert_eq!(&got[..], &data[offset as usize..(offset + len) as usize]);
            if again {
                // Sent again whole, then from its middle (a partial commit).
                let got = up
                    .read_chunk(offset, len, &sha)
                    .unwrap_or_else(|_| panic!("again"));
                assert_eq!(&got[..], &data[offset as usize..(offset + len) as usize]);
                offset += len / 3;
                again = false;
                continue;
            }
            offset += len;
        }
        // The last piece checked the whole file against its hash.
        let (mut up, _) = upload_of(&m, &p, &data);
        assert!(matches!(
            up.read_chunk(0, size, &"0".repeat(64)),
            Err(ReadProblem::Changed)
        ));
    }
}
