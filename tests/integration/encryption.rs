//! Client-side encryption from the command line: key sources, refusals and
//! their exit codes, key rotation, and a point-in-time recovery of an
//! encrypted repository with a real PostgreSQL.

use crate::common::*;
use pgark_testkit::pg::{
    chown_to_pg_user, command_as_pg_user, expose_binary, run_capture, scratch_dir, ClusterOptions, PgCluster,
    PgInstall,
};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const WRONG_KEY: &str = "this key does not open this repository";
const KEY_REQUIRED: &str = "this repository is encrypted";

fn segment() -> PathBuf {
    fixture_files("wal", is_segment_name)[0].clone()
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

/// A fresh random 32-byte key file in `dir`.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut key = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut key).unwrap();
    std::fs::write(&path, key).unwrap();
    path
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `pgark --repo REPO <key flags> ARGS` with extra environment.
fn run_with(repo: &Path, flags: &[&str], env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = pgark();
    cmd.arg("--repo").arg(repo).args(flags).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("pgark runs")
}

#[track_caller]
fn assert_failure(out: &Output, code: i32, message: &str) {
    assert_code(out, code);
    assert!(
        stderr(out).contains(message),
        "expected {message:?} in:\n{}",
        stderr(out)
    );
}

/// Fetches `name` and compares it with `original`.
#[track_caller]
fn fetch_matches(repo: &Path, flags: &[&str], env: &[(&str, &str)], original: &Path) {
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("RECOVERYXLOG");
    let out = run_with(
        repo,
        flags,
        env,
        &["wal-fetch", &name_of(original), dest.to_str().unwrap()],
    );
    assert_code(&out, 0);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(original).unwrap());
}

#[test]
fn wal_round_trip_with_a_key_file_and_refusals() {
    let repo = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "key");
    let other = key_file(keys.path(), "other");
    let seg = segment();
    let flags = ["--encryption-key-file", key.to_str().unwrap()];

    let out = run_with(repo.path(), &flags, &[], &["wal-push", seg.to_str().unwrap()]);
    assert_code(&out, 0);
    assert!(files_below(repo.path()).contains(&"keyring.json".to_string()));
    fetch_matches(repo.path(), &flags, &[], &seg);
    // Pushing the same file again compares through the key.
    let out = run_with(repo.path(), &flags, &[], &["wal-push", seg.to_str().unwrap()]);
    assert_code(&out, 0);

    // The stored object is not the plain segment compressed: no stretch of
    // the segment's first page appears in it.
    let stored = std::fs::read(
        repo.path()
            .join(format!("wal/{}/{}", &name_of(&seg)[..16], name_of(&seg))),
    )
    .unwrap();
    let plain = std::fs::read(&seg).unwrap();
    assert!(!stored.windows(16).any(|w| w == &plain[40..56]));

    let dest = repo.path().join("out");
    let fetch = ["wal-fetch", &name_of(&seg), dest.to_str().unwrap()];
    // Wrong key: configuration error, clear message.
    let out = run_with(
        repo.path(),
        &["--encryption-key-file", other.to_str().unwrap()],
        &[],
        &fetch,
    );
    assert_failure(&out, 2, WRONG_KEY);
    // No key.
    let out = run_with(repo.path(), &[], &[], &fetch);
    assert_failure(&out, 2, KEY_REQUIRED);
    // With --abort-on-error PostgreSQL must abort recovery, not end it.
    let out = run_with(repo.path(), &["--abort-on-error"], &[], &fetch);
    assert_code(&out, 130);
    assert!(!dest.exists());

    // An unencrypted push into the encrypted repository writes nothing.
    let before = files_below(repo.path());
    let segs = fixture_files("wal", is_segment_name);
    let second = segs[1].to_str().unwrap();
    let out = run_with(repo.path(), &[], &[], &["wal-push", second]);
    assert_failure(&out, 2, KEY_REQUIRED);
    assert_eq!(files_below(repo.path()), before);

    // An encrypted push into an unencrypted repository writes nothing.
    let plain_repo = tempfile::tempdir().unwrap();
    let out = run_with(plain_repo.path(), &[], &[], &["wal-push", seg.to_str().unwrap()]);
    assert_code(&out, 0);
    let before = files_below(plain_repo.path());
    let out = run_with(plain_repo.path(), &flags, &[], &["wal-push", second]);
    assert_failure(&out, 2, "this repository is not encrypted");
    assert_eq!(files_below(plain_repo.path()), before);

    // Two key sources at once are ambiguous.
    let out = run_with(
        repo.path(),
        &flags,
        &[("PGARK_ENCRYPTION_KEY", &hex(&std::fs::read(&key).unwrap()))],
        &fetch,
    );
    assert_failure(&out, 2, "give one key source");

    // A tampered object is damage (5), not a key problem.
    let path = repo
        .path()
        .join(format!("wal/{}/{}", &name_of(&seg)[..16], name_of(&seg)));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let out = run_with(repo.path(), &flags, &[], &fetch);
    assert_code(&out, 5);
    assert!(!dest.exists());
}

#[test]
fn keys_from_env_hex_and_base64_command_and_passphrase() {
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "key");
    let raw = std::fs::read(&key).unwrap();
    let seg = segment();

    // Hex in the environment, then base64 of the same key, then a command.
    let repo = tempfile::tempdir().unwrap();
    let hex_env = [("PGARK_ENCRYPTION_KEY", hex(&raw))];
    let hex_env: Vec<(&str, &str)> = hex_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run_with(repo.path(), &[], &hex_env, &["wal-push", seg.to_str().unwrap()]);
    assert_code(&out, 0);
    let b64 = base64(&raw);
    fetch_matches(repo.path(), &[], &[("PGARK_ENCRYPTION_KEY", &b64)], &seg);
    let command = format!("cat '{}'", key.display());
    fetch_matches(repo.path(), &["--encryption-key-command", &command], &[], &seg);
    fetch_matches(
        repo.path(),
        &["--encryption-key-file", key.to_str().unwrap()],
        &[],
        &seg,
    );
    // The same key by the key-file environment variable and in a config file.
    fetch_matches(
        repo.path(),
        &[],
        &[("PGARK_ENCRYPTION_KEY_FILE", key.to_str().unwrap())],
        &seg,
    );
    let config = keys.path().join("pgark.toml");
    std::fs::write(
        &config,
        format!("encryption_key_file = {:?}\n", key.to_str().unwrap()),
    )
    .unwrap();
    fetch_matches(repo.path(), &["--config", config.to_str().unwrap()], &[], &seg);
    // A failing command: a configuration error naming its stderr.
    let out = run_with(
        repo.path(),
        &["--encryption-key-command", "echo no key here >&2; exit 3"],
        &[],
        &["wal-fetch", &name_of(&seg), "/tmp/never"],
    );
    assert_failure(&out, 2, "no key here");
    // A key file of the wrong size.
    let short = keys.path().join("short");
    std::fs::write(&short, b"0123").unwrap();
    let out = run_with(
        repo.path(),
        &["--encryption-key-file", short.to_str().unwrap()],
        &[],
        &["wal-fetch", &name_of(&seg), "/tmp/never"],
    );
    assert_failure(&out, 2, "exactly 32 raw bytes");

    // A passphrase from a file, then the same from the environment.
    let repo = tempfile::tempdir().unwrap();
    let pass = keys.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let out = run_with(
        repo.path(),
        &["--encryption-passphrase-file", pass.to_str().unwrap()],
        &[],
        &["wal-push", seg.to_str().unwrap()],
    );
    assert_code(&out, 0);
    fetch_matches(
        repo.path(),
        &[],
        &[("PGARK_ENCRYPTION_PASSPHRASE", "correct horse battery staple")],
        &seg,
    );
    let out = run_with(
        repo.path(),
        &[],
        &[("PGARK_ENCRYPTION_PASSPHRASE", "wrong horse")],
        &["wal-fetch", &name_of(&seg), "/tmp/never"],
    );
    assert_failure(&out, 2, WRONG_KEY);
}

#[test]
fn key_rotate_retires_the_old_key() {
    let repo = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let old = key_file(keys.path(), "old");
    let new = key_file(keys.path(), "new");
    let segs = fixture_files("wal", is_segment_name);
    let old_flags = ["--encryption-key-file", old.to_str().unwrap()];
    let new_flags = ["--encryption-key-file", new.to_str().unwrap()];
    for s in &segs[..2] {
        let out = run_with(repo.path(), &old_flags, &[], &["wal-push", s.to_str().unwrap()]);
        assert_code(&out, 0);
    }
    // Without a new key: a usage error; with the wrong current key: refused.
    let out = run_with(repo.path(), &old_flags, &[], &["key", "rotate"]);
    assert_code(&out, 2);
    let out = run_with(
        repo.path(),
        &new_flags,
        &[("PGARK_NEW_ENCRYPTION_KEY", &hex(&[9u8; 32]))],
        &["key", "rotate"],
    );
    assert_failure(&out, 2, WRONG_KEY);

    let out = run_with(
        repo.path(),
        &old_flags,
        &[],
        &["key", "rotate", "--new-key-file", new.to_str().unwrap()],
    );
    assert_code(&out, 0);
    let out = run_with(
        repo.path(),
        &old_flags,
        &[],
        &["wal-fetch", &name_of(&segs[0]), "/tmp/never"],
    );
    assert_failure(&out, 2, WRONG_KEY);
    for s in &segs[..2] {
        fetch_matches(repo.path(), &new_flags, &[], s);
    }
    // New WAL goes in under the new key too.
    let out = run_with(
        repo.path(),
        &new_flags,
        &[],
        &["wal-push", segs[2].to_str().unwrap()],
    );
    assert_code(&out, 0);
    fetch_matches(repo.path(), &new_flags, &[], &segs[2]);

    // And on to a key given by the environment.
    let third = hex(&[7u8; 32]);
    let out = run_with(
        repo.path(),
        &new_flags,
        &[("PGARK_NEW_ENCRYPTION_KEY", &third)],
        &["key", "rotate"],
    );
    assert_code(&out, 0);
    fetch_matches(repo.path(), &[], &[("PGARK_ENCRYPTION_KEY", &third)], &segs[0]);
}

/// pgark as the unprivileged user, with the repository and key file.
fn pgark_as_pg(bin: &Path, cluster: &PgCluster, repo: &Path, key: &Path, args: &[&str]) -> Output {
    let mut cmd = command_as_pg_user(bin);
    cmd.env("PGHOST", cluster.socket_dir())
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", cluster.superuser())
        .env("PGARK_REPO", repo)
        .env("PGARK_ENCRYPTION_KEY_FILE", key)
        .args(args);
    run_capture(&mut cmd, None, Duration::from_secs(600)).expect("pgark runs")
}

fn checksum(cluster: &PgCluster) -> String {
    cluster
        .psql("select count(*) || ':' || md5(coalesce(string_agg(id || batch, ',' order by id), '')) from t")
        .unwrap()
}

/// Every file below `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<String> {
    files_below(root)
        .into_iter()
        .filter(|rel| {
            std::fs::read(root.join(rel)).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

#[test]
fn point_in_time_recovery_of_an_encrypted_repository() {
    const MARKER: &str = "pgark-secret-marker-7f3a9c";
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let keys = scratch_dir("keys");
    let key = key_file(keys.path(), "repo.key");
    chown_to_pg_user(&key).unwrap();
    let command = format!(
        "{} wal-push --repo {} --encryption-key-file {} %p",
        sh_path(&bin),
        sh_path(repo.path()),
        sh_path(&key)
    );
    // No compression of the table's pages, so that the marker would show
    // in a plain object; full_page_writes puts it in the WAL as well.
    let opts = ClusterOptions::new(PgInstall::detect().expect("PostgreSQL")).with_archive_command(command);
    let c = PgCluster::start_new(opts).expect("start");
    c.psql("create table t (id bigserial primary key, batch text not null)")
        .unwrap();
    c.psql(&format!(
        "insert into t (batch) select '{MARKER}' || g from generate_series(1, 2000) g"
    ))
    .unwrap();

    let out = pgark_as_pg(
        &bin,
        &c,
        repo.path(),
        &key,
        &[
            "--compression",
            "none",
            "backup-push",
            c.data_dir().to_str().unwrap(),
        ],
    );
    assert_code(&out, 0);
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();

    c.psql("insert into t (batch) select 'a' from generate_series(1, 500)")
        .unwrap();
    c.psql("select pg_create_restore_point('after_a')").unwrap();
    let sum_name = checksum(&c);
    c.psql(&format!(
        "insert into t (batch) select '{MARKER}-b' from generate_series(1, 500)"
    ))
    .unwrap();
    let sum_latest = checksum(&c);
    archive_current_wal(&c);

    // Listing needs the key; without it the repository says so.
    let mut cmd = command_as_pg_user(&bin);
    cmd.env("PGARK_REPO", repo.path()).args(["backup-list"]);
    let out = run_capture(&mut cmd, None, Duration::from_secs(60)).unwrap();
    assert_failure(&out, 2, KEY_REQUIRED);
    let out = pgark_as_pg(&bin, &c, repo.path(), &key, &["backup-list", "--json"]);
    assert_code(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&name));

    // The marker is in the cluster's files but in no object of the repository.
    assert!(!files_containing(c.data_dir(), MARKER.as_bytes()).is_empty());
    let leaked = files_containing(repo.path(), MARKER.as_bytes());
    assert!(leaked.is_empty(), "plaintext in the repository: {leaked:?}");
    let key_bytes = std::fs::read(&key).unwrap();

    for (target, flags, expected) in [
        ("LATEST", vec![], sum_latest.as_str()),
        (
            "name",
            vec!["--target-name", "after_a", "--target-action", "promote"],
            sum_name.as_str(),
        ),
    ] {
        let dir = scratch_dir("restore");
        let dest = dir.path().join("data");
        let mut args = vec!["backup-fetch", dest.to_str().unwrap(), &name];
        args.extend_from_slice(&flags);
        let out = pgark_as_pg(&bin, &c, repo.path(), &key, &args);
        assert_code(&out, 0);
        let auto = std::fs::read_to_string(dest.join("postgresql.auto.conf")).unwrap();
        assert!(auto.contains("--encryption-key-file"), "{auto}");
        assert!(!auto.contains(&hex(&key_bytes)) && !auto.contains(&base64(&key_bytes)));
        let restored = start_restored(c.install(), &dest);
        assert_eq!(
            checksum(&restored),
            expected,
            "restore to {target}: data differs\n{}",
            restored.log_tail(30)
        );
        restored.stop().unwrap();
    }
}
