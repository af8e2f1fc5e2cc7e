//! Units the operator types and reads: durations, times and byte sizes.

use crate::format::ids::Nanos;

/// `--memory-limit` when none is given.
pub const DEFAULT_MEMORY_LIMIT: &str = "1GB";

/// A memory budget for the whole process, from `--memory-limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget(pub u64);

impl MemoryBudget {
    /// What DuckDB's buffer manager may use: four fifths of the budget. The rest is for
    /// what DuckDB does not count against its limit (Parquet readers and writers, per-thread
    /// state, the allocator's slack) and for kompactor itself.
    pub fn duckdb_limit(self) -> String {
        format!("{}KiB", self.duckdb_bytes() / 1024)
    }

    /// DuckDB's share of the budget in bytes (at least 16 MiB).
    pub fn duckdb_bytes(self) -> u64 {
        (self.0 / 5 * 4 / 1024).max(16 * 1024) * 1024
    }
}

impl std::fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}MiB", self.0 / (1024 * 1024))
    }
}

impl serde::Serialize for MemoryBudget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Parses a size: a number and a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).
pub fn parse_size(s: &str) -> Result<MemoryBudget, String> {
    let t = s.trim();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "`{s}` is not a size (expected e.g. 256MB, 2GB, 512MiB)"
            ))
        }
    };
    match num.parse::<f64>() {
        Ok(n) if n > 0.0 => Ok(MemoryBudget((n * mult) as u64)),
        _ => Err(format!(
            "`{s}` is not a size (expected e.g. 256MB, 2GB, 512MiB)"
        )),
    }
}

/// Parses `90s`, `10m`, `1h30m`, `1d`, `2w`, `500ms`, `0`.
pub fn parse_duration(s: &str) -> Result<Nanos, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Nanos(0));
    }
    let mut total: i128 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{s}` is not a duration (expected e.g. 10m, 1h, 1d)"
            ));
        }
        let n: i128 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult: i128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            "" => return Err(format!("`{s}`: missing unit (ns, us, ms, s, m, h, d, w)")),
            u => {
                return Err(format!(
                    "`{s}`: unknown unit `{u}` (use ns, us, ms, s, m, h, d, w)"
                ))
            }
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .filter(|t| *t <= i64::MAX as i128)
            .ok_or_else(|| format!("`{s}` is too long (at most about 292 years)"))?;
    }
    Ok(Nanos(total as i64))
}

/// Bytes for people: `512 B`, `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Parses a point in time: an RFC 3339 time, or integer nanoseconds since the epoch.
pub fn parse_instant(s: &str) -> Result<Nanos, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
        return t
            .timestamp_nanos_opt()
            .map(Nanos)
            .ok_or_else(|| format!("`{s}` is out of range"));
    }
    s.trim().parse::<i64>().map(Nanos).map_err(|_| {
        format!("`{s}` is not a time (expected RFC 3339, e.g. 2026-03-02T00:00:00Z, or integer nanoseconds)")
    })
}

/// Parses a point in time: an RFC 3339 time, or a duration back from now (`90d`).
pub fn parse_time_or_age(s: &str) -> Result<Nanos, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t
            .timestamp_nanos_opt()
            .map(Nanos)
            .ok_or_else(|| format!("`{s}` is out of range"));
    }
    let d = parse_duration(s).map_err(|e| format!("{e} (or give an RFC 3339 time)"))?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    Ok(Nanos(now.saturating_sub(d.0)))
}

/// A duration for people, to the minute: `2d3h`, `45m`.
pub fn human_duration(d: Nanos) -> String {
    let minutes = d.0 / 60_000_000_000;
    let (days, hours, mins) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let mut out = String::new();
    if days > 0 {
        out.push_str(&format!("{days}d"));
    }
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if mins > 0 || out.is_empty() {
        out.push_str(&format!("{mins}m"));
    }
    out
}

/// Renders a duration the way `parse_duration` reads it, in its largest exact unit.
pub fn format_duration(d: Nanos) -> String {
    const UNITS: [(i64, &str); 8] = [
        (604_800_000_000_000, "w"),
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if d.0 == 0 {
        return "0s".into();
    }
    for (n, u) in UNITS {
        if d.0 % n == 0 {
            return format!("{}{u}", d.0 / n);
        }
    }
    unreachable!("1ns divides everything")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Nanos(600_000_000_000)));
        assert_eq!(parse_duration("1h30m"), Ok(Nanos(5_400_000_000_000)));
        assert_eq!(parse_duration("0"), Ok(Nanos(0)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(Nanos(86_400_000_000_000)), "1d");
        assert_eq!(format_duration(Nanos(5_400_000_000_000)), "90m");
        assert_eq!(parse_size("256MB"), Ok(MemoryBudget(256_000_000)));
        assert_eq!(parse_size("1GiB").unwrap().duckdb_limit(), "838860KiB");
        assert!(parse_size("256").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn a_duration_too_long_is_refused_not_wrapped() {
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("99999999999999999999999999999999999d").is_err());
        // i64::MAX nanoseconds are 106,751.99 days.
        assert!(parse_duration("106751d").is_ok());
        assert!(parse_duration("106752d").is_err());
        assert!(parse_duration("106751d1d").is_err());
    }
}
