//! Calendar arithmetic for Lookback's timestamps (µs since the Unix epoch, UTC), shared by
//! everything that writes them as text (COPY TO, the benchmark's CSV export).

/// The parts of a UTC timestamp: (year, month, day, hour, minute, second, microsecond),
/// proleptic Gregorian.
pub fn utc_parts(micros: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60, frac)
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_known_instants() {
        assert_eq!(utc_parts(0), (1970, 1, 1, 0, 0, 0, 0));
        assert_eq!(utc_parts(-1), (1969, 12, 31, 23, 59, 59, 999_999));
        assert_eq!(utc_parts(951_782_400_000_000), (2000, 2, 29, 0, 0, 0, 0));
        assert_eq!(
            utc_parts(1_767_323_045_678_000),
            (2026, 1, 2, 3, 4, 5, 678_000)
        );
    }
}
