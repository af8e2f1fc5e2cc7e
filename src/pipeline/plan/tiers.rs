//! Window widths, and the tiers that give older data wider windows.
//!
//! A width is a fixed duration aligned to the epoch (`10m`, `1h`, `1d`, `1w`) or a number of
//! calendar months in UTC (`1M`, `3M`, `1y`). A tier says how old data must be (measured
//! back from the table's newest data) before its windows may be that wide; the plan tries
//! the widest tier a window is old enough for and goes down to narrower ones where it is not
//! (see [`super`]).

use crate::format::ids::Nanos;
use crate::units::{format_duration, parse_duration};
use chrono::{Datelike, TimeZone};
use serde::{Serialize, Serializer};
use std::fmt;

/// The server's own gen1 window: a merged window of this width keeps its files' chunk_time.
pub const GEN1: Width = Width::Fixed(Nanos(600_000_000_000));
const HOUR: Width = Width::Fixed(Nanos(3_600_000_000_000));
const DAY: Nanos = Nanos(86_400_000_000_000);

/// How wide one compaction window is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Width {
    /// A fixed duration, windows aligned to the Unix epoch.
    Fixed(Nanos),
    /// Calendar months (UTC), windows aligned to January of year 0: `12` is a calendar year.
    Months(u32),
}

impl Width {
    /// Parses `10m`, `1h`, `1d`, `2w` (any duration) or `1M`, `3M`, `1y` (calendar months
    /// and years).
    pub fn parse(s: &str) -> Result<Width, String> {
        let s = s.trim();
        let calendar = |n: &str, months: u32| -> Result<Width, String> {
            match n.parse::<u32>() {
                Ok(n) if n > 0 && n <= 1200 => Ok(Width::Months(n * months)),
                _ => Err(format!(
                    "`{s}` is not a window width (expected e.g. 1d, 1M, 1y)"
                )),
            }
        };
        if let Some(n) = s.strip_suffix('M') {
            return calendar(n, 1);
        }
        if let Some(n) = s.strip_suffix('y') {
            return calendar(n, 12);
        }
        match parse_duration(s)? {
            d if d.0 > 0 => Ok(Width::Fixed(d)),
            _ => Err(format!("`{s}`: a window must be longer than 0")),
        }
    }

    /// The start of the window of this width that holds `t`.
    pub fn floor(self, t: Nanos) -> Nanos {
        match self {
            Width::Fixed(w) => t.floor_to(w),
            Width::Months(n) => {
                let Some(d) = t.to_utc() else { return t };
                let index = i64::from(d.year()) * 12 + i64::from(d.month0());
                month_start(index.div_euclid(i64::from(n)) * i64::from(n)).unwrap_or(t)
            }
        }
    }

    /// The end (exclusive) of the window that starts at `start`.
    pub fn end(self, start: Nanos) -> Nanos {
        match self {
            Width::Fixed(w) => Nanos(start.0.saturating_add(w.0)),
            Width::Months(n) => {
                let Some(d) = start.to_utc() else {
                    return Nanos::MAX;
                };
                let index = i64::from(d.year()) * 12 + i64::from(d.month0()) + i64::from(n);
                month_start(index).unwrap_or(Nanos::MAX)
            }
        }
    }

    /// An upper bound of the width's length, to order widths and compare them with ages.
    pub fn nominal(self) -> Nanos {
        match self {
            Width::Fixed(w) => w,
            Width::Months(n) => Nanos((31 * DAY.0).saturating_mul(i64::from(n))),
        }
    }
}

/// The start of the month numbered `index` (year × 12 + month − 1), UTC.
fn month_start(index: i64) -> Option<Nanos> {
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = u32::try_from(index.rem_euclid(12)).ok()? + 1;
    chrono::Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()?
        .timestamp_nanos_opt()
        .map(Nanos)
}

impl fmt::Display for Width {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Width::Fixed(w) => f.write_str(&format_duration(*w)),
            Width::Months(n) if n % 12 == 0 => write!(f, "{}y", n / 12),
            Width::Months(n) => write!(f, "{n}M"),
        }
    }
}

impl Serialize for Width {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// One tier: windows of `width` for data up to `up_to` old (the last tier has no bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tier {
    pub width: Width,
    /// Data older than this goes to the next tier; `None` for the last.
    #[serde(serialize_with = "age_or_null")]
    pub up_to: Option<Nanos>,
}

fn age_or_null<S: Serializer>(v: &Option<Nanos>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// The tiers of a plan, narrowest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiers(pub Vec<Tier>);

/// The default tiers: hours for the last day, days for the last month, calendar months for
/// the last year, calendar years beyond (`1d:1h,31d:1d,366d:1M,1y`).
pub const DEFAULT_TIERS: &str = "1d:1h,31d:1d,366d:1M,1y";

impl Tiers {
    /// Parses `AGE:WIDTH,...,WIDTH`: each `AGE:WIDTH` gives windows of WIDTH to data up to
    /// AGE old (older than the previous tier's AGE), the last WIDTH to everything older.
    /// Widths must grow and ages must grow.
    pub fn parse(s: &str) -> Result<Tiers, String> {
        let mut tiers = Vec::new();
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let (age, width) = match part.split_once(':') {
                Some((a, w)) => (Some(parse_duration(a)?), Width::parse(w)?),
                None if last => (None, Width::parse(part)?),
                None => {
                    return Err(format!(
                        "`{part}`: every tier but the last needs an age, as in 7d:1d"
                    ))
                }
            };
            if let Some(prev) = tiers.last() {
                let prev: &Tier = prev;
                if width.nominal() <= prev.width.nominal() {
                    return Err(format!(
                        "`{s}`: each tier's width must be wider than the one before ({width} after {})",
                        prev.width
                    ));
                }
                if let (Some(a), Some(p)) = (age, prev.up_to) {
                    if a <= p {
                        return Err(format!(
                            "`{s}`: ages must grow ({} after {})",
                            format_duration(a),
                            format_duration(p)
                        ));
                    }
                }
            }
            tiers.push(Tier { width, up_to: age });
        }
        if tiers.is_empty() {
            return Err("no tier given".into());
        }
        Ok(Tiers(tiers))
    }

    /// One width for data of every age (`--window`).
    pub fn single(width: Width) -> Tiers {
        Tiers(vec![Tier { width, up_to: None }])
    }

    /// The widths a window is tried at, widest first, each with how old its data must be
    /// (at least `protect`, the table's writers' reach; the server's own 10-minute windows
    /// only `min_age`). Widths narrower than the narrowest tier, down to an hour and then
    /// the server's 10 minutes, are added so that recent data is merged in finer pieces.
    pub fn ladder(&self, protect: Nanos, min_age: Nanos) -> Vec<(Width, Nanos)> {
        let mut steps: Vec<(Width, Nanos)> = Vec::new();
        let mut lower = Nanos(0);
        for t in &self.0 {
            steps.push((t.width, lower.max(protect)));
            if let Some(a) = t.up_to {
                lower = a;
            }
        }
        let narrowest = self.0[0].width.nominal();
        if HOUR.nominal() < narrowest {
            steps.insert(0, (HOUR, protect));
        }
        if GEN1.nominal() < narrowest {
            steps.insert(0, (GEN1, min_age));
        } else if let Some(first) = steps.first_mut() {
            // The server's own width (or a finer one) is merged wherever --min-age allows.
            first.1 = min_age;
        }
        steps.reverse();
        steps
    }
}

impl fmt::Display for Tiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|t| match t.up_to {
                Some(a) => format!("{}:{}", format_duration(a), t.width),
                None => t.width.to_string(),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Nanos {
        Nanos(
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap(),
        )
    }

    #[test]
    fn widths_parse_and_align() {
        assert_eq!(Width::parse("1M"), Ok(Width::Months(1)));
        assert_eq!(Width::parse("1y"), Ok(Width::Months(12)));
        assert_eq!(Width::parse("1d"), Ok(Width::Fixed(DAY)));
        assert!(Width::parse("0").is_err());
        assert!(Width::parse("0M").is_err());
        let t = at("2025-02-17T13:45:00Z");
        assert_eq!(Width::Months(1).floor(t), at("2025-02-01T00:00:00Z"));
        assert_eq!(Width::Months(12).floor(t), at("2025-01-01T00:00:00Z"));
        assert_eq!(Width::Months(3).floor(t), at("2025-01-01T00:00:00Z"));
        assert_eq!(
            Width::Months(1).end(at("2024-12-01T00:00:00Z")),
            at("2025-01-01T00:00:00Z")
        );
        assert_eq!(
            Width::Months(12).end(at("2025-01-01T00:00:00Z")),
            at("2026-01-01T00:00:00Z")
        );
        assert_eq!(Width::Fixed(DAY).floor(t), at("2025-02-17T00:00:00Z"));
        // Before the epoch (a device without a clock) too.
        assert_eq!(
            Width::Months(1).floor(Nanos(-1)),
            at("1969-12-01T00:00:00Z")
        );
        assert_eq!(Width::Months(12).to_string(), "1y");
        assert_eq!(Width::Months(3).to_string(), "3M");
    }

    #[test]
    fn tiers_parse_in_order_and_ladders_go_down_to_the_servers_width() {
        let t = Tiers::parse(DEFAULT_TIERS).unwrap();
        assert_eq!(t.to_string(), DEFAULT_TIERS);
        let h = Nanos(3_600_000_000_000);
        let ladder = t.ladder(Nanos(2 * h.0), h);
        let got: Vec<String> = ladder
            .iter()
            .map(|(w, a)| format!("{w}@{}", format_duration(*a)))
            .collect();
        assert_eq!(got, ["1y@366d", "1M@31d", "1d@1d", "1h@2h", "10m@1h"]);
        // Writers reaching back 40 days push every wide tier past that.
        let far = Nanos(40 * DAY.0);
        let got: Vec<Nanos> = t.ladder(far, h).iter().map(|s| s.1).collect();
        assert_eq!(got, [Nanos(366 * DAY.0), far, far, far, h]);
        let w = Tiers::single(Width::Fixed(DAY)).ladder(h, h);
        assert_eq!(w.len(), 3);
        assert!(Tiers::parse("7d:1d,90d:1w,1M").is_ok());
        assert!(Tiers::parse("7d:1w,90d:1d,1M").is_err(), "widths must grow");
        assert!(Tiers::parse("90d:1d,7d:1w,1M").is_err(), "ages must grow");
        assert!(Tiers::parse("1d,1M").is_err(), "only the last has no age");
        let ten = Tiers::single(GEN1).ladder(h, Nanos(0));
        assert_eq!(ten, [(GEN1, Nanos(0))]);
    }
}
