//! A store wrapper that injects failures, for testing how the engine
//! reacts to a misbehaving repository.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pgark_store::{
    ErrorKind, GetResult, Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode, StoreError,
};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Wraps a store; the first `fail_first` calls of each listed operation
/// fail with an error of `kind`, then calls pass through.
///
/// Variations, set with the `with_*` builders: every call waits `delay`
/// first (a slow repository); the failure message can be a service's own
/// ("503 SlowDown"); and with `cut_gets_after(n)`, a failing `get` does
/// not fail at once but returns a stream that ends with an error after `n`
/// bytes, as a connection reset in the middle of a download would.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    kind: ErrorKind,
    ops: Vec<Operation>,
    remaining: AtomicU32,
    delay: std::time::Duration,
    message: String,
    cut_after: Option<u64>,
    /// Only keys (or list prefixes) containing this fail.
    only: Option<String>,
    /// Calls that failed (or, for cut gets, streams that were cut) so far.
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
            delay: std::time::Duration::ZERO,
            message: "injected fault".into(),
            cut_after: None,
            only: None,
            injected: AtomicU32::new(0),
        }
    }

    /// Only calls on keys (or list prefixes) containing `part` fail; the
    /// others pass through and do not count.
    pub fn only_keys_containing(mut self, part: &str) -> FaultyStore {
        self.only = Some(part.into());
        self
    }

    /// Every call first waits `delay`.
    pub fn with_delay(mut self, delay: std::time::Duration) -> FaultyStore {
        self.delay = delay;
        self
    }

    /// The failures say `message` (e.g. "503 SlowDown: please reduce your
    /// request rate").
    pub fn with_message(mut self, message: &str) -> FaultyStore {
        self.message = message.into();
        self
    }

    /// Failing gets return a stream cut after `bytes` bytes instead of
    /// failing at once.
    pub fn cut_gets_after(mut self, bytes: u64) -> FaultyStore {
        self.cut_after = Some(bytes);
        self
    }

    async fn pause(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }

    fn check(&self, op: Operation, target: &str) -> Result<(), StoreError> {
        if !self.ops.contains(&op) || self.only.as_ref().is_some_and(|p| !target.contains(p.as_str())) {
            return Ok(());
        }
        let left = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_ok() {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::new(self.kind, op, self, target, self.message.clone()));
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
        self.pause().await;
        self.check(Operation::Put, key.as_str())?;
        self.inner.put(key, data, mode).await
    }
    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.pause().await;
        self.check(Operation::Put, key.as_str())?;
        self.inner.put_multipart(key, mode).await
    }
    async fn get(&self, key: &Key) -> Result<GetResult, StoreError> {
        self.pause().await;
        let Some(limit) = self.cut_after else {
            self.check(Operation::Get, key.as_str())?;
            return self.inner.get(key).await;
        };
        if self.check(Operation::Get, key.as_str()).is_ok() {
            return self.inner.get(key).await;
        }
        // Cut this one short: its first `limit` bytes, then the error.
        let got = self.inner.get(key).await?;
        let error = StoreError::new(
            self.kind,
            Operation::Get,
            self,
            key.as_str(),
            self.message.clone(),
        );
        let mut left = limit;
        let body = got.stream.map(move |chunk| {
            chunk.map(|mut b| {
                let keep = (b.len() as u64).min(left) as usize;
                left -= keep as u64;
                b.truncate(keep);
                b
            })
        });
        let cut = body
            .take_while(|c| futures::future::ready(c.as_ref().map_or(true, |b| !b.is_empty())))
            .chain(futures::stream::once(futures::future::ready(Err(error))));
        Ok(GetResult {
            meta: got.meta,
            stream: Box::pin(cut),
        })
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta, StoreError> {
        self.pause().await;
        self.check(Operation::Head, key.as_str())?;
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.pause().await;
        self.check(Operation::List, prefix)?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        self.pause().await;
        self.check(Operation::Delete, key.as_str())?;
        self.inner.delete(key).await
    }
}
