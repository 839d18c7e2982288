//! Single-request puts: one multipart upload (`uploadType=multipart`),
//! metadata and data in one request, the CRC32C in the metadata part, which
//! GCS checks before it stores the object.

use super::errors::exists;
use super::{GcsStore, ObjectResource};
use crate::{Key, ObjectMeta, Operation, PutMode, Result};
use base64::Engine;
use bytes::Bytes;

impl GcsStore {
    /// Sends `chunks` as one multipart upload. fake-gcs-server checks
    /// `ifGenerationMatch` on these (not on plain media uploads).
    pub(super) async fn put_chunks(
        &self,
        key: &Key,
        chunks: Vec<Bytes>,
        mode: PutMode,
    ) -> Result<ObjectMeta> {
        let size: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let crc = chunks.iter().fold(0, |crc, c| crc32c::crc32c_append(crc, c));
        // Random, so that no object's bytes contain it (one chance in
        // 2^128).
        let boundary = format!("pgark-{:032x}", rand::random::<u128>());
        let metadata = serde_json::json!({
            "name": self.object_name(key),
            "contentType": "application/octet-stream",
            "crc32c": crc32c_base64(crc),
        });
        let head = Bytes::from(format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n\
             --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let length = head.len() as u64 + size + tail.len() as u64;
        let mut parts = Vec::with_capacity(chunks.len() + 2);
        parts.push(head);
        parts.extend(chunks);
        parts.push(tail);
        let url = self.upload_url("multipart", None, mode);
        let content_type = format!("multipart/related; boundary={boundary}");
        let http = self.http().inner();
        // An overwrite with the same name and bytes is safe to repeat; a
        // create-only one repeated after a lost answer reads "already
        // exists", which callers of create-only puts check for.
        let resp = self
            .send(Operation::Put, "objects.insert", key, || {
                http.post(&url)
                    .header(reqwest::header::CONTENT_TYPE, &content_type)
                    .header(reqwest::header::CONTENT_LENGTH, length)
                    .body(body_of(parts.clone()))
            })
            .await?;
        match resp.status().as_u16() {
            200 | 201 => {}
            412 => return Err(exists(self, Operation::Put, key)),
            _ => {
                return Err(self
                    .upload_error(Operation::Put, "objects.insert", key, resp)
                    .await)
            }
        }
        self.seen_bucket();
        let object: ObjectResource = self
            .read_json(Operation::Put, "objects.insert", key, resp)
            .await?;
        self.check_stored(Operation::Put, "objects.insert", key, &object, size)?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            modified: object.modified(),
        })
    }

    /// Fails unless GCS says it stored `size` bytes.
    pub(super) fn check_stored(
        &self,
        op: Operation,
        api: &str,
        key: &Key,
        object: &ObjectResource,
        size: u64,
    ) -> Result<()> {
        let stored = object.size(|m| self.broken(op, api, key, m))?;
        if stored != size {
            return Err(self.broken(
                op,
                api,
                key,
                format!("GCS stored {stored} bytes, not the {size} sent"),
            ));
        }
        Ok(())
    }
}

/// A request body of `parts`, sent without copying them; the caller sets
/// `Content-Length`.
pub(super) fn body_of(parts: Vec<Bytes>) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures::stream::iter(
        parts.into_iter().map(Ok::<Bytes, std::io::Error>),
    ))
}

/// A CRC32C as GCS writes it: the base64 of its four big-endian bytes.
pub(super) fn crc32c_base64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_written_as_gcs_does() {
        // The CRC32C of "hello world" as GCS reports it.
        assert_eq!(crc32c_base64(crc32c::crc32c(b"hello world")), "yZRlqg==");
        assert_eq!(crc32c_base64(0), "AAAAAA==");
    }
}
