//! Reads: `objects.get` with `alt=media`, streamed.
//!
//! The first response gives the object's generation, size and CRC32C
//! (`x-goog-generation`, `x-goog-stored-content-length`, `x-goog-hash`). A
//! body that breaks, stalls for the idle limit or ends early is asked for
//! again from the offset reached (`Range: bytes=n-`) with
//! `ifGenerationMatch` of that generation, and the generation of the new
//! response is compared as well (fake-gcs-server ignores the
//! precondition on reads): a resumed read never mixes two versions. A read
//! resumes as long as its attempts make progress; `attempts` of
//! [`crate::RetryOptions`] in a row without a byte end it. The CRC32C of
//! the whole read is checked at its end when GCS sent one.

use super::GcsStore;
use crate::{ByteStream, ErrorKind, GetResult, Key, ObjectMeta, Operation, Result, StoreError};
use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use std::pin::Pin;
use std::time::SystemTime;

const API: &str = "objects.get";

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

impl GcsStore {
    /// Opens `key` for reading.
    pub(super) async fn read(&self, key: &Key) -> Result<GetResult> {
        let op = Operation::Get;
        let url = format!("{}?alt=media", self.object_url(key));
        let http = self.http().inner();
        let resp = self.send(op, API, key, || http.get(&url)).await?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                self.check_bucket_after_404(op, key).await?;
                return Err(StoreError::new(
                    ErrorKind::NotFound,
                    op,
                    self,
                    key,
                    "no such object",
                ));
            }
            _ => return Err(self.status_error(op, API, key, resp).await),
        }
        self.seen_bucket();
        let headers = resp.headers();
        let generation = header(headers, "x-goog-generation").and_then(|g| g.parse::<i64>().ok());
        let expected_crc = expected_crc32c(headers);
        let mut modified = header(headers, "last-modified")
            .and_then(|t| chrono::DateTime::parse_from_rfc2822(t).ok())
            .map(SystemTime::from);
        let stored = header(headers, "x-goog-stored-content-length").and_then(|s| s.parse::<u64>().ok());
        let size = match (stored, resp.content_length()) {
            (Some(s), Some(sent)) if s != sent => {
                return Err(self.broken(
                    op,
                    API,
                    key,
                    format!("GCS sends {sent} bytes of an object of {s} (transcoded?)"),
                ))
            }
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => {
                // No length at all: ask for the metadata of the generation
                // being read.
                let (size, meta_generation, meta_modified) = self.object_resource(op, key).await?;
                if meta_generation.is_some() && meta_generation != generation {
                    return Err(self.broken(op, API, key, "the object was replaced while it was opened"));
                }
                modified = meta_modified.or(modified);
                size
            }
        };
        let reader = Reader {
            store: self.clone(),
            key: key.clone(),
            url,
            generation,
            size,
            expected_crc,
            body: Some(Box::pin(resp.bytes_stream())),
            read: 0,
            crc: 0,
            progress: false,
            fruitless: 0,
            done: false,
        };
        Ok(GetResult {
            meta: ObjectMeta {
                key: key.clone(),
                size,
                modified,
            },
            stream: reader.into_stream(),
        })
    }
}

/// A read in progress.
struct Reader {
    store: GcsStore,
    key: Key,
    /// The object's media URL (`…?alt=media`).
    url: String,
    /// The generation first read; `None` if GCS did not say (then a broken
    /// read cannot resume).
    generation: Option<i64>,
    size: u64,
    expected_crc: Option<u32>,
    /// The response being read; `None` after it failed.
    body: Option<Body>,
    /// Bytes handed out.
    read: u64,
    /// CRC32C of the bytes handed out.
    crc: u32,
    /// The current response delivered a byte.
    progress: bool,
    /// Responses in a row that failed before delivering a byte.
    fruitless: u32,
    done: bool,
}

impl Reader {
    fn into_stream(self) -> ByteStream {
        futures::stream::unfold(self, |mut r| async move {
            let item = r.next().await?;
            Some((item, r))
        })
        .boxed()
    }

    /// The next chunk, `None` at the end; after an error, `None`.
    async fn next(&mut self) -> Option<Result<Bytes>> {
        if self.done {
            return None;
        }
        let item = self.next_chunk().await;
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        let idle = self.store.http().timeouts.idle;
        loop {
            let Some(body) = &mut self.body else {
                return Some(Err(self.fail("the read stopped")));
            };
            let failure = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => format!("the response stalled for {idle:?}"),
                Ok(Some(Err(e))) => crate::http::error_chain(&e),
                Ok(Some(Ok(chunk))) if chunk.is_empty() => continue,
                Ok(Some(Ok(chunk))) => {
                    self.read += chunk.len() as u64;
                    if self.read > self.size {
                        return Some(Err(self.fail(format!(
                            "the response is longer than the object's {} bytes",
                            self.size
                        ))));
                    }
                    self.crc = crc32c::crc32c_append(self.crc, &chunk);
                    self.progress = true;
                    return Some(Ok(chunk));
                }
                Ok(None) if self.read < self.size => "the response ended early".to_owned(),
                Ok(None) => {
                    return match self.expected_crc {
                        Some(expected) if expected != self.crc => Some(Err(self.fail(format!(
                            "the CRC32C of the {} bytes read is {:08x}, GCS says {expected:08x}",
                            self.read, self.crc
                        )))),
                        _ => None,
                    };
                }
            };
            self.body = None;
            if let Err(e) = self.resume(&failure).await {
                return Some(Err(e));
            }
        }
    }

    /// A transient read error saying how far the read got.
    fn fail(&self, what: impl std::fmt::Display) -> StoreError {
        self.store.broken(
            Operation::Read,
            API,
            &self.key,
            format!("{what} after {} of {} bytes", self.read, self.size),
        )
    }

    /// Asks for the rest of the object after `failure` broke the response.
    async fn resume(&mut self, failure: &str) -> Result<()> {
        let stopped = format!(
            "the read stopped after {} of {} bytes ({failure})",
            self.read, self.size
        );
        let op = Operation::Read;
        let broken = |what: String| {
            self.store
                .broken(op, API, &self.key, format!("{stopped}; {what}"))
        };
        let Some(generation) = self.generation else {
            return Err(broken("GCS sent no x-goog-generation to resume from".into()));
        };
        if self.progress {
            self.fruitless = 0;
        } else {
            self.fruitless += 1;
        }
        self.progress = false;
        let retry = self.store.http().retry;
        if self.fruitless >= retry.attempts {
            return Err(broken(format!(
                "{} responses in a row delivered nothing",
                self.fruitless
            )));
        }
        if self.fruitless > 0 {
            tokio::time::sleep(retry.backoff(self.fruitless)).await;
        }
        let url = format!("{}&ifGenerationMatch={generation}", self.url);
        let range = format!("bytes={}-", self.read);
        let http = self.store.http().inner();
        let resp = self
            .store
            .send(op, API, &self.key, || {
                http.get(&url).header(reqwest::header::RANGE, &range)
            })
            .await
            .map_err(|e| {
                StoreError::new(
                    e.kind(),
                    op,
                    &self.store,
                    &self.key,
                    format!("{stopped}, and resuming it failed: {e}"),
                )
                .with_source(e)
            })?;
        let status = resp.status().as_u16();
        let replaced =
            || format!("the object was replaced meanwhile (generation {generation} is gone), read it again");
        match status {
            206 => {}
            // The whole object again: only where nothing was read yet.
            200 if self.read == 0 => {}
            412 => return Err(broken(replaced())),
            404 => return Err(broken("the object was deleted meanwhile".into())),
            200 => return Err(broken("GCS ignored the range of the resumed read".into())),
            _ => return Err(self.store.status_error(op, API, &self.key, resp).await),
        }
        let headers = resp.headers();
        let now = header(headers, "x-goog-generation").and_then(|g| g.parse::<i64>().ok());
        if now.is_some_and(|g| g != generation) {
            return Err(broken(replaced()));
        }
        if status == 206 {
            let expected = format!("bytes {}-", self.read);
            if let Some(range) = header(headers, "content-range").filter(|r| !r.starts_with(&expected)) {
                return Err(broken(format!("the resumed read starts elsewhere ({range:?})")));
            }
        }
        self.body = Some(Box::pin(resp.bytes_stream()));
        Ok(())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The CRC32C in `x-goog-hash` (`crc32c=<base64 of 4 big-endian bytes>`,
/// beside `md5=…`, in one header or several).
fn expected_crc32c(headers: &HeaderMap) -> Option<u32> {
    headers
        .get_all("x-goog-hash")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|item| item.trim().strip_prefix("crc32c="))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).ok())
        .map(u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_from_headers() {
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-goog-hash", v.parse().unwrap());
            }
            expected_crc32c(&h)
        };
        let hello = crc32c::crc32c(b"hello world");
        assert_eq!(
            with(&["crc32c=yZRlqg==,md5=XrY7u+Ae7tCTyyK7j1rNww=="]),
            Some(hello)
        );
        assert_eq!(
            with(&["md5=XrY7u+Ae7tCTyyK7j1rNww==", "crc32c=yZRlqg=="]),
            Some(hello)
        );
        assert_eq!(with(&["md5=XrY7u+Ae7tCTyyK7j1rNww=="]), None);
        assert_eq!(with(&["crc32c=not base64"]), None);
        assert_eq!(with(&["crc32c=AAAAAAA="]), None, "five bytes");
        assert_eq!(with(&[]), None);
    }
}
