//! A download's response body as a [`ByteStream`] that checks its length:
//! the reader of the S3 and Azure backends (the GCS backend's reader,
//! which also resumes, is in `gcs::read`).

use crate::{ByteStream, ErrorKind, Operation, StoreError};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::time::Duration;

/// What a checked body belongs to, for its errors and checks.
pub(crate) struct BodyOf {
    /// The store's display form.
    pub store: String,
    pub key: String,
    /// The call the body answers: `GetObject`, `Get Blob`.
    pub api: &'static str,
    /// The object's size, as the response announced it.
    pub size: u64,
    /// The longest silence between two chunks; `None` where the transport
    /// already limits it.
    pub idle: Option<Duration>,
}

/// `body` as a [`ByteStream`] that fails, transiently, when it stays silent
/// for `of.idle`, ends before `of.size` bytes, goes on after them, or
/// breaks (`describe` words the cause); it ends after its first error and
/// drops empty chunks.
pub(crate) fn checked_body<S, E>(body: S, of: BodyOf, describe: fn(&E) -> String) -> ByteStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    struct State<S> {
        body: std::pin::Pin<Box<S>>,
        read: u64,
        done: bool,
    }
    let state = State {
        body: Box::pin(body),
        read: 0,
        done: false,
    };
    let of = std::sync::Arc::new(of);
    futures::stream::unfold(state, move |mut st| {
        let of = of.clone();
        async move {
            if st.done {
                return None;
            }
            let (api, size) = (of.api, of.size);
            let fail = |message: String| {
                StoreError::new(ErrorKind::Transient, Operation::Read, &of.store, &of.key, message)
            };
            let next = match of.idle {
                None => st.body.next().await,
                Some(idle) => match tokio::time::timeout(idle, st.body.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        st.done = true;
                        let e = fail(format!(
                            "the {api} response stalled for {idle:?} after {} of {size} bytes",
                            st.read
                        ));
                        return Some((Err(e), st));
                    }
                },
            };
            st.done = true;
            match next {
                Some(Ok(chunk)) => {
                    st.read += chunk.len() as u64;
                    if st.read > size {
                        let e = fail(format!("the {api} response body is longer than its {size} bytes"));
                        return Some((Err(e), st));
                    }
                    st.done = false;
                    Some((Ok(chunk), st))
                }
                Some(Err(err)) => {
                    let e = fail(format!(
                        "reading the {api} response failed after {} of {size} bytes: {}",
                        st.read,
                        describe(&err)
                    ))
                    .with_source(err);
                    Some((Err(e), st))
                }
                None if st.read < size => {
                    let e = fail(format!(
                        "the {api} response ended after {} of {size} bytes",
                        st.read
                    ));
                    Some((Err(e), st))
                }
                None => None,
            }
        }
    })
    .filter(|item| futures::future::ready(!matches!(item, Ok(chunk) if chunk.is_empty())))
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(size: u64, idle: Option<Duration>) -> BodyOf {
        BodyOf {
            store: "test://".into(),
            key: "k".into(),
            api: "GET",
            size,
            idle,
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    async fn collect(s: ByteStream) -> (Vec<u8>, Option<StoreError>) {
        let items: Vec<_> = s.collect().await;
        let mut data = Vec::new();
        let mut error = None;
        for item in items {
            match item {
                Ok(b) => data.extend_from_slice(&b),
                Err(e) => {
                    assert!(error.is_none(), "one error at most");
                    error = Some(e);
                }
            }
        }
        (data, error)
    }

    #[tokio::test]
    async fn the_length_is_checked() {
        let describe: fn(&std::io::Error) -> String = |e| e.to_string();
        let (data, e) = collect(checked_body(chunks(&[b"ab", b"", b"cd"]), of(4, None), describe)).await;
        assert_eq!((data.as_slice(), e.is_none()), (&b"abcd"[..], true));
        let (_, e) = collect(checked_body(chunks(&[b"ab"]), of(4, None), describe)).await;
        let e = e.expect("short");
        assert!(
            e.is_transient() && e.to_string().contains("ended after 2 of 4 bytes"),
            "{e}"
        );
        let (_, e) = collect(checked_body(chunks(&[b"ab", b"cde"]), of(4, None), describe)).await;
        assert!(e.expect("long").to_string().contains("longer than its 4 bytes"));
        let broken = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("reset")),
            Ok(Bytes::from_static(b"cd")),
        ]);
        let (data, e) = collect(checked_body(broken, of(4, None), describe)).await;
        assert_eq!(data, b"ab", "nothing after the error");
        assert!(e
            .expect("broken")
            .to_string()
            .contains("failed after 2 of 4 bytes: reset"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_fails_after_the_idle_limit() {
        let silent = chunks(&[b"ab"]).chain(futures::stream::pending());
        let (data, e) = collect(checked_body(
            silent,
            of(4, Some(Duration::from_secs(60))),
            |e: &std::io::Error| e.to_string(),
        ))
        .await;
        assert_eq!(data, b"ab");
        assert!(e
            .expect("stalled")
            .to_string()
            .contains("stalled for 60s after 2 of 4 bytes"));
    }
}
