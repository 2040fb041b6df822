//! Desktop commands end to end: demo, init, check, items, verify, service. Real binary, real
//! sandbox on loopback, temp dirs.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

#[test]
fn demo_exit_after_three_attaches_them_headless() {
    let cwd = tempfile::tempdir().unwrap();
    let out = run_bounded(
        Command::new(bin())
            .args(["demo", "--exit-after", "3"])
            .current_dir(cwd.path())
            .env_remove("OUTBOX_CONFIG"),
        Duration::from_secs(150),
    );
    let so = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {so}\nstderr: {}",
        stderr(&out)
    );
    assert_eq!(so.matches("  attached  ").count(), 3, "{so}");
    assert_eq!(so.matches("same bytes as the file").count(), 3, "{so}");
    let folder = cwd.path().join("outbox-demo");
    let files: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
    assert_eq!(files.len(), 3, "only the samples are in the watched folder");
    assert!(
        folder
            .join("Quarterly report 📊 (large).bin")
            .metadata()
            .unwrap()
            .len()
            > 4 * MIB
    );
}
