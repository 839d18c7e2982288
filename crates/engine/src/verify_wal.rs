//! `verify --wal`: a backup's own WAL read record by record (see the
//! `verify` module docs).

use crate::pipe::{classify_read_error, decode_object};
use crate::wal_index::WalIndex;
use crate::{EngineError, ErrorClass, RepoKeys};
use pgark_catalog::{wal_key, BackupManifest};
use pgark_pg::{ArchivedFile, Lsn, SegmentNo, WalReader, WalSegmentName, WalSegmentSize, WalStop};
use pgark_store::{Key, ObjectStore};
use std::io::Read;
use std::sync::Arc;

/// Where reading stopped, for a stop that is not the end of the input.
fn stop_position(stop: &WalStop) -> Option<Lsn> {
    match *stop {
        WalStop::EndOfInput { .. } => None,
        WalStop::ZeroLength { lsn }
        | WalStop::BrokenPrevLink { lsn, .. }
        | WalStop::CrcMismatch { lsn, .. }
        | WalStop::InvalidRecord { lsn, .. } => Some(lsn),
        WalStop::RecycledPage { page, .. } | WalStop::InvalidPageHeader { page, .. } => Some(page),
    }
}

/// What the WAL reader found wrong, in words.
fn describe_stop(stop: &WalStop) -> String {
    match *stop {
        WalStop::EndOfInput { next, .. } => format!("the WAL ends at {next}"),
        WalStop::ZeroLength { lsn } => format!("no record at {lsn} (zeroed space)"),
        WalStop::RecycledPage { page, found } => {
            format!("the page at {page} holds the address {found} (a recycled segment's old contents)")
        }
        WalStop::InvalidPageHeader { page, reason } => format!("invalid page header at {page}: {reason}"),
        WalStop::BrokenPrevLink { lsn, expected, found } => {
            format!("the record at {lsn} points back to {found}, not to the previous record at {expected}")
        }
        WalStop::CrcMismatch {
            lsn,
            stored,
            computed,
        } => format!("the record at {lsn} has CRC-32C {computed:08x}, not its stored {stored:08x}"),
        WalStop::InvalidRecord { lsn, reason } => format!("invalid record at {lsn}: {reason}"),
    }
}

/// Reads `m`'s own WAL with [`WalReader`] (see the module docs): (segments
/// read, problems). Stops at the first segment missing from the archive
/// (the presence check names it) or damaged.
pub(crate) async fn verify_wal_records(
    store: &Arc<dyn ObjectStore>,
    m: &BackupManifest,
    keys: &RepoKeys,
    wal: &WalIndex,
) -> Result<(usize, Vec<String>), EngineError> {
    let bad = |what: &str| {
        Ok((
            0,
            vec![format!("backup {}: {what}: its WAL cannot be read", m.name)],
        ))
    };
    let Some(size) = wal
        .seg_size
        .or_else(|| WalSegmentSize::new(u64::from(m.wal_segment_size)).ok())
    else {
        return bad("the WAL segment size is unknown");
    };
    let (Ok(start), Ok(stop)) = (
        WalSegmentName::parse(&m.start_wal_segment),
        WalSegmentName::parse(&m.stop_wal_segment),
    ) else {
        return bad("bad WAL segment names");
    };
    let (Ok(first), Ok(last)) = (start.segment_no(size), stop.segment_no(size)) else {
        return bad("bad WAL segment names");
    };
    let Ok(stop_lsn) = m.stop_lsn.parse::<Lsn>() else {
        return bad("bad stop LSN");
    };
    let mut reader = Some(WalReader::new(size));
    // The segments read, by number: to name the one where reading stopped.
    let mut read: Vec<(u64, Key)> = Vec::new();
    let mut problems = Vec::new();
    for no in first.0..=last.0 {
        let name = WalSegmentName::from_segment_no(start.timeline, SegmentNo(no), size);
        if !wal.has(start.timeline, SegmentNo(no)) {
            // Missing: the presence check reports it.
            break;
        }
        let key = wal_key(&ArchivedFile::Segment(name));
        let named = key.clone();
        let limit = u64::from(size.bytes());
        let mut r = reader.take().expect("the reader is put back after each segment");
        let decoded = decode_object(&**store, &key, keys.data_key.as_ref(), move |dec| {
            // At most one segment in memory; a longer object is damaged.
            let mut bytes = Vec::with_capacity(limit as usize);
            (&mut *dec)
                .take(limit + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| classify_read_error(&named, e))?;
            if bytes.len() as u64 > limit {
                return Ok((
                    r,
                    Err(format!(
                        "{named}: longer than the WAL segment size ({limit} bytes)"
                    )),
                ));
            }
            dec.summary()
                .ok_or_else(|| EngineError::Internal(format!("{named}: decoder ended unverified")))?;
            let pushed = r
                .push_segment(&name, &bytes)
                .map_err(|e| format!("{named}: not a WAL segment that can be read: {e}"));
            Ok((r, pushed))
        })
        .await;
        match decoded {
            Ok((r, Ok(()))) => {
                read.push((no, key));
                let stopped = r.is_stopped();
                reader = Some(r);
                if stopped {
                    break;
                }
            }
            Ok((_, Err(p))) => {
                problems.push(p);
                return Ok((read.len(), problems));
            }
            Err(e) => match e.class() {
                ErrorClass::NotFound => {
                    problems.push(format!("{key}: missing"));
                    return Ok((read.len(), problems));
                }
                ErrorClass::Integrity => {
                    problems.push(e.to_string());
                    return Ok((read.len(), problems));
                }
                _ => return Err(e),
            },
        }
    }
    let Some((_, last_read)) = read.last() else {
        return Ok((0, problems));
    };
    let scan = reader.expect("the reader is back").finish();
    match stop_position(&scan.stop) {
        Some(at) if at < stop_lsn => {
            let seg = at.segment_no(size).0;
            let at_key = read.iter().find(|(n, _)| *n == seg).map_or(last_read, |(_, k)| k);
            let found_in = if at_key == last_read {
                String::new()
            } else {
                format!(" (found reading {last_read})")
            };
            problems.push(format!(
                "WAL segment {at_key} is damaged: {}, before backup {}'s stop LSN {stop_lsn}{found_in}",
                describe_stop(&scan.stop),
                m.name
            ));
        }
        Some(_) => {}
        None => {
            // Every segment through the stop segment was read: its valid WAL
            // must reach the stop LSN.
            let complete = read.len() as u64 == last.0 - first.0 + 1;
            if complete && scan.end_of_valid_wal.is_none_or(|end| end < stop_lsn) {
                problems.push(format!(
                    "WAL segment {last_read} is damaged: valid WAL ends at {}, before backup {}'s stop LSN \
                     {stop_lsn}",
                    scan.end_of_valid_wal
                        .map_or("its start".to_string(), |e| e.to_string()),
                    m.name
                ));
            }
        }
    }
    Ok((read.len(), problems))
}
