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
//! [`crate::RetryOptions`] in a row without a byte end it.
//!
//! # Checksums
//!
//! The CRC32C of the whole read is compared with `x-goog-hash` the moment
//! its last byte arrives, before that last chunk is handed out: a stream
//! that ends with `None` delivered exactly the bytes GCS checksummed, and
//! on a mismatch the stream ends with a transient error instead of its
//! last chunk (so no consumer ever sees the whole object unverified).
//! Bytes handed out before the end are not verified yet; a consumer that
//! acts on them before the end must be ready to undo that when the stream
//! ends with an error. GCS sends `x-goog-hash` for every object it holds;
//! a response without it (an emulator, a proxy that strips it, an object
//! composed without a CRC32C) is read unchecked at this layer. That is
//! deliberate: every object pgark writes ends with its own SHA-256 (or
//! BLAKE3) trailer, which the codec checks over the whole object, so a
//! corruption the missing header hides is still caught, only later.
//!
//! # Encodings
//!
//! pgark never stores objects with a `Content-Encoding`. Reads ask for
//! `Accept-Encoding: identity`, and an object GCS says is stored encoded
//! (`x-goog-stored-content-encoding`, or a `Content-Encoding` on the
//! response) is a permanent error naming it: its bytes are not the ones
//! pgark wrote, and reading it again cannot change that.

use super::GcsStore;
use crate::{ByteStream, ErrorKind, GetResult, Key, ObjectMeta, Operation, Result, StoreError};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, ACCEPT_ENCODING};
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
        let resp = self
            .send(op, API, key, || {
                http.get(&url).header(ACCEPT_ENCODING, "identity")
            })
            .await?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(self.not_found(op, key).await),
            _ => return Err(self.status_error(op, API, key, resp).await),
        }
        self.seen_bucket();
        let headers = resp.headers();
        self.check_encoding(op, key, headers)?;
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

impl GcsStore {
    /// Fails permanently if GCS serves or stores `key` with a content
    /// encoding (see the module docs).
    fn check_encoding(&self, op: Operation, key: &Key, headers: &HeaderMap) -> Result<()> {
        let encoding = ["x-goog-stored-content-encoding", "content-encoding"]
            .into_iter()
            .flat_map(|name| headers.get_all(name))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .find(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
        match encoding {
            None => Ok(()),
            Some(encoding) => Err(StoreError::new(
                ErrorKind::Permanent,
                op,
                self,
                key,
                format!(
                    "object {:?} in bucket {:?} is stored with Content-Encoding {encoding:?}; pgark \
                     never writes encoded objects, so it is not one pgark wrote as it is",
                    self.object_name(key),
                    self.bucket()
                ),
            )),
        }
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

    /// Fails if GCS sent a CRC32C and the bytes read do not match it.
    fn check_crc(&self) -> Result<()> {
        match self.expected_crc {
            Some(expected) if expected != self.crc => Err(self.fail(format!(
                "the CRC32C of the {} bytes read is {:08x}, GCS says {expected:08x}",
                self.read, self.crc
            ))),
            _ => Ok(()),
        }
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
                    if self.read == self.size {
                        // The last byte: checked before it is handed out.
                        if let Err(e) = self.check_crc() {
                            return Some(Err(e));
                        }
                        self.body = None;
                        self.done = true;
                    }
                    return Some(Ok(chunk));
                }
                Ok(None) if self.read < self.size => "the response ended early".to_owned(),
                Ok(None) => return self.check_crc().err().map(Err),
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
                http.get(&url)
                    .header(reqwest::header::RANGE, &range)
                    .header(ACCEPT_ENCODING, "identity")
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
        self.store.check_encoding(op, &self.key, headers)?;
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
        .and_then(super::put::decode_crc32c)
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
