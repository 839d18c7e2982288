//! A command's time limit, applied to every repository call it makes.
//!
//! [`DeadlineStore`] wraps any store: each call, each read of a download's
//! stream and each part of an upload must end before one deadline, shared
//! by the whole command. Past it, calls fail at once with
//! [`ErrorKind::DeadlineExceeded`], which is not retried, so a command
//! whose repository is slow but never quite silent (each request within its
//! own time limits, retried again and again) still ends, and ends through
//! its ordinary failure path: a backup left without a manifest, a restore
//! that empties its destination, a WAL file never half-written.

use crate::StoreError;
use crate::{
    ErrorKind, GetResult, Key, Leftover, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode, Result,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long an upload's abort may still take once the deadline has passed:
/// the cleanup of what the failed command uploaded is let finish.
const ABORT_GRACE: Duration = Duration::from_secs(30);

/// A store whose calls all end by a deadline (see the module docs).
#[derive(Debug, Clone)]
pub struct DeadlineStore {
    inner: Arc<dyn ObjectStore>,
    limit: Limit,
}

/// The deadline, and the time limit it came from (for messages).
#[derive(Debug, Clone, Copy)]
struct Limit {
    deadline: Instant,
    limit: Duration,
}

impl Limit {
    fn error(&self, op: Operation, store: &dyn ObjectStore, target: &str) -> StoreError {
        StoreError::new(
            ErrorKind::DeadlineExceeded,
            op,
            store,
            target,
            format!(
                "the command's time limit of {} ran out (--command-timeout)",
                format_duration(self.limit)
            ),
        )
    }

    fn passed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    async fn bound<T>(
        &self,
        op: Operation,
        store: &dyn ObjectStore,
        target: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if self.passed() {
            return Err(self.error(op, store, target));
        }
        match tokio::time::timeout_at(self.deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(self.error(op, store, target)),
        }
    }
}

impl DeadlineStore {
    /// Wraps `inner` so that every call ends by `deadline`; `limit` is the
    /// time limit it was computed from, named in errors.
    pub fn new(inner: Arc<dyn ObjectStore>, deadline: Instant, limit: Duration) -> DeadlineStore {
        DeadlineStore {
            inner,
            limit: Limit { deadline, limit },
        }
    }
}

impl fmt::Display for DeadlineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl ObjectStore for DeadlineStore {
    fn streaming_part_size(&self) -> Option<usize> {
        self.inner.streaming_part_size()
    }

    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta> {
        let inner = &*self.inner;
        self.limit
            .bound(Operation::Put, inner, key.as_str(), inner.put(key, data, mode))
            .await
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>> {
        let inner = &*self.inner;
        let upload = self
            .limit
            .bound(
                Operation::Put,
                inner,
                key.as_str(),
                inner.put_multipart(key, mode),
            )
            .await?;
        Ok(Box::new(DeadlineUpload {
            upload,
            store: self.inner.clone(),
            key: key.as_str().to_owned(),
            limit: self.limit,
        }))
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        let inner = &*self.inner;
        let got = self
            .limit
            .bound(Operation::Get, inner, key.as_str(), inner.get(key))
            .await?;
        let limit = self.limit;
        let store = self.inner.clone();
        let target = key.as_str().to_owned();
        // Each read of the body ends by the deadline too; after the error
        // the stream ends.
        let stream = futures::stream::unfold(Some(got.stream), move |state| {
            let (store, target) = (store.clone(), target.clone());
            async move {
                let mut stream = state?;
                if limit.passed() {
                    return Some((Err(limit.error(Operation::Read, &*store, &target)), None));
                }
                match tokio::time::timeout_at(limit.deadline, stream.next()).await {
                    Ok(Some(item)) => Some((item, Some(stream))),
                    Ok(None) => None,
                    Err(_) => Some((Err(limit.error(Operation::Read, &*store, &target)), None)),
                }
            }
        });
        Ok(GetResult {
            meta: got.meta,
            stream: Box::pin(stream),
        })
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let inner = &*self.inner;
        self.limit
            .bound(Operation::Head, inner, key.as_str(), inner.head(key))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let inner = &*self.inner;
        self.limit
            .bound(Operation::List, inner, prefix, inner.list(prefix))
            .await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let inner = &*self.inner;
        self.limit
            .bound(Operation::Delete, inner, key.as_str(), inner.delete(key))
            .await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        let inner = &*self.inner;
        let target = keys.first().map_or("", Key::as_str);
        self.limit
            .bound(Operation::Delete, inner, target, inner.delete_many(keys))
            .await
    }

    async fn leftovers(&self, before: std::time::SystemTime) -> Result<Vec<Leftover>> {
        let inner = &*self.inner;
        self.limit
            .bound(
                Operation::List,
                inner,
                "unfinished uploads",
                inner.leftovers(before),
            )
            .await
    }

    async fn remove_leftover(&self, leftover: &Leftover) -> Result<()> {
        let inner = &*self.inner;
        self.limit
            .bound(
                Operation::Delete,
                inner,
                &leftover.name,
                inner.remove_leftover(leftover),
            )
            .await
    }
}

/// An upload of a [`DeadlineStore`]: parts and completion end by the
/// deadline; an abort gets [`ABORT_GRACE`] more.
struct DeadlineUpload {
    upload: Box<dyn MultipartUpload>,
    store: Arc<dyn ObjectStore>,
    key: String,
    limit: Limit,
}

#[async_trait]
impl MultipartUpload for DeadlineUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        let limit = self.limit;
        limit
            .bound(
                Operation::PutPart,
                &*self.store,
                &self.key,
                self.upload.put_part(data),
            )
            .await
    }

    async fn complete(self: Box<Self>) -> Result<ObjectMeta> {
        let DeadlineUpload {
            upload,
            store,
            key,
            limit,
        } = *self;
        limit
            .bound(Operation::Complete, &*store, &key, upload.complete())
            .await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        let DeadlineUpload {
            upload,
            store,
            key,
            limit,
        } = *self;
        let grace = Limit {
            deadline: limit.deadline.max(Instant::now()) + ABORT_GRACE,
            ..limit
        };
        grace.bound(Operation::Abort, &*store, &key, upload.abort()).await
    }
}

/// `90s`, `10m`, `2h30m`: the largest units that divide the duration
/// (whole seconds).
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= secs {
            out.push_str(&format!("{}{unit}", s / secs));
            s %= secs;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, ObjectStoreExt};

    /// A store whose calls never end.
    #[derive(Debug)]
    struct Silent;

    impl fmt::Display for Silent {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("silent://")
        }
    }

    #[async_trait]
    impl ObjectStore for Silent {
        async fn put(&self, _: &Key, _: Bytes, _: PutMode) -> Result<ObjectMeta> {
            std::future::pending().await
        }
        async fn put_multipart(&self, _: &Key, _: PutMode) -> Result<Box<dyn MultipartUpload>> {
            std::future::pending().await
        }
        async fn get(&self, key: &Key) -> Result<GetResult> {
            // Answers at once, then never sends the body's second chunk.
            let first = futures::stream::once(async { Ok(Bytes::from_static(b"first")) });
            Ok(GetResult {
                meta: ObjectMeta {
                    key: key.clone(),
                    size: 100,
                    modified: None,
                },
                stream: Box::pin(first.chain(futures::stream::pending())),
            })
        }
        async fn head(&self, _: &Key) -> Result<ObjectMeta> {
            std::future::pending().await
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>> {
            std::future::pending().await
        }
        async fn delete(&self, _: &Key) -> Result<()> {
            std::future::pending().await
        }
    }

    fn key(s: &str) -> Key {
        Key::new(s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn every_call_ends_by_the_deadline() {
        let limit = Duration::from_secs(600);
        let store = DeadlineStore::new(Arc::new(Silent), Instant::now() + limit, limit);
        let started = Instant::now();
        let e = store
            .put(&key("a"), Bytes::new(), PutMode::Create)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
        assert!(!e.is_transient());
        assert_eq!(Instant::now() - started, limit);
        let text = e.to_string();
        assert!(
            text.contains("put a in silent://") && text.contains("10m"),
            "{text}"
        );
        // Past the deadline, calls fail at once.
        let e = store.list("x/").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
        assert_eq!(Instant::now() - started, limit);
        assert!(store.head(&key("a")).await.is_err());
        assert!(store.delete(&key("a")).await.is_err());
        assert!(store.put_multipart(&key("a"), PutMode::Create).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_that_stalls_ends_with_an_error() {
        let limit = Duration::from_secs(5);
        let store = DeadlineStore::new(Arc::new(Silent), Instant::now() + limit, limit);
        let mut got = store.get(&key("a")).await.unwrap();
        assert_eq!(&got.stream.next().await.unwrap().unwrap()[..], b"first");
        let e = got.stream.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
        assert_eq!(e.operation(), Operation::Read);
        assert!(
            got.stream.next().await.is_none(),
            "the stream ends after the error"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_in_time_pass_through_and_aborts_get_a_grace() {
        let limit = Duration::from_secs(60);
        let inner = Arc::new(MemoryStore::new());
        let store = DeadlineStore::new(inner.clone(), Instant::now() + limit, limit);
        store
            .put(&key("a"), Bytes::from_static(b"x"), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(&store.get_bytes(&key("a")).await.unwrap()[..], b"x");
        let mut upload = store.put_multipart(&key("b"), PutMode::Create).await.unwrap();
        upload.put_part(Bytes::from_static(b"part")).await.unwrap();
        tokio::time::sleep(limit * 2).await;
        // The deadline has passed: completing fails, aborting still runs.
        let e = upload.put_part(Bytes::from_static(b"more")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
        upload.abort().await.unwrap();
        assert!(inner
            .list("")
            .await
            .unwrap()
            .iter()
            .all(|m| m.key.as_str() == "a"));
        assert_eq!(format_duration(Duration::from_secs(9000)), "2h30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
