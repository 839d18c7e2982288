//! The `backup_label` file.
//!
//! A base backup is only usable with the `backup_label` PostgreSQL returns when the backup
//! stops (`pg_backup_stop`'s `labelfile`, or the file `pg_basebackup` writes): it tells
//! recovery where to start replaying WAL (the checkpoint's redo point, on which timeline),
//! and a backup tool reads it to know which WAL the backup needs. The text is written by
//! `build_backup_content` (`access/xlogbackup.c` in PostgreSQL 15 and later,
//! `do_pg_start_backup` in `access/transam/xlog.c` before) and read back at recovery by
//! `read_backup_label`. The backup history file archived next to the WAL
//! (`<segment>.<offset>.backup`) has the same lines plus the `STOP` ones, and parses here
//! too.
//!
//! ```text
//! START WAL LOCATION: 0/4000028 (file 000000010000000000000004)
//! CHECKPOINT LOCATION: 0/4000080
//! BACKUP METHOD: streamed
//! BACKUP FROM: primary
//! START TIME: 2026-11-22 00:42:09 UTC
//! LABEL: pg_basebackup base backup
//! START TIMELINE: 1
//! INCREMENTAL FROM LSN: 0/4000028      (PostgreSQL 17+, incremental backups only)
//! INCREMENTAL FROM TLI: 1
//! ```

use std::str::FromStr;

use crate::{Lsn, PgError, TimelineId, WalSegmentName, WalSegmentSize};

/// Where a backup was taken: the `BACKUP FROM` line.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BackupFrom {
    /// `primary` (PostgreSQL 13 writes `master`).
    Primary,
    /// `standby`: the backup was taken during recovery, and ends at the standby's
    /// minimum recovery point rather than at an end-of-backup record.
    Standby,
}

/// `INCREMENTAL FROM LSN` / `INCREMENTAL FROM TLI` of an incremental backup
/// (PostgreSQL 17 and later): the start of the backup it is based on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IncrementalFrom {
    /// `INCREMENTAL FROM LSN`.
    pub lsn: Lsn,
    /// `INCREMENTAL FROM TLI`.
    pub timeline: TimelineId,
}

/// The `STOP` lines of a backup history file (`<segment>.<offset>.backup`, written by
/// `do_pg_backup_stop`); a `backup_label` has none.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct BackupStop {
    /// `STOP WAL LOCATION`: the end of the backup.
    pub lsn: Lsn,
    /// The segment named in parentheses after it.
    pub segment: WalSegmentName,
    /// `STOP TIME`.
    pub time: String,
    /// `STOP TIMELINE`.
    pub timeline: TimelineId,
}

/// A parsed `backup_label`: the text `build_backup_content` writes (see the module
/// documentation), as `read_backup_label` reads it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct BackupLabel {
    /// `START WAL LOCATION`: the backup's start, the redo point of its checkpoint.
    pub start_lsn: Lsn,
    /// The WAL file named in parentheses after it: the first segment the backup needs.
    pub start_segment: WalSegmentName,
    /// `CHECKPOINT LOCATION`: the checkpoint record recovery starts from.
    pub checkpoint_lsn: Lsn,
    /// `BACKUP METHOD`: `streamed` for every backup PostgreSQL 15 and later take;
    /// `pg_start_backup` for an exclusive backup of 13 or 14.
    pub backup_method: String,
    /// `BACKUP FROM`.
    pub backup_from: BackupFrom,
    /// `START TIME`, as the server wrote it (`%Y-%m-%d %H:%M:%S %Z` in its log time
    /// zone).
    pub start_time: String,
    /// `LABEL`: the label given to `pg_backup_start` (or `pg_basebackup -l`).
    pub label: String,
    /// `START TIMELINE`: the timeline of `start_lsn`, also the first eight digits of
    /// `start_segment`.
    pub start_timeline: TimelineId,
    /// The base backup of an incremental backup (PostgreSQL 17 and later).
    pub incremental_from: Option<IncrementalFrom>,
    /// The `STOP` lines, present in a backup history file only.
    pub stop: Option<BackupStop>,
}

/// Keys of the lines `build_backup_content` writes, in its order.
const START_WAL_LOCATION: &str = "START WAL LOCATION";
const STOP_WAL_LOCATION: &str = "STOP WAL LOCATION";
const CHECKPOINT_LOCATION: &str = "CHECKPOINT LOCATION";
const BACKUP_METHOD: &str = "BACKUP METHOD";
const BACKUP_FROM: &str = "BACKUP FROM";
const START_TIME: &str = "START TIME";
const LABEL: &str = "LABEL";
const START_TIMELINE: &str = "START TIMELINE";
const STOP_TIME: &str = "STOP TIME";
const STOP_TIMELINE: &str = "STOP TIMELINE";
const INCREMENTAL_FROM_LSN: &str = "INCREMENTAL FROM LSN";
const INCREMENTAL_FROM_TLI: &str = "INCREMENTAL FROM TLI";

const KEYS: [&str; 12] = [
    START_WAL_LOCATION,
    STOP_WAL_LOCATION,
    CHECKPOINT_LOCATION,
    BACKUP_METHOD,
    BACKUP_FROM,
    START_TIME,
    LABEL,
    START_TIMELINE,
    STOP_TIME,
    STOP_TIMELINE,
    INCREMENTAL_FROM_LSN,
    INCREMENTAL_FROM_TLI,
];

impl BackupLabel {
    /// Parses the text of a `backup_label` or backup history file.
    ///
    /// Every line must be `KEY: value`. The keys PostgreSQL 13 to 18 write are recognised
    /// and may appear once each; lines with other keys are ignored, as
    /// `read_backup_label` ignores them. `START WAL LOCATION`, `CHECKPOINT LOCATION`,
    /// `BACKUP METHOD`, `BACKUP FROM`, `START TIME`, `LABEL` and `START TIMELINE` are
    /// required; the two `INCREMENTAL FROM` lines come together or not at all, and so do
    /// the three `STOP` lines. Like `read_backup_label`, this checks that the timeline of
    /// the start segment's name is `START TIMELINE`.
    pub fn parse(text: &str) -> Result<BackupLabel, PgError> {
        let mut values: [Option<(&str, &str)>; KEYS.len()] = [None; KEYS.len()];
        // Lines end in '\n' alone (a '\r' before it stays part of the value, and fails).
        for line in text.split_terminator('\n') {
            let bad = |reason| PgError::InvalidBackupLabel {
                line: line.to_owned(),
                reason,
            };
            let (key, value) = line
                .split_once(": ")
                .ok_or_else(|| bad("not a \"KEY: value\" line"))?;
            if let Some(i) = KEYS.iter().position(|&k| k == key) {
                if values[i].is_some() {
                    return Err(bad("the key appears twice"));
                }
                values[i] = Some((line, value));
            }
        }
        let get = |key: &'static str| KEYS.iter().position(|&k| k == key).and_then(|i| values[i]);
        let required = |key: &'static str| get(key).ok_or(PgError::MissingBackupLabelField { field: key });

        let (line, value) = required(START_WAL_LOCATION)?;
        let (start_lsn, start_segment) = parse_location(line, value)?;
        let (line, value) = required(CHECKPOINT_LOCATION)?;
        let checkpoint_lsn = parse_lsn(line, value)?;
        let (_, backup_method) = required(BACKUP_METHOD)?;
        let (line, value) = required(BACKUP_FROM)?;
        let backup_from = match value {
            "primary" | "master" => BackupFrom::Primary,
            "standby" => BackupFrom::Standby,
            _ => return Err(invalid(line, "BACKUP FROM is neither primary nor standby")),
        };
        let (_, start_time) = required(START_TIME)?;
        let (_, label) = required(LABEL)?;
        let (line, value) = required(START_TIMELINE)?;
        let start_timeline = parse_timeline(line, value)?;
        if start_segment.timeline != start_timeline {
            return Err(invalid(
                line,
                "START TIMELINE is not the timeline of the START WAL LOCATION file",
            ));
        }

        let incremental_from = match (get(INCREMENTAL_FROM_LSN), get(INCREMENTAL_FROM_TLI)) {
            (None, None) => None,
            (Some((lsn_line, lsn)), Some((tli_line, tli))) => Some(IncrementalFrom {
                lsn: parse_lsn(lsn_line, lsn)?,
                timeline: parse_timeline(tli_line, tli)?,
            }),
            (Some((line, _)), None) | (None, Some((line, _))) => {
                return Err(invalid(line, "INCREMENTAL FROM LSN and TLI come together"))
            }
        };

        let stop = match (get(STOP_WAL_LOCATION), get(STOP_TIME), get(STOP_TIMELINE)) {
            (None, None, None) => None,
            (Some((loc_line, loc)), Some((_, time)), Some((tli_line, tli))) => {
                let (lsn, segment) = parse_location(loc_line, loc)?;
                Some(BackupStop {
                    lsn,
                    segment,
                    time: time.to_owned(),
                    timeline: parse_timeline(tli_line, tli)?,
                })
            }
            (Some((line, _)), _, _) | (_, Some((line, _)), _) | (_, _, Some((line, _))) => {
                return Err(invalid(
                    line,
                    "STOP WAL LOCATION, STOP TIME and STOP TIMELINE come together",
                ))
            }
        };

        Ok(BackupLabel {
            start_lsn,
            start_segment,
            checkpoint_lsn,
            backup_method: backup_method.to_owned(),
            backup_from,
            start_time: start_time.to_owned(),
            label: label.to_owned(),
            start_timeline,
            incremental_from,
            stop,
        })
    }

    /// Checks that `start_segment` is the segment holding `start_lsn` with segments of
    /// `size` (PostgreSQL computed the name from the LSN with the cluster's segment size,
    /// so a mismatch means the label belongs to a cluster with another size).
    pub fn check_segment_size(&self, size: WalSegmentSize) -> Result<(), PgError> {
        let expected =
            WalSegmentName::from_segment_no(self.start_timeline, self.start_lsn.segment_no(size), size);
        if expected == self.start_segment {
            Ok(())
        } else {
            Err(PgError::BackupLabelSegmentMismatch {
                start_lsn: self.start_lsn,
                found: self.start_segment.to_string(),
                expected: expected.to_string(),
                seg_size: size.bytes(),
            })
        }
    }
}

impl FromStr for BackupLabel {
    type Err = PgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn invalid(line: &str, reason: &'static str) -> PgError {
    PgError::InvalidBackupLabel {
        line: line.to_owned(),
        reason,
    }
}

fn parse_lsn(line: &str, value: &str) -> Result<Lsn, PgError> {
    value.parse().map_err(|_| invalid(line, "not an LSN"))
}

fn parse_timeline(line: &str, value: &str) -> Result<TimelineId, PgError> {
    // %u: decimal digits only, no sign.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(line, "not a timeline number"));
    }
    let tli: u32 = value
        .parse()
        .map_err(|_| invalid(line, "not a timeline number"))?;
    if tli == 0 {
        return Err(invalid(line, "timeline 0 does not exist"));
    }
    Ok(TimelineId(tli))
}

/// `X/X (file NAME)`: the value of the `START WAL LOCATION` and `STOP WAL LOCATION` lines.
fn parse_location(line: &str, value: &str) -> Result<(Lsn, WalSegmentName), PgError> {
    let (lsn, rest) = value
        .split_once(" (file ")
        .ok_or_else(|| invalid(line, "expected \"X/X (file NAME)\""))?;
    let name = rest
        .strip_suffix(')')
        .ok_or_else(|| invalid(line, "expected \"X/X (file NAME)\""))?;
    let lsn = parse_lsn(line, lsn)?;
    let segment = WalSegmentName::parse(name).map_err(|_| invalid(line, "not a WAL segment file name"))?;
    Ok((lsn, segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");

    fn fixture(path: &str) -> String {
        let path = format!("{FIXTURES}/{path}");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    /// Every label captured from a real server: from pg_basebackup, from
    /// pg_backup_start/pg_backup_stop (pg_start_backup/pg_stop_backup on 13 and 14) in one
    /// session, from a standby, from an incremental backup.
    #[test]
    fn real_labels() {
        // (file, start LSN, segment, checkpoint, from, label, timeline, segment size in MiB)
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            BackupFrom,
            &'static str,
            u32,
            u64,
        );
        let cases: &[Case] = &[
            (
                "control/pg13/backup_label",
                "0/4000028",
                "000000010000000000000004",
                "0/4000060",
                BackupFrom::Primary,
                "pg_basebackup base backup",
                1,
                16,
            ),
            (
                "control/pg13/backup_label.sql",
                "0/3000028",
                "000000010000000000000003",
                "0/3000060",
                BackupFrom::Primary,
                "pgark fixture",
                1,
                16,
            ),
            (
                "control/pg14/backup_label",
                "0/D00028",
                "00000001000000000000000D",
                "0/D00060",
                BackupFrom::Primary,
                "pg_basebackup base backup",
                1,
                1,
            ),
            (
                "control/pg14/backup_label.sql",
                "0/C00028",
                "00000001000000000000000C",
                "0/C00060",
                BackupFrom::Primary,
                "pgark fixture",
                1,
                1,
            ),
            (
                "control/pg15/backup_label",
                "0/4000028",
                "000000010000000000000004",
                "0/4000060",
                BackupFrom::Primary,
                "pg_basebackup base backup",
                1,
                16,
            ),
            (
                "control/pg15/backup_label.sql",
                "0/3000028",
                "000000010000000000000003",
                "0/3000060",
                BackupFrom::Primary,
                "pgark fixture",
                1,
                16,
            ),
            (
                "control/pg15-standby/backup_label",
                "0/6016BB8",
                "000000010000000000000006",
                "0/6016BF0",
                BackupFrom::Standby,
                "pg_basebackup base backup",
                1,
                16,
            ),
            (
                "control/pg15-standby/backup_label.sql",
                "0/6016BB8",
                "000000010000000000000006",
                "0/6016BF0",
                BackupFrom::Standby,
                "pgark standby fixture",
                1,
                16,
            ),
            (
                "control/pg15-promoted/backup_label",
                "0/7000028",
                "000000020000000000000007",
                "0/7000060",
                BackupFrom::Primary,
                "pg_basebackup base backup",
                2,
                16,
            ),
            (
                "control/pg16/backup_label",
                "0/10000028",
                "000000010000000000000004",
                "0/10000060",
                BackupFrom::Primary,
                "pg_basebackup base backup",
                1,
                64,
            ),
            (
                "control/pg16/backup_label.sql",
                "0/C000028",
                "000000010000000000000003",
                "0/C000060",
                BackupFrom::Primary,
                "pgark fixture",
                1,
                64,
            ),
            (
                "control/pg17/backup_label",
                "0/4000028",
                "000000010000000000000004",
                "0/4000080",
                BackupFrom::Primary,
                "pg_basebackup base backup",
                1,
                16,
            ),
            (
                "control/pg17/backup_label.sql",
                "0/3000028",
                "000000010000000000000003",
                "0/3000080",
                BackupFrom::Primary,
                "pgark fixture",
                1,
                16,
            ),
            (
                "control/pg17/backup_label.incremental",
                "0/6000028",
                "000000010000000000000006",
                "0/6000080",
                BackupFrom::Primary,
                "pg_basebackup base backup",
                1,
                16,
            ),
            (
                "control/pg18/backup_label",
                "0/4000028",
                "000000010000000000000004",
                "0/4000080",
                BackupFrom::Primary,
                "pg_basebackup base backup",
                1,
                16,
            ),
            (
                "control/pg18/backup_label.sql",
                "0/3000028",
                "000000010000000000000003",
                "0/3000080",
                BackupFrom::Primary,
                "pgark fixture",
                1,
                16,
            ),
        ];
        for &(file, start, segment, checkpoint, from, label_text, tli, seg_mib) in cases {
            let text = fixture(file);
            let label = BackupLabel::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(label.start_lsn, lsn(start), "{file}");
            assert_eq!(label.start_segment.to_string(), segment, "{file}");
            assert_eq!(label.checkpoint_lsn, lsn(checkpoint), "{file}");
            assert_eq!(label.backup_method, "streamed", "{file}");
            assert_eq!(label.backup_from, from, "{file}");
            assert_eq!(label.label, label_text, "{file}");
            assert_eq!(label.start_timeline, TimelineId(tli), "{file}");
            assert!(label.start_time.starts_with("2026-11-22 00:4"), "{file}");
            assert!(label.start_time.ends_with(" UTC"), "{file}");
            assert_eq!(label.stop, None, "{file}");
            assert_eq!(
                label.incremental_from.is_some(),
                file.ends_with(".incremental"),
                "{file}"
            );
            let size = WalSegmentSize::new(seg_mib << 20).unwrap();
            assert_eq!(label.check_segment_size(size), Ok(()), "{file}");
            assert_eq!(text.parse::<BackupLabel>().unwrap(), label);
        }
        let incremental = BackupLabel::parse(&fixture("control/pg17/backup_label.incremental")).unwrap();
        assert_eq!(
            incremental.incremental_from,
            Some(IncrementalFrom {
                lsn: lsn("0/4000028"),
                timeline: TimelineId(1)
            })
        );
    }

    /// A backup history file, archived by PostgreSQL 15 (fixtures/wal).
    #[test]
    fn backup_history_file() {
        let label = BackupLabel::parse(&fixture("wal/000000010000000000000003.00000028.backup")).unwrap();
        assert_eq!(label.start_lsn, lsn("0/3000028"));
        assert_eq!(label.checkpoint_lsn, lsn("0/3000060"));
        assert_eq!(
            label.stop,
            Some(BackupStop {
                lsn: lsn("0/3000100"),
                segment: WalSegmentName::parse("000000010000000000000003").unwrap(),
                time: "2026-11-22 00:29:27 UTC".to_owned(),
                timeline: TimelineId(1),
            })
        );
    }

    #[test]
    fn wrong_segment_size() {
        let label = BackupLabel::parse(&fixture("control/pg16/backup_label")).unwrap();
        let size16 = WalSegmentSize::DEFAULT;
        assert_eq!(
            label.check_segment_size(size16),
            Err(PgError::BackupLabelSegmentMismatch {
                start_lsn: lsn("0/10000028"),
                found: "000000010000000000000004".to_owned(),
                expected: "000000010000000000000010".to_owned(),
                seg_size: 16 << 20,
            })
        );
    }

    const GOOD: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                        CHECKPOINT LOCATION: 0/2000060\n\
                        BACKUP METHOD: streamed\n\
                        BACKUP FROM: primary\n\
                        START TIME: 2024-01-02 03:04:05 UTC\n\
                        LABEL: x\n\
                        START TIMELINE: 1\n";

    #[test]
    fn accepted_variations() {
        let base = BackupLabel::parse(GOOD).unwrap();
        // (text, what differs)
        type Check<'a> = dyn Fn(&BackupLabel) -> bool + 'a;
        let cases: &[(String, &Check<'_>)] = &[
            (GOOD.trim_end().to_owned(), &|l| *l == base),
            (GOOD.replace("LABEL: x", "LABEL: "), &|l| l.label.is_empty()),
            (GOOD.replace("LABEL: x", "LABEL: a: b (file c)"), &|l| {
                l.label == "a: b (file c)"
            }),
            (GOOD.replace("LABEL: x", "LABEL: étiquette  "), &|l| {
                l.label == "étiquette  "
            }),
            (GOOD.replace("primary", "master"), &|l| {
                l.backup_from == BackupFrom::Primary
            }),
            (GOOD.replace("primary", "standby"), &|l| {
                l.backup_from == BackupFrom::Standby
            }),
            (GOOD.replace("streamed", "pg_start_backup"), &|l| {
                l.backup_method == "pg_start_backup"
            }),
            (format!("{GOOD}SOMETHING NEW: 42\n"), &|l| *l == base),
        ];
        for (text, check) in cases {
            let label = BackupLabel::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(check(&label), "{text:?}: {label:?}");
        }
        // Line order does not matter.
        let reversed: String = GOOD.lines().rev().map(|l| format!("{l}\n")).collect();
        assert_eq!(BackupLabel::parse(&reversed).unwrap(), base);
        assert_eq!(
            BackupLabel::parse(&GOOD.replace("LABEL: x\n", "")),
            Err(PgError::MissingBackupLabelField { field: "LABEL" })
        );
    }

    #[test]
    fn rejected_labels() {
        // (text, offending line, or None for a missing field)
        let cases: &[(String, Option<&str>)] = &[
            (String::new(), None),
            (GOOD.replace("START TIMELINE: 1\n", ""), None),
            (GOOD.replace("CHECKPOINT", "CHECKPOINTS"), None),
            (GOOD.replace("BACKUP METHOD: streamed\n", ""), None),
            (GOOD.replace("LABEL: x", "LABEL:x"), Some("LABEL:x")),
            (format!("{GOOD}\n"), Some("")),
            (format!("{GOOD}LABEL: y\n"), Some("LABEL: y")),
            (
                GOOD.replace("BACKUP FROM: primary", "BACKUP FROM: replica"),
                Some("BACKUP FROM: replica"),
            ),
            (
                GOOD.replace("START TIMELINE: 1", "START TIMELINE: 2"),
                Some("START TIMELINE: 2"),
            ),
            (
                GOOD.replace("START TIMELINE: 1", "START TIMELINE: 0"),
                Some("START TIMELINE: 0"),
            ),
            (
                GOOD.replace("START TIMELINE: 1", "START TIMELINE: +1"),
                Some("START TIMELINE: +1"),
            ),
            (
                GOOD.replace("START TIMELINE: 1", "START TIMELINE: 4294967296"),
                Some("START TIMELINE: 4294967296"),
            ),
            (
                GOOD.replace(
                    "CHECKPOINT LOCATION: 0/2000060",
                    "CHECKPOINT LOCATION: 0/2000060x",
                ),
                Some("CHECKPOINT LOCATION: 0/2000060x"),
            ),
            (
                GOOD.replace(" (file 000000010000000000000002)", ""),
                Some("START WAL LOCATION: 0/2000028"),
            ),
            (
                GOOD.replace(
                    "(file 000000010000000000000002)",
                    "(file 000000010000000000000002",
                ),
                Some("START WAL LOCATION: 0/2000028 (file 000000010000000000000002"),
            ),
            (
                GOOD.replace("000000010000000000000002)", "00000001000000000000000z)"),
                Some("START WAL LOCATION: 0/2000028 (file 00000001000000000000000z)"),
            ),
            (
                GOOD.replace("0/2000028 (", "0/20000280000 ("),
                Some("START WAL LOCATION: 0/20000280000 (file 000000010000000000000002)"),
            ),
            (
                format!("{GOOD}INCREMENTAL FROM LSN: 0/1000028\n"),
                Some("INCREMENTAL FROM LSN: 0/1000028"),
            ),
            (
                format!("{GOOD}INCREMENTAL FROM TLI: 1\n"),
                Some("INCREMENTAL FROM TLI: 1"),
            ),
            (
                format!("{GOOD}INCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: x\n"),
                Some("INCREMENTAL FROM TLI: x"),
            ),
            (format!("{GOOD}STOP TIMELINE: 1\n"), Some("STOP TIMELINE: 1")),
            (
                format!(
                    "{GOOD}STOP WAL LOCATION: 0/3000000 (file 000000010000000000000003)\nSTOP TIME: now\n"
                ),
                Some("STOP WAL LOCATION: 0/3000000 (file 000000010000000000000003)"),
            ),
            (
                GOOD.replace('\n', "\r\n"),
                Some("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\r"),
            ),
        ];
        for (text, line) in cases {
            let err = BackupLabel::parse(text).unwrap_err();
            match (line, &err) {
                (None, PgError::MissingBackupLabelField { .. }) => {}
                (Some(expected), PgError::InvalidBackupLabel { line, .. }) => {
                    assert_eq!(line, expected, "{text:?}: {err}")
                }
                _ => panic!("{text:?}: {err}"),
            }
        }
    }
}
