//! A store wrapper that injects failures, for testing how the engine
//! reacts to a misbehaving repository.

use async_trait::async_trait;
use bytes::Bytes;
use pgark_store::{
    ErrorKind, GetResult, Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode, StoreError,
};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Wraps a store; the first `fail_first` calls of each listed operation
/// fail with an error of `kind`, then calls pass through.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    kind: ErrorKind,
    ops: Vec<Operation>,
    remaining: AtomicU32,
    /// Calls that failed so far.
    pub injected: AtomicU32,
}

impl FaultyStore {
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        kind: ErrorKind,
        ops: &[Operation],
        fail_first: u32,
    ) -> FaultyStore {
        FaultyStore {
            inner,
            kind,
            ops: ops.to_vec(),
            remaining: AtomicU32::new(fail_first),
            injected: AtomicU32::new(0),
        }
    }

    fn check(&self, op: Operation, target: &str) -> Result<(), StoreError> {
        if !self.ops.contains(&op) {
            return Ok(());
        }
        let left = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_ok() {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::new(self.kind, op, self, target, "injected fault"));
        }
        Ok(())
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        self.check(Operation::Put, key.as_str())?;
        self.inner.put(key, data, mode).await
    }
    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.check(Operation::Put, key.as_str())?;
        self.inner.put_multipart(key, mode).await
    }
    async fn get(&self, key: &Key) -> Result<GetResult, StoreError> {
        self.check(Operation::Get, key.as_str())?;
        self.inner.get(key).await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta, StoreError> {
        self.check(Operation::Head, key.as_str())?;
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.check(Operation::List, prefix)?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        self.check(Operation::Delete, key.as_str())?;
        self.inner.delete(key).await
    }
}
