//! The kinds of file PostgreSQL hands to `archive_command` (and asks back from
//! `restore_command`).
//!
//! `%f` is always one of four shapes, recognised in `access/xlog_internal.h` by
//! `IsXLogFileName`, `IsPartialXLogFileName`, `IsBackupHistoryFileName` and
//! `IsTLHistoryFileName`. The archiver stores each kind differently (segments are
//! validated and deduplicated, history files are small text), so the name is classified
//! once, here.

use std::fmt;
use std::str::FromStr;

use crate::names::{parse_hex8, XLOG_FNAME_LEN};
use crate::{PgError, TimelineId, WalSegmentName};

/// Suffix of a segment archived before it was complete (`IsPartialXLogFileName`).
const PARTIAL_SUFFIX: &str = ".partial";
/// Suffix of a backup history file (`IsBackupHistoryFileName`).
const BACKUP_SUFFIX: &str = ".backup";
/// Suffix of a timeline history file (`IsTLHistoryFileName`).
const HISTORY_SUFFIX: &str = ".history";
/// Length of `TLHistoryFileName`'s output: eight digits and `.history`.
const HISTORY_FNAME_LEN: usize = 8 + HISTORY_SUFFIX.len();
/// Length of `BackupHistoryFileName`'s output: segment name, `.`, eight digits, `.backup`.
const BACKUP_FNAME_LEN: usize = XLOG_FNAME_LEN + 1 + 8 + BACKUP_SUFFIX.len();

/// A file name PostgreSQL can pass to `archive_command` as `%f`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ArchivedFile {
    /// A complete WAL segment, `000000010000000000000001` (`IsXLogFileName`).
    Segment(WalSegmentName),
    /// A segment archived incomplete at the end of archive recovery or by
    /// `pg_receivewal`, `000000010000000000000001.partial` (`IsPartialXLogFileName`).
    Partial(WalSegmentName),
    /// A backup history file, `000000010000000000000002.00000028.backup`
    /// (`BackupHistoryFileName`): the segment the backup started in and the start
    /// position's offset within it.
    BackupHistory {
        /// The segment in which the backup started.
        segment: WalSegmentName,
        /// `XLogSegmentOffset` of the backup's start LSN.
        offset: u32,
    },
    /// A timeline history file, `00000002.history` (`TLHistoryFileName`).
    TimelineHistory(TimelineId),
}

impl ArchivedFile {
    /// Classifies `file_name` like the `Is*FileName` functions of `xlog_internal.h`.
    ///
    /// One difference: `IsBackupHistoryFileName` accepts anything between the segment name
    /// and `.backup`; this accepts only what `BackupHistoryFileName` writes, a dot and
    /// eight upper-case hex digits, because the offset is part of the result.
    pub fn parse(file_name: &str) -> Result<Self, PgError> {
        let err = |reason| PgError::InvalidFileName {
            name: file_name.to_owned(),
            reason,
        };
        let len = file_name.len();
        if len == HISTORY_FNAME_LEN && file_name.ends_with(HISTORY_SUFFIX) {
            return TimelineId::from_hex(&file_name[..8])
                .map(ArchivedFile::TimelineHistory)
                .ok_or_else(|| err("a timeline history file name is 8 hex digits (0-9, A-F) and .history"));
        }
        if len == XLOG_FNAME_LEN {
            return WalSegmentName::parse(file_name).map(ArchivedFile::Segment);
        }
        // Every other kind starts with a segment name; a multi-byte character inside it
        // makes `get` return None.
        let segment = match file_name.get(..XLOG_FNAME_LEN).map(WalSegmentName::parse) {
            Some(Ok(segment)) => segment,
            _ => {
                return Err(err(
                    "not a WAL segment, .partial, .backup or .history file name: it must start with \
                     24 hex digits (0-9, A-F)",
                ))
            }
        };
        let rest = &file_name[XLOG_FNAME_LEN..];
        if rest == PARTIAL_SUFFIX {
            return Ok(ArchivedFile::Partial(segment));
        }
        if rest.ends_with(BACKUP_SUFFIX) {
            if len != BACKUP_FNAME_LEN || !rest.starts_with('.') {
                return Err(err(
                    "a backup history file name is <segment>.<8 hex digits>.backup",
                ));
            }
            return parse_hex8(&rest[1..9])
                .map(|offset| ArchivedFile::BackupHistory { segment, offset })
                .ok_or_else(|| err("the offset in a backup history file name is 8 hex digits (0-9, A-F)"));
        }
        Err(err(
            "unknown suffix after the segment name (expected .partial or .backup)",
        ))
    }

    /// The name PostgreSQL gives the file (the inverse of [`ArchivedFile::parse`]).
    pub fn file_name(&self) -> String {
        self.to_string()
    }

    /// The timeline the file belongs to.
    pub fn timeline(&self) -> TimelineId {
        match self {
            ArchivedFile::Segment(name) | ArchivedFile::Partial(name) => name.timeline,
            ArchivedFile::BackupHistory { segment, .. } => segment.timeline,
            ArchivedFile::TimelineHistory(tli) => *tli,
        }
    }

    /// The WAL segment whose header [`crate::validate_segment`] can check: the segment of
    /// a `Segment` or `Partial`, `None` for history files.
    pub fn wal_segment(&self) -> Option<WalSegmentName> {
        match self {
            ArchivedFile::Segment(name) | ArchivedFile::Partial(name) => Some(*name),
            ArchivedFile::BackupHistory { .. } | ArchivedFile::TimelineHistory(_) => None,
        }
    }
}

impl fmt::Display for ArchivedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchivedFile::Segment(name) => write!(f, "{name}"),
            ArchivedFile::Partial(name) => write!(f, "{name}{PARTIAL_SUFFIX}"),
            ArchivedFile::BackupHistory { segment, offset } => {
                write!(f, "{segment}.{offset:08X}{BACKUP_SUFFIX}")
            }
            ArchivedFile::TimelineHistory(tli) => write!(f, "{}{HISTORY_SUFFIX}", tli.hex()),
        }
    }
}

impl FromStr for ArchivedFile {
    type Err = PgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(tli: u32, log: u32, seg: u32) -> WalSegmentName {
        WalSegmentName {
            timeline: TimelineId(tli),
            log,
            seg,
        }
    }

    #[test]
    fn valid_names() {
        let cases: &[(&str, ArchivedFile)] = &[
            ("000000010000000000000001", ArchivedFile::Segment(seg(1, 0, 1))),
            (
                "0000000A00000016000000B3",
                ArchivedFile::Segment(seg(10, 0x16, 0xB3)),
            ),
            (
                "000000010000000000000001.partial",
                ArchivedFile::Partial(seg(1, 0, 1)),
            ),
            (
                "000000010000000000000002.00000028.backup",
                ArchivedFile::BackupHistory {
                    segment: seg(1, 0, 2),
                    offset: 0x28,
                },
            ),
            (
                "0000000300000001000000FF.00FFFFF8.backup",
                ArchivedFile::BackupHistory {
                    segment: seg(3, 1, 0xFF),
                    offset: 0xFF_FFF8,
                },
            ),
            ("00000002.history", ArchivedFile::TimelineHistory(TimelineId(2))),
            ("0000001A.history", ArchivedFile::TimelineHistory(TimelineId(26))),
        ];
        for (text, expected) in cases {
            let parsed = ArchivedFile::parse(text).unwrap();
            assert_eq!(&parsed, expected, "{text}");
            assert_eq!(parsed.file_name(), *text);
            assert_eq!(text.parse::<ArchivedFile>().unwrap(), parsed);
        }
    }

    #[test]
    fn invalid_names() {
        for text in [
            "",
            "00000001",
            "0000000100000000000000010",
            "00000001000000000000000a",
            "000000010000000000000001.PARTIAL",
            "000000010000000000000001.partial.gz",
            "000000010000000000000001.part",
            "000000010000000000000001.",
            "00000001000000000000000g.partial",
            // IsBackupHistoryFileName accepts these, BackupHistoryFileName never writes them.
            "000000010000000000000002.backup",
            "000000010000000000000002.28.backup",
            "000000010000000000000002.0000002g.backup",
            "000000010000000000000002X00000028.backup",
            "000000010000000000000002.000000028.backup",
            "0000000100000000000000020.0000028.backup",
            "00000002.HISTORY",
            "0000000g.history",
            "0000002.history",
            "000000002.history",
            "00000002.history.tmp",
            "RECOVERYHISTORY",
            "archive_status",
            "000000010000000000000001.ready",
            "0000000100000000000000é.partial",
            "000000010000000000000001é",
        ] {
            let err = ArchivedFile::parse(text).unwrap_err();
            assert!(
                matches!(err, PgError::InvalidFileName { ref name, .. } if name == text),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn timeline_and_segment() {
        let cases: &[(&str, u32, Option<&str>)] = &[
            ("000000030000000000000001", 3, Some("000000030000000000000001")),
            (
                "000000040000000000000001.partial",
                4,
                Some("000000040000000000000001"),
            ),
            ("000000050000000000000002.00000028.backup", 5, None),
            ("00000006.history", 6, None),
        ];
        for &(text, tli, segment) in cases {
            let file = ArchivedFile::parse(text).unwrap();
            assert_eq!(file.timeline(), TimelineId(tli));
            assert_eq!(file.wal_segment().map(|s| s.to_string()).as_deref(), segment);
        }
    }

    fn any_segment() -> impl Strategy<Value = WalSegmentName> {
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(t, l, s)| seg(t, l, s))
    }

    fn any_archived_file() -> impl Strategy<Value = ArchivedFile> {
        prop_oneof![
            any_segment().prop_map(ArchivedFile::Segment),
            any_segment().prop_map(ArchivedFile::Partial),
            (any_segment(), any::<u32>())
                .prop_map(|(segment, offset)| ArchivedFile::BackupHistory { segment, offset }),
            any::<u32>().prop_map(|t| ArchivedFile::TimelineHistory(TimelineId(t))),
        ]
    }

    proptest! {
        #[test]
        fn file_name_parse_round_trips(file in any_archived_file()) {
            let name = file.file_name();
            prop_assert_eq!(ArchivedFile::parse(&name).unwrap(), file);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,48}") {
            if let Ok(file) = ArchivedFile::parse(&text) {
                prop_assert_eq!(file.file_name(), text);
            }
        }

        #[test]
        fn parse_of_name_like_text(text in "[0-9A-Fa-f.]{8,40}(partial|backup|history)?") {
            if let Ok(file) = ArchivedFile::parse(&text) {
                prop_assert_eq!(file.file_name(), text);
            }
        }
    }
}
