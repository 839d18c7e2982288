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
