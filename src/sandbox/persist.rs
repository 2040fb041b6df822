//! The sandbox's world survives its own restarts, as Graph does: every change to items,
//! attachments, upload sessions (with the bytes committed so far) and minted tokens is appended
//! as one JSON line to `DATA_DIR/state.journal`; a sandbox started on the same data dir replays
//! it. Faults, stats and pending device-code sign-ins are not kept (they start from defaults).
//!
//! Why a journal and not a state file: the burst benchmark sends thousands of small POSTs a
//! second, and rewriting a whole snapshot per request would cost O(state) each; one `write(2)` of
//! a short line costs microseconds. Crash safety: each record is one `write` on an `O_APPEND`
//! file, so a `kill -9` leaves whole lines (the page cache outlives the process); a torn last
//! line (power loss) is skipped on replay. At start the replayed state is written back as a
//! compact journal (temp file, fsync, rename), so the file does not grow across restarts.
//! Part files of sessions are cut back to the journaled offset on replay: bytes of a PUT that
//! was never acknowledged are not "received", exactly as for a dropped connection.

use super::state::{Attachment, Inner, Item, Kind, RefreshInfo, Session, TokenInfo};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

pub const JOURNAL: &str = "state.journal";

/// One change to the world.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// An item created or changed (upsert; its attachments are kept).
    Item(ItemRec),
    ItemDeleted {
        id: String,
    },
    Attached {
        item: String,
        att: AttRec,
    },
    AttDeleted {
        item: String,
        att: String,
    },
    /// The admin `corrupt` call changed stored bytes.
    AttChanged {
        item: String,
        att: String,
        size: u64,
        sha256: String,
    },
    Session(SessionRec),
    /// Bytes `0..next` of the session are committed in its part file.
    SessionProgress {
        id: String,
        next: u64,
    },
    SessionExpires {
        id: String,
        expires_ms: i64,
    },
    SessionGone {
        id: String,
    },
    /// The final PUT: the session became attachment `att` of `item`.
    Completed {
        session: String,
        item: String,
        att: AttRec,
    },
    Token {
        token: String,
        user: Option<String>,
        expires_ms: Option<i64>,
    },
    Refresh {
        token: String,
        user: String,
        client_id: String,
        scope: String,
    },
    RefreshGone {
        token: String,
    },
    /// Admin revocation of minted tokens (of `user`, or of everyone).
    Revoked {
        user: Option<String>,
    },
    /// A file or folder on a OneDrive created, or replaced (upsert by id).
    DriveItem(super::drive::DriveItem),
    /// A drive upload session completed as drive item `item` (its bytes moved to its blob).
    DriveCompleted {
        session: String,
        item: super::drive::DriveItem,
    },
    DriveItemDeleted {
        id: String,
    },
    /// A sharing link made by `createLink`.
    Link(super::drive::Link),
    /// `POST …/messages/{item}/send` answered 202: the draft moves to Sent Items at `due_ms`
    /// (Unix ms). A second accepted send in the window adds a second copy.
    SendAccepted {
        item: String,
        due_ms: i64,
    },
    /// A sent copy of draft `from` appeared in Sent Items with these attachments (the draft's
    /// `ItemDeleted` follows once its last copy is made).
    SentCopy {
        from: String,
        item: ItemRec,
        atts: Vec<AttRec>,
    },
}

#[derive(Serialize, Deserialize)]
pub struct ItemRec {
    pub id: String,
    pub kind: Kind,
    pub user: String,
    pub subject: String,
    pub is_draft: bool,
    pub created_ns: i64,
    /// Absent in journals written before messages could be created and sent.
    #[serde(default)]
    pub mail: super::mail::MailProps,
}

impl ItemRec {
    pub fn of(it: &Item) -> ItemRec {
        ItemRec {
            id: it.id.clone(),
            kind: it.kind,
            user: it.user.clone(),
            subject: it.subject.clone(),
            is_draft: it.is_draft,
            created_ns: unix_ns(it.created),
            mail: it.mail.clone(),
        }
    }

    pub fn into_item(self, attachments: Vec<Attachment>) -> Item {
        Item {
            id: self.id,
            kind: self.kind,
            user: self.user,
            subject: self.subject,
            is_draft: self.is_draft,
            created: from_ns(self.created_ns),
            attachments,
            mail: self.mail,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct AttRec {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub is_inline: bool,
    pub content_id: Option<String>,
    pub modified_ns: i64,
}

impl AttRec {
    pub fn of(a: &Attachment) -> AttRec {
        AttRec {
            id: a.id.clone(),
            name: a.name.clone(),
            content_type: a.content_type.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
            is_inline: a.is_inline,
            content_id: a.content_id.clone(),
            modified_ns: unix_ns(a.modified),
        }
    }

    pub fn into_attachment(self) -> Attachment {
        Attachment {
            id: self.id,
            name: self.name,
            content_type: self.content_type,
            size: self.size,
            sha256: self.sha256,
            is_inline: self.is_inline,
            content_id: self.content_id,
            modified: from_ns(self.modified_ns),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct SessionRec {
    pub id: String,
    pub authtoken: String,
    pub item_id: String,
    pub user: String,
    pub kind: Kind,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub is_inline: bool,
    pub content_id: Option<String>,
    pub next: u64,
    pub expires_ms: i64,
    /// A OneDrive upload's target (absent in journals from before drive uploads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive: Option<super::drive::DriveTarget>,
}

impl SessionRec {
    pub fn of(s: &Session) -> SessionRec {
        SessionRec {
            id: s.id.clone(),
            authtoken: s.authtoken.clone(),
            item_id: s.item_id.clone(),
            user: s.user.clone(),
            kind: s.kind,
            name: s.name.clone(),
            size: s.size,
            content_type: s.content_type.clone(),
            is_inline: s.is_inline,
            content_id: s.content_id.clone(),
            next: s.next,
            expires_ms: instant_to_ms(s.expires),
            drive: s.drive.clone(),
        }
    }
}

/// Create (or tighten) `dir` owner-only (0700): the data dir holds the attachments' bytes and
/// the tokens the sandbox issued.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // A link (a neighbour's, in a shared /tmp) would have the sandbox tighten its target
        // and write its files there, over any of the same name; another user's folder is
        // theirs to read. Either is refused.
        let meta = std::fs::symlink_metadata(dir)?;
        let refuse = |why: String| {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "the sandbox's data dir {} is not used: {why}; it holds attachments and tokens: name a real folder of yours (or leave --data-dir out for a fresh private one)",
                    dir.display()
                ),
            ))
        };
        if meta.file_type().is_symlink() {
            return refuse("it is a symbolic link".into());
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return refuse(format!("it belongs to another user (uid {})", meta.uid()));
        }
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Open options for a new file of the data dir: owner-only (0600).
pub fn private_file() -> std::fs::OpenOptions {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts
}

/// Write `bytes` to a new owner-only file (an attachment's blob).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    private_file().open(path)?.write_all(bytes)
}

pub fn unix_ns(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub fn from_ns(ns: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ns as i128).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Wall-clock milliseconds of a monotonic deadline (Instants do not survive a process).
pub fn instant_to_ms(i: Instant) -> i64 {
    let now = Instant::now();
    let base = now_ms();
    if i >= now {
        base.saturating_add(i.duration_since(now).as_millis().min(i64::MAX as u128) as i64)
    } else {
        base.saturating_sub(now.duration_since(i).as_millis().min(i64::MAX as u128) as i64)
    }
}

fn ms_to_instant(ms: i64) -> Instant {
    let now = Instant::now();
    let delta = ms.saturating_sub(now_ms());
    if delta >= 0 {
        now.checked_add(Duration::from_millis(delta as u64))
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400))
    } else {
        now.checked_sub(Duration::from_millis(delta.unsigned_abs()))
            .unwrap_or(now)
    }
}

/// The open journal; appends never block on fsync (see the module doc).
pub struct Journal {
    file: std::fs::File,
    path: PathBuf,
    warned: bool,
}

impl Journal {
    pub fn append(&mut self, rec: &Record) {
        let mut line = match serde_json::to_vec(rec) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        // One write call per record: whole lines even under kill -9.
        if let Err(e) = self.file.write_all(&line) {
            if !self.warned {
                tracing::warn!(path = ?self.path, "sandbox cannot write its journal ({e}); state after a restart will be incomplete");
                self.warned = true;
            }
        }
    }
}

/// Apply one record to the world (replay).
fn apply(g: &mut Inner, rec: Record) {
    match rec {
        Record::Item(r) => {
            let attachments = g
                .items
                .remove(&r.id)
                .map(|i| i.attachments)
                .unwrap_or_default();
            g.items.insert(r.id.clone(), r.into_item(attachments));
        }
        Record::ItemDeleted { id } => {
            g.items.remove(&id);
            g.pending_sends.retain(|p| p.item != id);
        }
        Record::SendAccepted { item, due_ms } => {
            super::mail::note_accepted(g, &item, due_ms);
        }
        Record::SentCopy { from, item, atts } => {
            super::mail::note_copied(g, &from);
            let atts = atts.into_iter().map(AttRec::into_attachment).collect();
            g.items.insert(item.id.clone(), item.into_item(atts));
        }
        Record::Attached { item, att } => {
            if let Some(it) = g.items.get_mut(&item) {
                it.attachments.push(att.into_attachment());
            }
        }
        Record::AttDeleted { item, att } => {
            if let Some(it) = g.items.get_mut(&item) {
                it.attachments.retain(|a| a.id != att);
            }
        }
        Record::AttChanged {
            item,
            att,
            size,
            sha256,
        } => {
            if let Some(a) = g
                .items
                .get_mut(&item)
                .and_then(|it| it.attachments.iter_mut().find(|a| a.id == att))
            {
                a.size = size;
                a.sha256 = sha256;
            }
        }
        Record::Session(r) => {
            g.issued.upload_authtokens.push(r.authtoken.clone());
            let expires_at = from_ns(r.expires_ms.saturating_mul(1_000_000));
            g.sessions.insert(
                r.id.clone(),
                Session {
                    id: r.id,
                    authtoken: r.authtoken,
                    item_id: r.item_id,
                    user: r.user,
                    kind: r.kind,
                    name: r.name,
                    size: r.size,
                    content_type: r.content_type,
                    is_inline: r.is_inline,
                    content_id: r.content_id,
                    next: r.next,
                    expires_at,
                    expires: ms_to_instant(r.expires_ms),
                    hasher: sha2::Sha256::new(),
                    drive: r.drive,
                    lock: Default::default(),
                },
            );
        }
        Record::SessionProgress { id, next } => {
            if let Some(s) = g.sessions.get_mut(&id) {
                s.next = next;
            }
        }
        Record::SessionExpires { id, expires_ms } => {
            if let Some(s) = g.sessions.get_mut(&id) {
                s.expires = ms_to_instant(expires_ms);
            }
        }
        Record::SessionGone { id } => {
            g.sessions.remove(&id);
        }
        Record::Completed { session, item, att } => {
            g.sessions.remove(&session);
            if let Some(it) = g.items.get_mut(&item) {
                it.attachments.push(att.into_attachment());
            }
        }
        Record::DriveItem(it) => {
            g.drive_items.insert(it.id.clone(), it);
        }
        Record::DriveCompleted { session, item } => {
            g.sessions.remove(&session);
            g.drive_items.insert(item.id.clone(), item);
        }
        Record::DriveItemDeleted { id } => {
            g.drive_items.remove(&id);
            g.links.retain(|l| l.item != id);
        }
        Record::Link(l) => g.links.push(l),
        Record::Token {
            token,
            user,
            expires_ms,
        } => {
            g.issued.access_tokens.push(token.clone());
            g.tokens.insert(
                token,
                TokenInfo {
                    user,
                    expires: expires_ms.map(ms_to_instant),
                    minted: true,
                },
            );
        }
        Record::Refresh {
            token,
            user,
            client_id,
            scope,
        } => {
            g.issued.refresh_tokens.push(token.clone());
            g.refresh_tokens.insert(
                token,
                RefreshInfo {
                    user,
                    client_id,
                    scope,
                },
            );
        }
        Record::RefreshGone { token } => {
            g.refresh_tokens.remove(&token);
        }
        Record::Revoked { user } => {
            g.revoke(user.as_deref());
        }
    }
}

/// The records that rebuild `g` from nothing.
fn snapshot(g: &Inner) -> Vec<Record> {
    let mut out = Vec::new();
    let mut items: Vec<&Item> = g.items.values().collect();
    items.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    for it in items {
        out.push(Record::Item(ItemRec::of(it)));
        for a in &it.attachments {
            out.push(Record::Attached {
                item: it.id.clone(),
                att: AttRec::of(a),
            });
        }
    }
    for p in &g.pending_sends {
        for _ in 0..p.copies {
            out.push(Record::SendAccepted {
                item: p.item.clone(),
                due_ms: p.due_ms,
            });
        }
    }
    let mut drive: Vec<&super::drive::DriveItem> = g.drive_items.values().collect();
    drive.sort_by(|a, b| a.created_ns.cmp(&b.created_ns).then(a.id.cmp(&b.id)));
    out.extend(drive.into_iter().cloned().map(Record::DriveItem));
    out.extend(g.links.iter().cloned().map(Record::Link));
    for s in g.sessions.values() {
        out.push(Record::Session(SessionRec::of(s)));
    }
    for (t, info) in &g.tokens {
        if info.minted {
            out.push(Record::Token {
                token: t.clone(),
                user: info.user.clone(),
                expires_ms: info.expires.map(instant_to_ms),
            });
        }
    }
    for (t, r) in &g.refresh_tokens {
        out.push(Record::Refresh {
            token: t.clone(),
            user: r.user.clone(),
            client_id: r.client_id.clone(),
            scope: r.scope.clone(),
        });
    }
    out
}

/// Replay `DATA_DIR/state.journal` (if any) into `g`, repair session part files, write the
/// compacted journal atomically and open it for appending.
pub fn open(
    data_dir: &Path,
    g: &mut Inner,
    session_path: impl Fn(&str) -> PathBuf,
) -> anyhow::Result<()> {
    let path = data_dir.join(JOURNAL);
    let mut replayed = 0usize;
    let mut skipped = 0usize;
    match std::fs::File::open(&path) {
        Ok(f) => {
            for line in std::io::BufReader::new(f).split(b'\n') {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Record>(&line) {
                    Ok(r) => {
                        apply(g, r);
                        replayed += 1;
                    }
                    // A torn last line after a power loss; nothing else writes this file.
                    Err(_) => skipped += 1,
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
    repair_sessions(g, &session_path);
    if replayed > 0 {
        tracing::info!(
            records = replayed,
            skipped,
            items = g.items.len(),
            sessions = g.sessions.len(),
            "sandbox state restored from {}",
            path.display()
        );
    }
    // Compact: the current state as a fresh journal, swapped in atomically.
    let tmp = data_dir.join(format!("{JOURNAL}.tmp"));
    {
        // 0600: the journal holds the tokens the sandbox issued.
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut w = std::io::BufWriter::new(opts.open(&tmp)?);
        for r in snapshot(g) {
            serde_json::to_writer(&mut w, &r)?;
            w.write_all(b"\n")?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = std::fs::File::open(data_dir) {
        let _ = d.sync_all();
    }
    let file = std::fs::OpenOptions::new().append(true).open(&path)?;
    g.journal = Some(Journal {
        file,
        path,
        warned: false,
    });
    Ok(())
}

/// Sessions whose part file is gone are dropped (a crash between the final PUT's rename and its
/// journal line: the attachment was never recorded, so the client uploads again); expired ones
/// are dropped with their bytes; the others are cut back to their committed offset and their
/// running SHA-256 recomputed from the part file.
fn repair_sessions(g: &mut Inner, session_path: &impl Fn(&str) -> PathBuf) {
    let now = Instant::now();
    let ids: Vec<String> = g.sessions.keys().cloned().collect();
    for id in ids {
        let part = session_path(&id);
        let Some(s) = g.sessions.get_mut(&id) else {
            continue;
        };
        if now >= s.expires {
            let _ = std::fs::remove_file(&part);
            g.sessions.remove(&id);
            continue;
        }
        match rehash(&part, s.next) {
            Ok((next, hasher)) => {
                s.next = next;
                s.hasher = hasher;
            }
            Err(_) => {
                g.sessions.remove(&id);
            }
        }
    }
}

/// Truncate `part` to `next` bytes (fewer if fewer reached the disk) and hash them.
fn rehash(part: &Path, next: u64) -> std::io::Result<(u64, sha2::Sha256)> {
    use std::io::Read;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)?;
    let len = f.metadata()?.len();
    let keep = len.min(next);
    f.set_len(keep)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut (&f).take(keep), &mut hasher)?;
    Ok((keep, hasher))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item_line(id: &str) -> String {
        let r = Record::Item(ItemRec {
            id: id.into(),
            kind: Kind::Message,
            user: "me@sandbox.test".into(),
            subject: "s".into(),
            is_draft: true,
            created_ns: 0,
            mail: Default::default(),
        });
        serde_json::to_string(&r).unwrap_or_default()
    }

    #[test]
    fn replay_skips_a_torn_last_line_cuts_parts_back_and_compacts() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        std::fs::create_dir_all(d.join("sessions")).unwrap_or_else(|e| panic!("{e}"));
        let part = d.join("sessions").join("s1.part");
        // 10 bytes on disk, 4 acknowledged: the other 6 were a PUT never answered.
        std::fs::write(&part, b"abcdefghij").unwrap_or_else(|e| panic!("{e}"));
        let session = Record::Session(SessionRec {
            id: "s1".into(),
            authtoken: "t".into(),
            item_id: "i1".into(),
            user: "me@sandbox.test".into(),
            kind: Kind::Message,
            name: "n.bin".into(),
            size: 100,
            content_type: "application/octet-stream".into(),
            is_inline: false,
            content_id: None,
            next: 0,
            expires_ms: now_ms() + 600_000,
            drive: None,
        });
        let progress = Record::SessionProgress {
            id: "s1".into(),
            next: 4,
        };
        let text = format!(
            "{}\n{}\n{}\n{}\n{}",
            item_line("i1"),
            item_line("i2"),
            serde_json::to_string(&session).unwrap_or_default(),
            serde_json::to_string(&progress).unwrap_or_default(),
            r#"{"op":"item_deleted","id":"i"#
        );
        std::fs::write(d.join(JOURNAL), text).unwrap_or_else(|e| panic!("{e}"));
        let mut g = Inner::default();
        let p = part.clone();
        open(d, &mut g, move |_| p.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.items.len(), 2);
        let s = &g.sessions["s1"];
        assert_eq!(s.next, 4);
        assert_eq!(std::fs::read(&part).unwrap_or_default(), b"abcd");
        assert_eq!(
            hex::encode(s.hasher.clone().finalize()),
            hex::encode(sha2::Sha256::digest(b"abcd"))
        );
        // Compacted: whole lines only, and the same world when read again.
        let again = std::fs::read_to_string(d.join(JOURNAL)).unwrap_or_default();
        assert!(again
            .lines()
            .all(|l| serde_json::from_str::<Record>(l).is_ok()));
        g.log(Record::ItemDeleted { id: "i2".into() });
        // A restarted sandbox: the old one's journal is closed (Windows refuses the compaction's
        // rename over a file still open).
        drop(g);
        let mut h = Inner::default();
        open(d, &mut h, move |_| part.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.items.len(), 1);
        assert_eq!(h.sessions["s1"].next, 4);
    }
}
