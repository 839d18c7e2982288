//! Hand restores with the standard tools, exactly as FORMAT.md documents
//! them. A missing tool is skipped with a note, not a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::testdata::{random_bytes, wal_like};
use crate::{encode_to_vec, format};

fn have(tool: &str) -> bool {
    let found = Command::new("which")
        .arg(tool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        println!("note: `{tool}` not found on this machine; skipping its hand-restore check");
    }
    found
}

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(bytes: &[u8]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pgark-codec-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs a shell command line with `$1` set to `file`.
fn sh(script: &str, file: &Path) -> Output {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("one byte", vec![0x42]),
        ("wal 3 MiB", wal_like(3 << 20, 31)),
        ("random 300 KiB", random_bytes(300 << 10, 32)),
    ]
}

fn specs_of(codec: Compression) -> Vec<CompressionSpec> {
    match codec.level_range() {
        Some((lo, _)) => vec![
            CompressionSpec::new(codec, None).unwrap(),
            CompressionSpec::new(codec, Some(lo)).unwrap(),
        ],
        None => vec![CompressionSpec::new(codec, None).unwrap()],
    }
}

/// `zstd -d -c OBJECT` restores a stored zstd object, reading from a file
/// and from a pipe.
#[test]
fn zstd_cli_decodes_stored_objects() {
    if !have("zstd") {
        return;
    }
    for spec in specs_of(Compression::Zstd) {
        for (name, data) in samples() {
            let (stored, _) = encode_to_vec(&data, spec).unwrap();
            let file = TempFile::with(&stored);
            let out = sh(r#"zstd -q -d -c "$1""#, file.path());
            assert!(out.stdout == data, "zstd -d {spec} {name}: output differs");
            let out = sh(r#"zstd -q -d -c < "$1""#, file.path());
            assert!(out.stdout == data, "zstd -d (pipe) {spec} {name}: output differs");
        }
    }
}

/// `lz4 -d -c OBJECT` restores a stored lz4 object.
#[test]
fn lz4_cli_decodes_stored_objects() {
    if !have("lz4") {
        return;
    }
    for (name, data) in samples() {
        let (stored, _) =
            encode_to_vec(&data, CompressionSpec::new(Compression::Lz4, None).unwrap()).unwrap();
        let file = TempFile::with(&stored);
        let out = sh(r#"lz4 -q -d -c "$1""#, file.path());
        assert!(out.stdout == data, "lz4 -d {name}: output differs");
        let out = sh(r#"lz4 -q -d -c < "$1""#, file.path());
        assert!(out.stdout == data, "lz4 -d (pipe) {name}: output differs");
    }
}

/// `tail -c +17 OBJECT | head -c -52 | xz -d` restores a stored lzma
/// object; without `xz -d` the same recipe restores a `none` object.
#[test]
fn tail_head_recipe_restores_lzma_and_none() {
    let have_xz = have("xz");
    for codec in [Compression::Lzma, Compression::None] {
        if codec == Compression::Lzma && !have_xz {
            continue;
        }
        for spec in specs_of(codec) {
            for (name, data) in samples() {
                let (stored, _) = encode_to_vec(&data, spec).unwrap();
                let file = TempFile::with(&stored);
                let script = match codec {
                    Compression::Lzma => r#"tail -c +17 "$1" | head -c -52 | xz -d"#,
                    _ => r#"tail -c +17 "$1" | head -c -52"#,
                };
                let out = sh(script, file.path());
                assert!(out.stdout == data, "{script} {spec} {name}: output differs");
            }
        }
    }
}

/// The documented recipes for reading the codec byte and the trailer's
/// checksum and length agree with the summary.
#[test]
fn header_and_trailer_recipes() {
    let data = wal_like(123_457, 33);
    let (stored, summary) = encode_to_vec(&data, CompressionSpec::default()).unwrap();
    let file = TempFile::with(&stored);
    let sha = sh(r#"tail -c 32 "$1" | od -An -tx1 | tr -d ' \n'"#, file.path());
    assert_eq!(String::from_utf8(sha.stdout).unwrap(), summary.digest.hex());
    let len = sh(
        r#"tail -c 40 "$1" | head -c 8 | od -An -tu8 --endian=little | tr -d ' \n'"#,
        file.path(),
    );
    assert_eq!(String::from_utf8(len.stdout).unwrap(), "123457");
    for (id, codec) in Compression::ALL.into_iter().enumerate() {
        let (stored, _) = encode_to_vec(b"x", CompressionSpec::new(codec, None).unwrap()).unwrap();
        let file = TempFile::with(&stored);
        let out = sh(r#"od -An -tu1 -j14 -N1 "$1" | tr -d ' \n'"#, file.path());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), id.to_string(), "{codec}");
    }
    if have("sha256sum") {
        let restored = TempFile::with(&data);
        let sum = sh(r#"sha256sum < "$1" | cut -d' ' -f1"#, restored.path());
        assert_eq!(
            String::from_utf8(sum.stdout).unwrap().trim(),
            summary.digest.hex()
        );
    }
}

/// Bodies written by the standard tools are valid bodies: wrapped in a
/// header and trailer, this crate's reader decodes them.
#[test]
fn bodies_from_the_standard_tools_decode() {
    let data = wal_like(2 << 20, 34);
    let raw = TempFile::with(&data);
    let tools: [(Compression, &str, &str); 4] = [
        (Compression::Zstd, "zstd", r#"zstd -q -c -19 < "$1""#),
        (Compression::Zstd, "zstd", r#"zstd -q -c --no-check -1 < "$1""#),
        (Compression::Lz4, "lz4", r#"lz4 -q -c < "$1""#),
        (Compression::Lzma, "xz", r#"xz -c -3 < "$1""#),
    ];
    for (codec, tool, script) in tools {
        if !have(tool) {
            continue;
        }
        let body = sh(script, raw.path()).stdout;
        let stored = [
            &format::encode_header(codec)[..],
            &body,
            &format::encode_trailer(data.len() as u64, &sha256(&data)),
        ]
        .concat();
        let (out, summary) = decode_to_vec(&stored).unwrap_or_else(|e| panic!("{script}: {e}"));
        assert!(out == data, "{script}");
        assert_eq!(summary.stored_len, stored.len() as u64);
    }
}
