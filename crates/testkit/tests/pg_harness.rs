//! The PostgreSQL harness against real servers.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use pgark_testkit::pg::{
    chown_to_pg_user, command_as_pg_user, expose_binary, pg_user, run_checked, scratch_dir, ClusterOptions,
    PgCluster, PgInstall, SUPERUSER,
};

const WAIT: Duration = Duration::from_secs(60);

fn install() -> PgInstall {
    PgInstall::detect().unwrap()
}

#[test]
fn detects_an_installation() {
    let install = install();
    assert!(install.major >= 10, "{install:?}");
    assert!(
        install.version.starts_with(&install.major.to_string()),
        "{install:?}"
    );
    for tool in ["initdb", "pg_ctl", "postgres", "psql", "pgbench", "pg_basebackup"] {
        assert!(
            install.has_tool(tool),
            "{tool} missing in {}",
            install.bin_dir.display()
        );
    }
    assert_eq!(PgInstall::from_bin_dir(&install.bin_dir).unwrap(), install);
    assert!(PgInstall::from_bin_dir("/nonexistent/bin").is_err());
}

#[test]
fn cluster_lifecycle() {
    let install = install();
    let cluster = PgCluster::start_new(ClusterOptions::new(install.clone())).unwrap();
    assert!(cluster.is_running());
    assert_eq!(cluster.superuser(), SUPERUSER);
    assert_eq!(
        cluster.conninfo(),
        format!(
            "host={} port={} user=postgres dbname=postgres",
            cluster.socket_dir().display(),
            cluster.port()
        )
    );
    assert_eq!(cluster.psql("show data_checksums").unwrap(), "on");
    assert_eq!(cluster.psql("show wal_level").unwrap(), "replica");
    assert!(cluster
        .psql("show server_version_num")
        .unwrap()
        .starts_with(&install.major.to_string()));

    cluster
        .psql(
            "create table t (id int primary key, v text);
             insert into t select g, 'row ' || g from generate_series(1, 1000) g;",
        )
        .unwrap();
    assert_eq!(
        cluster
            .psql("select count(*), max(v) from t where id > 10")
            .unwrap(),
        "990|row 999"
    );

    // Errors carry psql's message.
    let err = cluster.psql("select * from no_such_table").unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");

    cluster.pgbench(&["-i", "-s", "1", "-q"]).unwrap();
    let out = cluster.pgbench(&["-c", "2", "-t", "50", "-n"]).unwrap();
    assert!(
        out.contains("number of transactions actually processed: 100"),
        "{out}"
    );

    cluster.restart().unwrap();
    assert_eq!(
        cluster.psql("select count(*) from pgbench_accounts").unwrap(),
        "100000"
    );
    assert_eq!(cluster.psql("select count(*) from t").unwrap(), "1000");

    // TCP works too.
    let mut psql = cluster.client_command("psql");
    psql.args(["-X", "-At", "-d", &cluster.tcp_conninfo(), "-c", "select 42"]);
    let out = run_checked(&mut psql, None, WAIT).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    let control = cluster.controldata().unwrap();
    assert_eq!(
        control.get("Data page checksum version").map(String::as_str),
        Some("1")
    );

    cluster.stop().unwrap();
    assert!(!cluster.is_running());
    cluster.stop().unwrap(); // idempotent
    let log = cluster.log();
    assert!(log.contains("database system is shut down"), "{log}");
}

#[test]
fn archive_command_archives_switched_segments() {
    let archive = scratch_dir("pgark-archive-");
    let dir = archive.path().display().to_string();
    let opts = ClusterOptions::new(install())
        .with_wal_segsize_mb(1)
        .with_data_checksums(false)
        .with_archive_command(format!("test ! -f {dir}/%f && cp %p {dir}/%f"));
    let cluster = PgCluster::start_new(opts).unwrap();
    assert_eq!(cluster.psql("show data_checksums").unwrap(), "off");
    assert_eq!(cluster.psql("show wal_segment_size").unwrap(), "1MB");

    cluster
        .psql("create table t as select generate_series(1, 100) id")
        .unwrap();
    let segment = cluster.switch_wal().unwrap();
    assert_eq!(segment.len(), 24, "{segment}");
    let archived = archive.path().join(&segment);
    cluster
        .wait_for(&format!("{segment} to be archived"), WAIT, || archived.exists())
        .unwrap();
    cluster
        .wait_for("the archive copy to be complete", WAIT, || {
            fs::metadata(&archived).is_ok_and(|m| m.len() == 1024 * 1024)
        })
        .unwrap();
    // The archiver updates its statistics only after the command returned.
    cluster
        .wait_for("pg_stat_archiver to report the segment", WAIT, || {
            cluster
                .psql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
                .is_ok_and(|w| w == segment)
        })
        .unwrap();

    if let Some((uid, _)) = pg_user() {
        // Written by the server's archive_command, i.e. as the unprivileged user.
        assert_eq!(fs::metadata(&archived).unwrap().uid(), uid);
    }

    let err = cluster.wait_for("something that never happens", Duration::from_millis(300), || {
        false
    });
    let err = err.unwrap_err().to_string();
    assert!(
        err.contains("something that never happens") && err.contains("server log"),
        "{err}"
    );
}

/// A stopped cluster's file-level copy starts on another port, and archive
/// recovery from the copy replays what the original archived afterwards.
#[test]
fn file_level_copy_restores_with_restore_command() {
    let install = install();
    let archive = scratch_dir("pgark-archive-");
    let dir = archive.path().display().to_string();
    let primary = PgCluster::start_new(
        ClusterOptions::new(install.clone())
            .with_archive_command(format!("test ! -f {dir}/%f && cp %p {dir}/%f")),
    )
    .unwrap();
    primary
        .psql("create table t (id int); insert into t select generate_series(1, 10);")
        .unwrap();
    primary.stop().unwrap();

    // Cold copy, made by root the way a test would (cp -a as the user would do too).
    let backups = scratch_dir("pgark-copy-");
    let copy = backups.path().join("data");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(primary.data_dir())
        .arg(&copy)
        .status();
    assert!(status.unwrap().success());
    chown_to_pg_user(&copy).unwrap();

    // More work on the primary after the copy, archived.
    primary.start().unwrap();
    primary
        .psql("insert into t select generate_series(11, 25);")
        .unwrap();
    let segment = primary.switch_wal().unwrap();
    let archived = archive.path().join(&segment);
    primary
        .wait_for(&format!("{segment} to be archived"), WAIT, || archived.exists())
        .unwrap();

    // The plain copy starts on a port of its own while the primary runs.
    {
        let plain = backups.path().join("plain");
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&copy)
            .arg(&plain)
            .status();
        assert!(status.unwrap().success());
        let clone = PgCluster::from_data_dir(&install, &plain).unwrap();
        clone.set_archive_command(None).unwrap();
        clone.start().unwrap();
        assert_ne!(clone.port(), primary.port());
        assert_eq!(clone.psql("select count(*) from t").unwrap(), "10");
        assert_eq!(primary.psql("select count(*) from t").unwrap(), "25");
    }

    // The copy plus the archive: archive recovery to the end, then promotion.
    let restored = PgCluster::from_data_dir(&install, &copy).unwrap();
    restored.set_archive_command(None).unwrap();
    restored.set_restore_command(&format!("cp {dir}/%f %p")).unwrap();
    restored.create_recovery_signal().unwrap();
    restored.start().unwrap();
    restored
        .wait_for("recovery to end", WAIT, || {
            restored
                .psql("select pg_is_in_recovery()")
                .is_ok_and(|r| r == "f")
        })
        .unwrap();
    assert_eq!(restored.psql("select count(*) from t").unwrap(), "25");
    let log = restored.log();
    assert!(
        log.contains(&format!("restored log file \"{segment}\" from archive")),
        "{log}"
    );
    drop(restored);
    assert!(
        copy.join("PG_VERSION").exists(),
        "from_data_dir must not remove the data directory"
    );
}

#[test]
fn start_retries_when_the_port_is_taken() {
    let cluster = PgCluster::init(ClusterOptions::new(install())).unwrap();
    let squatter = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let taken = squatter.local_addr().unwrap().port();
    cluster.set_port(taken);
    cluster.start().unwrap();
    assert_ne!(cluster.port(), taken);
    assert_eq!(cluster.psql("select 1").unwrap(), "1");
    assert!(cluster.log().contains("Address already in use"));
}

#[test]
fn start_failure_reports_the_server_log() {
    let cluster = PgCluster::init(ClusterOptions::new(install())).unwrap();
    cluster.append_conf("shared_buffers = 'lots'").unwrap();
    let err = cluster.start().unwrap_err().to_string();
    assert!(err.contains("shared_buffers"), "{err}");
    assert!(!cluster.is_running());
}

#[test]
fn scratch_dirs_and_exposed_binaries_are_usable_by_the_server_user() {
    let scratch = scratch_dir("pgark-scratch-");
    let meta = fs::metadata(scratch.path()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    if let Some((uid, gid)) = pg_user() {
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    }
    let mut touch = command_as_pg_user("touch");
    touch.arg(scratch.path().join("file"));
    run_checked(&mut touch, None, WAIT).unwrap();

    // This test binary lives under target/, possibly below a private home.
    let me = std::env::current_exe().unwrap();
    let exposed = expose_binary(&me);
    assert_eq!(expose_binary(&me), exposed);
    assert_eq!(
        fs::metadata(&exposed).unwrap().len(),
        fs::metadata(&me).unwrap().len()
    );
    assert_eq!(fs::metadata(&exposed).unwrap().mode() & 0o777, 0o755);
    for dir in exposed.ancestors().skip(1) {
        let mode = fs::metadata(dir).unwrap().permissions().mode();
        assert!(mode & 0o005 == 0o005, "{} is mode {mode:o}", dir.display());
    }
    let mut list = command_as_pg_user(&exposed);
    list.args(["--list", "scratch_dirs_and_exposed_binaries"]);
    let out = run_checked(&mut list, None, WAIT).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("scratch_dirs_and_exposed_binaries"));
    assert!(Path::new(&exposed).is_absolute());
}
