//! Cutting a table's files into windows: the widest each part of the data is old enough for,
//! and windows joined where a file of one reaches into another.

use super::tiers::Width;
use crate::format::ids::{FileId, Nanos};
use crate::format::model::EntryRc;
use crate::pipeline::discover::newest_time;
use std::collections::BTreeMap;

/// The most rows a window may hold, in outputs of `--max-rows-per-file`, before its data goes
/// to the next narrower width: one merge stays a few outputs' worth of work.
pub const WINDOW_OUTPUTS: u64 = 4;

/// Why a window is left as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Old enough for its width.
    Ready,
    /// Too recent even for the server's own width (newer than `--min-age`).
    TooRecent,
}

/// The files of one table whose `chunk_time` falls in one window of one width.
#[derive(Debug)]
pub struct Window<'a> {
    pub start: Nanos,
    pub width: Width,
    pub files: Vec<&'a EntryRc>,
    pub state: State,
}

/// The widths to try, widest first, each with the age its data must have at least: a window
/// younger than its width allows, or holding more than `max_rows` rows, is cut at the next
/// width; one that is the settled result of an earlier merge stays as it is.
pub struct Ladder<'a> {
    pub steps: &'a [(Width, Nanos)],
    /// The table's newest data: ages are measured back from it.
    pub newest: Nanos,
    pub max_rows: u64,
}

impl Ladder<'_> {
    /// Every file in exactly one window.
    pub fn windows<'f>(&self, files: &[&'f EntryRc]) -> Vec<Window<'f>> {
        let mut out = Vec::new();
        self.cut(files, 0, &mut out);
        out
    }

    fn cut<'f>(&self, files: &[&'f EntryRc], step: usize, out: &mut Vec<Window<'f>>) {
        let (width, min_age) = self.steps[step];
        let narrower = step + 1 < self.steps.len();
        let mut by_start: BTreeMap<Nanos, Vec<&'f EntryRc>> = BTreeMap::new();
        for f in files {
            by_start
                .entry(width.floor(f.chunk_time))
                .or_default()
                .push(f);
        }
        for (start, files) in by_start {
            let age = Nanos(
                self.newest
                    .0
                    .saturating_sub(newest_time(files.iter().copied()).0),
            );
            let rows: u64 = files.iter().map(|f| f.row_count).sum();
            let settled = settled(&files);
            let too_young = age < min_age;
            let too_big = rows > self.max_rows.saturating_mul(WINDOW_OUTPUTS);
            if !settled && narrower && (too_young || too_big) {
                self.cut(&files, step + 1, out);
                continue;
            }
            out.push(Window {
                start,
                width,
                state: if too_young && !settled {
                    State::TooRecent
                } else {
                    State::Ready
                },
                files,
            });
        }
    }
}

/// Whether the files are one earlier merge's outputs (several when it was split by rows):
/// merging them again would give them back. A single file is not: it may still belong in a
/// narrower window.
pub fn settled(files: &[&EntryRc]) -> bool {
    if files.len() < 2 {
        return false;
    }
    let stem = |f: &EntryRc| -> Option<String> {
        f.path.with_str(|p| {
            let (dir, name) = p.rsplit_once('/')?;
            let name = name.strip_suffix(".parquet")?;
            if !name.starts_with("kompactor-") {
                return None;
            }
            // A split output is `<stem>-<n>`; the run id never ends in `-<digits>` alone.
            let base = match name.rsplit_once('-') {
                Some((b, n))
                    if n.bytes().all(|c| c.is_ascii_digit()) && b.matches('-').count() >= 2 =>
                {
                    b
                }
                _ => name,
            };
            Some(format!("{dir}/{base}"))
        })
    };
    let Some(first) = stem(files[0]) else {
        return false;
    };
    if !files
        .iter()
        .all(|f| stem(f).as_deref() == Some(first.as_str()))
    {
        return false;
    }
    let mut spans: Vec<(Nanos, Nanos)> = files.iter().map(|f| (f.min_time, f.max_time)).collect();
    spans.sort();
    spans.windows(2).all(|w| w[0].1 < w[1].0)
}

/// Groups of windows that must be merged together: a file of one overlaps a file of another
/// in time (a file merged wider before, now beside narrower windows, or an overwrite that
/// landed beside it), so that the versions of a point they share end up in one file.
/// Returns, per group, the indices of its windows; every window is in one group.
pub fn joined(windows: &[Window]) -> Vec<Vec<usize>> {
    let mut spans: Vec<(Nanos, Nanos, usize, FileId)> = windows
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            w.files
                .iter()
                .map(move |f| (f.min_time, f.max_time, i, f.id))
        })
        .collect();
    spans.sort_unstable();
    let mut parent: Vec<usize> = (0..windows.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut run: Option<(Nanos, usize)> = None;
    for (min, max, w, _) in spans {
        match &mut run {
            Some((end, first)) if min <= *end => {
                *end = (*end).max(max);
                let (a, b) = (root(&mut parent, *first), root(&mut parent, w));
                parent[a.max(b)] = a.min(b);
            }
            _ => run = Some((max, w)),
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..windows.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::model::FileEntry;

    const MIN: i64 = 60_000_000_000;

    fn file(id: u64, name: &str, chunk: i64, min: i64, max: i64, rows: u64) -> EntryRc {
        EntryRc::new(FileEntry {
            id: FileId(id),
            path: format!("n/dbs/1/0/1970-01-01/00-00/{name}").into(),
            size_bytes: 1,
            row_count: rows,
            chunk_time: Nanos(chunk * MIN),
            min_time: Nanos(min * MIN),
            max_time: Nanos(max * MIN),
            extra: Default::default(),
        })
    }

    #[test]
    fn one_merges_outputs_are_settled() {
        let a = file(1, "kompactor-1d-20260101T000000Z-1.parquet", 0, 0, 10, 1);
        let b = file(2, "kompactor-1d-20260101T000000Z-2.parquet", 0, 11, 20, 1);
        let c = file(3, "0000000001.parquet", 0, 5, 6, 1);
        assert!(settled(&[&a, &b]));
        assert!(!settled(&[&a, &b, &c]));
        assert!(!settled(&[&c]));
        let other_run = file(4, "kompactor-1d-20260102T000000Z.parquet", 0, 30, 40, 1);
        assert!(!settled(&[&a, &other_run]));
    }

    #[test]
    fn windows_too_young_or_too_big_go_narrower_and_overlaps_join_them() {
        let hour = Width::Fixed(Nanos(60 * MIN));
        let ten = Width::Fixed(Nanos(10 * MIN));
        let steps = [(hour, Nanos(30 * MIN)), (ten, Nanos(5 * MIN))];
        let files = [
            file(1, "1.parquet", 0, 0, 9, 5),
            file(2, "2.parquet", 10, 10, 19, 5),
            // The second hour: its data is 20 minutes old, too young for an hour.
            file(3, "3.parquet", 60, 60, 69, 5),
            file(4, "4.parquet", 70, 70, 79, 5),
            // Two minutes old: too young for anything.
            file(5, "5.parquet", 90, 95, 98, 5),
        ];
        let refs: Vec<&EntryRc> = files.iter().collect();
        let ladder = Ladder {
            steps: &steps,
            newest: Nanos(100 * MIN),
            max_rows: 100,
        };
        let w = ladder.windows(&refs);
        let got: Vec<(i64, usize, State)> = w
            .iter()
            .map(|w| (w.start.0 / MIN, w.files.len(), w.state))
            .collect();
        assert_eq!(
            got,
            [
                (0, 2, State::Ready),
                (60, 1, State::Ready),
                (70, 1, State::Ready),
                (90, 1, State::TooRecent)
            ]
        );
        assert_eq!(joined(&w), [vec![0], vec![1], vec![2], vec![3]]);
        // Too many rows for one hour: cut in tens.
        let small = Ladder {
            max_rows: 2,
            ..ladder
        };
        assert_eq!(small.windows(&refs[..2]).len(), 2);
        // A file merged an hour wide earlier, overlapped by a late one in a later ten.
        let wide = file(6, "kompactor-1h-x.parquet", 60, 60, 79, 10);
        let late = file(7, "7.parquet", 70, 75, 75, 1);
        let w = Ladder {
            steps: &steps[1..],
            ..ladder
        }
        .windows(&[&wide, &late]);
        assert_eq!(w.len(), 2);
        assert_eq!(joined(&w), [vec![0, 1]]);
    }
}
