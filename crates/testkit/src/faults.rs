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

/// Wraps a store; the first `fail_first` calls of the listed operations
/// fail with an error of `kind`, then calls pass through.
///
/// The operations: [`Operation::Put`] (single puts and the start of a
/// multipart upload), [`Operation::PutPart`] (each part of a multipart
/// upload), [`Operation::Complete`] (its completion), [`Operation::Get`],
/// [`Operation::Head`], [`Operation::List`], [`Operation::Delete`].
///
/// Variations, set with the builders: every call waits `delay` first (a
/// slow repository); the failure message can be a service's own ("503
/// SlowDown"); with [`cut_gets_after(n)`](Self::cut_gets_after), a failing
/// `get` does not fail at once but returns a stream that ends with an error
/// after `n` bytes, as a connection reset in the middle of a download
/// would; with [`garble_gets`](Self::garble_gets) it returns the object's
/// length in wrong bytes, without an error; with
/// [`writes_land`](Self::writes_land), a failing put or completion is
/// carried out first and reported failed afterwards (a request that timed
/// out after the store had done it: ambiguous success).
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    kind: ErrorKind,
    ops: Vec<Operation>,
    /// Shared with the multipart uploads it starts.
    remaining: Arc<AtomicU32>,
    delay: std::time::Duration,
    message: String,
    cut_after: Option<u64>,
    garble: bool,
    land: bool,
    /// Only keys (or list prefixes) containing this fail.
    only: Option<String>,
    before_part: Option<PartHook>,
    /// Calls that failed (or, for cut gets, streams that were cut) so far.
    pub injected: Arc<AtomicU32>,
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
            remaining: Arc::new(AtomicU32::new(fail_first)),
            delay: std::time::Duration::ZERO,
            message: "injected fault".into(),
            cut_after: None,
            garble: false,
            land: false,
            only: None,
            before_part: None,
            injected: Arc::new(AtomicU32::new(0)),
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

    /// Failing gets return the object's length in wrong bytes (one bit of
    /// every 4 KiB flipped) and no error: a store or a proxy that damages
    /// data in transit.
    pub fn garble_gets(mut self) -> FaultyStore {
        self.garble = true;
        self
    }

    /// Failing puts and completions ([`Operation::Put`],
    /// [`Operation::Complete`]) are carried out before they are reported
    /// failed: the object is stored, the caller sees an error. With
    /// [`Operation::Put`] listed, a multipart upload fails at its
    /// completion rather than at its start.
    pub fn writes_land(mut self) -> FaultyStore {
        self.land = true;
        self
    }

    /// Calls `hook` with the part number (0-based) before each part of a
    /// multipart upload is passed on, e.g. to change the source of the
    /// upload while it runs.
    pub fn before_each_part(mut self, hook: impl Fn(u32) + Send + Sync + 'static) -> FaultyStore {
        self.before_part = Some(PartHook(Arc::new(hook)));
        self
    }

    /// A handle sharing this store's counters, for an upload to keep.
    fn shared(&self) -> Arc<FaultyStore> {
        Arc::new(self.clone())
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

/// A callback run before each part of a multipart upload.
#[derive(Clone)]
struct PartHook(Arc<dyn Fn(u32) + Send + Sync>);

impl fmt::Debug for PartHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PartHook")
    }
}

/// A multipart upload through a [`FaultyStore`].
struct FaultyUpload {
    store: Arc<FaultyStore>,
    key: Key,
    inner: Box<dyn MultipartUpload>,
    parts: u32,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.store.pause().await;
        if let Some(hook) = &self.store.before_part {
            (hook.0)(self.parts);
        }
        self.parts += 1;
        self.store.check(Operation::PutPart, self.key.as_str())?;
        self.inner.put_part(data).await
    }

    async fn complete(self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        let FaultyUpload {
            store, key, inner, ..
        } = *self;
        store.pause().await;
        let failure = store
            .check(Operation::Complete, key.as_str())
            .and_then(|()| match store.land {
                true => store.check(Operation::Put, key.as_str()),
                false => Ok(()),
            });
        match failure {
            Ok(()) => inner.complete().await,
            Err(e) if store.land => {
                inner.complete().await?;
                Err(e)
            }
            Err(e) => {
                let _ = inner.abort().await;
                Err(e)
            }
        }
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.abort().await
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
        match self.check(Operation::Put, key.as_str()) {
            Ok(()) => self.inner.put(key, data, mode).await,
            Err(e) if self.land => {
                self.inner.put(key, data, mode).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.pause().await;
        if !self.land {
            self.check(Operation::Put, key.as_str())?;
        }
        let inner = self.inner.put_multipart(key, mode).await?;
        Ok(Box::new(FaultyUpload {
            store: self.shared(),
            key: key.clone(),
            inner,
            parts: 0,
        }))
    }
    async fn get(&self, key: &Key) -> Result<GetResult, StoreError> {
        self.pause().await;
        if self.garble {
            if self.check(Operation::Get, key.as_str()).is_ok() {
                return self.inner.get(key).await;
            }
            let got = self.inner.get(key).await?;
            let mut at = 0u64;
            let body = got.stream.map(move |chunk| {
                chunk.map(|b| {
                    let mut v = b.to_vec();
                    for (i, byte) in v.iter_mut().enumerate() {
                        if (at + i as u64) % 4096 == 17 {
                            *byte ^= 0x20;
                        }
                    }
                    at += v.len() as u64;
                    Bytes::from(v)
                })
            });
            return Ok(GetResult {
                meta: got.meta,
                stream: Box::pin(body),
            });
        }
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
