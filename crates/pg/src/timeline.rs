//! Timeline identifiers.
//!
//! Every promotion or point-in-time recovery starts a new timeline, and the timeline is
//! the first part of every WAL file name; archived WAL from different timelines sits side
//! by side in the archive, so the identifier gets its own type.

use std::fmt;

/// A timeline: PostgreSQL's `TimeLineID` (`access/xlogdefs.h`).
///
/// `Display` prints it in decimal, as PostgreSQL's messages and `pg_controldata` do;
/// [`TimelineId::hex`] gives the eight upper-case hex digits used in file names.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineId(pub u32);

impl TimelineId {
    /// The timeline `initdb` creates.
    pub const FIRST: TimelineId = TimelineId(1);

    /// The eight upper-case hex digits of file names (`%08X` in `XLogFileName` and
    /// `TLHistoryFileName`), e.g. `00000001`.
    pub fn hex(self) -> String {
        format!("{:08X}", self.0)
    }

    /// Parses the eight upper-case hex digits of a file name; `None` for anything else.
    pub fn from_hex(s: &str) -> Option<TimelineId> {
        crate::names::parse_hex8(s).map(TimelineId)
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimelineId({})", self.0)
    }
}

impl From<u32> for TimelineId {
    fn from(value: u32) -> Self {
        TimelineId(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms() {
        let cases: &[(u32, &str, &str)] = &[
            (0, "0", "00000000"),
            (1, "1", "00000001"),
            (26, "26", "0000001A"),
            (u32::MAX, "4294967295", "FFFFFFFF"),
        ];
        for &(value, decimal, hex) in cases {
            let tli = TimelineId(value);
            assert_eq!(tli.to_string(), decimal);
            assert_eq!(tli.hex(), hex);
            assert_eq!(TimelineId::from_hex(hex), Some(tli));
        }
    }

    #[test]
    fn from_hex_rejects() {
        for text in [
            "",
            "1",
            "0000001a",
            "000000001",
            "0000001G",
            "+0000001",
            "0000 001",
        ] {
            assert_eq!(TimelineId::from_hex(text), None, "{text:?}");
        }
    }
}
