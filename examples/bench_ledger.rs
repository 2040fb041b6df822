//! Bench helper: fill a ledger with COUNT `done` entries spread over the given folders, each
//! with a real file whose identity (device, inode, size, mtime, ctime) and SHA-256 it records,
//! as the agent records what it attached (so start-up, rescan and prune see them as handled, as
//! they would after months of use).
//!
//! Usage: `cargo run --release --example bench_ledger -- STATE_DIR COUNT ITEM_ID FOLDER...`
//! (mapping names are the folders' file names, the config's default).

use outbox::files::mtime_ns;
use outbox::ledger::{EntryState, ItemKind, Ledger, LedgerEntry, NewEntry, Target};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err("usage: bench_ledger STATE_DIR COUNT ITEM_ID FOLDER...".into());
    }
    let state_dir = PathBuf::from(&args[0]);
    let count: usize = args[1].parse()?;
    let item_id = args[2].clone();
    let folders: Vec<PathBuf> = args[3..].iter().map(PathBuf::from).collect();
    let ledger = Ledger::open(&state_dir)?;
    let now = time::OffsetDateTime::now_utc();
    for i in 0..count {
        let folder = &folders[i % folders.len()];
        std::fs::create_dir_all(folder)?;
        let folder = folder.canonicalize()?;
        let name = format!("old-{i:06}.txt");
        let path = folder.join(&name);
        let bytes = format!("entry {i}\n");
        std::fs::write(&path, &bytes)?;
        let meta = std::fs::metadata(&path)?;
        let stat = outbox::watch::file_stat(&path, &meta).ok_or("the file just written is gone")?;
        let mapping = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut e = LedgerEntry::new(
            NewEntry {
                mapping,
                path,
                name,
                target: Target {
                    user: "me".into(),
                    kind: ItemKind::Message,
                    item_id: item_id.clone(),
                },
                size: meta.len(),
                mtime_ns: mtime_ns(&meta).unwrap_or(0),
            },
            EntryState::Done,
            now,
        );
        // What the agent records of a file it attached: its bytes' hash and its identity.
        e.sha256 = Some(hex::encode(Sha256::digest(bytes.as_bytes())));
        e.dev = stat.dev;
        e.ino = stat.ino;
        e.ctime_ns = stat.ctime_ns;
        e.bound = true;
        e.attachment_id = Some(format!("AAMk-bench-{i}"));
        e.bytes_sent = e.size;
        ledger.insert_new(e)?;
    }
    println!("entries: {}", ledger.count());
    ledger.close()?;
    Ok(())
}
