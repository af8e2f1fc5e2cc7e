//! The command line: options, their defaults, and why those defaults.

use crate::types::Nanos;
use clap::Parser;
use std::path::PathBuf;

const ABOUT: &str = "Compacts the Parquet files of a stopped InfluxDB 3 Core node.

InfluxDB 3 Core writes one small Parquet file per table every 10 minutes and never merges
them. After about three days a full-table query fails with \"Query would scan 432 Parquet
files, exceeding the file limit\". kompactor merges each table's files per time window into
one sorted, deduplicated file, verifies it, and commits it so that every query returns what
it returned before.

Stop the server first. Replaced files are moved to <DATA_DIR>/.kompactor/trash/<run-id>/,
never deleted.";

const EXAMPLES: &str = "Examples:
  kompactor /var/lib/influxdb3 --hosts node0 --dry-run --verbose   # show the plan
  kompactor /var/lib/influxdb3 --hosts node0                       # compact
  kompactor /var/lib/influxdb3 --hosts node0,node1 --window 10m --json";

/// `kompactor <DATA_DIR> --hosts <node-id>[,...]`
#[derive(Parser, Debug)]
#[command(name = "kompactor", version, about = ABOUT, after_help = EXAMPLES)]
pub struct Args {
    /// The InfluxDB 3 data dir: the directory given to `influxdb3 serve --data-dir`.
    #[arg(value_name = "DATA_DIR")]
    pub data_dir: PathBuf,

    /// Node ids to compact, comma-separated (the `--node-id` the server runs with).
    #[arg(
        long,
        alias = "node-id",
        value_name = "NODE[,NODE...]",
        value_delimiter = ',',
        required = true
    )]
    pub hosts: Vec<String>,

    /// Print the plan and change nothing under DATA_DIR.
    #[arg(long)]
    pub dry_run: bool,

    /// Show every group's input files and output path, and log each step.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print only errors and warnings.
    #[arg(short, long)]
    pub quiet: bool,

    /// Print the plan (or the run's result) as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,

    /// Compaction window: files are merged only with files of the same window.
    ///
    /// `10m` keeps the server's own gen1 windows: the output keeps the inputs' chunk_time, so a
    /// point overwritten after compaction is still deduplicated by the server. Wider windows
    /// (`1h`, `1d`) give fewer files; a later overwrite of a point inside a merged window is
    /// then not deduplicated against it (the server would return both rows).
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_duration)]
    pub window: Nanos,

    /// Leave alone windows holding data less than this older than the table's newest data.
    ///
    /// Late writes and overwrites land in the most recent windows, and rows still only in the
    /// WAL belong to them too; merging those windows wider than 10m could make a later
    /// overwrite show up twice. One hour covers the server's own persistence delay and
    /// typical late-arriving data; raise it if your writers backfill further back.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub min_age: Nanos,

    /// Split a window's output by time so that no file holds more rows than this.
    #[arg(long, value_name = "ROWS", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows_per_file: u64,
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
        total += n * mult;
        if total > i64::MAX as i128 {
            return Err(format!("`{s}` is too long"));
        }
    }
    Ok(Nanos(total as i64))
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
    }
}
