//! `pgark delete` and `pgark backup-mark` through the binary, on a cluster
//! archiving into its repository: settings from flags, environment and
//! the configuration file, the dry run, refusals and their exit codes,
//! and a kept delta that restores after its siblings are deleted.

use crate::backup::{archiving_source, restore_and_start, Source};
use crate::common::{assert_code, files_below, run, stderr};

fn push(src: &Source, extra: &[&str]) -> String {
    let mut args = vec!["backup-push", src.cluster.data_dir().to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = src.pgark(&args);
    assert_code(&out, 0);
    // Names carry the start time to the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn listed(src: &Source) -> Vec<(String, bool)> {
    let out = src.pgark(&["backup-list", "--json"]);
    assert_code(&out, 0);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["permanent"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn names(l: Vec<(String, bool)>) -> Vec<String> {
    l.into_iter().map(|(n, _)| n).collect()
}

/// The archived complete segments (file names), sorted.
fn wal_segments(src: &Source) -> Vec<String> {
    let mut v: Vec<String> = files_below(&src.repo.path().join("wal"))
        .iter()
        .filter_map(|f| f.rsplit('/').next())
        .filter(|n| crate::common::is_segment_name(n))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// A backup's start and stop segments, from backup-list.
fn wal_range(src: &Source, name: &str) -> (String, String) {
    let out = src.pgark(&["backup-list", "--json", "--detail"]);
    assert_code(&out, 0);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let b = list.iter().find(|b| b["name"] == name).expect("listed");
    (
        b["start_wal_segment"].as_str().unwrap().to_string(),
        b["stop_wal_segment"].as_str().unwrap().to_string(),
    )
}

#[test]
fn delete_applies_the_policy_from_every_source_and_kept_backups_restore() {
    let src = archiving_source();
    let c = &src.cluster;
    let rows = |n: u32| {
        c.psql(&format!(
            "insert into t (batch) select 'b{n}' from generate_series(1, 2000)"
        ))
        .unwrap();
    };
    rows(0);
    let a = push(&src, &["--permanent"]);
    rows(1);
    let b = push(&src, &["--delta"]);
    rows(2);
    let full = push(&src, &["--full"]);
    rows(3);
    let delta = push(&src, &["--delta"]);
    rows(4);

    // A was pushed permanent; the listing shows it. Marks come and go.
    assert_code(&src.pgark(&["backup-mark", &b, "--permanent"]), 0);
    assert!(listed(&src)[1].1);
    assert_code(&src.pgark(&["backup-mark", &b, "--impermanent"]), 0);
    assert_code(&src.pgark(&["backup-mark", &b, "--impermanent"]), 0);
    assert_code(&src.pgark(&["backup-mark", &b]), 2);
    assert_eq!(
        listed(&src),
        [
            (a.clone(), true),
            (b.clone(), false),
            (full.clone(), false),
            (delta.clone(), false)
        ]
    );
    let out = src.pgark(&["backup-mark", "base_000000010000000000000063_x", "--permanent"]);
    assert_code(&out, 1);

    // No setting: a usage error; so is a garbage age short enough to
    // take a running backup-push for garbage.
    assert_code(&src.pgark(&["delete"]), 2);
    assert_code(
        &src.pgark(&["delete", "--retain-count", "1", "--garbage-age", "30min"]),
        2,
    );
    assert_code(&src.pgark(&["delete", "--retain-max-age", "3 days"]), 2);

    // The dry run, by flag, changes nothing and says why each stays.
    let before = files_below(src.repo.path());
    let out = src.pgark(&["delete", "--retain-count", "1"]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&format!("would delete {b}")), "{text}");
    assert!(
        text.contains(&format!("keep {a} (")) && text.contains("permanent"),
        "{text}"
    );
    assert!(text.contains(&format!("keep {full} (")), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
    assert_eq!(files_below(src.repo.path()), before);

    // The same plan from the configuration file, as JSON.
    let conf = src.repo.path().join("..").join(format!(
        "retention-{}.toml",
        src.repo.path().file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&conf, "retain_count = 1\n").unwrap();
    pgark_testkit::pg::chown_to_pg_user(&conf).unwrap();
    let out = src.pgark(&["--config", conf.to_str().unwrap(), "delete", "--json"]);
    assert_code(&out, 0);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expired: Vec<&str> = plan["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(expired, [b.as_str()]);
    assert_eq!(plan["deleted"], false);
    assert!(plan["bytes_freed"].as_u64().unwrap() > 0);
    assert_eq!(files_below(src.repo.path()), before);
    std::fs::remove_file(&conf).unwrap();

    assert!(plan["wal"]["files"].as_u64().unwrap() > 0, "{plan}");

    // Parts without a manifest: an old interrupted push is garbage, a
    // recent one (maybe running) is not.
    let old = "base_000000010000000000000001_20200101T000000Z".to_string();
    let recent = format!(
        "base_0000000100000000000000FF_{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    for n in [&old, &recent] {
        let dir = src.repo.path().join("backups").join(n);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("part_00001.tar"), b"leftover").unwrap();
        pgark_testkit::pg::chown_to_pg_user(&dir).unwrap();
    }
    // Scratch files of interrupted puts: an old one is garbage, a young
    // one (a put maybe still writing it) is not.
    let scratch_old = src
        .repo
        .path()
        .join("wal/000000010000000000000001.1f2e3d4c.pgark-tmp");
    let scratch_young = src
        .repo
        .path()
        .join("backups/000000010000000000000002.5a6b7c8d.pgark-tmp");
    for f in [&scratch_old, &scratch_young] {
        std::fs::write(f, b"half an object").unwrap();
        pgark_testkit::pg::chown_to_pg_user(f).unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&scratch_old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600))
        .unwrap();
    let wal_before = wal_segments(&src);

    // From the environment, with --confirm: B goes, nothing under its
    // prefix is left.
    let mut cmd = crate::common::pgark_command(&src.bin, c, src.repo.path());
    cmd.env("PGARK_RETAIN_COUNT", "1").args(["delete", "--confirm"]);
    let out = pgark_testkit::pg::run_capture(&mut cmd, None, std::time::Duration::from_secs(600)).unwrap();
    assert_code(&out, 0);
    assert_eq!(names(listed(&src)), [a.clone(), full.clone(), delta.clone()]);
    // WAL before the oldest kept non-permanent backup (full) is gone,
    // except A's own; A's and everything from full on are kept.
    let wal = wal_segments(&src);
    let (a_start, a_stop) = wal_range(&src, &a);
    let (full_start, _) = wal_range(&src, &full);
    assert!(wal.contains(&a_start) && wal.contains(&a_stop), "{wal:?}");
    assert!(wal.contains(&full_start), "{wal:?}");
    for s in &wal {
        assert!(
            *s >= full_start || (*s >= a_start && *s <= a_stop),
            "{s} should have been deleted (cutoff {full_start}, permanent {a_start}..{a_stop})"
        );
    }
    assert!(wal.len() < wal_before.len(), "no WAL deleted: {wal:?}");
    assert!(!src.repo.path().join("backups").join(&old).exists());
    assert!(!scratch_old.exists(), "old scratch file kept");
    assert!(scratch_young.exists(), "young scratch file removed");
    std::fs::remove_file(&scratch_young).unwrap();
    assert!(src
        .repo
        .path()
        .join("backups")
        .join(&recent)
        .join("part_00001.tar")
        .is_file());
    assert!(
        !files_below(src.repo.path())
            .iter()
            .any(|f| f.contains(&format!("{b}/")) || f.ends_with(&b)),
        "leftovers of {b}"
    );

    // One backup by name: refused while a delta depends on it or it is
    // permanent (exit 3); an unknown name exits 1.
    let out = src.pgark(&["delete", &full, "--confirm"]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains(&delta), "{}", stderr(&out));
    assert_code(&src.pgark(&["delete", &a, "--confirm"]), 3);
    assert_code(&src.pgark(&["delete", &b, "--confirm"]), 1);
    // The permanent backup restores with its own WAL.
    {
        let (_dir, restored) =
            restore_and_start(&src, &a, &["--target-immediate", "--target-action", "promote"]);
        assert_eq!(restored.psql("select count(*) from t").unwrap(), "2000");
    }
    assert_code(&src.pgark(&["backup-mark", &a, "--impermanent"]), 0);
    assert_code(&src.pgark(&["delete", &a, "--confirm"]), 0);
    assert_eq!(names(listed(&src)), [full.clone(), delta.clone()]);
    // A's WAL went with it.
    assert!(wal_segments(&src).iter().all(|s| *s >= full_start));

    // The kept delta restores, with recovery to the end of the archive.
    crate::common::archive_current_wal(c);
    let want = c.psql("select count(*) from t").unwrap();
    let (_dir, restored) = restore_and_start(&src, &delta, &[]);
    assert_eq!(restored.psql("select count(*) from t").unwrap(), want);

    // backup-push applies the policy after a successful backup, unless
    // --no-retain.
    let newest = push(&src, &["--full", "--retain-count", "1"]);
    assert_eq!(names(listed(&src)), vec![newest.clone()]);
    let next = push(&src, &["--delta", "--retain-count", "1", "--no-retain"]);
    assert_eq!(names(listed(&src)), [newest.clone(), next.clone()]);

    // No repository: exit 11, for delete and backup-mark.
    let empty = pgark_testkit::pg::scratch_dir("empty");
    assert_code(&run(empty.path(), &["delete", "--retain-count", "1"]), 11);
    assert_code(&run(empty.path(), &["backup-mark", &full, "--permanent"]), 11);
}

/// A repository on an object store (emulator) under test, for
/// [`retention_on_a_store`].
pub(crate) struct RemoteRepo<'a> {
    pub cluster: &'a pgark_testkit::pg::PgCluster,
    /// pgark with the repository's settings and credentials.
    pub pgark: &'a dyn Fn(&[&str]) -> std::process::Output,
    /// Every object name under the repository's prefix, relative to it,
    /// as the store itself lists them (not as pgark does).
    pub objects: &'a dyn Fn() -> Vec<String>,
    /// Prepended to the restore_command pgark writes: the credentials a
    /// restored server's environment would hold.
    pub restore_env: &'a str,
}

/// Issue 13 on an object store: full and delta backups with WAL between
/// them and a permanent old backup; `delete --retain-count 2 --confirm`
/// leaves exactly the right backups and WAL (read from the store's own
/// listing), nothing under the deleted backups' keys, and the kept
/// backups restore: the newest delta to the end of WAL, the permanent one
/// with --target-immediate.
pub(crate) fn retention_on_a_store(r: &RemoteRepo) {
    let c = r.cluster;
    let push = |extra: &[&str]| {
        let mut args = vec!["backup-push", c.data_dir().to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = (r.pgark)(&args);
        assert_code(&out, 0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let rows = |n: u32| {
        c.psql(&format!(
            "insert into t (batch) select 'b{n}' from generate_series(1, 1000)"
        ))
        .unwrap();
    };
    rows(0);
    let a = push(&["--permanent"]);
    let at_a = c.psql("select count(*) from t").unwrap();
    rows(1);
    let b = push(&["--full"]);
    rows(2);
    let b2 = push(&["--delta"]);
    rows(3);
    let d = push(&["--full"]);
    rows(4);
    let e = push(&["--delta"]);
    rows(5);
    let last_commit: chrono::DateTime<chrono::Utc> = c
        .psql(
            "insert into t (batch) values ('last') returning to_char(clock_timestamp() at time zone 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .unwrap()
        .parse()
        .unwrap();
    crate::common::archive_current_wal(c);

    // Issue 14 on this store: status reads the window from the WAL and
    // the newest segment's time from the store.
    let out = (r.pgark)(&["status", "--json", "--max-archive-age", "1h"]);
    assert_code(&out, 0);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["backupCount"], 5, "{status}");
    assert_eq!(status["lastBackupName"], e.as_str(), "{status}");
    assert_eq!(status["walArchivingHealthy"], true, "{status}");
    let end: chrono::DateTime<chrono::Utc> = status["recoveryWindowEnd"].as_str().unwrap().parse().unwrap();
    assert!(
        (0..1000).contains(&(end - last_commit).num_milliseconds()),
        "window end {end}, last commit {last_commit}: {status}"
    );
    let arrived: chrono::DateTime<chrono::Utc> = status["newestArchivedSegmentTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (chrono::Utc::now() - arrived).num_seconds().abs() < 600,
        "{status}"
    );

    let detail = |name: &str| {
        let out = (r.pgark)(&["backup-list", "--json", "--detail"]);
        assert_code(&out, 0);
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let b = list.iter().find(|b| b["name"] == name).expect("listed").clone();
        (
            b["start_wal_segment"].as_str().unwrap().to_string(),
            b["stop_wal_segment"].as_str().unwrap().to_string(),
        )
    };
    let (a_start, a_stop) = detail(&a);
    let (d_start, _) = detail(&d);
    let segments = || -> Vec<String> {
        (r.objects)()
            .iter()
            .filter(|k| k.starts_with("wal/"))
            .filter_map(|k| k.rsplit('/').next())
            .filter_map(|n| n.split('.').next())
            .filter(|n| crate::common::is_segment_name(n))
            .map(str::to_owned)
            .collect()
    };
    let wal_before = segments();

    let out = (r.pgark)(&["delete", "--retain-count", "2", "--confirm", "--json"]);
    assert_code(&out, 0);
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expired: Vec<&str> = done["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(expired, [b2.as_str(), b.as_str()], "{done}");

    // The store holds nothing of B and B2, every object of A, D and E.
    let objects = (r.objects)();
    for gone in [&b, &b2] {
        let prefix = format!("backups/{gone}/");
        assert!(
            !objects.iter().any(|k| k.starts_with(&prefix)),
            "objects of {gone} left: {objects:?}"
        );
    }
    for kept in [&a, &d, &e] {
        let manifest = format!("backups/{kept}/manifest");
        assert!(objects.contains(&manifest), "{manifest} missing: {objects:?}");
    }
    let listed: Vec<String> = {
        let out = (r.pgark)(&["backup-list", "--json"]);
        assert_code(&out, 0);
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed, [a.clone(), d.clone(), e.clone()]);
    // The gap retention leaves after the permanent backup is by design:
    // status stays healthy, and the window starts at D, from which WAL
    // goes on without a gap.
    let out = (r.pgark)(&["status", "--json", "--max-archive-age", "1h"]);
    assert_code(&out, 0);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["walArchivingHealthy"], true, "{status}");
    assert_eq!(status["firstRestorableBackup"], d.as_str(), "{status}");
    // WAL: what is left is D's and later, and A's own.
    let wal = segments();
    assert!(wal.len() < wal_before.len(), "no WAL deleted");
    for s in &wal {
        assert!(
            *s >= d_start || (*s >= a_start && *s <= a_stop),
            "{s} should have been deleted (cutoff {d_start}, permanent {a_start}..{a_stop})"
        );
    }
    for s in wal_before
        .iter()
        .filter(|s| **s >= d_start || (**s >= a_start && **s <= a_stop))
    {
        assert!(wal.contains(s), "{s} was deleted but is needed");
    }

    // The kept backups restore.
    let restore = |name: &str, flags: &[&str]| {
        let dir = pgark_testkit::pg::scratch_dir("retention-restore");
        let dest = dir.path().join("data");
        let mut args = vec!["backup-fetch", dest.to_str().unwrap(), name];
        args.extend_from_slice(flags);
        assert_code(&(r.pgark)(&args), 0);
        let command = crate::s3::written_restore_command(&dest);
        crate::s3::rewrite_restore_command(&dest, &format!("{}{command}", r.restore_env));
        let restored = crate::common::start_restored(c.install(), &dest);
        (dir, restored)
    };
    let want = crate::s3::checksum(c);
    {
        let (_dir, restored) = restore(&e, &[]);
        assert_eq!(crate::s3::checksum(&restored), want);
        restored.stop().unwrap();
    }
    let (_dir, restored) = restore(&a, &["--target-immediate", "--target-action", "promote"]);
    assert_eq!(restored.psql("select count(*) from t").unwrap(), at_a);
    restored.stop().unwrap();
}

/// The texts of every `<tag>...</tag>` (or JSON `"tag": "..."`) in `body`,
/// for the emulators' listings.
pub(crate) fn values_of(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = if body.trim_start().starts_with('{') {
        (format!("\"{tag}\": \""), "\"".to_string())
    } else {
        (format!("<{tag}>"), format!("</{tag}>"))
    };
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(rest[..j].to_string());
        rest = &rest[j + close.len()..];
    }
    out
}

/// Issue 13: `delete --retain-count 1 --confirm` run over and over while
/// backup-push runs three times and the server archives under pgbench
/// load: every push succeeds, archiving never fails, and the newest
/// backup restores to the end of WAL with the source's data.
#[test]
fn delete_while_backup_push_and_wal_push_run() {
    let src = archiving_source();
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    let first = push(&src, &["--full"]);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (pushed, deletes) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                c.pgbench(&["-n", "-c", "2", "-T", "2"]).unwrap();
                c.psql("select pg_switch_wal()").unwrap();
            }
        });
        let pusher = s.spawn(|| {
            let mut pushed = Vec::new();
            for _ in 0..3 {
                pushed.push(push(&src, &["--full"]));
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            pushed
        });
        let mut deletes = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let out = src.pgark(&["delete", "--retain-count", "1", "--confirm"]);
            assert_code(&out, 0);
            deletes += 1;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        load.join().unwrap();
        (pusher.join().unwrap(), deletes)
    });
    eprintln!("{deletes} deletes ran during the pushes");
    assert!(deletes >= 2, "the deletes did not overlap the pushes");
    let failed = c.psql("select failed_count from pg_stat_archiver").unwrap();
    assert_eq!(failed, "0", "archiving failed during the deletes");
    // The newest backup is listed (the first is long gone) and restores.
    let now = names(listed(&src));
    assert!(!now.contains(&first), "{now:?}");
    let newest = pushed.last().unwrap();
    assert!(now.contains(newest), "{now:?}");
    assert_code(&src.pgark(&["verify", "--all"]), 0);
    let want = crate::common::table_digest(c, "pgbench_accounts", "aid");
    crate::common::archive_current_wal(c);
    let (_dir, restored) = restore_and_start(&src, newest, &[]);
    assert_eq!(
        crate::common::table_digest(&restored, "pgbench_accounts", "aid"),
        want
    );
}

/// Issue 13: `delete --retain-count 1 --confirm` killed with SIGKILL at
/// random points (until three kills landed with work done and work left,
/// at most 12 runs): after every kill, every listed backup is whole with
/// its WAL (`pgark verify --all`) and the newest is listed; the same
/// command run again finishes the job and the store holds nothing under
/// the deleted backups' keys; at the end the newest backup restores to the
/// end of WAL with the source's data.
pub(crate) fn delete_killed_on_a_store(r: &RemoteRepo, command: &dyn Fn() -> std::process::Command) {
    let c = r.cluster;
    let push = || {
        c.psql("insert into t (batch) select 'x' from generate_series(1, 2000)")
            .unwrap();
        let out = (r.pgark)(&["backup-push", c.data_dir().to_str().unwrap(), "--full"]);
        assert_code(&out, 0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    };
    let listed = || -> Vec<String> {
        let out = (r.pgark)(&["backup-list", "--json"]);
        assert_code(&out, 0);
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect()
    };
    let args = ["delete", "--retain-count", "1", "--confirm"];
    let mut rng = crate::common::seeded_rng();
    let mut midway = 0;
    push();
    for round in 0..12 {
        if midway == 3 {
            break;
        }
        while listed().len() < 4 {
            push();
        }
        crate::common::archive_current_wal(c);
        let before = listed();
        // How long planning alone takes here, to spread the kills over
        // the whole run (planning, manifests, objects, WAL).
        let started = std::time::Instant::now();
        assert_code(&(r.pgark)(&["delete", "--retain-count", "1"]), 0);
        let plan_ms = started.elapsed().as_millis() as u64;
        let mut cmd = command();
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        // Planning is most of a run here: kill from three quarters of it on.
        let after = std::time::Duration::from_millis(plan_ms * 3 / 4 + rng() % (plan_ms + 1));
        std::thread::sleep(after);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let now = listed();
        eprintln!(
            "round {round}: killed after {after:?} (planning takes {plan_ms} ms): {status}; listed {} of {}",
            now.len(),
            before.len()
        );
        if !status.success() && now != before {
            midway += 1;
        }
        assert!(
            now.contains(before.last().unwrap()),
            "the newest backup was deleted: {now:?}"
        );
        let out = (r.pgark)(&["verify", "--all"]);
        assert_code(&out, 0);
        // Run again, it finishes the job.
        assert_code(&(r.pgark)(&args), 0);
        assert_eq!(listed(), [before.last().unwrap().clone()]);
        let objects = (r.objects)();
        for gone in &before[..before.len() - 1] {
            let prefix = format!("backups/{gone}/");
            assert!(
                !objects.iter().any(|k| k.starts_with(&prefix)),
                "objects of {gone} left: {objects:?}"
            );
        }
    }
    eprintln!("{midway} runs killed with work done and work left");
    assert!(midway >= 1, "no kill landed in the middle of a delete");
    let last = listed().pop().unwrap();
    let want = crate::s3::checksum(c);
    crate::common::archive_current_wal(c);
    let dir = pgark_testkit::pg::scratch_dir("killed-delete-restore");
    let dest = dir.path().join("data");
    assert_code(&(r.pgark)(&["backup-fetch", dest.to_str().unwrap(), &last]), 0);
    let restore = crate::s3::written_restore_command(&dest);
    crate::s3::rewrite_restore_command(&dest, &format!("{}{restore}", r.restore_env));
    let restored = crate::common::start_restored(c.install(), &dest);
    assert_eq!(crate::s3::checksum(&restored), want);
    restored.stop().unwrap();
}
