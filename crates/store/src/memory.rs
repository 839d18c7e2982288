//! An in-memory store for unit tests of the engine. Not a repository: its
//! contents vanish with the process.

use crate::{
    ErrorKind, GetResult, Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode, Result,
    StoreError,
};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A thread-safe in-memory [`ObjectStore`]. Cloning shares the contents.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<Key, Stored>>>,
}

/// One object: its bytes and when it was put (the `modified` of its
/// [`ObjectMeta`]).
#[derive(Debug, Clone)]
struct Stored {
    data: Bytes,
    modified: SystemTime,
}

impl Stored {
    fn meta(&self, key: &Key) -> ObjectMeta {
        ObjectMeta {
            key: key.clone(),
            size: self.data.len() as u64,
            modified: Some(self.modified),
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&self, key: &Key, data: Bytes, mode: PutMode, op: Operation) -> Result<ObjectMeta> {
        let mut objects = self.objects.lock().expect("memory store lock poisoned");
        if mode == PutMode::Create && objects.contains_key(key) {
            return Err(StoreError::new(
                ErrorKind::AlreadyExists,
                op,
                self,
                key,
                "object already exists",
            ));
        }
        let stored = Stored {
            data,
            modified: SystemTime::now(),
        };
        let meta = stored.meta(key);
        objects.insert(key.clone(), stored);
        Ok(meta)
    }

    fn not_found(&self, op: Operation, key: &Key) -> StoreError {
        StoreError::new(ErrorKind::NotFound, op, self, key, "no such object")
    }
}

impl fmt::Display for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory://")
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta> {
        self.insert(key, data, mode, Operation::Put)
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(MemoryUpload {
            store: self.clone(),
            key: key.clone(),
            mode,
            buf: BytesMut::new(),
        }))
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        let stored = self
            .objects
            .lock()
            .expect("memory store lock poisoned")
            .get(key)
            .cloned();
        let stored = stored.ok_or_else(|| self.not_found(Operation::Get, key))?;
        let meta = stored.meta(key);
        let data = stored.data;
        // Hand the object out in modest chunks, as a network store would.
        let chunks: Vec<Result<Bytes>> = data.chunks(64 << 10).map(|c| Ok(data.slice_ref(c))).collect();
        Ok(GetResult {
            meta,
            stream: Box::pin(futures::stream::iter(chunks)),
        })
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let objects = self.objects.lock().expect("memory store lock poisoned");
        let stored = objects
            .get(key)
            .ok_or_else(|| self.not_found(Operation::Head, key))?;
        Ok(stored.meta(key))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let objects = self.objects.lock().expect("memory store lock poisoned");
        Ok(objects
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix))
            .map(|(k, v)| v.meta(k))
            .collect())
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.objects
            .lock()
            .expect("memory store lock poisoned")
            .remove(key);
        Ok(())
    }
}

struct MemoryUpload {
    store: MemoryStore,
    key: Key,
    mode: PutMode,
    buf: BytesMut,
}

#[async_trait]
impl MultipartUpload for MemoryUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    async fn complete(self: Box<Self>) -> Result<ObjectMeta> {
        let this = *self;
        this.store
            .insert(&this.key, this.buf.freeze(), this.mode, Operation::Complete)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
