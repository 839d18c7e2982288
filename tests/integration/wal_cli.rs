//! wal-push / wal-fetch from the command line against real WAL fixtures:
//! refusals, duplicates, damaged objects, exit codes. No server needed.

use crate::common::*;
use std::path::{Path, PathBuf};

fn segments() -> Vec<PathBuf> {
    fixture_files("wal", is_segment_name)
}

/// Copies `src` into `dir` under `name`.
fn copy_as(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dest = dir.join(name);
    std::fs::copy(src, &dest).unwrap();
    dest
}

fn stored_key(name: &str) -> String {
    format!("wal/{}/{name}", &name[..16])
}

#[test]
fn push_then_fetch_round_trips_every_fixture_with_every_codec() {
    let mut files = segments();
    files.extend(fixture_files("wal", |n| {
        n.ends_with(".history") || n.ends_with(".backup") || n.ends_with(".partial")
    }));
    assert!(files.len() >= 4, "fixtures missing: {files:?}");
    for codec in ["zstd", "lz4", "lzma", "none"] {
        let repo = tempfile::tempdir().unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        for f in &files {
            let out = run(
                repo.path(),
                &["--compression", codec, "wal-push", f.to_str().unwrap()],
            );
            assert_code(&out, 0);
            let name = f.file_name().unwrap().to_str().unwrap();
            let dest = out_dir.path().join("RECOVERYXLOG");
            let out = run(repo.path(), &["wal-fetch", name, dest.to_str().unwrap()]);
            assert_code(&out, 0);
            assert!(
                std::fs::read(&dest).unwrap() == std::fs::read(f).unwrap(),
                "{codec}: {name} differs"
            );
            std::fs::remove_file(&dest).unwrap();
        }
        assert!(files_below(repo.path()).contains(&"repository.json".to_string()));
    }
}

#[test]
fn refuses_files_that_are_not_wal() {
    let repo = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let seg = &segments()[0];
    let seg_name = seg.file_name().unwrap().to_str().unwrap();

    // Random bytes under a segment name.
    let random = work.path().join(seg_name);
    std::fs::write(
        &random,
        (0..16u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let out = run(repo.path(), &["wal-push", random.to_str().unwrap()]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains(seg_name), "{}", stderr(&out));
    std::fs::remove_file(&random).unwrap();

    // A truncated segment.
    let data = std::fs::read(seg).unwrap();
    let truncated = work.path().join(seg_name);
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    assert_code(&run(repo.path(), &["wal-push", truncated.to_str().unwrap()]), 3);
    std::fs::remove_file(&truncated).unwrap();

    // A real segment under another segment's name (page address disagrees).
    let wrong_name = format!(
        "{}{:08X}",
        &seg_name[..16],
        u32::from_str_radix(&seg_name[16..], 16).unwrap() + 7
    );
    let renamed = copy_as(seg, work.path(), &wrong_name);
    let out = run(repo.path(), &["wal-push", renamed.to_str().unwrap()]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains(&wrong_name), "{}", stderr(&out));

    // Names PostgreSQL never archives.
    for name in [
        "postgresql.conf",
        "00000001000000000000001",
        "000000010000000000000001.gz",
        "xyz.history",
    ] {
        let f = copy_as(seg, work.path(), name);
        assert_code(&run(repo.path(), &["wal-push", f.to_str().unwrap()]), 3);
    }
    // A backup history file that is not one.
    let bad_backup = work.path().join(format!("{seg_name}.00000028.backup"));
    std::fs::write(&bad_backup, b"\x00\x01binary").unwrap();
    assert_code(&run(repo.path(), &["wal-push", bad_backup.to_str().unwrap()]), 3);

    // Nothing was stored by any refused push.
    let stored: Vec<String> = files_below(repo.path())
        .into_iter()
        .filter(|f| f.starts_with("wal/"))
        .collect();
    assert!(stored.is_empty(), "{stored:?}");
}

#[test]
fn missing_source_file_is_a_local_error() {
    let repo = tempfile::tempdir().unwrap();
    let out = run(
        repo.path(),
        &["wal-push", "/nonexistent/000000010000000000000001"],
    );
    assert_code(&out, 7);
    assert!(
        stderr(&out).contains("/nonexistent/000000010000000000000001"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn duplicate_push_same_content_succeeds_different_content_conflicts() {
    let repo = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let seg = &segments()[0];
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert_code(&run(repo.path(), &["wal-push", seg.to_str().unwrap()]), 0);
    let key = repo.path().join(stored_key(name));
    let before = std::fs::read(&key).unwrap();
    let mtime = std::fs::metadata(&key).unwrap().modified().unwrap();

    // Same content, even with another codec: success, object not rewritten.
    assert_code(
        &run(
            repo.path(),
            &["--compression", "lz4", "wal-push", seg.to_str().unwrap()],
        ),
        0,
    );
    assert_eq!(std::fs::metadata(&key).unwrap().modified().unwrap(), mtime);

    // Same name, different content (a byte changed past the page header).
    let mut data = std::fs::read(seg).unwrap();
    data[100_000] ^= 0xff;
    let changed = work.path().join(name);
    std::fs::write(&changed, &data).unwrap();
    let out = run(repo.path(), &["wal-push", changed.to_str().unwrap()]);
    assert_code(&out, 4);
    let msg = stderr(&out);
    assert!(msg.contains(name) && msg.matches("sha256").count() >= 2, "{msg}");
    assert_eq!(std::fs::read(&key).unwrap(), before, "archive must not change");
}

#[test]
fn damaged_object_fails_fetch_and_leaves_dest_untouched() {
    let repo = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let seg = &segments()[0];
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert_code(&run(repo.path(), &["wal-push", seg.to_str().unwrap()]), 0);
    let key = repo.path().join(stored_key(name));
    let good = std::fs::read(&key).unwrap();

    // One flipped byte at several places: header, body, trailer.
    for pos in [5, 12, good.len() / 2, good.len() - 40, good.len() - 1] {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        std::fs::write(&key, &bad).unwrap();
        let dest = work.path().join("RECOVERYXLOG");
        std::fs::write(&dest, b"previous content").unwrap();
        let out = run(repo.path(), &["wal-fetch", name, dest.to_str().unwrap()]);
        assert_code(&out, 5);
        let msg = stderr(&out);
        assert!(msg.contains(&stored_key(name)), "byte {pos}: {msg}");
        assert_eq!(msg.lines().count(), 1, "one line: {msg}");
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            b"previous content",
            "byte {pos}: dest changed"
        );
        assert_eq!(
            files_below(work.path()),
            vec!["RECOVERYXLOG".to_string()],
            "temp file left behind"
        );

        // With --abort-on-error the code is above 125: PostgreSQL aborts recovery.
        let out = run(
            repo.path(),
            &["--abort-on-error", "wal-fetch", name, dest.to_str().unwrap()],
        );
        assert_code(&out, 133);
    }
    // A truncated object too.
    std::fs::write(&key, &good[..good.len() - 60]).unwrap();
    let dest = work.path().join("x");
    assert_code(&run(repo.path(), &["wal-fetch", name, dest.to_str().unwrap()]), 5);
    assert!(!dest.exists());
}

#[test]
fn missing_file_exits_1_quietly() {
    let repo = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A repository (wal-push initialised it) that lacks these files.
    assert_code(
        &run(repo.path(), &["wal-push", segments()[0].to_str().unwrap()]),
        0,
    );
    for name in ["00000002.history", "000000010000000000000042"] {
        let dest = work.path().join("RECOVERYHISTORY");
        let out = run(repo.path(), &["wal-fetch", name, dest.to_str().unwrap()]);
        assert_code(&out, 1);
        assert!(out.stderr.is_empty(), "{}", stderr(&out));
        assert!(!dest.exists());
        // Not found stays 1 in abort mode: it is the normal end of the archive.
        assert_code(
            &run(
                repo.path(),
                &["--abort-on-error", "wal-fetch", name, dest.to_str().unwrap()],
            ),
            1,
        );
    }
}

#[test]
fn wal_of_another_cluster_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    let ours = &segments()[0];
    let theirs = &fixture_files("wal/1mib", is_segment_name)[0];
    assert_code(&run(repo.path(), &["wal-push", ours.to_str().unwrap()]), 0);
    let out = run(repo.path(), &["wal-push", theirs.to_str().unwrap()]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains("system identifier"), "{}", stderr(&out));
}

#[test]
fn unwritable_repository_is_a_storage_error() {
    let work = tempfile::tempdir().unwrap();
    // A repository path below a regular file can't be created, even by root.
    let file = work.path().join("plainfile");
    std::fs::write(&file, b"x").unwrap();
    let repo = file.join("repo");
    let out = run(&repo, &["wal-push", segments()[0].to_str().unwrap()]);
    assert_code(&out, 6);
    assert!(stderr(&out).contains("plainfile"), "{}", stderr(&out));
}

/// An S3 repository whose endpoint accepts connections and never answers:
/// each request would wait minutes for its first byte, the command's time
/// limit ends it first, with exit 10 and nothing left behind.
#[test]
fn a_silent_repository_ends_at_the_command_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let work = tempfile::tempdir().unwrap();
    let silent = |args: &[&str]| {
        let started = std::time::Instant::now();
        let out = pgark()
            .args(["--repo", "s3://bucket/repo", "--s3-endpoint", &endpoint])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(args)
            .output()
            .expect("pgark runs");
        // Generous: the point is that it ends, long before the 300 s a
        // request may wait for its first byte.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(100),
            "{args:?} took {:?}",
            started.elapsed()
        );
        out
    };

    let seg = segments()[0].clone();
    let out = silent(&["--command-timeout", "2s", "wal-push", seg.to_str().unwrap()]);
    assert_code(&out, 10);
    assert!(stderr(&out).contains("time limit of 2s"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--command-timeout"), "{}", stderr(&out));

    let dest = work.path().join("RECOVERYXLOG");
    let out = silent(&[
        "--command-timeout",
        "1s",
        "wal-fetch",
        "000000010000000000000001",
        dest.to_str().unwrap(),
    ]);
    assert_code(&out, 10);
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "wal-fetch left {left:?}");
    // In abort mode, PostgreSQL must stop recovery rather than end it.
    let out = silent(&[
        "--command-timeout=1s",
        "--abort-on-error",
        "wal-fetch",
        "000000010000000000000001",
        dest.to_str().unwrap(),
    ]);
    assert_code(&out, 138);

    let out = pgark()
        .args([
            "--repo",
            "s3://bucket/repo",
            "--s3-endpoint",
            &endpoint,
            "backup-list",
        ])
        .env("PGARK_COMMAND_TIMEOUT", "1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_code(&out, 10);
    assert!(stderr(&out).contains("time limit of 1s"), "{}", stderr(&out));

    let out = silent(&["--command-timeout", "ten", "backup-list"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("command-timeout"), "{}", stderr(&out));
    drop(listener);
}

/// The same silent endpoint at default settings (no --command-timeout):
/// wal-push and wal-fetch fail within 2 minutes, with the repository's exit
/// code and the reason, not at the 10-minute command limit.
#[test]
fn a_silent_repository_fails_within_two_minutes_at_default_settings() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let work = tempfile::tempdir().unwrap();
    let run_silent = |args: Vec<String>| {
        let endpoint = endpoint.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let out = pgark()
                .args(["--repo", "s3://bucket/repo", "--s3-endpoint", &endpoint])
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env_remove("PGARK_COMMAND_TIMEOUT")
                .args(&args)
                .output()
                .expect("pgark runs");
            (out, started.elapsed())
        })
    };
    let seg = segments()[0].clone();
    let dest = work.path().join("RECOVERYXLOG");
    let push = run_silent(vec!["wal-push".into(), seg.to_string_lossy().into_owned()]);
    let fetch = run_silent(vec![
        "wal-fetch".into(),
        "000000010000000000000001".into(),
        dest.to_string_lossy().into_owned(),
    ]);
    for (what, handle) in [("wal-push", push), ("wal-fetch", fetch)] {
        let (out, took) = handle.join().unwrap();
        assert_code(&out, 6);
        assert!(
            stderr(&out).contains("sent no answer"),
            "{what}: {}",
            stderr(&out)
        );
        assert!(took < std::time::Duration::from_secs(120), "{what} took {took:?}");
    }
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "wal-fetch left {left:?}");
    drop(listener);
}

#[test]
fn configuration_errors_exit_2() {
    let seg = segments()[0].clone();
    // No repository at all.
    let out = pgark()
        .args(["wal-push", seg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("PGARK_REPO"), "{}", stderr(&out));
    // Unknown codec, level out of range, unknown config key.
    let repo = tempfile::tempdir().unwrap();
    assert_code(
        &run(
            repo.path(),
            &["--compression", "gzip", "wal-push", seg.to_str().unwrap()],
        ),
        2,
    );
    assert_code(
        &run(
            repo.path(),
            &["--compression-level", "99", "wal-push", seg.to_str().unwrap()],
        ),
        2,
    );
    let cfg = repo.path().join("pgark.toml");
    std::fs::write(&cfg, "repository = '/x'\n").unwrap();
    let out = pgark()
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "wal-push",
            seg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("repository"), "{}", stderr(&out));
}

#[test]
fn settings_come_from_env_and_config_file() {
    let repo = tempfile::tempdir().unwrap();
    let seg = segments()[0].clone();
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let cfg = repo.path().join("pgark.toml");
    std::fs::write(
        &cfg,
        format!(
            "repo = '{}'\ncompression = 'lz4'\n",
            repo.path().join("r").display()
        ),
    )
    .unwrap();
    // File only: repository and codec from the file.
    let out = pgark()
        .env("PGARK_CONFIG", &cfg)
        .args(["wal-push", seg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let stored = std::fs::read(repo.path().join("r").join(stored_key(&name))).unwrap();
    assert_eq!(stored[14], 2, "lz4 codec byte in the object header");
    // Env beats file: repository from PGARK_REPO.
    let out = pgark()
        .env("PGARK_CONFIG", &cfg)
        .env("PGARK_REPO", repo.path().join("env"))
        .env("PGARK_COMPRESSION", "none")
        .args(["wal-push", seg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let stored = std::fs::read(repo.path().join("env").join(stored_key(&name))).unwrap();
    assert_eq!(stored[14], 0, "none codec byte in the object header");
}

#[test]
fn help_lists_every_subcommand_and_setting() {
    let out = pgark().arg("--help").output().unwrap();
    assert_code(&out, 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "wal-push",
        "wal-fetch",
        "--repo",
        "PGARK_REPO",
        "--compression",
        "--abort-on-error",
        "Exit codes",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

/// Issue 11: a `--repo` that names no repository (a typo, an unmounted
/// volume, a directory nothing was archived into) is neither "not found"
/// (exit 1, which ends a recovery early and promotes) nor an empty
/// repository: every reading command exits 11 (139 with --abort-on-error),
/// says so, and creates nothing. Only wal-push and backup-push initialise a
/// repository.
#[test]
fn reading_commands_refuse_a_missing_or_empty_repository() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("no").join("such").join("repo");
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // A repository one level below: its parent is not a repository either.
    let real = work.path().join("parent").join("repo");
    let seg = &segments()[0];
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert_code(&run(&real, &["wal-push", seg.to_str().unwrap()]), 0);
    let parent = work.path().join("parent");
    let dest = work.path().join("RECOVERYXLOG");
    let restore_dir = work.path().join("restore");

    for repo in [&missing, &empty, &parent] {
        let before = files_below(repo);
        let cases: [(&[&str], i32); 6] = [
            (&["wal-fetch", name, dest.to_str().unwrap()], 11),
            (
                &["--abort-on-error", "wal-fetch", name, dest.to_str().unwrap()],
                139,
            ),
            (&["wal-fetch", "00000002.history", dest.to_str().unwrap()], 11),
            (&["backup-list"], 11),
            (&["backup-list", "--json"], 11),
            (&["backup-fetch", restore_dir.to_str().unwrap(), "LATEST"], 11),
        ];
        for (args, code) in cases {
            let out = run(repo, args);
            assert_code(&out, code);
            let msg = stderr(&out);
            assert!(
                msg.contains("no pgark repository at") && msg.contains(repo.to_str().unwrap()),
                "{args:?} on {}: {msg}",
                repo.display()
            );
            assert_eq!(msg.lines().count(), 1, "one line: {msg}");
            assert!(
                out.stdout.is_empty(),
                "{args:?}: printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(
                !dest.exists() && !restore_dir.exists(),
                "{args:?} wrote a destination"
            );
        }
        // A key given for it changes nothing: still no repository, not a key error.
        let out = pgark()
            .arg("--repo")
            .arg(repo)
            .env("PGARK_ENCRYPTION_KEY", "00".repeat(32))
            .args(["wal-fetch", name, dest.to_str().unwrap()])
            .output()
            .unwrap();
        assert_code(&out, 11);
        let out = pgark()
            .arg("--repo")
            .arg(repo)
            .env("PGARK_ENCRYPTION_KEY", "00".repeat(32))
            .env("PGARK_NEW_ENCRYPTION_KEY", "11".repeat(32))
            .args(["key", "rotate"])
            .output()
            .unwrap();
        assert_code(&out, 11);
        // Nothing was created: not the directory, not an object.
        assert_eq!(files_below(repo), before, "{} changed", repo.display());
    }
    assert!(
        !missing.exists(),
        "a reading command created {}",
        missing.display()
    );
    assert!(!work.path().join("no").exists());

    // Once wal-push has initialised it, the same commands work: an absent
    // segment is "not found" again, and an empty list is a list.
    assert_code(&run(&empty, &["wal-push", seg.to_str().unwrap()]), 0);
    let out = run(
        &empty,
        &["wal-fetch", "000000010000000000000099", dest.to_str().unwrap()],
    );
    assert_code(&out, 1);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    assert_code(&run(&empty, &["wal-fetch", name, dest.to_str().unwrap()]), 0);
    let out = run(&empty, &["backup-list", "--json"]);
    assert_code(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// A repository.json that exists but cannot be used is a damaged
/// repository (exit 5), not a missing one.
#[test]
fn a_damaged_repository_json_is_an_integrity_error_for_readers() {
    let repo = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let seg = &segments()[0];
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert_code(&run(repo.path(), &["wal-push", seg.to_str().unwrap()]), 0);
    std::fs::write(repo.path().join("repository.json"), b"{ not json").unwrap();
    let dest = work.path().join("RECOVERYXLOG");
    for args in [
        &["wal-fetch", name, dest.to_str().unwrap()][..],
        &["backup-list"][..],
    ] {
        let out = run(repo.path(), args);
        assert_code(&out, 5);
        assert!(
            stderr(&out).contains("repository.json"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!dest.exists());
}
