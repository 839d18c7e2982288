//! Runs the store conformance suite against the backends built into this
//! crate.

use pgark_store::{LocalStore, MemoryStore, ObjectStore};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_conforms() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    pgark_testkit::conformance::run_all(store, "conformance/").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    pgark_testkit::conformance::run_all(store, "conformance/").await;
    // The suite deletes what it wrote; nothing (not even a temporary file or
    // an empty directory) may be left.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("repo")).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_store_conforms_at_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    pgark_testkit::conformance::run_all(store, "").await;
}
