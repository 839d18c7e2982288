//! The `pgark` binary against an S3 repository on moto's S3 server
//! (127.0.0.1, started and stopped by each test): WAL archiving of the
//! fixture segments in both checksum modes, settings from flags, PGARK_*
//! variables, AWS_* variables and the configuration file, clear failures
//! without credentials or bucket, and a base backup of a real cluster
//! restored from S3 and recovered to a restore point (point-in-time
//! recovery) with the restore_command pgark wrote.
//!
//! Needs moto (`.ci/install-deps.sh` installs it); with
//! `PGARK_TEST_SKIP_S3=1` the tests skip where it cannot be started.

use crate::common::*;
use pgark_testkit::pg::{
    command_as_pg_user, expose_binary, run_capture, scratch_dir, shell_quote, ClusterOptions, PgCluster,
    PgInstall,
};
use pgark_testkit::servers::{
    moto_or_skip, MotoServer, MOTO_ACCESS_KEY_ID, MOTO_REGION, MOTO_SECRET_ACCESS_KEY,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Environment variables that would let the SDK find settings or
/// credentials other than the test's.
const FOREIGN_AWS_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

/// `cmd` with no AWS settings from the caller, no shared AWS files and no
/// instance metadata lookups (nothing may leave 127.0.0.1), plus moto's
/// credentials if `credentials`.
fn isolate(cmd: &mut Command, credentials: bool) {
    for var in FOREIGN_AWS_VARS {
        cmd.env_remove(var);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/pgark-test/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/pgark-test/aws-credentials",
        );
    if credentials {
        cmd.env("AWS_ACCESS_KEY_ID", MOTO_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", MOTO_SECRET_ACCESS_KEY);
    }
}

/// The global options that point pgark at `bucket/prefix` on `moto`.
fn s3_flags(moto: &MotoServer, bucket: &str, prefix: &str) -> Vec<String> {
    vec![
        "--repo".into(),
        format!("s3://{bucket}/{prefix}"),
        "--s3-endpoint".into(),
        moto.endpoint(),
        "--s3-force-path-style".into(),
        "--s3-region".into(),
        MOTO_REGION.into(),
    ]
}

/// Runs pgark with moto's credentials in the environment and `args`.
fn pgark_s3(args: &[String]) -> Output {
    let mut cmd = pgark();
    isolate(&mut cmd, true);
    cmd.args(args);
    run_capture(&mut cmd, None, Duration::from_secs(300)).expect("pgark runs")
}

pub(crate) fn with(mut flags: Vec<String>, more: &[&str]) -> Vec<String> {
    flags.extend(more.iter().map(|s| s.to_string()));
    flags
}

pub(crate) fn wal_fixtures() -> Vec<PathBuf> {
    let mut files = fixture_files("wal", is_segment_name);
    files.extend(fixture_files("wal", |n| {
        n.ends_with(".history") || n.ends_with(".backup") || n.ends_with(".partial")
    }));
    assert!(files.len() >= 4, "fixtures missing: {files:?}");
    files
}

#[test]
fn wal_archiving_round_trips_through_s3_in_both_checksum_modes() {
    let Some(moto) = moto_or_skip("S3 WAL archiving") else {
        return;
    };
    moto.create_bucket("wal-archive").unwrap();
    let files = wal_fixtures();
    let out_dir = tempfile::tempdir().unwrap();
    for checksum in ["when-supported", "when-required"] {
        let flags = with(
            s3_flags(&moto, "wal-archive", &format!("cluster/{checksum}")),
            &["--s3-checksum", checksum],
        );
        for f in &files {
            let name = f.file_name().unwrap().to_str().unwrap();
            let out = pgark_s3(&with(flags.clone(), &["wal-push", f.to_str().unwrap()]));
            assert_code(&out, 0);
            // Pushing the same file again succeeds without rewriting it.
            assert_code(
                &pgark_s3(&with(flags.clone(), &["wal-push", f.to_str().unwrap()])),
                0,
            );
            let dest = out_dir.path().join("RECOVERYXLOG");
            let out = pgark_s3(&with(flags.clone(), &["wal-fetch", name, dest.to_str().unwrap()]));
            assert_code(&out, 0);
            assert!(
                std::fs::read(&dest).unwrap() == std::fs::read(f).unwrap(),
                "{checksum}: {name} differs after the round trip"
            );
            std::fs::remove_file(&dest).unwrap();
        }
        // A segment that was never archived: "not found" (exit 1), which
        // tells PostgreSQL the archive ends here.
        let dest = out_dir.path().join("RECOVERYXLOG");
        let out = pgark_s3(&with(
            flags.clone(),
            &["wal-fetch", "0000000100000000000000FE", dest.to_str().unwrap()],
        ));
        assert_code(&out, 1);
        assert!(!dest.exists());
    }

    // Different content under an archived name is refused (exit 4) and
    // changes nothing: the create-only put met the existing object.
    let flags = s3_flags(&moto, "wal-archive", "cluster/when-supported");
    let work = tempfile::tempdir().unwrap();
    let segments = fixture_files("wal", is_segment_name);
    let first = &segments[0];
    let first_name = first.file_name().unwrap().to_str().unwrap();
    let impostor = work.path().join(first_name);
    let mut data = std::fs::read(first).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&impostor, &data).unwrap();
    let out = pgark_s3(&with(flags.clone(), &["wal-push", impostor.to_str().unwrap()]));
    assert_code(&out, 4);
    let dest = work.path().join("fetched");
    assert_code(
        &pgark_s3(&with(
            flags.clone(),
            &["wal-fetch", first_name, dest.to_str().unwrap()],
        )),
        0,
    );
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(first).unwrap());
}

/// The same repository reached through PGARK_* variables, through AWS_*
/// variables, and through the configuration file.
#[test]
fn s3_settings_from_environment_and_configuration_file() {
    let Some(moto) = moto_or_skip("S3 settings") else {
        return;
    };
    moto.create_bucket("settings").unwrap();
    let segment = &fixture_files("wal", is_segment_name)[0];
    let name = segment.file_name().unwrap().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("RECOVERYXLOG");

    // Pushed with PGARK_* variables only.
    let mut cmd = pgark();
    isolate(&mut cmd, true);
    cmd.env("PGARK_REPO", "s3://settings/env")
        .env("PGARK_S3_ENDPOINT", moto.endpoint())
        .env("PGARK_S3_FORCE_PATH_STYLE", "true")
        .env("PGARK_S3_REGION", MOTO_REGION)
        .env("PGARK_S3_CHECKSUM", "when-required")
        .env("PGARK_S3_SSE", "AES256")
        .env("PGARK_S3_STORAGE_CLASS", "STANDARD_IA")
        .args(["wal-push", segment.to_str().unwrap()]);
    assert_code(&run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap(), 0);

    // Fetched with the AWS SDK's own variables for endpoint and region.
    let mut cmd = pgark();
    isolate(&mut cmd, true);
    cmd.env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_REGION", MOTO_REGION)
        .args([
            "--repo",
            "s3://settings/env",
            "--s3-force-path-style",
            "wal-fetch",
            name,
            dest.to_str().unwrap(),
        ]);
    assert_code(&run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap(), 0);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(segment).unwrap());
    std::fs::remove_file(&dest).unwrap();

    // Fetched with the configuration file.
    let config = work.path().join("pgark.toml");
    std::fs::write(
        &config,
        format!(
            "repo = 's3://settings/env'\ns3_endpoint = '{}'\ns3_region = '{MOTO_REGION}'\n\
             s3_force_path_style = true\ns3_checksum = 'when-supported'\ns3_sse = 'aws:kms'\n\
             s3_sse_kms_key_id = 'alias/pgark'\ns3_storage_class = 'STANDARD'\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let mut cmd = pgark();
    isolate(&mut cmd, true);
    cmd.arg("--config")
        .arg(&config)
        .args(["wal-fetch", name, dest.to_str().unwrap()]);
    assert_code(&run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap(), 0);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(segment).unwrap());

    // Invalid settings are usage errors naming the option.
    for (flag, value) in [
        ("--s3-sse", "des"),
        ("--s3-checksum", "always"),
        ("--s3-endpoint", "127.0.0.1:1"),
    ] {
        let out = pgark_s3(&[
            "--repo".into(),
            "s3://settings/env".into(),
            flag.into(),
            value.into(),
            "wal-fetch".into(),
            name.into(),
            dest.to_str().unwrap().into(),
        ]);
        assert_code(&out, 2);
        assert!(stderr(&out).contains(&flag[2..]), "{flag}: {}", stderr(&out));
    }
    for bad in ["s3://", "s3://bad bucket/x", "s3://b/a//c"] {
        let out = pgark_s3(&["--repo".into(), bad.into(), "backup-list".into()]);
        assert_code(&out, 2);
    }
}

/// Without credentials, with a bucket that does not exist, and with nothing
/// listening: a repository failure (exit 6) that says why, promptly, and
/// never "not found" (exit 1), which would end a recovery early.
#[test]
fn s3_failures_are_clear_and_prompt() {
    let Some(moto) = moto_or_skip("S3 failures") else {
        return;
    };
    moto.create_bucket("present").unwrap();
    let segment = &fixture_files("wal", is_segment_name)[0];
    let name = segment.file_name().unwrap().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("RECOVERYXLOG");
    let push = |flags: Vec<String>, credentials: bool| {
        let mut cmd = pgark();
        isolate(&mut cmd, credentials);
        cmd.args(with(flags, &["wal-push", segment.to_str().unwrap()]));
        run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap()
    };
    let fetch = |flags: Vec<String>, credentials: bool| {
        let mut cmd = pgark();
        isolate(&mut cmd, credentials);
        cmd.args(with(flags, &["wal-fetch", name, dest.to_str().unwrap()]));
        run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap()
    };

    // No credentials anywhere.
    let started = Instant::now();
    for out in [
        push(s3_flags(&moto, "present", "repo"), false),
        fetch(s3_flags(&moto, "present", "repo"), false),
    ] {
        assert_code(&out, 6);
        let msg = stderr(&out);
        assert!(
            msg.contains("no AWS credentials") && msg.contains("\"present\""),
            "{msg}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // No such bucket.
    for out in [
        push(s3_flags(&moto, "absent", "repo"), true),
        fetch(s3_flags(&moto, "absent", "repo"), true),
    ] {
        assert_code(&out, 6);
        let msg = stderr(&out);
        assert!(msg.contains("\"absent\" does not exist"), "{msg}");
    }
    // A recovery must not take a missing bucket for the end of the archive.
    let out = fetch(
        with(s3_flags(&moto, "absent", "repo"), &["--abort-on-error"]),
        true,
    );
    assert_eq!(out.status.code(), Some(128 + 6), "{}", stderr(&out));

    // Nothing listening.
    let port = pgark_testkit::pg::free_port().unwrap();
    let started = Instant::now();
    let out = fetch(
        vec![
            "--repo".into(),
            "s3://present/repo".into(),
            "--s3-endpoint".into(),
            format!("http://127.0.0.1:{port}"),
            "--s3-force-path-style".into(),
            "--s3-region".into(),
            MOTO_REGION.into(),
            "--retry-attempts".into(),
            "1".into(),
        ],
        true,
    );
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

// ---------------------------------------------------------------------------
// Base backup and restore
// ---------------------------------------------------------------------------

/// A cluster archiving into `s3://backups/<prefix>` on moto, and the
/// environment its pgark runs get.
struct S3Source {
    bin: PathBuf,
    moto: MotoServer,
    repo: String,
    cluster: PgCluster,
}

impl S3Source {
    fn start(moto: MotoServer, prefix: &str) -> S3Source {
        moto.create_bucket("backups").unwrap();
        let bin = expose_binary(&pgark_bin());
        let repo = format!("s3://backups/{prefix}");
        // archive_command runs in the server's environment, which has no
        // AWS settings: the command brings its own.
        let command = format!(
            "env AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_EC2_METADATA_DISABLED=true \
             {} wal-push --repo {} --s3-endpoint {} --s3-force-path-style --s3-region {} %p",
            MOTO_ACCESS_KEY_ID,
            MOTO_SECRET_ACCESS_KEY,
            shell_quote(&bin.to_string_lossy()),
            shell_quote(&repo),
            moto.endpoint(),
            MOTO_REGION,
        );
        let opts =
            ClusterOptions::new(PgInstall::detect().expect("PostgreSQL")).with_archive_command(command);
        let cluster = PgCluster::start_new(opts).unwrap_or_else(|e| panic!("{e}"));
        cluster
            .psql("create table t (id bigserial primary key, batch text not null)")
            .unwrap();
        S3Source {
            bin,
            moto,
            repo,
            cluster,
        }
    }

    /// pgark as the unprivileged user, configured through PGARK_* variables.
    fn pgark(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run_capture(&mut cmd, None, Duration::from_secs(600)).expect("pgark runs")
    }

    /// The command [`S3Source::pgark`] runs, without arguments.
    fn command(&self) -> Command {
        let mut cmd = command_as_pg_user(&self.bin);
        isolate(&mut cmd, true);
        cmd.env("PGHOST", self.cluster.socket_dir())
            .env("PGPORT", self.cluster.port().to_string())
            .env("PGUSER", self.cluster.superuser())
            .env("PGARK_REPO", &self.repo)
            .env("PGARK_S3_ENDPOINT", self.moto.endpoint())
            .env("PGARK_S3_FORCE_PATH_STYLE", "1")
            .env("PGARK_S3_REGION", MOTO_REGION);
        cmd
    }
}

pub(crate) fn checksum(cluster: &PgCluster) -> String {
    cluster
        .psql("select count(*) || ':' || md5(coalesce(string_agg(id || batch, ',' order by id), '')) from t")
        .unwrap()
}

/// The value of `restore_command` in the restored directory's
/// postgresql.auto.conf.
pub(crate) fn written_restore_command(data_dir: &Path) -> String {
    let conf = std::fs::read_to_string(data_dir.join("postgresql.auto.conf")).unwrap();
    let line = conf
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("restore_command"))
        .unwrap_or_else(|| panic!("no restore_command in postgresql.auto.conf:\n{conf}"));
    let quoted = line.split_once('=').unwrap().1.trim();
    quoted
        .strip_prefix('\'')
        .and_then(|q| q.strip_suffix('\''))
        .unwrap_or_else(|| panic!("unexpected restore_command line {line:?}"))
        .replace("''", "'")
}

/// Replaces `restore_command` in postgresql.auto.conf.
pub(crate) fn rewrite_restore_command(data_dir: &Path, command: &str) {
    let path = data_dir.join("postgresql.auto.conf");
    let conf = std::fs::read_to_string(&path).unwrap();
    let mut out: Vec<String> = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with("restore_command"))
        .map(str::to_owned)
        .collect();
    out.push(format!("restore_command = '{}'", command.replace('\'', "''")));
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
}

#[test]
fn base_backup_and_restore_through_s3() {
    let Some(moto) = moto_or_skip("S3 base backup and restore") else {
        return;
    };
    let src = S3Source::start(moto, "pg/main");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    c.psql("insert into t (batch) select 'before' from generate_series(1, 1000)")
        .unwrap();
    let out = src.pgark(&["backup-push", c.data_dir().to_str().unwrap()]);
    assert_code(&out, 0);
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(name.starts_with("base_"), "{name}");

    // Changes after the backup come from the WAL archive in S3.
    c.psql("insert into t (batch) select 'after' from generate_series(1, 500)")
        .unwrap();
    c.pgbench(&["-c", "1", "-t", "100", "-n"]).unwrap();
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

    let dir = scratch_dir("s3-restore");
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

    // restore_command carries the repository and the S3 settings (from
    // the PGARK_* variables backup-fetch ran with), not the credentials.
    let restore = written_restore_command(&dest);
    for needle in [
        "wal-fetch",
        "--repo 's3://backups/pg/main'",
        &format!("--s3-endpoint '{}'", src.moto.endpoint()),
        "--s3-force-path-style",
        &format!("--s3-region '{MOTO_REGION}'"),
    ] {
        assert!(restore.contains(needle), "{needle:?} missing in {restore}");
    }
    assert!(!restore.contains(MOTO_SECRET_ACCESS_KEY), "{restore}");
    // The restored server's environment has no credentials; as with an
    // instance role or AWS_* variables in the service's environment, the
    // test gives it some.
    rewrite_restore_command(
        &dest,
        &format!(
            "env AWS_ACCESS_KEY_ID={MOTO_ACCESS_KEY_ID} AWS_SECRET_ACCESS_KEY={MOTO_SECRET_ACCESS_KEY} \
             AWS_EC2_METADATA_DISABLED=true {restore}"
        ),
    );
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

    // Every multipart upload of the backup was completed or aborted.
    let (status, body) = src.moto.request("GET", "/backups?uploads", b"").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("<Upload>"), "unfinished uploads: {body}");
}

/// Issue 11: wal-fetch and backup-list on a prefix that holds no
/// repository (a wrong prefix, or the bucket's root above a repository)
/// exit 11, 139 with --abort-on-error, never "not found" (1) or an empty
/// list, and write nothing into the bucket.
#[test]
fn wal_fetch_and_backup_list_refuse_a_missing_or_empty_repository_on_s3() {
    let Some(moto) = moto_or_skip("S3 missing repository") else {
        return;
    };
    moto.create_bucket("norepo").unwrap();
    let segment = &fixture_files("wal", is_segment_name)[0];
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert_code(
        &pgark_s3(&with(
            s3_flags(&moto, "norepo", "real/repo"),
            &["wal-push", segment.to_str().unwrap()],
        )),
        0,
    );
    let listing = || moto.request("GET", "/norepo?list-type=2", b"").unwrap().1;
    let before = listing();
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("RECOVERYXLOG");
    // "empty": nothing under the prefix; "parent": objects, no repository.json.
    for prefix in ["typo/repo", "real", ""] {
        let flags = s3_flags(&moto, "norepo", prefix);
        for (args, code) in [
            (vec!["wal-fetch", name, dest.to_str().unwrap()], 11),
            (
                vec!["--abort-on-error", "wal-fetch", name, dest.to_str().unwrap()],
                139,
            ),
            (vec!["backup-list"], 11),
            (vec!["backup-list", "--json"], 11),
        ] {
            let out = pgark_s3(&with(flags.clone(), &args));
            assert_code(&out, code);
            let msg = stderr(&out);
            assert!(
                msg.contains("no pgark repository at s3://norepo"),
                "{prefix:?} {args:?}: {msg}"
            );
            assert!(out.stdout.is_empty(), "{prefix:?} {args:?} printed something");
            assert!(!dest.exists());
        }
    }
    assert_eq!(listing(), before, "a reading command wrote into the bucket");
    // The real repository answers as before.
    let flags = s3_flags(&moto, "norepo", "real/repo");
    assert_code(
        &pgark_s3(&with(flags.clone(), &["wal-fetch", name, dest.to_str().unwrap()])),
        0,
    );
    let out = pgark_s3(&with(flags, &["backup-list", "--json"]));
    assert_code(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// The store's own listing of the repository `pg/<prefix>` in bucket
/// `backups`, relative to it.
fn moto_objects(moto: &MotoServer, prefix: &str) -> Vec<String> {
    let (status, body) = moto
        .request(
            "GET",
            &format!("/backups?list-type=2&prefix={prefix}/&max-keys=100000"),
            b"",
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("<IsTruncated>true"), "listing truncated");
    crate::retention::values_of(&body, "Key")
        .into_iter()
        .map(|k| k.strip_prefix(&format!("{prefix}/")).unwrap().to_string())
        .collect()
}

fn moto_restore_env() -> String {
    format!(
        "env AWS_ACCESS_KEY_ID={MOTO_ACCESS_KEY_ID} AWS_SECRET_ACCESS_KEY={MOTO_SECRET_ACCESS_KEY} \
         AWS_EC2_METADATA_DISABLED=true "
    )
}

/// Issue 13 on S3 (moto): see `retention::retention_on_a_store`.
#[test]
fn retention_deletes_the_right_objects_on_s3() {
    let Some(moto) = moto_or_skip("S3 retention") else {
        return;
    };
    let src = S3Source::start(moto, "pg/ret");
    crate::retention::retention_on_a_store(&crate::retention::RemoteRepo {
        cluster: &src.cluster,
        pgark: &|args| src.pgark(args),
        objects: &|| moto_objects(&src.moto, "pg/ret"),
        restore_env: &moto_restore_env(),
    });
}

/// Issue 13 on S3 (moto): see `retention::delete_killed_on_a_store`.
#[test]
fn delete_killed_at_random_points_on_s3() {
    let Some(moto) = moto_or_skip("S3 delete killed") else {
        return;
    };
    let src = S3Source::start(moto, "pg/killed");
    let repo = crate::retention::RemoteRepo {
        cluster: &src.cluster,
        pgark: &|args| src.pgark(args),
        objects: &|| moto_objects(&src.moto, "pg/killed"),
        restore_env: &moto_restore_env(),
    };
    crate::retention::delete_killed_on_a_store(&repo, &|| src.command());
}
