//! Commands killed with SIGKILL at random points, as an OOM killer, a
//! node drain or a tired operator's `kill -9` would: wal-push (into a
//! local directory and into S3), backup-push. After every kill, what is
//! stored under a final name is whole or absent, the same command run
//! again succeeds, and nothing the kill left behind blocks a later
//! command. The seed is printed; PGARK_TEST_SEED repeats a run.

use crate::common::*;
use pgark_testkit::pg::scratch_dir;
use pgark_testkit::servers::{moto_or_skip, MOTO_ACCESS_KEY_ID, MOTO_REGION, MOTO_SECRET_ACCESS_KEY};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd`, kills it with SIGKILL after `after`; whether it was killed
/// (false: it had ended by itself).
fn run_and_kill(cmd: &mut Command, after: Duration) -> bool {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    !child.wait().unwrap().success()
}

/// wal-push of one real 16 MiB segment, killed at random points until
/// `kills_wanted` runs were killed halfway (at most `max_rounds` runs), each
/// into a fresh repository made by `repo_flags(round)`:
/// afterwards wal-fetch gives the segment byte for byte or says it is not
/// there (exit 1), and wal-push run again succeeds and stores it whole.
fn wal_push_killed(
    what: &str,
    kills_wanted: u32,
    max_rounds: u32,
    repo_flags: &dyn Fn(u32) -> Vec<String>,
    env: &[(&str, &str)],
) {
    let segment = fixture_files("wal", is_segment_name).remove(0);
    let name = segment.file_name().unwrap().to_str().unwrap().to_string();
    let original = std::fs::read(&segment).unwrap();
    let scratch = scratch_dir("walkill");
    let command = |round: u32, args: &[&str]| {
        let mut cmd = pgark();
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(repo_flags(round)).args(args);
        cmd
    };
    // How long one push takes here (the quickest of three, into
    // repositories of their own), to spread the kills over it.
    let whole = (0..3)
        .map(|i| {
            let started = Instant::now();
            let out = command(max_rounds + i, &["wal-push", segment.to_str().unwrap()])
                .output()
                .unwrap();
            assert_code(&out, 0);
            started.elapsed().as_millis() as u64
        })
        .min()
        .unwrap()
        + 10;
    let mut rng = seeded_rng();
    let mut kills = 0;
    let mut rounds = 0;
    // Until enough runs were killed halfway (bounded: a run that ends
    // before its kill counts as a round, not a kill).
    for round in 0..max_rounds {
        if kills == kills_wanted {
            break;
        }
        rounds += 1;
        let after = Duration::from_millis(rng() % whole);
        if run_and_kill(
            &mut command(round, &["wal-push", segment.to_str().unwrap()]),
            after,
        ) {
            kills += 1;
        }
        let fetched = scratch.path().join(format!("fetched-{round}"));
        let out = command(round, &["wal-fetch", &name, fetched.to_str().unwrap()])
            .output()
            .unwrap();
        match out.status.code() {
            Some(0) => assert!(
                std::fs::read(&fetched).unwrap() == original,
                "{what} round {round}: the archived segment differs from the original"
            ),
            // Absent: fine, as long as the retry below stores it. (11: the
            // kill came before the repository was initialised.)
            Some(1) | Some(11) => assert!(!fetched.exists()),
            other => panic!(
                "{what} round {round} (killed after {after:?}): wal-fetch exited {other:?}: {}",
                stderr(&out)
            ),
        }
        let out = command(round, &["wal-push", segment.to_str().unwrap()])
            .output()
            .unwrap();
        assert_code(&out, 0);
        let again = scratch.path().join(format!("again-{round}"));
        let out = command(round, &["wal-fetch", &name, again.to_str().unwrap()])
            .output()
            .unwrap();
        assert_code(&out, 0);
        assert!(std::fs::read(&again).unwrap() == original, "{what} round {round}");
    }
    eprintln!("{what}: {kills} of {rounds} runs killed halfway");
    assert_eq!(
        kills, kills_wanted,
        "{what}: too few kills landed in {rounds} rounds"
    );
}

#[test]
fn wal_push_killed_at_random_points_into_a_local_repository() {
    let root = scratch_dir("walkill-repo");
    let root = root.path().to_path_buf();
    wal_push_killed(
        "local",
        20,
        60,
        &|round| {
            vec![
                "--repo".into(),
                root.join(format!("r{round}")).to_string_lossy().into_owned(),
            ]
        },
        &[],
    );
}

#[test]
fn wal_push_killed_at_random_points_into_s3() {
    let Some(moto) = moto_or_skip("wal-push kills into S3") else {
        return;
    };
    moto.create_bucket("kills").unwrap();
    let endpoint = moto.endpoint();
    wal_push_killed(
        "s3",
        8,
        30,
        &|round| {
            vec![
                "--repo".into(),
                format!("s3://kills/r{round}"),
                "--s3-endpoint".into(),
                endpoint.clone(),
                "--s3-force-path-style".into(),
                "--s3-region".into(),
                MOTO_REGION.into(),
            ]
        },
        &[
            ("AWS_ACCESS_KEY_ID", MOTO_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", MOTO_SECRET_ACCESS_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent/pgark-test/aws-config"),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/pgark-test/aws-credentials",
            ),
        ],
    );
}

/// backup-push killed at random points until ten kills landed: nothing is
/// ever listed that does not restore (each listed backup is restored and
/// checked with pg_verifybackup), a later backup-push succeeds, and the
/// newest backup restores the source's data.
#[test]
fn backup_push_killed_at_random_points_lists_only_whole_backups() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    let digest = table_digest(c, "pgbench_accounts", "aid");
    let pgdata = c.data_dir().to_str().unwrap().to_string();
    let args = ["backup-push", pgdata.as_str(), "--part-size", "4"];
    let started = Instant::now();
    src.backup_push(&["--part-size", "4"]);
    let whole = started.elapsed().as_millis() as u64 + 50;
    let mut rng = seeded_rng();
    let mut kills = 0;
    for _ in 0..30 {
        if kills == 10 {
            break;
        }
        let after = Duration::from_millis(rng() % whole);
        if run_and_kill(src.pgark_command_on(c).args(args), after) {
            kills += 1;
        }
    }
    assert_eq!(kills, 10, "ten backup-push runs killed halfway in 30 rounds");
    // The kills left nothing that blocks the next backup.
    let last = src.backup_push(&[]);
    let listed = src.backup_list();
    let restores = scratch_dir("killed-push");
    for (i, b) in listed.iter().enumerate() {
        let name = b["name"].as_str().unwrap();
        let dest = restores.path().join(format!("r{i}"));
        let out = src.backup_fetch(&dest, name, &["--no-recovery"]);
        assert_code(&out, 0);
        crate::backup::verify_backup(c.install(), &dest);
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let dest = restores.path().join("last");
    let out = src.backup_fetch(
        &dest,
        &last,
        &["--target-immediate", "--target-action", "promote"],
    );
    assert_code(&out, 0);
    let restored = start_restored(c.install(), &dest);
    assert_eq!(table_digest(&restored, "pgbench_accounts", "aid"), digest);
    restored.stop().unwrap();
    eprintln!("{} backups listed after {kills} kills", listed.len());
}
