//! Go-style duration strings (`100ms`, `1m30s`, `24h`), the format Kubernetes users already write
//! in `metav1.Duration` fields and the format CEL's `duration()` parses on the API server.
use std::time::Duration;

/// Regular expression the CRD schema enforces on every duration field, so a malformed duration
/// is refused by the API server before any controller sees it.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";

/// Why a duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("'{0}' is not a duration like 100ms, 30s, 1m30s or 24h")]
    Malformed(String),
    #[error("'{0}' is too large")]
    Overflow(String),
}

/// Parses a Go duration string. Negative durations are refused: no field of ours accepts one.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_owned());
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(malformed)?;
        if number_len == 0 {
            return Err(malformed());
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after_unit) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(malformed()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
            return Err(malformed());
        }
        let whole: u128 = whole
            .parse()
            .map_err(|_| DurationError::Overflow(text.to_owned()))?;
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| DurationError::Overflow(text.to_owned()))?;
        // Fractions beyond nanosecond precision are truncated, as Go does.
        let mut scale = unit_nanos;
        for digit in fraction.bytes().take(18) {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| DurationError::Overflow(text.to_owned()))?;
        rest = after_unit;
    }
    let secs =
        u64::try_from(total_nanos / 1_000_000_000).map_err(|_| DurationError::Overflow(text.to_owned()))?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

/// Formats a duration the way Go prints it, so values we write into status read like the ones
/// users wrote into the spec (for example `1.25s`, `300ms`, `2m0s`).
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}us", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let total_secs = duration.as_secs();
    let hours = total_secs / 3600;
    let minutes = (total_secs % 3600) / 60;
    let seconds = trim_fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        assert_eq!(parse("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse("7ns").unwrap(), Duration::from_nanos(7));
    }

    #[test]
    fn refuses_malformed_durations_with_the_offending_text() {
        for bad in ["", "10", "ms", "1.s", "1..5s", "-1s", "10 s", "5d", "1.2.3s"] {
            let err = parse(bad).unwrap_err();
            if !bad.is_empty() {
                assert!(err.to_string().contains(bad), "{bad}: {err}");
            }
        }
    }

    #[test]
    fn refuses_overflow_instead_of_wrapping() {
        assert!(matches!(
            parse("99999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_millis(300)), "300ms");
        assert_eq!(format(Duration::from_millis(1250)), "1.25s");
        assert_eq!(format(Duration::from_secs(120)), "2m0s");
        assert_eq!(format(Duration::from_secs(3661)), "1h1m1s");
        assert_eq!(format(Duration::ZERO), "0s");
    }

    #[test]
    fn format_then_parse_round_trips() {
        for ms in [1u64, 999, 1000, 1001, 59_999, 60_000, 3_600_000, 86_399_999] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)).unwrap(), d, "{ms}ms");
        }
    }
}

/// Serde for a duration kept as its Go-style text (`100ms`, `1h0m0s`) in a file, parsed once
/// when the file is read: `#[serde(with = "duration::text")]`.
pub mod text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// As [`text`], refusing a zero duration (an interval or a timeout).
pub mod positive {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        super::text::serialize(value, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let value = super::text::deserialize(deserializer)?;
        if value.is_zero() {
            return Err(serde::de::Error::custom("must be a positive duration"));
        }
        Ok(value)
    }
}
