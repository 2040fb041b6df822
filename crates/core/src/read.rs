//! "The bytes sent are the bytes hashed" (ARCHITECTURE.md's invariant), as one piece of code the
//! agent and the simulation both run: the reader of an upload. Every byte it reads is hashed;
//! bytes before a piece not hashed yet (a resume) are read and hashed first; a piece read again
//! (a resend after a 429 or a 5xx, a partial commit) must hold, block by block, the bytes hashed
//! before, or the file changed under the upload ([`Problem::Changed`], nothing sent); and a
//! piece that ends the file is handed out only if all of it hashes to the version's SHA-256.
//!
//! It does no I/O: it reads through a [`Source`] (the agent: the one descriptor opened for the
//! upload, `agent/files.rs`; the simulation: a file's in-memory contents, which its world may
//! edit between two reads of one piece) and hashes with a [`Digest`] (SHA-256 in the agent,
//! [`Sha256`]; in the simulation a cheap exact digest over its contents' runs, so it keeps its
//! speed).

/// The grain of a [`Reader`]'s record of what it hashed: 32 bytes a block with SHA-256, 75 KiB
/// for a file at Graph's 150 MiB limit, whatever the pieces. 64 KiB divides a session's 320 KiB
/// pieces, so a piece read again usually starts and ends on a block; one that does not reads at
/// most a block more on each side to check it.
pub const BLOCK: u64 = 64 * 1024;

/// Bytes as a reader holds them: real bytes (`[u8]`), or the simulation's runs of versions.
pub trait Piece {
    /// How many bytes it holds.
    fn byte_len(&self) -> u64;
}

impl Piece for [u8] {
    fn byte_len(&self) -> u64 {
        self.len() as u64
    }
}

/// A running hash.
pub trait Digest: Clone {
    type Piece: Piece + ?Sized;
    /// A finished hash, compared with another.
    type Sum: PartialEq;
    fn new() -> Self;
    /// Take bytes `from..to` of `piece` next.
    fn update(&mut self, piece: &Self::Piece, from: u64, to: u64);
    /// The hash of everything taken so far (it goes on).
    fn sum(&self) -> Self::Sum;
    /// The hash of everything taken so far, and start again.
    fn take(&mut self) -> Self::Sum {
        let s = self.sum();
        *self = Self::new();
        s
    }
    /// Whether everything taken so far is the version `sha256` names.
    fn is(&self, sha256: &str) -> bool;
}

/// Where a reader's bytes come from: one file, opened once.
pub trait Source {
    type Piece: Piece + ?Sized;
    /// A piece read to be sent.
    type Read: AsRef<Self::Piece>;
    type Error;
    /// Bytes `offset..offset + len` as a piece of their own. A file shorter than that is an
    /// error the caller tells apart (the agent: end of file, `Changed`).
    fn read(&mut self, offset: u64, len: u64) -> Result<Self::Read, Self::Error>;
    /// Bytes `offset..offset + len`, handed to `each` a buffer at a time (hashed, not sent).
    fn scan(
        &mut self,
        offset: u64,
        len: u64,
        each: &mut dyn FnMut(&Self::Piece),
    ) -> Result<(), Self::Error>;
}

/// Why a read hands nothing out.
#[derive(Debug, PartialEq)]
pub enum Problem<E> {
    /// The bytes are not those hashed before, or do not hash to the version's SHA-256.
    Changed,
    /// The source could not read (the caller tells a short file from the rest).
    Source(E),
}

/// SHA-256, over real bytes: the agent's digest.
#[derive(Clone)]
pub struct Sha256(sha2::Sha256);

impl Digest for Sha256 {
    type Piece = [u8];
    type Sum = [u8; 32];
    fn new() -> Self {
        Sha256(<sha2::Sha256 as sha2::Digest>::new())
    }
    fn update(&mut self, piece: &[u8], from: u64, to: u64) {
        sha2::Digest::update(&mut self.0, &piece[from as usize..to as usize]);
    }
    fn sum(&self) -> [u8; 32] {
        sha2::Digest::finalize(self.0.clone()).into()
    }
    fn take(&mut self) -> [u8; 32] {
        sha2::Digest::finalize_reset(&mut self.0).into()
    }
    fn is(&self, sha256: &str) -> bool {
        hex::encode(self.sum()).eq_ignore_ascii_case(sha256)
    }
}

/// An upload's reader: the one source it reads through, the running hash of bytes
/// `0..hashed_to`, and a digest of each [`BLOCK`] of them, so that a piece read again is checked
/// against the bytes hashed before it goes out.
pub struct Reader<S: Source, D: Digest<Piece = S::Piece>> {
    source: S,
    size: u64,
    hasher: D,
    hashed_to: u64,
    /// The digest of each whole block of `0..hashed_to` (and of a last, short one at the end).
    blocks: Vec<D::Sum>,
    /// The hash of the block `hashed_to` is in, so far.
    block: D,
}

impl<S: Source, D: Digest<Piece = S::Piece>> Reader<S, D> {
    /// A reader of the `size` bytes of a version through `source`.
    pub fn new(source: S, size: u64) -> Self {
        Reader {
            source,
            size,
            hasher: D::new(),
            hashed_to: 0,
            blocks: Vec::new(),
            block: D::new(),
        }
    }

    /// The source (the simulation shows it the world's contents before a read).
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// How far the running hash has read.
    pub fn hashed_to(&self) -> u64 {
        self.hashed_to
    }

    /// The whole file (a POST body), checked against `sha256` before anything is sent.
    pub fn read_all(&mut self, sha256: &str) -> Result<S::Read, Problem<S::Error>> {
        let body = self.source.read(0, self.size).map_err(Problem::Source)?;
        let mut h = D::new();
        let piece = body.as_ref();
        h.update(piece, 0, piece.byte_len());
        if !h.is(sha256) {
            return Err(Problem::Changed);
        }
        Ok(body)
    }

    /// Bytes `offset..offset + len` (cut at the size). Every byte read is hashed: bytes before
    /// `offset` not hashed yet (a resume) are read and hashed first; bytes hashed before (a
    /// piece read again) must be the bytes they were, block by block, or the file changed under
    /// the upload (`Changed`, nothing handed out); a piece that ends the file is handed out only
    /// if all `0..size` hash to `sha256` (an empty `sha256`: the caller has no recorded hash
    /// for a piece that does not end the file).
    pub fn read(
        &mut self,
        offset: u64,
        len: u64,
        sha256: &str,
    ) -> Result<S::Read, Problem<S::Error>> {
        let end = offset.saturating_add(len).min(self.size);
        let offset = offset.min(end);
        if self.hashed_to < offset {
            let (size, from) = (self.size, self.hashed_to);
            let (hasher, block, blocks, at) = (
                &mut self.hasher,
                &mut self.block,
                &mut self.blocks,
                &mut self.hashed_to,
            );
            self.source
                .scan(from, offset - from, &mut |b| {
                    absorb(hasher, block, blocks, at, size, b, 0)
                })
                .map_err(Problem::Source)?;
        }
        let read = self
            .source
            .read(offset, end - offset)
            .map_err(Problem::Source)?;
        let piece = read.as_ref();
        if piece.byte_len() != end - offset {
            return Err(Problem::Changed);
        }
        if offset < self.hashed_to && !self.same_as_hashed(offset, piece)? {
            return Err(Problem::Changed);
        }
        if end > self.hashed_to {
            let from = self.hashed_to - offset;
            absorb(
                &mut self.hasher,
                &mut self.block,
                &mut self.blocks,
                &mut self.hashed_to,
                self.size,
                piece,
                from,
            );
        }
        if end == self.size && !sha256.is_empty() && !self.hasher.is(sha256) {
            return Err(Problem::Changed);
        }
        Ok(read)
    }

    /// Whether `piece` (read at `offset`, which is below `hashed_to`) holds, up to `hashed_to`,
    /// the bytes hashed there before: each block it touches is hashed again (its bytes outside
    /// the piece read for it) and compared with the block's digest.
    fn same_as_hashed(&mut self, offset: u64, piece: &S::Piece) -> Result<bool, Problem<S::Error>> {
        let until = (offset + piece.byte_len()).min(self.hashed_to);
        let mut start = offset - offset % BLOCK;
        while start < until {
            let block_end = (start + BLOCK).min(self.hashed_to);
            let mut h = D::new();
            if start < offset {
                self.source
                    .scan(start, offset - start, &mut |b| h.update(b, 0, b.byte_len()))
                    .map_err(Problem::Source)?;
            }
            let (from, to) = (start.max(offset), block_end.min(offset + piece.byte_len()));
            h.update(piece, from - offset, to - offset);
            if to < block_end {
                self.source
                    .scan(to, block_end - to, &mut |b| h.update(b, 0, b.byte_len()))
                    .map_err(Problem::Source)?;
            }
            let same = match self.blocks.get((start / BLOCK) as usize) {
                Some(d) => *d == h.sum(),
                // The block `hashed_to` is in, hashed so far.
                None => self.block.sum() == h.sum(),
            };
            if !same {
                return Ok(false);
            }
            start = block_end;
        }
        Ok(true)
    }
}

/// Bytes `from..` of `piece`, the next ones not hashed yet (at `*at`), into the running hash and
/// the block digests.
fn absorb<D: Digest>(
    hasher: &mut D,
    block: &mut D,
    blocks: &mut Vec<D::Sum>,
    at: &mut u64,
    size: u64,
    piece: &D::Piece,
    mut from: u64,
) {
    let to = piece.byte_len();
    hasher.update(piece, from, to);
    while from < to {
        let now = (BLOCK - *at % BLOCK).min(to - from);
        block.update(piece, from, from + now);
        *at += now;
        from += now;
        if at.is_multiple_of(BLOCK) || *at == size {
            blocks.push(block.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A file in memory that the test may edit between two reads (the descriptor sees it).
    #[derive(Clone, Default)]
    struct Mem(Rc<RefCell<Vec<u8>>>);

    impl Source for Mem {
        type Piece = [u8];
        type Read = Vec<u8>;
        type Error = &'static str;
        fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, &'static str> {
            let b = self.0.borrow();
            b.get(offset as usize..(offset + len) as usize)
                .map(<[u8]>::to_vec)
                .ok_or("short")
        }
        fn scan(
            &mut self,
            offset: u64,
            len: u64,
            each: &mut dyn FnMut(&[u8]),
        ) -> Result<(), &'static str> {
            // A buffer at a time, as the agent reads: 10 KiB, so blocks span several.
            let mut at = offset;
            while at < offset + len {
                let n = (10 * 1024).min(offset + len - at);
                each(&self.read(at, n)?);
                at += n;
            }
            Ok(())
        }
    }

    fn data(size: usize, m: usize) -> Vec<u8> {
        (0..size).map(|i| (i % m) as u8).collect()
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
    }

    fn reader_of(b: &[u8]) -> (Reader<Mem, Sha256>, Mem, String) {
        let mem = Mem(Rc::new(RefCell::new(b.to_vec())));
        (Reader::new(mem.clone(), b.len() as u64), mem, sha(b))
    }

    fn edit(mem: &Mem, at: u64, bytes: &[u8]) {
        let mut b = mem.0.borrow_mut();
        b[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn a_resume_hashes_what_came_before_and_the_last_piece_checks_the_whole() {
        let d = data(10_000, 251);
        let (mut r, _, sha) = reader_of(&d);
        assert_eq!(r.read(4000, 3000, &sha).unwrap(), &d[4000..7000]);
        assert_eq!(r.hashed_to(), 7000);
        assert_eq!(r.read(7000, 3000, &sha).unwrap(), &d[7000..]);
        let (mut r, _, _) = reader_of(&d);
        let wrong = "0".repeat(64);
        assert_eq!(r.read(0, 10_000, &wrong), Err(Problem::Changed));
        assert_eq!(r.read_all(&wrong), Err(Problem::Changed));
        assert_eq!(r.read_all(&sha).unwrap(), d);
        // Past the size: cut there.
        let (mut r, _, _) = reader_of(&d);
        assert_eq!(r.read(9000, 5000, &sha).unwrap(), &d[9000..]);
    }

    /// Issue 21: a piece read again (after a 429, a 5xx, a partial commit) was read afresh and
    /// not hashed again, so bytes edited in place between the two reads went out and the final
    /// check passed.
    #[test]
    fn a_piece_edited_between_two_reads_is_changed_and_not_handed_out() {
        let size = 5 * BLOCK as usize + 1234;
        let d = data(size, 251);
        // Pieces on the block grain and off it, edits inside the piece and beside it in a block
        // the piece shares, and in the block the hashing stopped in; and the last piece, read
        // again after the whole file was hashed.
        for (piece, at) in [
            ((0, 2 * BLOCK), 100),
            ((BLOCK / 2, BLOCK), BLOCK / 2 + 10),
            ((BLOCK / 2, BLOCK), 10),
            ((BLOCK, 3 * BLOCK / 2), 2 * BLOCK + 5),
            ((4 * BLOCK, BLOCK + 1234), 5 * BLOCK + 7),
        ] {
            let (mut r, mem, sha) = reader_of(&d);
            let (o, l) = piece;
            if o > 0 {
                r.read(0, o, &sha).unwrap();
            }
            let first = r.read(o, l, &sha).unwrap();
            assert_eq!(first, &d[o as usize..(o + l) as usize]);
            edit(&mem, at, b"edited");
            assert_eq!(
                r.read(o, l, &sha),
                Err(Problem::Changed),
                "{piece:?} edited at {at}"
            );
        }
    }

    #[test]
    fn a_piece_read_again_unchanged_is_handed_out_again_and_the_upload_completes() {
        let size = 5 * BLOCK + 1234;
        let d = data(size as usize, 241);
        let (mut r, mem, sha) = reader_of(&d);
        let piece = 320 * 1024 / 2;
        let (mut offset, mut again) = (0, true);
        while offset < size {
            let len = piece.min(size - offset);
            let want = &d[offset as usize..(offset + len) as usize];
            assert_eq!(r.read(offset, len, &sha).unwrap(), want);
            if again {
                // Sent again whole, then from its middle (a partial commit).
                assert_eq!(r.read(offset, len, &sha).unwrap(), want);
                offset += len / 3;
                again = false;
                continue;
            }
            offset += len;
        }
        // An edit of bytes hashed and sent, never read again, goes unseen: they were sent as
        // hashed, and the last piece checks the running hash, not the file.
        edit(&mem, 10, b"later");
        assert_eq!(
            r.read(size - 10, 10, &sha).unwrap(),
            &d[size as usize - 10..]
        );
    }

    #[test]
    fn a_file_shorter_than_its_version_is_the_sources_error() {
        let d = data(3000, 7);
        let (mut r, mem, sha) = reader_of(&d);
        mem.0.borrow_mut().truncate(2000);
        assert_eq!(r.read(0, 3000, &sha), Err(Problem::Source("short")));
    }
}
