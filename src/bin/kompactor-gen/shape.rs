//! What the generator writes, before any of it is written: the options checked and settled
//! (`Cfg`), the snapshots in the order the server would have written them (`Event`), and the
//! Parquet file each adds per table (`FileJob`).

use crate::{Args, DAY, GEN1};
use kompactor::format::parquet::{Column, ColumnType};

/// What a file is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The points of series group `g` (series `s` with `s % groups == g`).
    Base(u64),
    /// A rewrite of some points of every series of the window.
    Overwrite,
}

/// One snapshot: the files it adds (one per table), all of one window.
#[derive(Clone, Debug)]
pub struct Event {
    pub seq: u64,
    pub wal: u64,
    pub window: u64,
    pub kind: Kind,
    /// When the server would have written it (the snapshot file's mtime).
    pub persisted_at: i64,
}

/// One Parquet file to write.
#[derive(Clone, Debug)]
pub struct FileJob {
    pub event: usize,
    pub id: u64,
    pub db: u64,
    pub table: u64,
    pub window: u64,
    pub kind: Kind,
    /// Relative to the data dir.
    pub rel: String,
}

/// What a written file holds, as the metadata records it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Written {
    pub size: u64,
    pub rows: u64,
    pub min: i64,
    pub max: i64,
}

/// The options, checked, with what follows from them.
pub struct Cfg {
    pub args: Args,
    pub start_ns: i64,
    pub series: u64,
    pub points_per_window: u64,
    /// 10-minute windows in the whole time range.
    pub windows: u64,
    /// First window with the new tag and field.
    pub mid_window: u64,
}

impl Cfg {
    /// Checks the options and settles the number of series.
    pub fn new(args: Args) -> Result<Cfg, String> {
        if args.interval.0 <= 0 || GEN1 % args.interval.0 != 0 {
            return Err("--interval must divide 10m (e.g. 1s, 5s, 10s, 30s, 1m)".into());
        }
        if !(0.0..=1.0).contains(&args.checkpoint_frac) {
            return Err("--checkpoint-frac must be between 0 and 1".into());
        }
        if args.node.is_empty() || args.node.contains('/') || args.node.starts_with('.') {
            return Err(format!("`{}` is not a usable node id", args.node));
        }
        let day = chrono::NaiveDate::parse_from_str(&args.start, "%Y-%m-%d")
            .map_err(|e| format!("--start `{}`: {e} (expected YYYY-MM-DD)", args.start))?;
        let start_ns = day
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_nanos_opt()
            .ok_or("--start is out of range")?;
        let windows = args.days * (DAY / GEN1) as u64;
        let points_per_window = (GEN1 / args.interval.0) as u64;
        let series = match (args.series, args.rows) {
            (Some(s), _) => s,
            (None, Some(rows)) => {
                let per_series =
                    args.dbs * args.tables * windows.div_ceil(args.every) * points_per_window;
                ((rows as f64 / per_series as f64).round() as u64).max(1)
            }
            (None, None) => 100,
        };
        if series < args.files_per_window {
            return Err(format!(
                "{series} series cannot fill {} series groups; raise --series (or --rows) or lower --files-per-window",
                args.files_per_window
            ));
        }
        if series > 999_999 {
            return Err(format!("{series} series per table is more than this generator names (999999); raise --days or --tables, or lower --interval"));
        }
        Ok(Cfg {
            start_ns,
            series,
            points_per_window,
            windows,
            mid_window: windows / 2,
            args,
        })
    }

    /// When window `w` starts, in nanoseconds.
    pub fn window_start(&self, w: u64) -> i64 {
        self.start_ns + w as i64 * GEN1
    }

    /// Whether window `w` has the new tag and field.
    pub fn after_change(&self, w: u64) -> bool {
        w >= self.mid_window
    }

    /// The columns of window `w`'s files and their series key.
    pub fn columns(&self, w: u64) -> (Vec<Column>, Vec<String>) {
        let c = |n: &str, ty| Column {
            name: n.to_string(),
            ty,
        };
        // As the server writes them: tags, fields (each sorted by name), time, then the
        // columns added later in the order they were added.
        let mut cols = vec![
            c("host", ColumnType::Tag),
            c("region", ColumnType::Tag),
            c("bytes", ColumnType::UInteger),
            c("count", ColumnType::Integer),
            c("msg", ColumnType::String),
            c("ok", ColumnType::Boolean),
            c("usage", ColumnType::Float),
            c("time", ColumnType::Time),
        ];
        let mut key = vec!["host".to_string(), "region".to_string()];
        if self.after_change(w) {
            cols.push(c("zone", ColumnType::Tag));
            cols.push(c("load", ColumnType::Float));
            key.push("zone".to_string());
        }
        (cols, key)
    }
}

/// The snapshots, in the order the server would have written them.
pub fn events(cfg: &Cfg) -> Vec<Event> {
    let a = &cfg.args;
    let mut events = Vec::new();
    for w in (0..cfg.windows).filter(|w| w % a.every == 0) {
        let ws = cfg.window_start(w);
        for g in 0..a.files_per_window {
            events.push((
                w,
                Kind::Base(g),
                ws + GEN1 + 60_000_000_000 + g as i64 * 1_000_000_000,
            ));
        }
        if a.overwrite_every > 0 && w % a.overwrite_every == a.overwrite_every - 1 {
            events.push((w, Kind::Overwrite, ws + 2 * GEN1 + 30_000_000_000));
        }
    }
    // Snapshots are written in persist-time order (an overwrite lands after the next window's
    // files); a stable sort keeps the series groups of one window in order.
    events.sort_by_key(|e| e.2);
    events
        .into_iter()
        .enumerate()
        .map(|(i, (window, kind, persisted_at))| Event {
            seq: i as u64 + 1,
            wal: i as u64 + 1,
            window,
            kind,
            persisted_at,
        })
        .collect()
}

/// The files of every snapshot: one per database and table, with its path and file id.
pub fn jobs(cfg: &Cfg, events: &[Event]) -> Vec<FileJob> {
    let a = &cfg.args;
    let mut jobs = Vec::new();
    let mut next_id = 0u64;
    for (i, e) in events.iter().enumerate() {
        let ws = cfg.window_start(e.window);
        let t = chrono::DateTime::from_timestamp(ws.div_euclid(1_000_000_000), 0)
            .expect("window start in range");
        for db in 1..=a.dbs {
            for table in 0..a.tables {
                jobs.push(FileJob {
                    event: i,
                    id: next_id,
                    db,
                    table,
                    window: e.window,
                    kind: e.kind,
                    rel: format!(
                        "{}/dbs/{db}/{table}/{}/{:010}.parquet",
                        a.node,
                        t.format("%Y-%m-%d/%H-%M"),
                        e.wal
                    ),
                });
                next_id += 1;
            }
        }
    }
    jobs
}
