//! Single-request puts: one multipart upload (`uploadType=multipart`),
//! metadata and data in one request, the CRC32C in the metadata part, which
//! GCS checks before it stores the object.

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
        let make = || {
            http.post(&url)
                .header(reqwest::header::CONTENT_TYPE, &content_type)
                .header(reqwest::header::CONTENT_LENGTH, length)
        };
        let resp = self
            .send_to(Operation::Put, "objects.insert", key, true, make, Some(&parts))
            .await?;
        if !matches!(resp.status().as_u16(), 200 | 201) {
            return Err(self
                .upload_error(Operation::Put, "objects.insert", key, resp)
                .await);
        }
        self.seen_bucket();
        let object: ObjectResource = self
            .read_json(Operation::Put, "objects.insert", key, resp)
            .await?;
        self.check_stored(Operation::Put, "objects.insert", key, &object, size, crc)
            .await?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            modified: object.modified(),
        })
    }

    /// Fails unless GCS says it stored `size` bytes whose CRC32C is `crc`
    /// (the object resource's `crc32c`; a resource without one is taken
    /// as GCS's word that it checked the CRC32C sent with the upload).
    ///
    /// An object stored otherwise is deleted (that generation only, with
    /// `ifGenerationMatch`) before the transient error returns, so that
    /// nothing reads it as good and the caller may put it again; if the
    /// delete fails too, the error says so and names the generation.
    pub(super) async fn check_stored(
        &self,
        op: Operation,
        api: &str,
        key: &Key,
        object: &ObjectResource,
        size: u64,
        crc: u32,
    ) -> Result<()> {
        let stored = object.size(|m| self.broken(op, api, key, m))?;
        let stored_crc = object.crc32c.as_deref().map(decode_crc32c);
        let wrong = if stored != size {
            format!("GCS stored {stored} bytes, not the {size} sent")
        } else {
            match stored_crc {
                None => return Ok(()),
                Some(Some(c)) if c == crc => return Ok(()),
                Some(Some(c)) => format!(
                    "GCS stored bytes whose CRC32C is {}, not the {} of those sent",
                    crc32c_base64(c),
                    crc32c_base64(crc)
                ),
                Some(None) => format!("GCS reports the unreadable CRC32C {:?}", object.crc32c),
            }
        };
        let generation = object.generation.as_deref().unwrap_or("?");
        let url = format!("{}?ifGenerationMatch={generation}", self.object_url(key));
        let http = self.http().inner();
        let deleted = match object.generation {
            None => Err("GCS gave no generation to delete".to_owned()),
            Some(_) => match self.send(op, "objects.delete", key, || http.delete(&url)).await {
                Ok(r) if matches!(r.status().as_u16(), 200 | 204 | 404 | 412) => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
                Err(e) => Err(e.message().to_owned()),
            },
        };
        let what = match deleted {
            Ok(()) => format!("{wrong}; that object was deleted, put it again"),
            Err(e) => format!(
                "{wrong}; deleting it (generation {generation}) failed too ({e}): it must not be \
                 read as good, put it again"
            ),
        };
        Err(self.broken(op, api, key, what))
    }
}

/// A CRC32C as GCS writes it: the base64 of its four big-endian bytes.
pub(super) fn crc32c_base64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The CRC32C GCS writes as `b64` (see [`crc32c_base64`]).
pub(super) fn decode_crc32c(b64: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    <[u8; 4]>::try_from(bytes.as_slice()).ok().map(u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_written_as_gcs_does() {
        // The CRC32C of "hello world" as GCS reports it.
        assert_eq!(crc32c_base64(crc32c::crc32c(b"hello world")), "yZRlqg==");
        assert_eq!(crc32c_base64(0), "AAAAAA==");
        assert_eq!(decode_crc32c("yZRlqg=="), Some(crc32c::crc32c(b"hello world")));
        assert_eq!(decode_crc32c("AAAAAAA="), None, "five bytes");
        assert_eq!(decode_crc32c("not base64"), None);
    }
}
