//! wal_push / wal_fetch against in-memory and fault-injecting stores.

use pgark_engine::{
    wal_fetch, wal_push, ErrorClass, RetryPolicy, WalFetchOptions, WalPushOptions, WalPushStatus,
};
use pgark_store::{ErrorKind, MemoryStore, ObjectStore, Operation};
use pgark_testkit::faults::FaultyStore;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn segment() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/wal/000000010000000000000004"
    ))
}

fn quick_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn push_fetch_round_trip_in_memory() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let out = wal_push(store.clone(), &segment(), &WalPushOptions::default())
        .await
        .unwrap();
    assert_eq!(out.status, WalPushStatus::Stored);
    assert_eq!(out.original_len, 16 << 20);
    assert!(out.stored_len < out.original_len);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let name = "000000010000000000000004";
    let fetched = wal_fetch(store, name, &dest, &WalFetchOptions::default())
        .await
        .unwrap();
    assert_eq!(fetched.digest, out.digest);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(segment()).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_pushes_of_one_segment_store_it_once() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { wal_push(store, &segment(), &WalPushOptions::default()).await })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap().unwrap().status {
            WalPushStatus::Stored => stored += 1,
            WalPushStatus::AlreadyArchived => {}
            WalPushStatus::ArchivedAhead => panic!("wal_push never answers from the spool"),
        }
    }
    assert_eq!(stored, 1, "exactly one push stores the segment");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_permanent_ones_are_not() {
    let inner: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    // Two transient failures of every put: the third attempt succeeds.
    let faulty = Arc::new(FaultyStore::new(
        inner.clone(),
        ErrorKind::Transient,
        &[Operation::Put],
        2,
    ));
    let opts = WalPushOptions {
        retry: quick_retry(5),
        ..Default::default()
    };
    wal_push(faulty.clone(), &segment(), &opts).await.unwrap();
    assert_eq!(faulty.injected.load(Ordering::SeqCst), 2);

    // Transient failures outlasting the attempts: a storage error, not "not found".
    let faulty = Arc::new(FaultyStore::new(
        inner.clone(),
        ErrorKind::Transient,
        &[Operation::Get],
        10,
    ));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x");
    let opts = WalFetchOptions {
        retry: quick_retry(3),
        ..Default::default()
    };
    let err = wal_fetch(faulty.clone(), "000000010000000000000004", &dest, &opts)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Storage, "{err}");
    assert_eq!(faulty.injected.load(Ordering::SeqCst), 3);
    assert!(!dest.exists());

    // A permanent failure is not retried.
    let faulty = Arc::new(FaultyStore::new(
        inner,
        ErrorKind::Permanent,
        &[Operation::Get],
        10,
    ));
    let err = wal_fetch(faulty.clone(), "000000010000000000000004", &dest, &opts)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Storage);
    assert_eq!(faulty.injected.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_file_is_not_found() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let err = wal_fetch(
        store,
        "00000002.history",
        &dir.path().join("h"),
        &WalFetchOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound);
}

/// Downloads cut short in the middle (a connection reset) and a slow
/// repository answering "503 SlowDown": wal-fetch starts over and gets the
/// segment intact, or, when every attempt is cut, fails as a repository
/// failure leaving nothing at the destination; wal-push waits out the delay.
#[tokio::test(flavor = "multi_thread")]
async fn downloads_cut_short_and_slow_repositories() {
    let inner: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let slow = Arc::new(
        FaultyStore::new(inner.clone(), ErrorKind::Transient, &[Operation::Put], 1)
            .with_delay(Duration::from_millis(30))
            .with_message("503 SlowDown: please reduce your request rate"),
    );
    let opts = WalPushOptions {
        retry: quick_retry(3),
        ..Default::default()
    };
    let pushed = wal_push(slow.clone(), &segment(), &opts).await.unwrap();
    assert_eq!(slow.injected.load(Ordering::SeqCst), 1);

    let name = "000000010000000000000004";
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let fetch = WalFetchOptions {
        retry: quick_retry(4),
        ..Default::default()
    };
    // The first two downloads break after 1000 bytes; the third is whole.
    let cut = Arc::new(
        FaultyStore::new(inner.clone(), ErrorKind::Transient, &[Operation::Get], 2).cut_gets_after(1000),
    );
    let fetched = wal_fetch(cut.clone(), name, &dest, &fetch).await.unwrap();
    assert_eq!(cut.injected.load(Ordering::SeqCst), 2);
    assert_eq!(fetched.digest, pushed.digest);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(segment()).unwrap());

    // Every download breaks: a storage failure, DEST untouched, no temp file.
    std::fs::remove_file(&dest).unwrap();
    let always = Arc::new(
        FaultyStore::new(inner, ErrorKind::Transient, &[Operation::Get], u32::MAX).cut_gets_after(4096),
    );
    let err = wal_fetch(always.clone(), name, &dest, &fetch).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Storage, "{err}");
    assert_eq!(always.injected.load(Ordering::SeqCst), 4);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

fn uncompressed_in_parts() -> WalPushOptions {
    WalPushOptions {
        compression: pgark_codec::CompressionSpec::new(pgark_codec::Compression::None, None).unwrap(),
        part_size: Some(1 << 20),
        retry: quick_retry(3),
        ..Default::default()
    }
}

/// Issue 12, item 1: a segment whose read stops part-way (here: cut short
/// while the upload runs, after its first part was sent) used to leave the
/// part already read stored under the segment's final key, and every later
/// push of the segment then met it and failed as a conflict (exit 4),
/// stalling archiving. Now the upload is aborted, nothing is stored, and
/// the next push archives the segment.
#[tokio::test(flavor = "multi_thread")]
async fn a_segment_cut_short_while_read_is_not_stored_and_a_later_push_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let repo: Arc<dyn ObjectStore> = Arc::new(pgark_store::LocalStore::new(dir.path().join("repo")).unwrap());
    let wal = dir.path().join("000000010000000000000004");
    std::fs::copy(segment(), &wal).unwrap();
    let cut = wal.clone();
    let faulty = Arc::new(
        FaultyStore::new(repo.clone(), ErrorKind::Transient, &[], 0).before_each_part(move |n| {
            if n == 0 {
                let f = std::fs::OpenOptions::new().write(true).open(&cut).unwrap();
                f.set_len(12 << 20).unwrap();
            }
        }),
    );
    let err = wal_push(faulty, &wal, &uncompressed_in_parts())
        .await
        .expect_err("a segment cut short is not archived");
    assert_eq!(err.class(), ErrorClass::LocalIo, "{err}");
    let key = pgark_store::Key::new("wal/0000000100000000/000000010000000000000004").unwrap();
    assert!(
        repo.list("wal/").await.unwrap().is_empty(),
        "something was stored: {:?}",
        repo.list("wal/").await.unwrap()
    );
    assert!(
        walk(&dir.path().join("repo"))
            .iter()
            .all(|p| !p.contains("pgark-tmp")),
        "a temporary file was left: {:?}",
        walk(&dir.path().join("repo"))
    );

    // The file whole again (as PostgreSQL would retry it): archived.
    std::fs::copy(segment(), &wal).unwrap();
    let out = wal_push(repo.clone(), &wal, &uncompressed_in_parts())
        .await
        .unwrap();
    assert_eq!(out.status, WalPushStatus::Stored);
    assert_eq!(repo.head(&key).await.unwrap().size, out.stored_len);
}

/// Every file under `dir`, as paths relative to it.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Through the fault-injecting store: failed parts and completions of a
/// multipart upload are retried whole; a write that lands and then reports
/// failure is met by its retry as "already archived", compared and accepted;
/// wrong bytes read back (of the right length) are a damaged object, never
/// a restored segment.
#[tokio::test(flavor = "multi_thread")]
async fn parts_completions_ambiguous_writes_and_wrong_bytes() {
    let cases: [(&str, &[Operation], bool); 4] = [
        ("a part fails", &[Operation::PutPart], false),
        ("the completion fails", &[Operation::Complete], false),
        ("the completion lands, then fails", &[Operation::Complete], true),
        ("a single put lands, then fails", &[Operation::Put], true),
    ];
    for (what, ops, land) in cases {
        let inner: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let mut faulty = FaultyStore::new(inner.clone(), ErrorKind::Transient, ops, 2);
        if land {
            faulty = faulty.writes_land();
        }
        let faulty = Arc::new(faulty);
        let mut opts = uncompressed_in_parts();
        if ops == [Operation::Put] {
            // Small enough for one put.
            opts.part_size = Some(32 << 20);
        }
        let out = wal_push(faulty.clone(), &segment(), &opts)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            faulty.injected.load(Ordering::SeqCst) >= 1,
            "{what}: no fault injected"
        );
        let want = if land {
            WalPushStatus::AlreadyArchived
        } else {
            WalPushStatus::Stored
        };
        assert_eq!(out.status, want, "{what}");
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        wal_fetch(
            inner,
            "000000010000000000000004",
            &dest,
            &WalFetchOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: fetch: {e}"));
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(segment()).unwrap(),
            "{what}"
        );
    }

    // Reads of wrong bytes of the right length.
    let inner: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    wal_push(inner.clone(), &segment(), &WalPushOptions::default())
        .await
        .unwrap();
    let garbled = Arc::new(
        FaultyStore::new(inner.clone(), ErrorKind::Transient, &[Operation::Get], u32::MAX).garble_gets(),
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let fetch = WalFetchOptions {
        retry: quick_retry(3),
        ..Default::default()
    };
    let err = wal_fetch(garbled.clone(), "000000010000000000000004", &dest, &fetch)
        .await
        .expect_err("wrong bytes are not restored");
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
    // A push that meets the archived copy compares through the same reads:
    // damaged, not "already archived" and not a conflict.
    let err = wal_push(garbled, &segment(), &WalPushOptions::default())
        .await
        .expect_err("a damaged archived copy is reported");
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
}

/// A zstd segment into a local repository: compressed from one stable
/// buffer and written in parts (the store's streaming part size). The
/// object decodes to the file with its SHA-256; a second push is a no-op,
/// other content under the name a conflict.
#[tokio::test(flavor = "multi_thread")]
async fn a_zstd_segment_in_a_local_repository() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let local = pgark_store::LocalStore::new(dir.path().join("repo")).unwrap();
    assert!(local.streaming_part_size().is_some());
    let repo: Arc<dyn ObjectStore> = Arc::new(local);
    let wal = dir.path().join("000000010000000000000004");
    std::fs::copy(segment(), &wal).unwrap();
    let data = std::fs::read(&wal).unwrap();
    let out = wal_push(repo.clone(), &wal, &WalPushOptions::default())
        .await
        .unwrap();
    assert_eq!(out.status, WalPushStatus::Stored);
    assert_eq!(out.digest.bytes, <[u8; 32]>::from(sha2::Sha256::digest(&data)));
    let stored = std::fs::read(dir.path().join("repo").join(out.key.as_str())).unwrap();
    assert_eq!(stored.len() as u64, out.stored_len);
    let (decoded, summary) = pgark_codec::decode_to_vec(&stored).unwrap();
    assert!(decoded == data);
    assert_eq!(summary.codec, pgark_codec::Compression::Zstd);
    assert_eq!(summary.digest, out.digest);

    let again = wal_push(repo.clone(), &wal, &WalPushOptions::default())
        .await
        .unwrap();
    assert_eq!(again.status, WalPushStatus::AlreadyArchived);
    let mut other = data.clone();
    other[10 << 20] ^= 1;
    std::fs::write(&wal, &other).unwrap();
    let err = wal_push(repo.clone(), &wal, &WalPushOptions::default())
        .await
        .expect_err("other content under an archived name");
    assert_eq!(err.class(), ErrorClass::Conflict, "{err}");
    assert!(std::fs::read(dir.path().join("repo").join(out.key.as_str())).unwrap() == stored);
}

/// The zstd path too: a segment cut short or grown while it is read is a
/// local error and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_zstd_segment_that_changes_size_while_read_is_not_stored() {
    for grow in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let repo: Arc<dyn ObjectStore> =
            Arc::new(pgark_store::LocalStore::new(dir.path().join("repo")).unwrap());
        let wal = dir.path().join("000000010000000000000004");
        std::fs::copy(segment(), &wal).unwrap();
        let changed = wal.clone();
        let faulty = Arc::new(
            FaultyStore::new(repo.clone(), ErrorKind::Transient, &[], 0).before_each_part(move |n| {
                if n == 0 {
                    let f = std::fs::OpenOptions::new().write(true).open(&changed).unwrap();
                    f.set_len(if grow { 17 << 20 } else { 12 << 20 }).unwrap();
                }
            }),
        );
        let opts = WalPushOptions {
            part_size: Some(64 << 10),
            retry: quick_retry(1),
            ..Default::default()
        };
        let err = wal_push(faulty, &wal, &opts)
            .await
            .expect_err("a segment that changed size is not archived");
        assert_eq!(err.class(), ErrorClass::LocalIo, "grow {grow}: {err}");
        assert!(err.to_string().contains("changed size"), "grow {grow}: {err}");
        assert!(repo.list("wal/").await.unwrap().is_empty(), "grow {grow}");
        assert!(
            walk(&dir.path().join("repo"))
                .iter()
                .all(|p| !p.contains("pgark-tmp")),
            "grow {grow}: a temporary file was left"
        );
    }
}
