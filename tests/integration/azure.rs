//! The `pgark` binary against an Azure repository on Azurite (127.0.0.1,
//! started and stopped by each test): WAL archiving of the fixture segments
//! with the account key and with a SAS token, settings from flags, PGARK_*
//! and AZURE_* variables and the configuration file, clear failures without
//! credentials, with a wrong key or without container, and a base backup of
//! a real cluster restored from Azure and recovered to a restore point
//! (point-in-time recovery) with the restore_command pgark wrote.
//!
//! Needs Azurite (`.ci/install-deps.sh` installs it); with
//! `PGARK_TEST_SKIP_AZURE=1` the tests skip where it cannot be started.

use crate::common::*;
use crate::s3::{checksum, rewrite_restore_command, wal_fixtures, with, written_restore_command};
use pgark_testkit::pg::{
    command_as_pg_user, expose_binary, run_capture, scratch_dir, shell_quote, ClusterOptions, PgCluster,
    PgInstall,
};
use pgark_testkit::servers::{azurite_or_skip, Azurite, AZURITE_ACCOUNT, AZURITE_KEY};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How a test's pgark authenticates.
#[derive(Clone, Copy)]
enum Creds {
    None,
    Key,
    Sas,
}

/// `cmd` with no Azure settings from the caller, and the development
/// account's credentials as asked. Without them pgark tries Entra ID: a
/// managed identity endpoint on a closed local port stands in for the
/// instance metadata service (nothing may leave 127.0.0.1), and there is no
/// Azure CLI login.
fn isolate(cmd: &mut Command, creds: Creds) {
    for var in [
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "MSI_ENDPOINT",
        "IMDS_ENDPOINT",
        "IDENTITY_SERVER_THUMBPRINT",
    ] {
        cmd.env_remove(var);
    }
    let port = pgark_testkit::pg::free_port().unwrap();
    cmd.env("IDENTITY_ENDPOINT", format!("http://127.0.0.1:{port}/token"))
        .env("IDENTITY_HEADER", "pgark-test")
        .env("AZURE_CONFIG_DIR", "/nonexistent/pgark-test/azure");
    cmd.env("AZURE_STORAGE_ACCOUNT", AZURITE_ACCOUNT);
    match creds {
        Creds::None => {}
        Creds::Key => {
            cmd.env("AZURE_STORAGE_ACCESS_KEY", AZURITE_KEY);
        }
        Creds::Sas => {
            cmd.env("AZURE_STORAGE_SAS_TOKEN", Azurite::sas("rwdlac", AZURITE_KEY));
        }
    }
}

fn azure_flags(server: &Azurite, container: &str, prefix: &str) -> Vec<String> {
    vec![
        "--repo".into(),
        format!("azure://{container}/{prefix}"),
        "--azure-endpoint".into(),
        server.endpoint(),
    ]
}

fn pgark_azure(args: &[String], creds: Creds) -> Output {
    let mut cmd = pgark();
    isolate(&mut cmd, creds);
    cmd.args(args);
    run_capture(&mut cmd, None, Duration::from_secs(300)).expect("pgark runs")
}

#[test]
fn wal_archiving_round_trips_through_azure_with_key_and_sas() {
    let Some(server) = azurite_or_skip("Azure WAL archiving") else {
        return;
    };
    server.create_container("wal-archive").unwrap();
    let files = wal_fixtures();
    let out_dir = tempfile::tempdir().unwrap();
    for (creds, prefix) in [(Creds::Key, "key"), (Creds::Sas, "sas")] {
        let flags = azure_flags(&server, "wal-archive", prefix);
        for f in &files {
            let name = f.file_name().unwrap().to_str().unwrap();
            assert_code(
                &pgark_azure(&with(flags.clone(), &["wal-push", f.to_str().unwrap()]), creds),
                0,
            );
            assert_code(
                &pgark_azure(&with(flags.clone(), &["wal-push", f.to_str().unwrap()]), creds),
                0,
            );
            let dest = out_dir.path().join("RECOVERYXLOG");
            let out = pgark_azure(
                &with(flags.clone(), &["wal-fetch", name, dest.to_str().unwrap()]),
                creds,
            );
            assert_code(&out, 0);
            assert!(
                std::fs::read(&dest).unwrap() == std::fs::read(f).unwrap(),
                "{prefix}: {name} differs after the round trip"
            );
            std::fs::remove_file(&dest).unwrap();
        }
        let dest = out_dir.path().join("RECOVERYXLOG");
        let out = pgark_azure(
            &with(
                flags.clone(),
                &["wal-fetch", "0000000100000000000000FE", dest.to_str().unwrap()],
            ),
            creds,
        );
        assert_code(&out, 1);
        assert!(!dest.exists());
    }

    // Different content under an archived name is refused (exit 4).
    let flags = azure_flags(&server, "wal-archive", "key");
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
        &pgark_azure(
            &with(flags.clone(), &["wal-push", impostor.to_str().unwrap()]),
            Creds::Key,
        ),
        4,
    );
    let dest = work.path().join("fetched");
    assert_code(
        &pgark_azure(
            &with(flags, &["wal-fetch", first_name, dest.to_str().unwrap()]),
            Creds::Key,
        ),
        0,
    );
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(first).unwrap());
}

/// PGARK_* variables and the configuration file.
#[test]
fn azure_settings_from_environment_and_configuration_file() {
    let Some(server) = azurite_or_skip("Azure settings") else {
        return;
    };
    server.create_container("settings").unwrap();
    let segment = &fixture_files("wal", is_segment_name)[0];
    let name = segment.file_name().unwrap().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("RECOVERYXLOG");

    let mut cmd = pgark();
    isolate(&mut cmd, Creds::Key);
    cmd.env_remove("AZURE_STORAGE_ACCOUNT")
        .env("PGARK_REPO", "azure://settings/env")
        .env("PGARK_AZURE_ACCOUNT", AZURITE_ACCOUNT)
        .env("PGARK_AZURE_ENDPOINT", server.endpoint())
        .args(["wal-push", segment.to_str().unwrap()]);
    assert_code(&run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap(), 0);

    let config = work.path().join("pgark.toml");
    std::fs::write(
        &config,
        format!(
            "repo = 'azure://settings/env'\nazure_endpoint = '{}'\nazure_account = '{AZURITE_ACCOUNT}'\n",
            server.endpoint()
        ),
    )
    .unwrap();
    let mut cmd = pgark();
    isolate(&mut cmd, Creds::Sas);
    cmd.env_remove("AZURE_STORAGE_ACCOUNT")
        .arg("--config")
        .arg(&config)
        .args(["wal-fetch", name, dest.to_str().unwrap()]);
    assert_code(&run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap(), 0);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(segment).unwrap());

    let out = pgark_azure(
        &[
            "--repo".into(),
            "azure://settings/env".into(),
            "--azure-endpoint".into(),
            "127.0.0.1:1".into(),
            "backup-list".into(),
        ],
        Creds::Key,
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("azure-endpoint"), "{}", stderr(&out));
    for bad in ["azure://", "azure://Bad_Container/x", "azure://container/a//c"] {
        assert_code(
            &pgark_azure(&["--repo".into(), bad.into(), "backup-list".into()], Creds::Key),
            2,
        );
    }
}

/// Without credentials, with a wrong key, without container, with nothing
/// listening: a repository failure (exit 6) that says why, promptly.
#[test]
fn azure_failures_are_clear_and_prompt() {
    let Some(server) = azurite_or_skip("Azure failures") else {
        return;
    };
    server.create_container("present").unwrap();
    let segment = &fixture_files("wal", is_segment_name)[0];
    let name = segment.file_name().unwrap().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("RECOVERYXLOG");
    let fetch = |flags: Vec<String>, creds: Creds| {
        pgark_azure(&with(flags, &["wal-fetch", name, dest.to_str().unwrap()]), creds)
    };
    let push = |flags: Vec<String>, creds: Creds| {
        pgark_azure(&with(flags, &["wal-push", segment.to_str().unwrap()]), creds)
    };

    let started = Instant::now();
    for out in [
        push(azure_flags(&server, "present", "repo"), Creds::None),
        fetch(azure_flags(&server, "present", "repo"), Creds::None),
    ] {
        assert_code(&out, 6);
        let msg = stderr(&out);
        assert!(
            msg.contains("no Azure credentials") && msg.contains("AZURE_STORAGE_ACCESS_KEY"),
            "{msg}"
        );
    }

    // A wrong key: Azurite checks the signature.
    let mut cmd = pgark();
    isolate(&mut cmd, Creds::None);
    cmd.env("AZURE_STORAGE_ACCESS_KEY", "cGdhcmstdGVzdC1rZXktbm90LWEtc2VjcmV0")
        .args(with(
            azure_flags(&server, "present", "repo"),
            &["wal-fetch", name, dest.to_str().unwrap()],
        ));
    let out = run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap();
    assert_code(&out, 6);
    let msg = stderr(&out);
    assert!(
        msg.contains("\"present\"") && msg.contains("HTTP 403") && msg.contains("AZURE_STORAGE_ACCESS_KEY"),
        "{msg}"
    );

    for out in [
        push(azure_flags(&server, "absent", "repo"), Creds::Key),
        fetch(azure_flags(&server, "absent", "repo"), Creds::Key),
    ] {
        assert_code(&out, 6);
        let msg = stderr(&out);
        assert!(msg.contains("\"absent\" does not exist"), "{msg}");
    }
    let out = fetch(
        with(azure_flags(&server, "absent", "repo"), &["--abort-on-error"]),
        Creds::Key,
    );
    assert_eq!(out.status.code(), Some(128 + 6), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    let port = pgark_testkit::pg::free_port().unwrap();
    let started = Instant::now();
    let out = fetch(
        vec![
            "--repo".into(),
            "azure://present/repo".into(),
            "--azure-endpoint".into(),
            format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            "--retry-attempts".into(),
            "1".into(),
        ],
        Creds::Key,
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

struct AzureSource {
    bin: PathBuf,
    server: Azurite,
    repo: String,
    cluster: PgCluster,
}

impl AzureSource {
    fn start(server: Azurite, prefix: &str) -> AzureSource {
        server.create_container("backups").unwrap();
        let bin = expose_binary(&pgark_bin());
        let repo = format!("azure://backups/{prefix}");
        // archive_command runs in the server's environment, which has no
        // Azure settings: the command brings its own.
        let command = format!(
            "env AZURE_STORAGE_ACCOUNT={AZURITE_ACCOUNT} AZURE_STORAGE_ACCESS_KEY={} {} wal-push --repo {} \
             --azure-endpoint {} %p",
            shell_quote(AZURITE_KEY),
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
        AzureSource {
            bin,
            server,
            repo,
            cluster,
        }
    }

    fn pgark(&self, args: &[&str]) -> Output {
        let mut cmd = command_as_pg_user(&self.bin);
        isolate(&mut cmd, Creds::Key);
        cmd.env("PGHOST", self.cluster.socket_dir())
            .env("PGPORT", self.cluster.port().to_string())
            .env("PGUSER", self.cluster.superuser())
            .env("PGARK_REPO", &self.repo)
            .env("PGARK_AZURE_ENDPOINT", self.server.endpoint())
            .args(args);
        run_capture(&mut cmd, None, Duration::from_secs(600)).expect("pgark runs")
    }
}

#[test]
fn base_backup_and_restore_through_azure() {
    let Some(server) = azurite_or_skip("Azure base backup and restore") else {
        return;
    };
    let src = AzureSource::start(server, "pg/main");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    c.psql("insert into t (batch) select 'before' from generate_series(1, 1000)")
        .unwrap();
    let out = src.pgark(&["backup-push", c.data_dir().to_str().unwrap()]);
    assert_code(&out, 0);
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(name.starts_with("base_"), "{name}");

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

    let dir = scratch_dir("azure-restore");
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

    // restore_command carries the repository, account and endpoint, not the
    // key.
    let restore = written_restore_command(&dest);
    for needle in [
        "wal-fetch",
        "--repo 'azure://backups/pg/main'",
        &format!("--azure-account '{AZURITE_ACCOUNT}'"),
        &format!("--azure-endpoint '{}'", src.server.endpoint()),
    ] {
        assert!(restore.contains(needle), "{needle:?} missing in {restore}");
    }
    assert!(!restore.contains(AZURITE_KEY), "{restore}");
    rewrite_restore_command(
        &dest,
        &format!(
            "env AZURE_STORAGE_ACCESS_KEY={} {restore}",
            shell_quote(AZURITE_KEY)
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
}

/// Issue 11: wal-fetch and backup-list on a prefix that holds no
/// repository (a wrong prefix, or the container's root above a repository)
/// exit 11, 139 with --abort-on-error, never "not found" (1) or an empty
/// list, and write nothing into the container.
#[test]
fn wal_fetch_and_backup_list_refuse_a_missing_or_empty_repository_on_azure() {
    let Some(server) = azurite_or_skip("Azure missing repository") else {
        return;
    };
    server.create_container("norepo").unwrap();
    let segment = &fixture_files("wal", is_segment_name)[0];
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert_code(
        &pgark_azure(
            &with(
                azure_flags(&server, "norepo", "real/repo"),
                &["wal-push", segment.to_str().unwrap()],
            ),
            Creds::Key,
        ),
        0,
    );
    let listing = || {
        server
            .request(
                "GET",
                &format!("/{AZURITE_ACCOUNT}/norepo?restype=container&comp=list"),
                b"",
            )
            .unwrap()
            .1
    };
    let before = listing();
    assert!(before.contains("repository.json"), "{before}");
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("RECOVERYXLOG");
    // "empty": nothing under the prefix; "parent": objects, no repository.json.
    for prefix in ["typo/repo", "real", ""] {
        let flags = azure_flags(&server, "norepo", prefix);
        for (args, code) in [
            (vec!["wal-fetch", name, dest.to_str().unwrap()], 11),
            (
                vec!["--abort-on-error", "wal-fetch", name, dest.to_str().unwrap()],
                139,
            ),
            (vec!["backup-list"], 11),
            (vec!["backup-list", "--json"], 11),
        ] {
            let out = pgark_azure(&with(flags.clone(), &args), Creds::Key);
            assert_code(&out, code);
            let msg = stderr(&out);
            assert!(
                msg.contains("no pgark repository at azure://norepo"),
                "{prefix:?} {args:?}: {msg}"
            );
            assert!(out.stdout.is_empty(), "{prefix:?} {args:?} printed something");
            assert!(!dest.exists());
        }
    }
    assert_eq!(listing(), before, "a reading command wrote into the container");
    // The real repository answers as before.
    let flags = azure_flags(&server, "norepo", "real/repo");
    assert_code(
        &pgark_azure(
            &with(flags.clone(), &["wal-fetch", name, dest.to_str().unwrap()]),
            Creds::Key,
        ),
        0,
    );
    let out = pgark_azure(&with(flags, &["backup-list", "--json"]), Creds::Key);
    assert_code(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// Issue 13 on Azure (Azurite): see `retention::retention_on_a_store`.
#[test]
fn retention_deletes_the_right_objects_on_azure() {
    let Some(server) = azurite_or_skip("Azure retention") else {
        return;
    };
    let src = AzureSource::start(server, "pg/ret");
    let pgark = |args: &[&str]| src.pgark(args);
    let objects = || {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let path = format!(
                "/{AZURITE_ACCOUNT}/backups?restype=container&comp=list&prefix=pg/ret/&maxresults=5000{marker}"
            );
            let (status, body) = src.server.request("GET", &path, b"").unwrap();
            assert_eq!(status, 200, "{body}");
            for name in crate::retention::values_of(&body, "Name") {
                names.push(name.strip_prefix("pg/ret/").unwrap().to_string());
            }
            match crate::retention::values_of(&body, "NextMarker").first() {
                Some(m) if !m.is_empty() => marker = format!("&marker={m}"),
                _ => break,
            }
        }
        names
    };
    let env = format!("env AZURE_STORAGE_ACCESS_KEY={} ", shell_quote(AZURITE_KEY));
    crate::retention::retention_on_a_store(&crate::retention::RemoteRepo {
        cluster: &src.cluster,
        pgark: &pgark,
        objects: &objects,
        restore_env: &env,
    });
}
