#![allow(clippy::expect_used, clippy::unwrap_used)]

use super::*;
use std::os::unix::fs::symlink;

fn tree() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("drop");
    std::fs::create_dir_all(root.join("sub")).expect("mkdir");
    std::fs::write(root.join("a.txt"), b"hello").expect("write");
    std::fs::write(root.join("sub/b.txt"), b"world!").expect("write");
    std::fs::write(t.path().join("secret.txt"), b"private").expect("write");
    (t, root)
}

#[test]
fn opens_plain_files_and_reads_no_further_than_the_size_at_open() {
    let (_t, root) = tree();
    let f = SafeFile::open_beneath(&root, Path::new("sub/b.txt"), false).expect("open");
    assert_eq!(f.len(), 6);
    std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("sub/b.txt"))
        .and_then(|mut w| std::io::Write::write_all(&mut w, b" and more"))
        .expect("append");
    let mut buf = [0u8; 64];
    assert_eq!(f.read_at(&mut buf, 0).expect("read"), 6);
    assert_eq!(f.read_at(&mut buf, 6).expect("read"), 0);
    assert!(f.read_exact_at(&mut buf[..7], 0).is_err());
    let abs = SafeFile::open_beneath(&root, &root.join("a.txt"), false).expect("absolute");
    assert_eq!(
        abs.sha256().expect("hash"),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(abs.matches(&Expected::exact(abs.identity())));
    assert!(!abs.matches(&Expected::settled(4, None)));
}

#[test]
fn refuses_links_anywhere_on_the_path_unless_they_stay_inside() {
    let (t, root) = tree();
    symlink(t.path(), root.join("dirlink")).expect("symlink");
    symlink(t.path().join("secret.txt"), root.join("filelink")).expect("symlink");
    symlink("a.txt", root.join("inside")).expect("symlink");
    for rel in ["dirlink/secret.txt", "filelink", "inside", "../secret.txt"] {
        let e = SafeFile::open_beneath(&root, Path::new(rel), false).expect_err(rel);
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{rel}: {e}");
    }
    // Followed only inside the folder.
    let f = SafeFile::open_beneath(&root, Path::new("inside"), true).expect("inside link");
    assert_eq!(f.len(), 5);
    for rel in ["dirlink/secret.txt", "filelink"] {
        assert!(
            SafeFile::open_beneath(&root, Path::new(rel), true).is_err(),
            "{rel}"
        );
    }
}

#[test]
fn the_fallback_walk_refuses_the_same_links() {
    let (t, root) = tree();
    symlink(t.path(), root.join("dirlink")).expect("symlink");
    symlink(t.path().join("secret.txt"), root.join("filelink")).expect("symlink");
    let rfd = rustix::fs::openat(
        rustix::fs::CWD,
        &root,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .expect("root");
    let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW;
    assert!(unix::walk(rfd.as_fd(), Path::new("sub/b.txt"), flags).is_ok());
    for rel in ["dirlink/secret.txt", "filelink"] {
        assert_eq!(
            unix::walk(rfd.as_fd(), Path::new(rel), flags).err(),
            Some(if rel == "filelink" {
                rustix::io::Errno::LOOP
            } else {
                rustix::io::Errno::NOTDIR
            }),
            "{rel}"
        );
    }
    assert!(unix::walk(rfd.as_fd(), Path::new("../secret.txt"), flags).is_err());
    use rustix::fd::AsFd as _;
}

#[test]
fn refuses_what_is_not_a_regular_file() {
    let (_t, root) = tree();
    let e = SafeFile::open_beneath(&root, Path::new("sub"), false).expect_err("dir");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let fifo = root.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    // O_NONBLOCK: opening a FIFO with no writer does not hang.
    let e = SafeFile::open_beneath(&root, Path::new("fifo"), false).expect_err("fifo");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}

#[test]
fn moves_never_clobber_and_never_write_through_a_link() {
    let (t, root) = tree();
    let victim = t.path().join("bashrc");
    std::fs::write(&victim, b"mine").expect("write");
    std::fs::create_dir(root.join("failed")).expect("mkdir");
    std::fs::write(root.join("failed/a.txt"), b"older").expect("write");
    symlink(&victim, root.join("failed/a (1).txt.reason.txt")).expect("symlink");
    let id = SafeFile::open_beneath(&root, Path::new("a.txt"), false)
        .expect("open")
        .identity();
    let moved = move_no_clobber(
        &root,
        Path::new("a.txt"),
        false,
        &Expected::exact(id),
        &root.join("failed"),
        Some("why"),
    )
    .expect("move");
    assert_eq!(moved, root.join("failed/a (2).txt"));
    assert_eq!(std::fs::read(&victim).expect("victim"), b"mine");
    assert_eq!(
        std::fs::read(root.join("failed/a (2).txt.reason.txt")).expect("reason"),
        b"why"
    );
    assert_eq!(
        std::fs::read(root.join("failed/a.txt")).expect("old"),
        b"older"
    );
    assert!(!root.join("a.txt").exists());
    assert!(!root.join("failed/a (1).txt").exists());
}

/// A name near the filesystem's 255-byte limit still goes to `failed_dir` with its reason
/// file beside it (shortened, its extension kept): a neighbour's 250-byte name stayed in the
/// folder ("File name too long").
#[test]
fn a_name_near_the_limit_is_moved_shortened_with_its_reason_file() {
    let (_t, root) = tree();
    std::fs::create_dir(root.join("failed")).expect("mkdir");
    for (name, taken) in [
        (format!("{}.pdf", "é".repeat(123)), false),
        (format!("{}.pdf", "x".repeat(251)), true),
        ("y".repeat(255), false),
    ] {
        std::fs::write(root.join(&name), b"bytes").expect("write");
        if taken {
            let short = format!("{}.pdf", "x".repeat(255 - 4 - 11));
            std::fs::write(root.join("failed").join(short), b"older").expect("write");
        }
        let id = SafeFile::open_beneath(&root, Path::new(&name), false)
            .expect("open")
            .identity();
        let moved = move_no_clobber(
            &root,
            Path::new(&name),
            false,
            &Expected::exact(id),
            &root.join("failed"),
            Some("why"),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = moved.file_name().expect("name").to_str().expect("utf-8");
        assert!(got.len() + 11 <= 255, "{got}");
        assert_eq!(got.ends_with(".pdf"), name.ends_with(".pdf"), "{got}");
        assert_eq!(got.ends_with(" (1).pdf"), taken, "{got}");
        assert_eq!(std::fs::read(&moved).expect("moved"), b"bytes");
        let reason = root.join("failed").join(format!("{got}.reason.txt"));
        assert_eq!(std::fs::read(reason).expect("reason"), b"why");
        assert!(!root.join(&name).exists());
    }
}

#[test]
fn a_destination_that_is_a_link_is_refused() {
    let (t, root) = tree();
    symlink(t.path(), root.join("sent")).expect("symlink");
    let e = move_no_clobber(
        &root,
        Path::new("a.txt"),
        false,
        &Expected::settled(5, None),
        &root.join("sent"),
        None,
    )
    .expect_err("link");
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    assert!(root.join("a.txt").exists());
}

#[test]
fn deletes_only_the_file_that_was_sent_and_never_through_a_link() {
    let (t, root) = tree();
    let id = SafeFile::open_beneath(&root, Path::new("sub/b.txt"), false)
        .expect("open")
        .identity();
    // The folder is swapped for a link to a place holding a file of the same name.
    std::fs::rename(root.join("sub"), t.path().join("moved")).expect("rename");
    std::fs::create_dir(t.path().join("elsewhere")).expect("mkdir");
    std::fs::write(t.path().join("elsewhere/b.txt"), b"world!").expect("write");
    symlink(t.path().join("elsewhere"), root.join("sub")).expect("symlink");
    let e = remove(&root, Path::new("sub/b.txt"), false, &Expected::exact(id)).expect_err("link");
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    assert!(t.path().join("elsewhere/b.txt").exists());
    // A different file under the same name is left alone.
    std::fs::remove_file(root.join("sub")).expect("unlink");
    std::fs::create_dir(root.join("sub")).expect("mkdir");
    std::fs::write(root.join("sub/b.txt"), b"world!").expect("write");
    assert!(remove(&root, Path::new("sub/b.txt"), false, &Expected::exact(id)).is_err());
    let now = SafeFile::open_beneath(&root, Path::new("sub/b.txt"), false)
        .expect("open")
        .identity();
    remove(&root, Path::new("sub/b.txt"), false, &Expected::exact(now)).expect("remove");
    assert!(!root.join("sub/b.txt").exists());
}
