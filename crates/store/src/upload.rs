//! Streaming uploads on top of [`ObjectStore`]: small objects in one put,
//! large ones in parts, never more than one part in memory per upload.

use crate::{Key, ObjectMeta, ObjectStore, PutMode, Result};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// How [`put_stream`] cuts an object into parts.
#[derive(Debug, Clone, Copy)]
pub struct UploadOptions {
    /// Size of each part; also the largest object sent in a single put.
    /// Peak memory per upload is about one part.
    pub part_size: usize,
    pub mode: PutMode,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            part_size: 8 << 20,
            mode: PutMode::Overwrite,
        }
    }
}

/// Uploads everything `chunks` yields under `key`.
///
/// Atomic like the store's own puts: nothing is visible under `key` unless
/// the whole stream was stored. On any error (from the stream or the store)
/// a started multipart upload is aborted before the error is returned.
pub async fn put_stream<S>(
    store: &dyn ObjectStore,
    key: &Key,
    mut chunks: S,
    opts: UploadOptions,
) -> Result<ObjectMeta>
where
    S: Stream<Item = Result<Bytes>> + Unpin + Send,
{
    let part_size = opts.part_size.max(1);
    let mut filler = PartFiller {
        buf: BytesMut::with_capacity(part_size),
        rest: Bytes::new(),
        part_size,
    };
    // Fill the first part; if the stream ends first, one put is enough.
    if !filler.fill(&mut chunks).await? {
        return store.put(key, filler.buf.freeze(), opts.mode).await;
    }
    let mut upload = store.put_multipart(key, opts.mode).await?;
    let result: Result<()> = async {
        loop {
            let more = filler.fill(&mut chunks).await?;
            if !filler.buf.is_empty() {
                upload.put_part(filler.take()).await?;
            }
            if !more {
                return Ok(());
            }
        }
    }
    .await;
    match result {
        Ok(()) => upload.complete().await,
        Err(e) => {
            // The original error matters more than a failed abort.
            let _ = upload.abort().await;
            Err(e)
        }
    }
}

/// Cuts a stream of chunks of any size into parts of exactly `part_size`
/// bytes (the last one shorter), holding at most one part: a chunk that
/// overflows the part is split, its rest kept (without a copy) for the next.
struct PartFiller {
    buf: BytesMut,
    rest: Bytes,
    part_size: usize,
}

impl PartFiller {
    /// Fills the part; `false` when the stream ended before it was full.
    async fn fill<S>(&mut self, chunks: &mut S) -> Result<bool>
    where
        S: Stream<Item = Result<Bytes>> + Unpin + Send,
    {
        while self.buf.len() < self.part_size {
            if self.rest.is_empty() {
                match chunks.next().await {
                    Some(chunk) => self.rest = chunk?,
                    None => return Ok(false),
                }
            }
            let take = self.rest.len().min(self.part_size - self.buf.len());
            self.buf.extend_from_slice(&self.rest.split_to(take));
        }
        // Full: the stream goes on unless it ends right here.
        if self.rest.is_empty() {
            match chunks.next().await {
                Some(chunk) => self.rest = chunk?,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The filled part; the buffer is made ready for the next one (reused
    /// once the store has let go of the part).
    fn take(&mut self) -> Bytes {
        let part = self.buf.split().freeze();
        self.buf.reserve(self.part_size);
        part
    }
}
