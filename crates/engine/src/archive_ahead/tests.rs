use super::spool::Spool;
use super::*;
use pgark_codec::{ContentDigest, DigestAlgorithm};

fn outcome(name: &str) -> WalPushOutcome {
    let file = ArchivedFile::parse(name).unwrap();
    WalPushOutcome {
        file,
        key: pgark_catalog::wal_key(&file),
        status: WalPushStatus::Stored,
        original_len: 100,
        stored_len: 10,
        digest: ContentDigest::of(DigestAlgorithm::Blake3, b"x"),
    }
}

#[test]
fn ready_segments_in_order_and_those_no_record_covers() {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("archive_status");
    std::fs::create_dir(&status).unwrap();
    for n in [
        "000000010000000000000005.ready",
        "000000010000000000000003.ready",
        "000000010000000000000002.done",
        "000000010000000000000004.ready",
        "00000002.history.ready",
        "000000010000000000000001.ready",
        "000000010000000000000006.partial.ready",
    ] {
        std::fs::write(status.join(n), b"").unwrap();
    }
    assert_eq!(
        pg_wal_of(&dir.path().join("000000010000000000000002")).as_deref(),
        Some(dir.path())
    );
    assert!(pg_wal_of(Path::new("/nonexistent/000000010000000000000002")).is_none());
    let spool = Spool::new(dir.path(), "/repo");
    assert_eq!(
        spool.ready(),
        vec![
            "000000010000000000000001",
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000005"
        ]
    );
    let seg = dir.path().join("000000010000000000000003");
    std::fs::write(&seg, b"x").unwrap();
    spool
        .write(
            "000000010000000000000003",
            &seg,
            &outcome("000000010000000000000003"),
        )
        .unwrap();
    assert_eq!(
        spool.unrecorded_after("000000010000000000000002", 2),
        vec!["000000010000000000000004", "000000010000000000000005"]
    );
    assert_eq!(spool.records_from("000000010000000000000003"), 1);
    assert_eq!(spool.records_from("000000010000000000000004"), 0);
}

#[test]
fn records_hold_only_for_the_same_file_and_repository() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("000000010000000000000003");
    std::fs::write(&seg, vec![1u8; 100]).unwrap();
    let spool = Spool::new(dir.path(), "/repo/a");
    let outcome = outcome("000000010000000000000003");
    spool.write("000000010000000000000003", &seg, &outcome).unwrap();
    let record = spool.read("000000010000000000000003", &seg).unwrap();
    assert_eq!(parse_digest(&record.digest), outcome.digest);
    let other_repo = Spool::new(dir.path(), "/repo/b");
    assert!(other_repo.read("000000010000000000000003", &seg).is_none());
    // The same name, another file (a new inode).
    // (Kept open so that its inode is not reused at once.)
    let _old = std::fs::File::open(&seg).unwrap();
    std::fs::remove_file(&seg).unwrap();
    std::fs::write(&seg, vec![2u8; 100]).unwrap();
    assert!(spool.read("000000010000000000000003", &seg).is_none());
    // Pruned once PostgreSQL asks for a later segment; a fresh temporary
    // file may be another process's record being written, and stays.
    std::fs::write(spool.dir.join("000000010000000000000009.77.tmp"), b"x").unwrap();
    spool.prune("000000010000000000000004");
    let left: Vec<String> = std::fs::read_dir(&spool.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["000000010000000000000009.77.tmp"]);
}

#[test]
fn a_claim_is_exclusive_ends_with_its_holder_and_survives_a_crash_left_file() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path(), "/repo");
    let name = "000000010000000000000007";
    let claim = spool.claim(name).unwrap().expect("free");
    assert!(spool.claim(name).unwrap().is_none(), "claimed twice");
    drop(claim);
    assert!(
        !spool.dir.join(format!("{name}.busy")).exists(),
        "claim file left"
    );
    // A file left unlocked (its process was killed) is no claim.
    std::fs::write(spool.dir.join(format!("{name}.busy")), b"").unwrap();
    let claim = spool.claim(name).unwrap().expect("a stale claim file is free");
    assert!(spool.claim(name).unwrap().is_none());
    drop(claim);
    // Stale claims of segments PostgreSQL is past are pruned; held ones stay.
    std::fs::write(spool.dir.join("000000010000000000000001.busy"), b"").unwrap();
    let held = spool.claim("000000010000000000000002").unwrap().unwrap();
    spool.prune("000000010000000000000005");
    assert!(!spool.dir.join("000000010000000000000001.busy").exists());
    assert!(spool.dir.join("000000010000000000000002.busy").exists());
    drop(held);
}
