//! Running the built `pgark` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The pgark binary cargo built for these tests.
pub fn pgark_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pgark"))
}

/// A `pgark` command with no PGARK_* settings inherited from the caller.
pub fn pgark() -> Command {
    let mut cmd = Command::new(pgark_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("PGARK_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs `pgark --repo <repo> <args>`.
pub fn run(repo: &Path, args: &[&str]) -> Output {
    pgark()
        .arg("--repo")
        .arg(repo)
        .args(args)
        .output()
        .expect("pgark runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing stderr when it differs.
#[track_caller]
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit status; stderr:\n{}",
        stderr(out)
    );
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

/// Committed real WAL files of one kind from fixtures/wal (sorted):
/// 16 MiB segments, or the `.history` / `.backup` files.
pub fn fixture_files(dir: &str, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
        .expect("fixture directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .collect();
    v.sort();
    v
}

pub fn is_segment_name(n: &str) -> bool {
    n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit())
}

/// All files below `root`, relative, sorted.
pub fn files_below(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
