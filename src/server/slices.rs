//! Cutting a table's time into slices that each touch no more of its files than the server's
//! query file limit allows in one query.

use crate::server::figures::fmt_ns;

/// A half-open time slice `[lo, hi)` in nanoseconds; `None` is unbounded.
pub type Slice = (Option<i64>, Option<i64>);

/// Cuts time into slices so that no slice touches more than `budget` of `files` (their
/// `(min_time, max_time)`); the first and last are open-ended, so that rows outside every
/// file (the server's write buffer) are counted too. A file touches `[lo, hi)` if
/// `min_time < hi` and `max_time >= lo` (checked on 3.0.3 and 3.10); each cut is one
/// nanosecond earlier than needed, so a server that also counted a file starting exactly at
/// `hi` would still be within the budget.
pub fn plan_slices(files: &[(i64, i64)], budget: usize) -> Result<Vec<Slice>, String> {
    let budget = budget.max(1);
    let mut slices = Vec::new();
    let mut lo: Option<i64> = None;
    loop {
        let mut live: Vec<i64> = files
            .iter()
            .filter(|(_, max)| lo.is_none_or(|lo| *max >= lo))
            .map(|(min, _)| *min)
            .collect();
        if live.len() <= budget {
            slices.push((lo, None));
            return Ok(slices);
        }
        live.sort_unstable();
        let hi = live[budget] - 1;
        if let Some(lo) = lo.filter(|lo| hi <= *lo) {
            let n = files
                .iter()
                .filter(|(mn, mx)| *mn <= lo + 1 && *mx >= lo)
                .count();
            return Err(format!(
                "{n} files overlap the time {}, more than the query file limit allows in one query",
                fmt_ns(Some(lo))
            ));
        }
        slices.push((lo, Some(hi)));
        lo = Some(hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touches((lo, hi): Slice, (mn, mx): (i64, i64)) -> bool {
        hi.is_none_or(|hi| mn < hi) && lo.is_none_or(|lo| mx >= lo)
    }

    #[test]
    fn slices_cover_all_time_and_touch_at_most_the_budget() {
        // 1,000 files of 10 minutes each, some overlapping their neighbours (late writes).
        let ten_min = 600_000_000_000i64;
        let files: Vec<(i64, i64)> = (0..1000)
            .map(|i| {
                let lo = i * ten_min;
                let hi = lo + ten_min - 1 + if i % 7 == 0 { ten_min } else { 0 };
                (lo, hi)
            })
            .collect();
        // Two files overlap every seventh file's second ten minutes, and a cut one nanosecond
        // before a file's start also counts that file: one file per query is impossible there,
        // three always suffice.
        assert!(plan_slices(&files, 1).is_err());
        for budget in [3usize, 4, 10, 432, 999, 1000] {
            let slices = plan_slices(&files, budget).unwrap();
            assert_eq!(slices.first().unwrap().0, None);
            assert_eq!(slices.last().unwrap().1, None);
            for w in slices.windows(2) {
                assert_eq!(w[0].1, w[1].0, "slices are contiguous");
            }
            for s in &slices {
                let n = files.iter().filter(|f| touches(*s, **f)).count();
                assert!(n <= budget, "budget {budget}: {s:?} touches {n}");
            }
            if budget >= 1000 {
                assert_eq!(slices.len(), 1);
            }
        }
    }

    #[test]
    fn files_overlapping_one_moment_beyond_the_budget_cannot_be_sliced() {
        let files = vec![(0, 100), (0, 100), (50, 150)];
        assert!(plan_slices(&files, 1).is_err());
        assert_eq!(plan_slices(&files, 3).unwrap().len(), 1);
    }
}
