//! Wall-clock time for features: reading it, and writing it as XEP-0082 timestamps.
//!
//! Owns: the one place features read the wall clock (`wall_clock`), and the UTC formatting
//! entity time (XEP-0202), last activity (XEP-0012) and delay stamps (XEP-0203) share.
//! Everything else in the core runs on the monotonic `Ctx::now`, which says nothing about the
//! date; only answers that must name a date or survive a restart read the wall clock.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::tls::der::civil_from_days;

/// The current wall-clock time. Features call this rather than `SystemTime::now()` so that
/// wall time is read in one place.
pub fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// Whole seconds since 1970-01-01T00:00:00Z; 0 for a clock set before 1970.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// XEP-0082 DateTime in UTC, `YYYY-MM-DDThh:mm:ssZ` (no fractional seconds). A clock set
/// before 1970 reads as the epoch.
pub fn utc_timestamp(t: SystemTime) -> String {
    utc_timestamp_from_unix(unix_seconds(t))
}

/// `utc_timestamp` for a count of seconds since the epoch (e.g. one read from the store).
pub fn utc_timestamp_from_unix(secs: u64) -> String {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn epoch_formats_as_1970() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn known_instants_format_exactly() {
        // Checked against another implementation (Python's datetime).
        assert_eq!(
            utc_timestamp_from_unix(1_066_564_231),
            "2003-10-19T11:50:31Z"
        );
        // Leap day, and the last second of a year.
        assert_eq!(utc_timestamp_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            utc_timestamp_from_unix(1_798_761_599),
            "2026-12-31T23:59:59Z"
        );
    }

    #[test]
    fn sub_second_part_truncated() {
        let t = UNIX_EPOCH + Duration::from_millis(1_999);
        assert_eq!(utc_timestamp(t), "1970-01-01T00:00:01Z");
        assert_eq!(unix_seconds(t), 1);
    }

    #[test]
    fn clock_before_epoch_reads_as_epoch() {
        let t = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(unix_seconds(t), 0);
        assert_eq!(utc_timestamp(t), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn wall_clock_is_after_2020() {
        assert!(unix_seconds(wall_clock()) > 1_577_836_800);
    }
}
