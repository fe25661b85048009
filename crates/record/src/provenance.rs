//! Where and when a recording was made, for the trace header.

use std::time::{SystemTime, UNIX_EPOCH};

/// `HOSTNAME (ARCH OS RELEASE)`, from what Linux reports in `/proc`; parts
/// it cannot read are left out.
pub fn host_description() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let mut system = vec![
        std::env::consts::ARCH.to_owned(),
        std::env::consts::OS.to_owned(),
    ];
    system.extend(read("/proc/sys/kernel/osrelease"));
    let system = system.join(" ");
    match read("/proc/sys/kernel/hostname") {
        Some(host) => format!("{host} ({system})"),
        None => system,
    }
}

/// `time` as RFC 3339 in UTC, to the second (`2026-12-06T17:37:55Z`).
pub fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century year) 12:34:56.
        let t = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(rfc3339_utc(t), "2000-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_579_875);
        assert_eq!(rfc3339_utc(t), "2026-12-06T17:57:55Z");
    }

    #[test]
    fn host_names_the_architecture() {
        assert!(host_description().contains(std::env::consts::ARCH));
    }
}
