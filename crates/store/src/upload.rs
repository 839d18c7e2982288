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
    // A part's worth up front: growing by doubling would reach twice the
    // part size. Pages not written to are never touched.
    let mut buf = BytesMut::with_capacity(part_size);
    // Fill the first part; if the stream ends first, one put is enough.
    while buf.len() < part_size {
        match chunks.next().await {
            Some(chunk) => buf.extend_from_slice(&chunk?),
            None => return store.put(key, buf.freeze(), opts.mode).await,
        }
    }
    let mut upload = store.put_multipart(key, opts.mode).await?;
    let result: Result<()> = async {
        loop {
            while buf.len() >= part_size {
                let part = buf.split_to(part_size).freeze();
                upload.put_part(part).await?;
            }
            if buf.capacity() < part_size {
                buf.reserve(part_size - buf.len());
            }
            match chunks.next().await {
                Some(chunk) => buf.extend_from_slice(&chunk?),
                None => break,
            }
        }
        if !buf.is_empty() {
            upload.put_part(buf.split().freeze()).await?;
        }
        Ok(())
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
