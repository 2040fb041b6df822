//! The simulated world's bytes: a file's contents as runs of versions, the exact digest of
//! them the simulation hashes with, and the descriptor an upload reads through, so the core's
//! reader (`read::Reader`) runs over the world as it runs over a file in the agent.

use crate::read;

/// A file's bytes, abstractly: a version number and a length; byte `i` of version `v` is its
/// own, `(v, i)` (two versions never share bytes, stricter than life), except that an edit in
/// place keeps its base's bytes outside the range it wrote (`edit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Content {
    pub ver: u64,
    pub size: u64,
    pub edit: Option<Edit>,
}

/// The mark of an edited version's number: no version all its own has it, so bytes that only
/// look like an edit (one version's, then another's) are never taken for one.
pub const EDITED: u64 = 1 << 62;

/// An edit in place of version `base`: bytes `at..at + len` are the edited version's own, the
/// rest `base`'s (one level: an edit of an edited file makes all of it new).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edit {
    pub base: u64,
    pub at: u64,
    pub len: u64,
}

/// The simulation's SHA-256 of a version: the version itself, written out (an edit in the last
/// 32 digits), so the bytes a digest read can be compared with it exactly.
pub fn sha(c: Content) -> String {
    let edit = c.edit.map_or(0u128, |e| {
        (u128::from(e.base) << 64) | (u128::from(e.at) << 32) | u128::from(e.len)
    });
    format!("{:016x}{:016x}{:032x}", c.ver, c.size, edit)
}

impl Content {
    /// A new version's bytes, all its own.
    pub(super) fn new(ver: u64, size: u64) -> Content {
        Content {
            ver,
            size,
            edit: None,
        }
    }

    /// The version [`sha`] names.
    pub(super) fn from_sha(s: &str) -> Option<Content> {
        let ver = u64::from_str_radix(s.get(..16)?, 16).ok()?;
        let size = u64::from_str_radix(s.get(16..32)?, 16).ok()?;
        let edit = u128::from_str_radix(s.get(32..64)?, 16).ok()?;
        let edit = (edit != 0).then_some(Edit {
            base: (edit >> 64) as u64,
            at: (edit >> 32) as u32 as u64,
            len: edit as u32 as u64,
        });
        Some(Content { ver, size, edit })
    }

    /// Its bytes, as runs.
    pub fn runs(&self) -> Vec<Run> {
        let mut runs = Vec::new();
        match self.edit {
            None => push_run(
                &mut runs,
                Run {
                    ver: self.ver,
                    at: 0,
                    len: self.size,
                },
            ),
            Some(e) => {
                for r in [
                    Run {
                        ver: e.base,
                        at: 0,
                        len: e.at,
                    },
                    Run {
                        ver: self.ver,
                        at: e.at,
                        len: e.len,
                    },
                    Run {
                        ver: e.base,
                        at: e.at + e.len,
                        len: self.size - e.at - e.len,
                    },
                ] {
                    push_run(&mut runs, r);
                }
            }
        }
        runs
    }

    /// The version whose bytes `runs` (merged) are, if they are one version's.
    pub(super) fn from_runs(runs: &[Run], size: u64) -> Option<Content> {
        if runs.iter().map(|r| r.len).sum::<u64>() != size {
            return None;
        }
        if let [r] = runs {
            return (r.at == 0 && r.ver & EDITED == 0).then_some(Content::new(r.ver, size));
        }
        runs.iter().find_map(|r| {
            let base = runs.iter().find(|o| o.ver != r.ver)?.ver;
            if r.ver & EDITED == 0 || base & EDITED != 0 {
                return None;
            }
            let c = Content {
                ver: r.ver,
                size,
                edit: Some(Edit {
                    base,
                    at: r.at,
                    len: r.len,
                }),
            };
            (c.runs() == runs).then_some(c)
        })
    }
}

/// Bytes `at..at + len` of version `ver`, in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub ver: u64,
    pub at: u64,
    pub len: u64,
}

impl read::Piece for [Run] {
    fn byte_len(&self) -> u64 {
        self.iter().map(|r| r.len).sum()
    }
}

/// `r` after `runs`, merged with the last when it goes on from it.
pub(super) fn push_run(runs: &mut Vec<Run>, r: Run) {
    if r.len == 0 {
        return;
    }
    match runs.last_mut() {
        Some(l) if l.ver == r.ver && l.at + l.len == r.at => l.len += r.len,
        _ => runs.push(r),
    }
}

/// Bytes `from..to` of `piece`, run by run.
fn clip(piece: &[Run], from: u64, to: u64, mut each: impl FnMut(Run)) {
    let mut pos = 0;
    for r in piece {
        let (lo, hi) = (from.max(pos), to.min(pos + r.len));
        if lo < hi {
            each(Run {
                ver: r.ver,
                at: r.at + (lo - pos),
                len: hi - lo,
            });
        }
        pos += r.len;
        if pos >= to {
            break;
        }
    }
}

/// The simulation's digest: the bytes taken, as merged runs. Exact (two digests are equal only
/// for equal bytes) and cheap: a file of any size is a run or three.
#[derive(Debug, Clone, Default)]
pub struct RunDigest(Vec<Run>);

impl read::Digest for RunDigest {
    type Piece = [Run];
    type Sum = Vec<Run>;
    fn new() -> Self {
        RunDigest(Vec::new())
    }
    fn update(&mut self, piece: &[Run], from: u64, to: u64) {
        clip(piece, from, to, |r| push_run(&mut self.0, r));
    }
    fn sum(&self) -> Vec<Run> {
        self.0.clone()
    }
    fn take(&mut self) -> Vec<Run> {
        std::mem::take(&mut self.0)
    }
    fn is(&self, sha256: &str) -> bool {
        Content::from_sha(sha256).is_some_and(|c| c.runs() == self.0)
    }
}

/// The descriptor an upload reads through, in the world: an inode, whose contents the world
/// shows it before each read (it may have edited them since the last one).
#[derive(Debug, Clone)]
pub struct SimFile {
    pub(super) ino: u64,
    pub(super) now: Option<Content>,
}

/// A read past the end of the file.
#[derive(Debug, PartialEq)]
pub struct Short;

impl read::Source for SimFile {
    type Piece = [Run];
    type Read = Vec<Run>;
    type Error = Short;
    fn read(&mut self, offset: u64, len: u64) -> Result<Vec<Run>, Short> {
        let c = self.now.ok_or(Short)?;
        if offset + len > c.size {
            return Err(Short);
        }
        let mut out = Vec::new();
        clip(&c.runs(), offset, offset + len, |r| out.push(r));
        Ok(out)
    }
    fn scan(&mut self, offset: u64, len: u64, each: &mut dyn FnMut(&[Run])) -> Result<(), Short> {
        each(&self.read(offset, len)?);
        Ok(())
    }
}

/// An upload's reader in the simulation: the core's, over the world's contents.
pub(super) type UploadReader = read::Reader<SimFile, RunDigest>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{Problem, BLOCK};

    #[test]
    fn a_version_is_named_by_its_sha_and_found_from_its_runs() {
        let plain = Content::new(7, 3 * BLOCK);
        let edited = Content {
            ver: 9 | EDITED,
            size: 3 * BLOCK,
            edit: Some(Edit {
                base: 7,
                at: 100,
                len: 50,
            }),
        };
        for c in [plain, edited] {
            assert_eq!(Content::from_sha(&sha(c)), Some(c));
            assert_eq!(Content::from_runs(&c.runs(), c.size), Some(c));
        }
        assert_eq!(edited.runs().len(), 3);
        // Bytes of two versions that are no edit of one: none.
        let mix = [
            Run {
                ver: 7,
                at: 0,
                len: BLOCK,
            },
            Run {
                ver: 8,
                at: BLOCK,
                len: 2 * BLOCK,
            },
        ];
        assert_eq!(Content::from_runs(&mix, 3 * BLOCK), None);
    }

    /// The core's reader over the world's contents: an edit in place between two reads of one
    /// piece is `Changed`; an edit of bytes hashed and never read again goes unseen (they went
    /// as hashed), and the upload completes with the version's bytes.
    #[test]
    fn the_readers_checks_hold_over_runs() {
        let c = Content::new(3, 5 * BLOCK + 10);
        let mut r = UploadReader::new(
            SimFile {
                ino: 1,
                now: Some(c),
            },
            c.size,
        );
        let piece = r.read(0, 2 * BLOCK, &sha(c)).unwrap();
        assert_eq!(
            Content::from_runs(&piece, 2 * BLOCK),
            Some(Content::new(3, 2 * BLOCK))
        );
        let edited = Content {
            ver: 4 | EDITED,
            size: c.size,
            edit: Some(Edit {
                base: 3,
                at: BLOCK + 7,
                len: 1,
            }),
        };
        r.source_mut().now = Some(edited);
        assert_eq!(r.read(BLOCK, BLOCK, &sha(c)), Err(Problem::Changed));
        let mut r = UploadReader::new(
            SimFile {
                ino: 1,
                now: Some(c),
            },
            c.size,
        );
        r.read(0, 2 * BLOCK, &sha(c)).unwrap();
        r.source_mut().now = Some(edited);
        r.read(2 * BLOCK, 3 * BLOCK + 10, &sha(c)).unwrap();
        // Shorter than the version: the source's error.
        r.source_mut().now = Some(Content::new(3, 10));
        assert_eq!(r.read(0, 20, &sha(c)), Err(Problem::Source(Short)));
    }
}
