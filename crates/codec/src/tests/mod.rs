//! Cross-module tests: round trips, corruption, property tests and hand
//! restores with the standard command-line tools.

mod cli;
mod corruption;
mod encrypted;
mod frames;
mod lz4;
mod props;
mod roundtrip;
mod stable;

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::{
    decode_to_vec, CodecError, Compression, CompressionSpec, ObjectReader, ObjectSummary, ObjectWriter,
};

/// Every codec at its default level.
fn all_specs() -> Vec<CompressionSpec> {
    Compression::ALL
        .into_iter()
        .map(|c| CompressionSpec::new(c, None).unwrap())
        .collect()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Encodes with writes of `chunk` bytes (the last one shorter).
fn encode_chunked(data: &[u8], spec: CompressionSpec, chunk: usize) -> (Vec<u8>, ObjectSummary) {
    let mut w = ObjectWriter::new(Vec::new(), spec).unwrap();
    for piece in data.chunks(chunk.max(1)) {
        w.write_all(piece).unwrap();
    }
    w.finish().unwrap()
}

/// Decodes with reads into a buffer of `buf_len` bytes.
fn decode_with_buf<R: Read>(inner: R, buf_len: usize) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    let mut r = ObjectReader::new(inner)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; buf_len];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.into()),
        }
    }
    let summary = *r.summary().expect("summary after EOF");
    // EOF is sticky.
    assert_eq!(r.read(&mut buf).unwrap(), 0);
    Ok((out, summary))
}

/// Checks a decode result against the data and the writer's summary.
fn assert_round_trip(data: &[u8], stored: &[u8], written: &ObjectSummary, decoded: (Vec<u8>, ObjectSummary)) {
    let (out, read) = decoded;
    assert_eq!(out.len(), data.len(), "{:?}", written.codec);
    assert!(out == data, "{:?}: decoded bytes differ", written.codec);
    assert_eq!(&read, written);
    assert_eq!(written.original_len, data.len() as u64);
    assert_eq!(written.stored_len, stored.len() as u64);
    assert_eq!(written.digest.bytes, sha256(data));
}

/// An inner reader that hands out at most a few bytes per call, and
/// sometimes `Interrupted`.
struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    step: usize,
    calls: usize,
}

impl<'a> Trickle<'a> {
    fn new(data: &'a [u8]) -> Self {
        Trickle {
            data,
            pos: 0,
            step: 0,
            calls: 0,
        }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls % 5 == 0 {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "signal"));
        }
        self.step = self.step % 7 + 1;
        let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An inner writer that accepts a few bytes per call, and sometimes
/// reports `Interrupted`.
struct TrickleWriter {
    out: Vec<u8>,
    calls: usize,
}

impl Write for TrickleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls % 3 == 0 {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "signal"));
        }
        let n = buf.len().min(self.calls % 11 + 1);
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decodes `stored` and returns the error, panicking if it decoded.
fn decode_err(stored: &[u8]) -> CodecError {
    match decode_to_vec(stored) {
        Ok(_) => panic!("decoded a damaged object"),
        Err(e) => e,
    }
}
