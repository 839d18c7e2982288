//! The `pgark` binary against a GCS repository on fake-gcs-server
//! (127.0.0.1, see `pgark_testkit::servers::FakeGcsServer`): WAL
//! archiving of the fixture segments, settings from flags, PGARK_*
//! variables, STORAGE_EMULATOR_HOST and the configuration file, clear
//! failures without credentials or bucket, and a base backup of a real
//! cluster restored from GCS and recovered to a restore point
//! (point-in-time recovery) with the restore_command pgark wrote.
//!
//! Needs fake-gcs-server (`.ci/install-deps.sh` installs it); with
//! `PGARK_TEST_SKIP_GCS=1` the tests skip where it cannot be started.

use crate::common::*;
use crate::s3::{checksum, wal_fixtures, with, written_restore_command};
use pgark_testkit::pg::{
    command_as_pg_user, expose_binary, run_capture, scratch_dir, shell_quote, ClusterOptions, PgCluster,
    PgInstall,
};
use pgark_testkit::servers::{fake_gcs_or_skip, FakeGcsServer};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `cmd` with no Google settings from the caller and no way to reach a
/// metadata server (nothing may leave 127.0.0.1): a closed local port
/// stands in for it.
fn isolate(cmd: &mut Command, home: &std::path::Path) {
    for var in [
        "GOOGLE_APPLICATION_CREDENTIALS",
        "STORAGE_EMULATOR_HOST",
        "CLOUDSDK_CONFIG",
        "GOOGLE_CLOUD_PROJECT",
    ] {
        cmd.env_remove(var);
    }
    let port = pgark_testkit::pg::free_port().unwrap();
    cmd.env("GCE_METADATA_HOST", format!("127.0.0.1:{port}"))
        .env("GCE_METADATA_IP", format!("127.0.0.1:{port}"))
        .env("HOME", home);
}

/// The global options that point pgark at `bucket/prefix` on `server`,
/// anonymously.
fn gcs_flags(server: &FakeGcsServer, bucket: &str, prefix: &str) -> Vec<String> {
    vec![
        "--repo".into(),
        format!("gs://{bucket}/{prefix}"),
        "--gcs-endpoint".into(),
        server.endpoint(),
        "--gcs-no-auth".into(),
    ]
}

fn pgark_gcs(args: &[String]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = pgark();
    isolate(&mut cmd, home.path());
    cmd.args(args);
    run_capture(&mut cmd, None, Duration::from_secs(300)).expect("pgark runs")
}

#[test]
fn wal_archiving_round_trips_through_gcs() {
    let Some(server) = fake_gcs_or_skip("GCS WAL archiving") else {
        return;
    };
    server.create_bucket("wal-archive").unwrap();
    let files = wal_fixtures();
    let out_dir = tempfile::tempdir().unwrap();
    let flags = gcs_flags(&server, "wal-archive", "cluster");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_code(
            &pgark_gcs(&with(flags.clone(), &["wal-push", f.to_str().unwrap()])),
            0,
        );
        // Pushing the same file again succeeds without rewriting it.
        assert_code(
            &pgark_gcs(&with(flags.clone(), &["wal-push", f.to_str().unwrap()])),
            0,
        );
        let dest = out_dir.path().join("RECOVERYXLOG");
        let out = pgark_gcs(&with(flags.clone(), &["wal-fetch", name, dest.to_str().unwrap()]));
        assert_code(&out, 0);
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(f).unwrap(),
            "{name} differs after the round trip"
        );
        std::fs::remove_file(&dest).unwrap();
    }
    // A segment that was never archived: "not found" (exit 1).
    let dest = out_dir.path().join("RECOVERYXLOG");
    let out = pgark_gcs(&with(
        flags.clone(),
        &["wal-fetch", "0000000100000000000000FE", dest.to_str().unwrap()],
    ));
    assert_code(&out, 1);
    assert!(!dest.exists());

    // Different content under an archived name is refused (exit 4) and
    // changes nothing.
    let work = tempfile::tempdir().unwrap();
    let segments = fixture_files("wal", is_segment_name);
    let first = &segments[0];
    let first_name = first.file_name().unwrap().to_str().unwrap();
    let impostor = work.path().join(first_name);
    let mut data = std::fs::read(first).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&impostor, &data).unwrap();
    assert_code(
        &pgark_gcs(&with(flags.clone(), &["wal-push", impostor.to_str().unwrap()])),
        4,
    );
    let dest = work.path().join("fetched");
    assert_code(
        &pgark_gcs(&with(
            flags.clone(),
            &["wal-fetch", first_name, dest.to_str().unwrap()],
        )),
        0,
    );
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(first).unwrap());
}

/// The same repository reached through PGARK_* variables, through
/// STORAGE_EMULATOR_HOST, and through the configuration file.
#[test]
fn gcs_settings_from_environment_and_configuration_file() {
    let Some(server) = fake_gcs_or_skip("GCS settings") else {
        return;
    };
    server.create_bucket("settings").unwrap();
    let segment = &fixture_files("wal", is_segment_name)[0];
    let name = segment.file_name().unwrap().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("RECOVERYXLOG");

    let mut cmd = pgark();
    isolate(&mut cmd, work.path());
    cmd.env("PGARK_REPO", "gs://settings/env")
        .env("PGARK_GCS_ENDPOINT", server.endpoint())
        .env("PGARK_GCS_NO_AUTH", "true")
        .args(["wal-push", segment.to_str().unwrap()]);
    assert_code(&run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap(), 0);

    // The variable Google's client libraries use for emulators: host:port,
    // anonymous requests.
    let mut cmd = pgark();
    isolate(&mut cmd, work.path());
    cmd.env("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{}", server.port()))
        .args([
            "--repo",
            "gs://settings/env",
            "wal-fetch",
            name,
            dest.to_str().unwrap(),
        ]);
    assert_code(&run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap(), 0);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(segment).unwrap());
    std::fs::remove_file(&dest).unwrap();

    let config = work.path().join("pgark.toml");
    std::fs::write(
        &config,
        format!(
            "repo = 'gs://settings/env'\ngcs_endpoint = '{}'\ngcs_no_auth = true\n",
            server.endpoint()
        ),
    )
    .unwrap();
    let mut cmd = pgark();
    isolate(&mut cmd, work.path());
    cmd.arg("--config")
        .arg(&config)
        .args(["wal-fetch", name, dest.to_str().unwrap()]);
    assert_code(&run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap(), 0);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(segment).unwrap());

    // Invalid settings and URLs are usage errors.
    let out = pgark_gcs(&[
        "--repo".into(),
        "gs://settings/env".into(),
        "--gcs-endpoint".into(),
        "127.0.0.1:1".into(),
        "backup-list".into(),
    ]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("gcs-endpoint"), "{}", stderr(&out));
    for bad in ["gs://", "gs://Bad_Bucket/x", "gs://bucket/a//c"] {
        assert_code(
            &pgark_gcs(&["--repo".into(), bad.into(), "backup-list".into()]),
            2,
        );
    }
}

/// Without credentials, with a bucket that does not exist, and with nothing
/// listening: a repository failure (exit 6) that says why, promptly, and
/// never "not found" (exit 1).
#[test]
fn gcs_failures_are_clear_and_prompt() {
    let Some(server) = fake_gcs_or_skip("GCS failures") else {
        return;
    };
    server.create_bucket("present").unwrap();
    let segment = &fixture_files("wal", is_segment_name)[0];
    let name = segment.file_name().unwrap().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("RECOVERYXLOG");
    let fetch = |flags: Vec<String>| pgark_gcs(&with(flags, &["wal-fetch", name, dest.to_str().unwrap()]));
    let push = |flags: Vec<String>| pgark_gcs(&with(flags, &["wal-push", segment.to_str().unwrap()]));

    // No credentials anywhere: no credentials file, no gcloud login, and a
    // metadata server that does not answer.
    let started = Instant::now();
    let no_auth_flags = vec![
        "--repo".into(),
        "gs://present/repo".into(),
        "--gcs-endpoint".into(),
        server.endpoint(),
    ];
    for out in [push(no_auth_flags.clone()), fetch(no_auth_flags.clone())] {
        assert_code(&out, 6);
        let msg = stderr(&out);
        assert!(
            msg.contains("\"present\"") && msg.contains("metadata server"),
            "{msg}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    // A credentials file that is not one.
    let creds = work.path().join("creds.json");
    std::fs::write(&creds, "{\"type\": \"no_such_type\"}").unwrap();
    let mut cmd = pgark();
    isolate(&mut cmd, work.path());
    cmd.env("GOOGLE_APPLICATION_CREDENTIALS", &creds).args(with(
        no_auth_flags.clone(),
        &["wal-fetch", name, dest.to_str().unwrap()],
    ));
    let out = run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap();
    assert_code(&out, 6);
    let msg = stderr(&out);
    assert!(
        msg.contains("GOOGLE_APPLICATION_CREDENTIALS") && msg.contains("creds.json"),
        "{msg}"
    );

    // No such bucket.
    for out in [
        push(gcs_flags(&server, "absent", "repo")),
        fetch(gcs_flags(&server, "absent", "repo")),
    ] {
        assert_code(&out, 6);
        let msg = stderr(&out);
        assert!(msg.contains("\"absent\" does not exist"), "{msg}");
    }
    let out = fetch(with(gcs_flags(&server, "absent", "repo"), &["--abort-on-error"]));
    assert_eq!(out.status.code(), Some(128 + 6), "{}", stderr(&out));

    // Nothing listening.
    let port = pgark_testkit::pg::free_port().unwrap();
    let started = Instant::now();
    let out = fetch(vec![
        "--repo".into(),
        "gs://present/repo".into(),
        "--gcs-endpoint".into(),
        format!("http://127.0.0.1:{port}"),
        "--gcs-no-auth".into(),
        "--retry-attempts".into(),
        "1".into(),
    ]);
    assert_code(&out, 6);
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// A cluster archiving into `gs://backups/<prefix>` on fake-gcs-server.
struct GcsSource {
    bin: PathBuf,
    server: FakeGcsServer,
    repo: String,
    cluster: PgCluster,
}

impl GcsSource {
    fn start(server: FakeGcsServer, prefix: &str) -> GcsSource {
        server.create_bucket("backups").unwrap();
        let bin = expose_binary(&pgark_bin());
        let repo = format!("gs://backups/{prefix}");
        let command = format!(
            "{} wal-push --repo {} --gcs-endpoint {} --gcs-no-auth %p",
            shell_quote(&bin.to_string_lossy()),
            shell_quote(&repo),
            server.endpoint(),
        );
        let opts =
            ClusterOptions::new(PgInstall::detect().expect("PostgreSQL")).with_archive_command(command);
        let cluster = PgCluster::start_new(opts).unwrap_or_else(|e| panic!("{e}"));
        cluster
            .psql("create table t (id bigserial primary key, batch text not null)")
            .unwrap();
        GcsSource {
            bin,
            server,
            repo,
            cluster,
        }
    }

    /// pgark as the unprivileged user, configured through PGARK_* variables.
    fn pgark(&self, args: &[&str]) -> Output {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = command_as_pg_user(&self.bin);
        isolate(&mut cmd, home.path());
        cmd.env("PGHOST", self.cluster.socket_dir())
            .env("PGPORT", self.cluster.port().to_string())
            .env("PGUSER", self.cluster.superuser())
            .env("PGARK_REPO", &self.repo)
            .env("PGARK_GCS_ENDPOINT", self.server.endpoint())
            .env("PGARK_GCS_NO_AUTH", "1")
            .args(args);
        run_capture(&mut cmd, None, Duration::from_secs(600)).expect("pgark runs")
    }
}

#[test]
fn base_backup_and_restore_through_gcs() {
    let Some(server) = fake_gcs_or_skip("GCS base backup and restore") else {
        return;
    };
    let src = GcsSource::start(server, "pg/main");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    c.psql("insert into t (batch) select 'before' from generate_series(1, 1000)")
        .unwrap();
    let out = src.pgark(&["backup-push", c.data_dir().to_str().unwrap()]);
    assert_code(&out, 0);
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(name.starts_with("base_"), "{name}");

    // Changes after the backup come from the WAL archive, written under
    // pgbench load.
    c.psql("insert into t (batch) select 'after' from generate_series(1, 500)")
        .unwrap();
    c.pgbench(&["-c", "2", "-t", "200", "-n"]).unwrap();
    let expected = checksum(c);
    let accounts = c.psql("select sum(abalance) from pgbench_accounts").unwrap();
    // Point-in-time recovery: a restore point, then changes the restored
    // cluster must not have.
    c.psql("select pg_create_restore_point('pgark_pitr')").unwrap();
    c.psql("insert into t (batch) select 'too late' from generate_series(1, 300)")
        .unwrap();
    c.pgbench(&["-c", "1", "-t", "50", "-n"]).unwrap();
    archive_current_wal(c);

    let out = src.pgark(&["backup-list", "--json"]);
    assert_code(&out, 0);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["name"], name.as_str());

    let dir = scratch_dir("gcs-restore");
    let dest = dir.path().join("data");
    let out = src.pgark(&[
        "backup-fetch",
        dest.to_str().unwrap(),
        "LATEST",
        "--target-name",
        "pgark_pitr",
        "--target-action",
        "promote",
    ]);
    assert_code(&out, 0);
    crate::backup::verify_backup(c.install(), &dest);

    let restore = written_restore_command(&dest);
    for needle in [
        "wal-fetch",
        "--repo 'gs://backups/pg/main'",
        &format!("--gcs-endpoint '{}'", src.server.endpoint()),
        "--gcs-no-auth",
    ] {
        assert!(restore.contains(needle), "{needle:?} missing in {restore}");
    }
    let restored = start_restored(c.install(), &dest);
    assert_eq!(
        checksum(&restored),
        expected,
        "restored data differs\n{}",
        restored.log_tail(30)
    );
    assert_eq!(
        restored
            .psql("select sum(abalance) from pgbench_accounts")
            .unwrap(),
        accounts
    );
    stop_and_check_page_checksums(&restored);
}

/// Issue 11: wal-fetch and backup-list on a prefix that holds no
/// repository (a wrong prefix, or the bucket's root above a repository)
/// exit 11, 139 with --abort-on-error, never "not found" (1) or an empty
/// list, and write nothing into the bucket.
#[test]
fn wal_fetch_and_backup_list_refuse_a_missing_or_empty_repository_on_gcs() {
    let Some(server) = fake_gcs_or_skip("GCS missing repository") else {
        return;
    };
    server.create_bucket("norepo").unwrap();
    let segment = &fixture_files("wal", is_segment_name)[0];
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert_code(
        &pgark_gcs(&with(
            gcs_flags(&server, "norepo", "real/repo"),
            &["wal-push", segment.to_str().unwrap()],
        )),
        0,
    );
    let listing = || server.request("GET", "/storage/v1/b/norepo/o", b"").unwrap().1;
    let before = listing();
    assert!(before.contains("repository.json"), "{before}");
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("RECOVERYXLOG");
    // "empty": nothing under the prefix; "parent": objects, no repository.json.
    for prefix in ["typo/repo", "real", ""] {
        let flags = gcs_flags(&server, "norepo", prefix);
        for (args, code) in [
            (vec!["wal-fetch", name, dest.to_str().unwrap()], 11),
            (
                vec!["--abort-on-error", "wal-fetch", name, dest.to_str().unwrap()],
                139,
            ),
            (vec!["backup-list"], 11),
            (vec!["backup-list", "--json"], 11),
        ] {
            let out = pgark_gcs(&with(flags.clone(), &args));
            assert_code(&out, code);
            let msg = stderr(&out);
            assert!(
                msg.contains("no pgark repository at gs://norepo"),
                "{prefix:?} {args:?}: {msg}"
            );
            assert!(out.stdout.is_empty(), "{prefix:?} {args:?} printed something");
            assert!(!dest.exists());
        }
    }
    assert_eq!(listing(), before, "a reading command wrote into the bucket");
    // The real repository answers as before.
    let flags = gcs_flags(&server, "norepo", "real/repo");
    assert_code(
        &pgark_gcs(&with(flags.clone(), &["wal-fetch", name, dest.to_str().unwrap()])),
        0,
    );
    let out = pgark_gcs(&with(flags, &["backup-list", "--json"]));
    assert_code(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// Issue 13 on GCS (fake-gcs-server): see `retention::retention_on_a_store`.
#[test]
fn retention_deletes_the_right_objects_on_gcs() {
    let Some(server) = fake_gcs_or_skip("GCS retention") else {
        return;
    };
    let src = GcsSource::start(server, "pg/ret");
    let pgark = |args: &[&str]| src.pgark(args);
    let objects = || {
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let path = format!("/storage/v1/b/backups/o?prefix=pg/ret/&maxResults=1000{token}");
            let (status, body) = src.server.request("GET", &path, b"").unwrap();
            assert_eq!(status, 200, "{body}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            for item in json["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().unwrap();
                names.push(name.strip_prefix("pg/ret/").unwrap().to_string());
            }
            match json["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = format!("&pageToken={t}"),
                _ => break,
            }
        }
        names
    };
    crate::retention::retention_on_a_store(&crate::retention::RemoteRepo {
        cluster: &src.cluster,
        pgark: &pgark,
        objects: &objects,
        restore_env: "",
    });
}
