//! `pgark restore-test` against real clusters archiving with `pgark
//! wal-push`: the newest backup is restored into a scratch directory (its
//! tablespace too), PostgreSQL recovers it through the archived WAL written
//! after the backup, promotes, and the checks run (connections, pg_amcheck,
//! the statements of a check file, pg_checksums). What the checks see is
//! compared with the source cluster: its data as of the end of the
//! archive, not of the live source. The repository gains nothing but
//! `restore-test/latest`; a failing check, a server that cannot start, a
//! time limit, a WAL gap and a damaged part each end with their exit code
//! and a record naming the stage; and whatever happens (success, failure,
//! SIGTERM or SIGINT halfway), no PostgreSQL process and no scratch files
//! stay behind. Then the other majors (13 and 17) run as root with
//! `--run-as`, an encrypted repository, and `status` and `backup-push
//! --test` show and make restore tests.

use crate::common::*;
use chrono::{DateTime, Utc};
use pgark_testkit::pg::{
    chown_to_pg_user, expose_binary, run_capture, scratch_dir, ClusterOptions, PgCluster, PgInstall,
};
use serde_json::Value;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// Bound on one restore-test run (a hang fails the test instead of
/// stalling the suite).
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// A source cluster of `install` archiving into a fresh repository of its
/// own (what [`ArchivingCluster::start`] does for the default install).
fn source_on(install: &PgInstall) -> ArchivingCluster {
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("rt-repo");
    let command = format!("{} wal-push --repo {} %p", sh_path(&bin), sh_path(repo.path()));
    let opts = ClusterOptions::new(install.clone()).with_archive_command(command);
    let cluster = PgCluster::start_new(opts).unwrap_or_else(|e| panic!("{e}"));
    ArchivingCluster { bin, repo, cluster }
}

/// `restore-test` with `args`, plus `--pg-bin` (the source's install) and
/// `--timeout 5m` unless `args` gives them. Run as the unprivileged user,
/// as cron would, by [`ArchivingCluster::pgark_command_on`]: PGHOST and
/// PGPORT point at the *source*, so checks that went there instead of to
/// the restored server would see the source's newer data.
fn rt_command(src: &ArchivingCluster, args: &[&str]) -> Command {
    let mut cmd = src.pgark_command_on(&src.cluster);
    cmd.arg("restore-test").args(args);
    add_defaults(&mut cmd, args, &src.cluster.install().bin_dir);
    cmd
}

fn add_defaults(cmd: &mut Command, args: &[&str], pg_bin: &Path) {
    if !args.contains(&"--pg-bin") {
        cmd.arg("--pg-bin").arg(pg_bin);
    }
    if !args.contains(&"--timeout") {
        cmd.args(["--timeout", "5m"]);
    }
}

fn restore_test(src: &ArchivingCluster, args: &[&str]) -> Output {
    run_capture(&mut rt_command(src, args), None, RUN_LIMIT).unwrap_or_else(|e| panic!("{e}"))
}

/// stdout of a `--json` run, parsed.
#[track_caller]
fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "restore-test --json printed no JSON ({e}): {:?}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// The record fields of what `--json` printed: all but `dest` (the scratch
/// directory) and `kept`, which the stored record does not have.
fn printed_record(printed: &Value) -> Value {
    let mut record = printed.clone();
    if let Some(fields) = record.as_object_mut() {
        fields.remove("dest");
        fields.remove("kept");
    }
    record
}

/// The bytes of `restore-test/latest` in the local repository, if any.
fn record_bytes(repo: &Path) -> Option<Vec<u8>> {
    std::fs::read(repo.join("restore-test").join("latest")).ok()
}

/// The record of the last restore test, decoded from the (unencrypted)
/// repository's `restore-test/latest`.
#[track_caller]
fn last_record(repo: &Path) -> Value {
    let stored = record_bytes(repo).expect("restore-test/latest exists");
    let (json, _) = pgark_codec::decode_to_vec(&stored).expect("restore-test/latest is a pgark object");
    serde_json::from_slice(&json).expect("restore-test/latest holds JSON")
}

#[track_caller]
fn checks(record: &Value) -> &Vec<Value> {
    record["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {record}"))
}

/// The check named exactly `name`.
#[track_caller]
fn check<'a>(record: &'a Value, name: &str) -> &'a Value {
    checks(record)
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {record}"))
}

/// The check of the check file's statement starting on `line`
/// (`check-sql line <n>: <statement>`), whose text starts with `text`.
#[track_caller]
fn check_sql<'a>(record: &'a Value, line: u32, text: &str) -> &'a Value {
    let prefix = format!("check-sql line {line}: {text}");
    checks(record)
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
        .unwrap_or_else(|| panic!("no check named {prefix:?}... in {record}"))
}

fn sql_checks(record: &Value) -> Vec<&Value> {
    checks(record)
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("check-sql")))
        .collect()
}

/// A check file in `dir`, readable by the unprivileged user.
fn check_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    chown_to_pg_user(&path).unwrap();
    path
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("not a time: {v}: {e}"))
}

fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap_or_else(|| panic!("not an LSN: {s}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// Processes other than this one whose command line mentions `dir`, or
/// whose working directory is at or below it (a postmaster's children
/// run in its data directory with command lines like `postgres:
/// checkpointer`).
fn processes_under(dir: &Path) -> Vec<String> {
    let text = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(entry.path().join("cwd")).ok();
        if cmdline.contains(&text) || cwd.as_deref().is_some_and(|c| c.starts_with(dir)) {
            found.push(format!("pid {pid}: {} (cwd {cwd:?})", cmdline.trim_end()));
        }
    }
    found
}

/// After a restore-test ended: no process runs in or names `dest`
/// (allowing two seconds for the last ones to be reaped), and `dest` is
/// gone or empty.
#[track_caller]
fn assert_nothing_left(dest: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let running = processes_under(dest);
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: processes of the restored cluster still run after restore-test ended:\n{}",
            running.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if dest.exists() {
        let mut left: Vec<String> = std::fs::read_dir(dest)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert!(
            left.is_empty(),
            "{what}: the scratch directory {} was left with {left:?} (files: {:?})",
            dest.display(),
            files_below(dest)
        );
    }
}

/// Every database of `cluster` that allows connections, sorted.
fn connectable_databases(cluster: &PgCluster) -> Vec<String> {
    let mut dbs: Vec<String> = cluster
        .psql("select datname from pg_database where datallowconn")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    dbs.sort();
    dbs
}

/// The databases the record has a `connect <db>` check for, sorted.
fn connect_checks(record: &Value) -> Vec<String> {
    let mut dbs: Vec<String> = checks(record)
        .iter()
        .filter_map(|c| c["name"].as_str()?.strip_prefix("connect ").map(str::to_string))
        .collect();
    dbs.sort();
    dbs
}

/// The commit time of the row inserted by `sql` (an insert ... returning
/// the server's clock in RFC 3339), as the server saw it: the commit
/// record is written just after.
fn insert_returning_time(cluster: &PgCluster, sql: &str) -> DateTime<Utc> {
    cluster
        .psql(&format!(
            "{sql} returning to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        ))
        .unwrap()
        .parse()
        .unwrap()
}

/// The restored data of table `t` (as [`table_digest`] computes it) checked
/// in a check-file statement on one line.
fn digest_statement(digest: &str) -> String {
    format!(
        "select count(*) || ':' || coalesce(md5(string_agg(x::text, ',' order by x.id)), '') = '{digest}' from t x;"
    )
}

/// Issue items 1, 2 and 5 (success): the newest backup restored, the
/// archived WAL written after it replayed (the check file's statements
/// see exactly the source's data at the end of the archive, not a row
/// written later and never archived), every check passed on PostgreSQL 15
/// (pg_amcheck and pg_checksums included), a new timeline that is never
/// archived, and the repository gains only `restore-test/latest`. A
/// second run with `--keep` and no `--dest` leaves a stopped cluster
/// under the temporary directory that listened only on its socket.
#[test]
fn restore_test_replays_the_archive_passes_its_checks_and_adds_only_its_record() {
    let test_started = Utc::now();
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    let source_timeline: u64 = c
        .psql("select timeline_id from pg_control_checkpoint()")
        .unwrap()
        .parse()
        .unwrap();
    let source_version = c.psql("show server_version").unwrap();
    c.psql("create database app").unwrap();
    c.psql_db(
        "app",
        "create table items (id int primary key); insert into items select generate_series(1, 100)",
    )
    .unwrap();
    // A tablespace outside the data directory: restore-test restores it
    // inside its scratch directory, never at the source's location.
    let ts_root = scratch_dir("rt-tblspc");
    let location = ts_root.path().join("ts1");
    std::fs::create_dir(&location).unwrap();
    chown_to_pg_user(&location).unwrap();
    c.psql(&format!(
        "create tablespace ts1 location '{}'",
        location.display()
    ))
    .unwrap();
    let ts_oid = c
        .psql("select oid from pg_tablespace where spcname = 'ts1'")
        .unwrap();
    c.psql("create table ts_rows (id int primary key) tablespace ts1; insert into ts_rows select generate_series(1, 400)")
        .unwrap();
    c.psql("create table t (id bigserial primary key, v text not null)")
        .unwrap();
    c.psql("insert into t (v) select 'before' from generate_series(1, 1000)")
        .unwrap();
    let first = src.backup_push(&[]);
    c.psql("insert into t (v) select 'between' from generate_series(1, 500)")
        .unwrap();
    let newest = src.backup_push(&[]);
    c.psql("insert into ts_rows select generate_series(401, 700)")
        .unwrap();
    assert_ne!(first, newest);
    let listed = src.backup_list();
    let newest_entry = listed.iter().max_by_key(|b| time(&b["finish_time"])).unwrap();
    assert_eq!(newest_entry["name"], newest.as_str(), "{listed:?}");
    let backup_start = parse_lsn(newest_entry["start_lsn"].as_str().unwrap());
    let backup_stop = parse_lsn(newest_entry["stop_lsn"].as_str().unwrap());

    // Written after the newest backup, over two archived segments: only
    // recovery from the archive brings these back.
    c.psql("insert into t (v) select 'after' from generate_series(1, 2000)")
        .unwrap();
    src.archive_current_wal();
    c.psql("insert into t (v) select 'later' from generate_series(1, 500)")
        .unwrap();
    let last_commit = insert_returning_time(c, "insert into t (v) values ('last')");
    let digest = table_digest(c, "t", "id");
    let end_lsn = parse_lsn(&c.psql("select pg_current_wal_lsn()").unwrap());
    src.archive_current_wal();
    // Never archived: the restored cluster must not have it (and checks
    // that went to the source instead would).
    c.psql("insert into t (v) values ('unarchived')").unwrap();

    let scratch = scratch_dir("rt-pass");
    let checks_path = check_file(
        scratch.path(),
        "checks.sql",
        &format!(
            "-- the rows written after the newest backup were replayed\n\
             select count(*) = 4001 from t;\n\
             select count(*) = 2000\n  from t where v = 'after';\n\
             -- the whole table, as the source had it at the end of the archive\n\
             {}\n\
             select not exists (select 1 from t where v = 'unarchived');\n\
             select count(*) = 700 from ts_rows;\n",
            digest_statement(&digest)
        ),
    );
    let dest = scratch.path().join("dest");
    let before = files_below(src.repo.path());
    let started = Instant::now();
    let out = restore_test(
        &src,
        &[
            "LATEST",
            "--check-sql",
            checks_path.to_str().unwrap(),
            "--dest",
            dest.to_str().unwrap(),
            "--json",
        ],
    );
    let took = started.elapsed();
    assert_code(&out, 0);
    assert_nothing_left(&dest, "after a passing restore-test");
    let printed = json_of(&out);
    let record = last_record(src.repo.path());
    assert_eq!(
        printed_record(&printed),
        record,
        "--json prints the record it stores"
    );
    assert_eq!(printed["dest"], dest.to_str().unwrap(), "{printed}");
    assert_eq!(printed["kept"], false, "{printed}");

    assert_eq!(record["outcome"], "passed", "{record}");
    assert!(record.get("failed_stage").is_none(), "{record}");
    assert!(record["error"].is_null(), "{record}");
    assert_eq!(record["backup"], newest.as_str(), "{record}");
    assert!(
        record["target"].as_str().is_some_and(|t| !t.is_empty()),
        "{record}"
    );
    let recorded_at = time(&record["time"]);
    assert!(
        test_started <= recorded_at && recorded_at <= Utc::now(),
        "{record}"
    );
    assert_eq!(record["server_version"], source_version.as_str(), "{record}");
    assert!(
        record["pgark_version"].as_str().is_some_and(|v| !v.is_empty()),
        "{record}"
    );
    for stage in ["restore_seconds", "recovery_seconds", "checks_seconds"] {
        let seconds = record[stage]
            .as_f64()
            .unwrap_or_else(|| panic!("{stage} in {record}"));
        assert!(
            (0.0..=took.as_secs_f64() + 1.0).contains(&seconds),
            "{stage} {seconds} s, the run took {took:?}: {record}"
        );
    }

    // Recovery went through the WAL archived after the backup, to its end:
    // it replayed at least what the source wrote after the backup ended,
    // and no more than lies between the backup's start and where it
    // stopped.
    let recovered_to = parse_lsn(record["recovered_to_lsn"].as_str().unwrap());
    assert!(recovered_to >= end_lsn, "{record}");
    let replayed = record["wal_replayed_bytes"].as_u64().unwrap();
    assert!(
        replayed >= end_lsn - backup_stop && replayed <= recovered_to - backup_start,
        "replayed {replayed} bytes; the source wrote {} after the backup ended, and {} from its start \
         to the recovered-to LSN: {record}",
        end_lsn - backup_stop,
        recovered_to - backup_start
    );
    let last_replayed = time(&record["last_replayed_commit"]);
    assert!(
        last_replayed >= last_commit,
        "last replayed commit {last_replayed}, the source's last archived commit {last_commit}: {record}"
    );
    let timeline = record["timeline"].as_u64().unwrap();
    assert!(timeline > source_timeline, "{record}");

    // The checks: one connection per database that allows them (as on the
    // source), pg_amcheck, the check file's five statements, pg_checksums;
    // every one passed.
    assert_eq!(connect_checks(&record), connectable_databases(c), "{record}");
    assert_eq!(check(&record, "pg_amcheck")["outcome"], "passed", "{record}");
    assert_eq!(check(&record, "pg_checksums")["outcome"], "passed", "{record}");
    check_sql(&record, 2, "select count(*) = 4001 from t");
    check_sql(&record, 6, "select count(*) || ':' ||");
    check_sql(&record, 7, "select not exists");
    check_sql(&record, 8, "select count(*) = 700 from ts_rows");
    assert_eq!(sql_checks(&record).len(), 5, "{record}");
    for check in checks(&record) {
        assert_eq!(check["outcome"], "passed", "{check} in {record}");
    }

    // Again, kept, in a new directory under the temporary directory.
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    chown_to_pg_user(&tmp).unwrap();
    let mut cmd = rt_command(&src, &["--keep", "--json"]);
    cmd.env("TMPDIR", &tmp);
    let out = run_capture(&mut cmd, None, RUN_LIMIT).unwrap();
    assert_code(&out, 0);
    let again = json_of(&out);
    assert_eq!(again["outcome"], "passed", "{again}");
    assert_eq!(printed_record(&again), last_record(src.repo.path()));
    assert_eq!(again["kept"], true, "{again}");
    // The first run archived no history file for its timeline, so the
    // second promotes onto the same one.
    assert_eq!(again["timeline"], timeline, "{again}");
    let kept: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "--keep: {kept:?} under TMPDIR");
    let kept = &kept[0];
    assert_eq!(again["dest"], kept.to_str().unwrap(), "{again}");
    assert!(kept.join("data/PG_VERSION").is_file(), "{:?}", files_below(kept));
    assert!(
        !kept.join("data/postmaster.pid").exists(),
        "the kept cluster's server was not stopped"
    );
    assert!(processes_under(kept).is_empty(), "{:?}", processes_under(kept));
    // The tablespace was restored inside the scratch directory.
    let link = std::fs::read_link(kept.join("data/pg_tblspc").join(&ts_oid)).unwrap();
    assert!(
        link.starts_with(kept.join("tablespaces")),
        "tablespace {ts_oid} restored at {}",
        link.display()
    );
    assert!(!files_below(&link).is_empty(), "{}", link.display());
    let log = std::fs::read_to_string(kept.join("postgres.log")).expect("postgres.log in the kept directory");
    let socket_dir = kept.join("socket");
    assert!(
        log.lines()
            .any(|l| l.contains("listening on Unix socket") && l.contains(&*socket_dir.to_string_lossy())),
        "no socket in {} in the log:\n{log}",
        socket_dir.display()
    );
    assert!(
        !log.contains("listening on IPv4") && !log.contains("listening on IPv6"),
        "the restored server listened on TCP:\n{log}"
    );

    // Two runs, and the repository gained only the record: no WAL of the
    // new timeline, no history file, no partial segment.
    let after = files_below(src.repo.path());
    let mut expected = before.clone();
    expected.push("restore-test/latest".to_string());
    expected.sort();
    assert_eq!(after, expected, "files the restore tests added to the repository");
}

/// A source with database `app` and table `items`: 500 rows at its backup,
/// 300 more before restore point `rt_point`, 200 past it, all archived.
fn source_with_restore_point() -> (ArchivingCluster, String) {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.psql("create database app").unwrap();
    c.psql_db(
        "app",
        "create table items (id int primary key, batch text not null); \
         insert into items select g, 'before' from generate_series(1, 500) g",
    )
    .unwrap();
    let name = src.backup_push(&[]);
    c.psql_db(
        "app",
        "insert into items select g, 'after' from generate_series(501, 800) g",
    )
    .unwrap();
    c.psql("select pg_create_restore_point('rt_point')").unwrap();
    c.psql_db(
        "app",
        "insert into items select g, 'past' from generate_series(801, 1000) g",
    )
    .unwrap();
    src.archive_current_wal();
    (src, name)
}

/// Issue item 3 and the other verdicts: a failing statement of the check
/// file exits 13 and is named with its line (in `--check-db`, after
/// recovery to `--target-name`), as is each statement whose first column
/// is not boolean, that returns no row, null, false in one of its rows, or
/// an error, while the others pass; a server that cannot start exits 8; a
/// recovery that outlasts `--timeout` exits 10; one that cannot reach the
/// archive's end for a segment missing from its middle exits 5.
/// Each is recorded with its
/// stage and leaves nothing behind; usage errors exit 2 and record
/// nothing.
#[test]
fn restore_test_failures_exit_with_their_code_and_are_recorded() {
    let (src, name) = source_with_restore_point();
    let repo = src.repo.path();
    let scratch = scratch_dir("rt-fail");

    // Usage errors: nothing restored, nothing recorded.
    let dest = scratch.path().join("no-bin");
    let out = restore_test(
        &src,
        &[
            "--pg-bin",
            "/nonexistent/pgark-test/bin",
            "--dest",
            dest.to_str().unwrap(),
        ],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("/nonexistent/pgark-test/bin"),
        "{}",
        stderr(&out)
    );
    assert_nothing_left(&dest, "no PostgreSQL binaries");
    let dest = scratch.path().join("bad-timeout");
    let out = restore_test(&src, &["--timeout", "soon", "--dest", dest.to_str().unwrap()]);
    assert_code(&out, 2);
    assert_nothing_left(&dest, "a bad --timeout");
    let busy = scratch.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep-me"), b"not pgark's").unwrap();
    chown_to_pg_user(&busy).unwrap();
    let out = restore_test(&src, &["--dest", busy.to_str().unwrap()]);
    // Refused, as backup-fetch refuses a non-empty destination.
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("not empty") && stderr(&out).contains(busy.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(busy.join("keep-me")).unwrap(), b"not pgark's");
    assert_eq!(files_below(&busy), vec!["keep-me".to_string()]);
    assert!(
        record_bytes(repo).is_none(),
        "a usage error wrote a record: {}",
        last_record(repo)
    );

    // A failing statement, between two that pass.
    let checks_path = check_file(
        scratch.path(),
        "checks.sql",
        "-- in database app, at restore point rt_point\n\
         select count(*) = 800 from items;\n\
         select false;\n\
         \n\
         select count(*) = 0 from items where batch = 'past';\n\
         -- each of these fails: not boolean, no row, null, false in one\n\
         -- of its rows, an error\n\
         select 1;\n\
         select true where false;\n\
         select null::boolean;\n\
         select id > 1 from items order by id limit 3;\n\
         select * from no_such_table;\n\
         -- true in every row\n\
         select id > 0 from items order by id limit 3;\n",
    );
    let dest = scratch.path().join("failing-check");
    let out = restore_test(
        &src,
        &[
            "--check-sql",
            checks_path.to_str().unwrap(),
            "--check-db",
            "app",
            "--target-name",
            "rt_point",
            "--dest",
            dest.to_str().unwrap(),
            "--json",
        ],
    );
    assert_code(&out, 13);
    assert_nothing_left(&dest, "after a failing check");
    let err = stderr(&out);
    assert!(
        err.contains("line 3") && err.contains("select false"),
        "stderr does not name the failing statement and its line:\n{err}"
    );
    let printed = json_of(&out);
    let record = last_record(repo);
    assert_eq!(printed_record(&printed), record);
    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["failed_stage"], "checks", "{record}");
    assert!(
        record["error"].as_str().is_some_and(|e| e.contains("line 3")),
        "{record}"
    );
    assert_eq!(record["backup"], name.as_str(), "{record}");
    assert!(
        record["target"].as_str().is_some_and(|t| t.contains("rt_point")),
        "{record}"
    );
    assert_eq!(
        check_sql(&record, 3, "select false")["outcome"],
        "failed",
        "{record}"
    );
    // The others ran, in database app, on the cluster as of rt_point.
    assert_eq!(
        check_sql(&record, 2, "select count(*) = 800 from items")["outcome"],
        "passed",
        "{record}"
    );
    assert_eq!(
        check_sql(&record, 5, "select count(*) = 0 from items")["outcome"],
        "passed",
        "{record}"
    );
    for (line, text) in [
        (8, "select 1"),
        (9, "select true where false"),
        (10, "select null::boolean"),
        (11, "select id > 1 from items"),
        (12, "select * from no_such_table"),
    ] {
        let check = check_sql(&record, line, text);
        assert_eq!(check["outcome"], "failed", "line {line}: {record}");
        assert!(
            check["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "line {line} failed without saying why: {record}"
        );
        assert!(err.contains(&format!("line {line}")), "line {line}:\n{err}");
    }
    assert_eq!(
        check_sql(&record, 14, "select id > 0 from items")["outcome"],
        "passed",
        "{record}"
    );
    assert_eq!(sql_checks(&record).len(), 9, "{record}");
    assert_eq!(connect_checks(&record), connectable_databases(&src.cluster));
    assert_eq!(check(&record, "pg_amcheck")["outcome"], "passed", "{record}");
    assert!(record["timeline"].as_u64().unwrap() >= 2, "{record}");

    // PostgreSQL cannot start (a library it cannot load).
    let dest = scratch.path().join("no-start");
    let out = restore_test(
        &src,
        &[
            "--set",
            "shared_preload_libraries=pgark_test_no_such_library",
            "--dest",
            dest.to_str().unwrap(),
        ],
    );
    assert_code(&out, 8);
    assert_nothing_left(&dest, "after PostgreSQL failed to start");
    let record = last_record(repo);
    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["failed_stage"], "recovery", "{record}");
    assert!(
        record["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{record}"
    );
    assert_eq!(record["backup"], name.as_str(), "{record}");

    // Recovery held back (every commit waits an hour) outlasts --timeout.
    let dest = scratch.path().join("timeout");
    let started = Instant::now();
    let out = restore_test(
        &src,
        &[
            "--set",
            "recovery_min_apply_delay=1h",
            "--timeout",
            "5s",
            "--dest",
            dest.to_str().unwrap(),
        ],
    );
    assert_code(&out, 10);
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "--timeout 5s took {:?}",
        started.elapsed()
    );
    assert_nothing_left(&dest, "after --timeout");
    let record = last_record(repo);
    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["failed_stage"], "recovery", "{record}");
    assert_eq!(record["backup"], name.as_str(), "{record}");

    // A segment missing from the middle of the archive: PostgreSQL alone
    // would stop at the gap and promote with less data; the test fails,
    // naming the segment.
    let c = &src.cluster;
    for round in 0..2 {
        let first = 1001 + 100 * round;
        c.psql_db(
            "app",
            &format!(
                "insert into items select g, 'more' from generate_series({first}, {}) g",
                first + 99
            ),
        )
        .unwrap();
        src.archive_current_wal();
    }
    let newest = c.psql("select last_archived_wal from pg_stat_archiver").unwrap();
    let gone = remove_segment_before_newest(repo, &newest);
    let dest = scratch.path().join("gap");
    let out = restore_test(&src, &["--dest", dest.to_str().unwrap()]);
    // A hole in the repository, exit 5 as verify and status say of one.
    assert_code(&out, 5);
    assert!(stderr(&out).contains(&gone), "{}", stderr(&out));
    assert_nothing_left(&dest, "after a WAL gap");
    let record = last_record(repo);
    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["failed_stage"], "recovery", "{record}");
    assert!(
        record["error"].as_str().is_some_and(|e| e.contains(&gone)),
        "{record}"
    );
}

/// A restore-test running in the background, its output going to files
/// (a server it leaked could hold a pipe open).
struct Background {
    child: Child,
    started: Instant,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    fn spawn(mut cmd: Command, logs: &Path, name: &str) -> Background {
        let stdout = logs.join(format!("{name}.stdout"));
        let stderr = logs.join(format!("{name}.stderr"));
        cmd.stdin(std::process::Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("pgark starts");
        Background {
            child,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits (up to `limit`) until `ready` holds; panics if pgark ended
    /// first or the time ran out.
    fn wait_until(&mut self, what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if ready() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("restore-test ended ({status}) before {what}\n{}", self.output());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("no {what} within {limit:?}\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIG`signal` to pgark (alone, not its process group), saying
    /// when and how far the server's log had got.
    fn signal(&mut self, signal: &str, log: &Path) {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        eprintln!(
            "sending SIG{signal} to restore-test {:.1?} after its start; the server log then ended with:\n{}",
            self.started.elapsed(),
            log.lines()
                .skip(log.lines().count().saturating_sub(3))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "restore-test ended before SIG{signal}\n{}",
            self.output()
        );
        let sent = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -s {signal}");
    }

    /// Waits up to `limit` for pgark to end.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                eprintln!("restore-test ended: {status}");
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("restore-test did not end within {limit:?}\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Issue items 4 and 5: SIGTERM while PostgreSQL recovers and SIGINT
/// while the checks run stop the server, remove the scratch directory
/// and record nothing (exit 143 and 130); a damaged part exits 5 at the
/// restore, recorded, with nothing left behind.
#[test]
fn restore_test_interrupted_or_on_a_damaged_part_leaves_nothing_behind() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "1", "-q"]).unwrap();
    let name = src.backup_push(&[]);
    c.pgbench(&["-t", "300", "-n"]).unwrap();
    src.archive_current_wal();
    let repo = src.repo.path();
    let scratch = scratch_dir("rt-signals");
    // Checks that outlast any interruption.
    let checks_path = check_file(scratch.path(), "checks.sql", "select true from pg_sleep(120);\n");
    let run = |dest: &Path, extra: &[&str]| {
        let mut args = vec![
            "--check-sql",
            checks_path.to_str().unwrap(),
            "--dest",
            dest.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        rt_command(&src, &args)
    };

    // SIGTERM while the files are restored: as soon as the data
    // directory appears, before any server runs.
    let dest = scratch.path().join("term-restoring");
    let mut bg = Background::spawn(run(&dest, &[]), scratch.path(), "term-restoring");
    bg.wait_until("the restore to start writing", Duration::from_secs(300), || {
        dest.join("data").exists()
    });
    bg.signal("TERM", &dest.join("postgres.log"));
    let status = bg.wait(Duration::from_secs(120));
    assert!(
        status.code() == Some(143) || status.signal() == Some(15),
        "after SIGTERM: {status}\n{}",
        bg.output()
    );
    assert_nothing_left(
        &dest,
        &format!("after SIGTERM during the restore\n{}", bg.output()),
    );
    assert!(record_bytes(repo).is_none(), "an interrupted run wrote a record");

    // SIGTERM while PostgreSQL recovers: held back by an apply delay, it
    // has restored WAL through pgark wal-fetch and not yet promoted.
    let dest = scratch.path().join("term");
    let log = dest.join("postgres.log");
    let mut bg = Background::spawn(
        run(&dest, &["--set", "recovery_min_apply_delay=1h"]),
        scratch.path(),
        "term",
    );
    let pgark_pid = format!("pid {}:", bg.child.id());
    bg.wait_until(
        "the restored cluster's recovery to restore WAL",
        Duration::from_secs(300),
        || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("restored log file"))
                && processes_under(&dest)
                    .iter()
                    .any(|p| p.contains("postgres") && !p.starts_with(&pgark_pid))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains("ready to accept connections"),
        "the server promoted despite the apply delay"
    );
    bg.signal("TERM", &log);
    let sent = Instant::now();
    let status = bg.wait(Duration::from_secs(120));
    assert!(
        status.code() == Some(143) || status.signal() == Some(15),
        "after SIGTERM: {status}\n{}",
        bg.output()
    );
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "SIGTERM took {:?}",
        sent.elapsed()
    );
    assert_nothing_left(&dest, "after SIGTERM during recovery");
    assert!(record_bytes(repo).is_none(), "an interrupted run wrote a record");

    // SIGINT once the server has promoted and the checks run.
    let dest = scratch.path().join("int");
    let mut bg = Background::spawn(run(&dest, &[]), scratch.path(), "int");
    bg.wait_until(
        "the restored cluster to promote",
        Duration::from_secs(300),
        || {
            std::fs::read_to_string(dest.join("postgres.log"))
                .is_ok_and(|log| log.contains("database system is ready to accept connections"))
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    bg.signal("INT", &dest.join("postgres.log"));
    let sent = Instant::now();
    let status = bg.wait(Duration::from_secs(120));
    assert!(
        status.code() == Some(130) || status.signal() == Some(2),
        "after SIGINT: {status}\n{}",
        bg.output()
    );
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "SIGINT took {:?}",
        sent.elapsed()
    );
    assert_nothing_left(&dest, "after SIGINT during the checks");
    assert!(record_bytes(repo).is_none(), "an interrupted run wrote a record");

    // A flipped byte in the middle of the backup's first part.
    let backup_dir = repo.join("backups").join(&name);
    let mut parts: Vec<String> = std::fs::read_dir(&backup_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part_") && n.ends_with(".tar"))
        .collect();
    parts.sort();
    let part = backup_dir.join(&parts[0]);
    let mut bytes = std::fs::read(&part).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&part, &bytes).unwrap();
    let dest = scratch.path().join("damaged");
    let out = restore_test(&src, &["--dest", dest.to_str().unwrap(), "--json"]);
    assert_code(&out, 5);
    assert!(stderr(&out).contains(&parts[0]), "{}", stderr(&out));
    assert_nothing_left(&dest, "after a damaged part");
    let record = last_record(repo);
    assert_eq!(printed_record(&json_of(&out)), record);
    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["failed_stage"], "restore", "{record}");
    assert_eq!(record["backup"], name.as_str(), "{record}");
    assert!(
        record["error"].as_str().is_some_and(|e| e.contains(&parts[0])),
        "{record}"
    );
}

/// SIGTERM while the restore writes files (each tar entry held back 15 ms
/// by a test hook, so that the restore of a fresh cluster's ~1000 files
/// lasts seconds): the restore's workers stop before their next file, and
/// only then is the scratch directory removed, once: pgark exits 143
/// within 2 s, with no "could not remove" warning, nothing left behind
/// and nothing written there afterwards.
#[test]
fn restore_test_sigterm_while_writing_stops_the_workers_before_removing_the_directory() {
    let src = ArchivingCluster::start("");
    src.backup_push(&[]);
    let repo = src.repo.path();
    let scratch = scratch_dir("rt-sigterm-writing");
    let dest = scratch.path().join("dest");
    let mut cmd = rt_command(&src, &["--dest", dest.to_str().unwrap(), "--concurrency", "4"]);
    cmd.env("PGARK_TEST_RESTORE_ENTRY_DELAY_MS", "15");
    let mut bg = Background::spawn(cmd, scratch.path(), "sigterm-writing");
    let data = dest.join("data");
    bg.wait_until(
        "the restore to have written 100 files",
        Duration::from_secs(300),
        || files_below(&data).len() >= 100,
    );
    assert!(
        !data.join("global/pg_control").exists(),
        "the restore had ended before SIGTERM: the test proves nothing\n{}",
        bg.output()
    );
    bg.signal("TERM", &dest.join("postgres.log"));
    let sent = Instant::now();
    let status = bg.wait(Duration::from_secs(60));
    let took = sent.elapsed();
    let output = bg.output();
    assert!(status.code() == Some(143), "after SIGTERM: {status}\n{output}");
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM during the restore took {took:?} to exit\n{output}"
    );
    assert!(
        !dest.exists(),
        "the scratch directory outlived pgark: {:?}\n{output}",
        files_below(&dest)
    );
    assert_eq!(
        output.matches("could not remove").count(),
        0,
        "the scratch directory was removed while the restore still wrote into it\n{output}"
    );
    // No worker of the dead process writes there afterwards.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !dest.exists(),
        "the scratch directory came back: {:?}",
        files_below(&dest)
    );
    assert_nothing_left(&dest, "after SIGTERM while writing");
    assert!(record_bytes(repo).is_none(), "an interrupted run wrote a record");
}

/// One installation per major other than the default one (the
/// distribution's when there are two of a major), as versions.rs picks.
fn other_majors() -> Vec<PgInstall> {
    let default = PgInstall::detect().expect("PostgreSQL");
    let mut chosen: Vec<PgInstall> = Vec::new();
    for install in PgInstall::all_available() {
        if install.major != default.major && !chosen.iter().any(|c| c.major == install.major) {
            chosen.push(install);
        }
    }
    chosen
}

/// Issue item 6: on PostgreSQL 13 and 17 (the server-only installations of
/// `.ci/install-deps.sh`; missing ones fail the test as in versions.rs
/// unless PGARK_TEST_ONE_MAJOR is set), restore-test run as root with
/// `--run-as postgres` passes: the WAL after the backup is replayed,
/// pg_amcheck passes where the server has amcheck 1.3 (14 and later) and
/// is skipped on 13, pg_checksums passes where one of the major exists and
/// is skipped otherwise.
#[test]
fn restore_test_passes_on_other_majors() {
    let default = PgInstall::detect().expect("PostgreSQL");
    let installs = other_majors();
    if installs.is_empty() {
        assert!(
            std::env::var_os("PGARK_TEST_ONE_MAJOR").is_some(),
            "only PostgreSQL {} is installed: run .ci/install-deps.sh (or set PGARK_TEST_EXTRA_PGBINS) to \
             test other majors; PGARK_TEST_ONE_MAJOR=1 skips this test on purpose",
            default.major
        );
        eprintln!("note: restore_test: PGARK_TEST_ONE_MAJOR is set; other majors not tested");
        return;
    }
    let mut failed = Vec::new();
    for (i, install) in installs.iter().enumerate() {
        let started = Instant::now();
        // As root, PostgreSQL runs as postgres: named with --run-as on the
        // first major, by default on the others.
        let result = std::panic::catch_unwind(|| passes_on(install, i == 0));
        let outcome = if result.is_ok() { "ok" } else { "FAILED" };
        eprintln!(
            "restore_test: PostgreSQL {} ({}): {outcome} in {:.1?}",
            install.version,
            install.bin_dir.display(),
            started.elapsed()
        );
        if result.is_err() {
            failed.push(install.version.clone());
        }
    }
    assert!(failed.is_empty(), "failed on PostgreSQL {}", failed.join(", "));
}

fn passes_on(install: &PgInstall, explicit_run_as: bool) {
    let src = source_on(install);
    let c = &src.cluster;
    c.psql("create table t (id bigserial primary key, v text not null)")
        .unwrap();
    c.psql("insert into t (v) select 'before' from generate_series(1, 1000)")
        .unwrap();
    let name = src.backup_push(&[]);
    c.psql("insert into t (v) select 'after' from generate_series(1, 1500)")
        .unwrap();
    let digest = table_digest(c, "t", "id");
    src.archive_current_wal();
    c.psql("insert into t (v) values ('unarchived')").unwrap();

    let scratch = scratch_dir("rt-major");
    let checks_path = check_file(
        scratch.path(),
        "checks.sql",
        &format!(
            "select count(*) = 1500 from t where v = 'after';\n{}\n",
            digest_statement(&digest)
        ),
    );
    let dest = scratch.path().join("dest");
    // As root (when the tests are): the exposed binary, since PostgreSQL
    // runs it as postgres for restore_command.
    let root_command = |args: &[&str]| {
        let mut cmd = Command::new(&src.bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd.env("LC_ALL", "C")
            .arg("--repo")
            .arg(src.repo.path())
            .arg("restore-test")
            .args(args);
        add_defaults(&mut cmd, args, &install.bin_dir);
        cmd
    };
    if pgark_testkit::pg::is_root() {
        // An account that does not exist: a usage error, nothing recorded.
        let out = run_capture(
            &mut root_command(&[
                "--run-as",
                "pgark-test-no-such-user",
                "--dest",
                dest.to_str().unwrap(),
            ]),
            None,
            RUN_LIMIT,
        )
        .unwrap();
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains("pgark-test-no-such-user"),
            "{}",
            stderr(&out)
        );
        assert_nothing_left(&dest, "--run-as an unknown account");
        assert!(record_bytes(src.repo.path()).is_none());
    }
    let mut args = vec![
        "LATEST",
        "--json",
        "--check-sql",
        checks_path.to_str().unwrap(),
        "--dest",
        dest.to_str().unwrap(),
    ];
    if explicit_run_as {
        args.extend(["--run-as", "postgres"]);
    }
    let mut cmd = root_command(&args);
    let out = run_capture(&mut cmd, None, RUN_LIMIT).unwrap();
    assert_code(&out, 0);
    assert_nothing_left(&dest, "after a passing restore-test");
    let record = last_record(src.repo.path());
    assert_eq!(printed_record(&json_of(&out)), record);
    assert_eq!(record["outcome"], "passed", "{record}");
    assert_eq!(record["backup"], name.as_str(), "{record}");
    assert_eq!(
        record["server_version"],
        c.psql("show server_version").unwrap().as_str(),
        "{record}"
    );
    assert!(record["wal_replayed_bytes"].as_u64().unwrap() > 0, "{record}");
    assert!(record["timeline"].as_u64().unwrap() >= 2, "{record}");
    assert_eq!(connect_checks(&record), connectable_databases(c), "{record}");
    assert_eq!(sql_checks(&record).len(), 2, "{record}");
    let amcheck = check(&record, "pg_amcheck");
    let expected = if install.major >= 14 { "passed" } else { "skipped" };
    assert_eq!(amcheck["outcome"], expected, "{record}");
    let checksums = check(&record, "pg_checksums");
    let expected = if install.resolve_tool("pg_checksums").is_some() {
        "passed"
    } else {
        "skipped"
    };
    assert_eq!(checksums["outcome"], expected, "{record}");
    for check in checks(&record) {
        if !["pg_amcheck", "pg_checksums"].contains(&check["name"].as_str().unwrap()) {
            assert_eq!(check["outcome"], "passed", "{check} in {record}");
        }
        if check["outcome"] == "skipped" {
            assert!(
                check["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "a skipped check says why: {record}"
            );
        }
    }
}

/// The sample lines (`name value` or `name{labels} value`) of Prometheus
/// text output.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
            let value = value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (name.to_string(), value)
        })
        .collect()
}

fn sample(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// Issue item 7 (status integration): after a passing restore-test,
/// `status --format json` shows it as lastRestoreTest and the Prometheus
/// output says success with its time and per-stage durations; after a
/// failing one, success 0.
#[test]
fn status_shows_the_last_restore_test() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.psql("create table t (id bigserial primary key, v text not null)")
        .unwrap();
    c.psql("insert into t (v) select 'x' from generate_series(1, 1000)")
        .unwrap();
    let name = src.backup_push(&[]);
    src.archive_current_wal();
    let scratch = scratch_dir("rt-status");
    let dest = scratch.path().join("dest");
    let out = restore_test(&src, &["--dest", dest.to_str().unwrap()]);
    assert_code(&out, 0);
    let record = last_record(src.repo.path());

    let out = src.pgark(&["status", "--format", "json"]);
    assert_code(&out, 0);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = &status["lastRestoreTest"];
    assert_eq!(last["outcome"], "passed", "{status}");
    assert_eq!(last["backup"], name.as_str(), "{status}");
    assert_eq!(time(&last["time"]), time(&record["time"]), "{status}");

    let out = src.pgark(&["status", "--format", "prometheus"]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let metrics = samples(&text);
    assert_eq!(
        sample(&metrics, "pgark_last_restore_test_success"),
        Some(1.0),
        "{text}"
    );
    let at = sample(&metrics, "pgark_last_restore_test_timestamp_seconds")
        .unwrap_or_else(|| panic!("no pgark_last_restore_test_timestamp_seconds:\n{text}"));
    assert!(
        (at - time(&record["time"]).timestamp() as f64).abs() <= 1.0,
        "{at} vs {record}"
    );
    for stage in ["restore", "recovery", "checks"] {
        assert!(
            metrics
                .iter()
                .any(|(n, v)| n.starts_with("pgark_last_restore_test_")
                    && n.contains(stage)
                    && n.contains("seconds")
                    && *v >= 0.0),
            "no {stage} duration among the restore-test metrics:\n{text}"
        );
    }

    // A failing restore test: shown, and success 0.
    let checks_path = check_file(scratch.path(), "checks.sql", "select false;\n");
    let out = restore_test(
        &src,
        &[
            "--check-sql",
            checks_path.to_str().unwrap(),
            "--dest",
            dest.to_str().unwrap(),
        ],
    );
    assert_code(&out, 13);
    let out = src.pgark(&["status", "--format", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --format json: {e}\n{}", stderr(&out)));
    assert_eq!(status["lastRestoreTest"]["outcome"], "failed", "{status}");
    // status names its fields in camelCase, as lastVerify.
    assert_eq!(status["lastRestoreTest"]["failedStage"], "checks", "{status}");
    let out = src.pgark(&["status", "--format", "prometheus"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        sample(&samples(&text), "pgark_last_restore_test_success"),
        Some(0.0),
        "{text}"
    );
}

/// `backup-push --test` restore-tests the backup it just made, with the
/// restore-test settings from the environment: the record names that
/// backup and the check file's statement, and the scratch directory is
/// left empty.
#[test]
fn backup_push_test_restore_tests_the_new_backup() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.psql("create table t (id bigserial primary key, v text not null)")
        .unwrap();
    c.psql("insert into t (v) select 'x' from generate_series(1, 1234)")
        .unwrap();
    let older = src.backup_push(&[]);
    let scratch = scratch_dir("rt-push");
    let checks_path = check_file(scratch.path(), "checks.sql", "select count(*) = 1234 from t;\n");
    let dest = scratch.path().join("dest");
    let mut cmd = src.pgark_command_on(c);
    cmd.args(["backup-push", c.data_dir().to_str().unwrap(), "--test"])
        .env("PGARK_PG_BIN", &c.install().bin_dir)
        .env("PGARK_CHECK_SQL", &checks_path)
        .env("PGARK_RESTORE_TEST_DEST", &dest);
    let out = run_capture(&mut cmd, None, RUN_LIMIT).unwrap();
    assert_code(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let name = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("base_"))
        .unwrap_or_else(|| panic!("backup-push --test printed no backup name: {stdout:?}"))
        .to_string();
    assert_ne!(name, older);
    let record = last_record(src.repo.path());
    assert_eq!(record["outcome"], "passed", "{record}");
    assert_eq!(record["backup"], name.as_str(), "{record}");
    assert_eq!(
        check_sql(&record, 1, "select count(*) = 1234 from t")["outcome"],
        "passed",
        "{record}"
    );
    // PGARK_RESTORE_TEST_DEST was the scratch directory, or where one was
    // made: either way nothing stays there.
    assert!(processes_under(scratch.path()).is_empty());
    let left: Vec<String> = files_below(scratch.path())
        .into_iter()
        .filter(|f| f != "checks.sql")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_nothing_left(&dest, "after backup-push --test");
}

/// restore-test of an encrypted repository, with the key from a file and
/// from the environment: the server's restore_command decrypts the WAL
/// archived after the backup (the check sees those rows), the record is
/// stored encrypted (no plaintext in `restore-test/latest`), and without
/// the key nothing runs and the record stays as it was.
#[test]
fn restore_test_of_an_encrypted_repository() {
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("rt-enc-repo");
    let keys = scratch_dir("rt-enc-keys");
    let key = keys.path().join("repo.key");
    let mut raw = [0u8; 32];
    std::io::Read::read_exact(&mut File::open("/dev/urandom").unwrap(), &mut raw).unwrap();
    std::fs::write(&key, raw).unwrap();
    chown_to_pg_user(&key).unwrap();
    let command = format!(
        "{} wal-push --repo {} --encryption-key-file {} %p",
        sh_path(&bin),
        sh_path(repo.path()),
        sh_path(&key)
    );
    let install = PgInstall::detect().expect("PostgreSQL");
    let opts = ClusterOptions::new(install.clone()).with_archive_command(command);
    let cluster = PgCluster::start_new(opts).unwrap_or_else(|e| panic!("{e}"));
    let src = ArchivingCluster { bin, repo, cluster };
    let c = &src.cluster;
    c.psql("create table t (id bigserial primary key, v text not null)")
        .unwrap();
    c.psql("insert into t (v) select 'before' from generate_series(1, 1000)")
        .unwrap();
    let mut push = src.pgark_command_on(c);
    push.env("PGARK_ENCRYPTION_KEY_FILE", &key)
        .args(["backup-push", c.data_dir().to_str().unwrap()]);
    let out = run_capture(&mut push, None, RUN_LIMIT).unwrap();
    assert_code(&out, 0);
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    c.psql("insert into t (v) select 'after' from generate_series(1, 777)")
        .unwrap();
    src.archive_current_wal();

    let scratch = scratch_dir("rt-enc");
    let checks_path = check_file(
        scratch.path(),
        "checks.sql",
        "select count(*) = 777 from t where v = 'after';\n",
    );
    let hex_key: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let key_path = key.to_str().unwrap().to_string();
    for (how, var, value) in [
        ("a key file", "PGARK_ENCRYPTION_KEY_FILE", key_path.as_str()),
        (
            "a key in the environment",
            "PGARK_ENCRYPTION_KEY",
            hex_key.as_str(),
        ),
    ] {
        let dest = scratch.path().join(var);
        let mut cmd = rt_command(
            &src,
            &[
                "--check-sql",
                checks_path.to_str().unwrap(),
                "--dest",
                dest.to_str().unwrap(),
                "--json",
            ],
        );
        cmd.env(var, value);
        let out = run_capture(&mut cmd, None, RUN_LIMIT).unwrap();
        assert_eq!(out.status.code(), Some(0), "{how}: {}", stderr(&out));
        assert_nothing_left(&dest, how);
        let printed = json_of(&out);
        assert_eq!(printed["outcome"], "passed", "{how}: {printed}");
        assert_eq!(printed["backup"], name.as_str(), "{how}: {printed}");
        assert_eq!(
            check_sql(&printed, 1, "select count(*) = 777 from t")["outcome"],
            "passed",
            "{how}: {printed}"
        );
        // Stored encrypted: neither the backup's name nor the verdict shows.
        let stored = record_bytes(src.repo.path()).expect("restore-test/latest exists");
        let plain = |needle: &str| stored.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(
            !plain(&name) && !plain("passed"),
            "{how}: restore-test/latest holds plaintext"
        );
    }

    // No key: a configuration error, and the record is the last one.
    let before = record_bytes(src.repo.path());
    let dest = scratch.path().join("no-key");
    let out = restore_test(&src, &["--dest", dest.to_str().unwrap()]);
    assert_code(&out, 2);
    assert_nothing_left(&dest, "without the key");
    assert_eq!(record_bytes(src.repo.path()), before);
}
