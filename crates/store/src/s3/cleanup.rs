//! Deleting many objects, and the multipart uploads that never finished,
//! for [`S3Store`].
//!
//! - [`S3Store::delete_batches`] sends `DeleteObjects` requests of up to
//!   [`DELETE_BATCH`] keys (S3's limit), [`BATCHES_IN_FLIGHT`] at once, in
//!   quiet mode: S3 answers only with the keys it failed to delete. A key
//!   that does not exist counts as deleted (S3 reports none), as with
//!   `DeleteObject`. A store that refuses `DeleteObjects` (405, 501,
//!   `NotImplemented`, `MissingContentMD5`, `InvalidRequest`: some
//!   S3-compatible stores) gets single deletes from then on.
//! - [`S3Store::multipart_leftovers`] lists the bucket's incomplete
//!   multipart uploads under the repository's prefix (`ListMultipartUploads`,
//!   paged), which a process killed mid-upload leaves behind: invisible,
//!   but billed until aborted. [`S3Store::abort_leftover`] aborts one.

use super::S3Store;
use crate::{ErrorKind, Key, Leftover, LeftoverHandle, Operation, Result, StoreError};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use futures::{StreamExt, TryStreamExt};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Keys per `DeleteObjects` request: the most S3 accepts.
pub(super) const DELETE_BATCH: usize = 1000;

/// `DeleteObjects` requests in flight at once.
pub(super) const BATCHES_IN_FLIGHT: usize = 4;

impl S3Store {
    /// Deletes `keys` in batches (see the module documentation); one by
    /// one, [`crate::DELETE_CONCURRENCY`] at a time, on a store that
    /// refused a batch.
    pub(super) async fn delete_batches(&self, keys: &[Key]) -> Result<()> {
        if self.inner.batch_refused.load(Ordering::Relaxed) {
            return self.delete_singly(keys).await;
        }
        // Made up front: a closure in the stream trips the compiler's
        // higher-ranked lifetime check under async_trait's Send bound.
        let batches: Vec<_> = keys.chunks(DELETE_BATCH).map(|b| self.delete_batch(b)).collect();
        futures::stream::iter(batches)
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn delete_singly(&self, keys: &[Key]) -> Result<()> {
        let deletes: Vec<_> = keys.iter().map(|k| crate::ObjectStore::delete(self, k)).collect();
        futures::stream::iter(deletes)
            .buffer_unordered(crate::DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn delete_batch(&self, keys: &[Key]) -> Result<()> {
        let Some(first) = keys.first() else {
            return Ok(());
        };
        if self.inner.batch_refused.load(Ordering::Relaxed) {
            return self.delete_singly(keys).await;
        }
        let invalid = |e: aws_sdk_s3::error::BuildError| {
            StoreError::new(
                ErrorKind::Permanent,
                Operation::Delete,
                self,
                first,
                e.to_string(),
            )
        };
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(self.object_name(k)).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(invalid)?;
        let client = self.client().await;
        let out = match client
            .delete_objects()
            .bucket(self.bucket())
            .delete(delete)
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) => {
                // A store without DeleteObjects, or one that wants a
                // Content-MD5: one by one instead, from now on.
                let status = err.raw_response().map(|r| r.status().as_u16());
                let refused = matches!(
                    err.code(),
                    Some(
                        "MissingContentMD5"
                            | "NotImplemented"
                            | "MethodNotAllowed"
                            | "InvalidRequest"
                            | "XNotImplemented"
                    )
                ) || matches!(status, Some(405 | 501));
                if refused {
                    eprintln!(
                        "pgark: warning: {self}: DeleteObjects refused ({}): deleting one object per request",
                        err.code().unwrap_or("no error code")
                    );
                    self.inner.batch_refused.store(true, Ordering::Relaxed);
                    return self.delete_singly(keys).await;
                }
                return Err(self.error(Operation::Delete, "DeleteObjects", first, err));
            }
        };
        self.seen_bucket();
        let failed: Vec<_> = out
            .errors()
            .iter()
            .filter(|e| e.code() != Some("NoSuchKey"))
            .collect();
        let Some(err) = failed.first() else {
            return Ok(());
        };
        let code = err.code().unwrap_or("unknown error");
        let transient = matches!(
            code,
            "InternalError" | "SlowDown" | "ServiceUnavailable" | "RequestTimeout"
        );
        let kind = if transient {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        Err(StoreError::new(
            kind,
            Operation::Delete,
            self,
            err.key().unwrap_or("?"),
            format!(
                "DeleteObjects: {code}: {} ({} of {} keys of the request not deleted)",
                err.message().unwrap_or(""),
                failed.len(),
                keys.len()
            ),
        ))
    }

    /// The incomplete multipart uploads under the repository's prefix
    /// started before `before`, for keys pgark could have written.
    pub(super) async fn multipart_leftovers(&self, before: SystemTime) -> Result<Vec<Leftover>> {
        let client = self.client().await;
        let prefix = self.inner.opts.prefix.as_str();
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = client
                .list_multipart_uploads()
                .bucket(self.bucket())
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.error(Operation::List, "ListMultipartUploads", &"unfinished uploads", e))?;
            self.seen_bucket();
            for upload in page.uploads() {
                let (Some(object), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                // Only names that are keys of this repository.
                let Some(key) = object.strip_prefix(prefix).and_then(|rest| Key::new(rest).ok()) else {
                    continue;
                };
                let Some(since) = upload.initiated().and_then(|t| SystemTime::try_from(*t).ok()) else {
                    continue;
                };
                if since >= before {
                    continue;
                }
                out.push(Leftover {
                    name: format!("{} (multipart upload {upload_id})", key.as_str()),
                    since,
                    size: None,
                    key: Some(key),
                    handle: LeftoverHandle::Multipart {
                        object: object.to_owned(),
                        upload_id: upload_id.to_owned(),
                    },
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Aborts one upload found by [`S3Store::multipart_leftovers`]; one
    /// already gone is not an error.
    pub(super) async fn abort_leftover(&self, leftover: &Leftover) -> Result<()> {
        let LeftoverHandle::Multipart { object, upload_id } = &leftover.handle else {
            return Ok(());
        };
        let client = self.client().await;
        match client
            .abort_multipart_upload()
            .bucket(self.bucket())
            .key(object)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("NoSuchUpload") => Ok(()),
            Err(err) => Err(self.error(Operation::Abort, "AbortMultipartUpload", &leftover.name, err)),
        }
    }
}
