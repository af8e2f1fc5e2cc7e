//! Windows that grow with the data's age, with the real 3.10 server in the loop: a table of
//! 500 days, one point a day, written by the server as 500 files (over the default query
//! file limit of 432), compacted with the default options, answers every full-table query
//! under the default limit exactly as it answered before with every file readable.

mod common;

use common::lab::{assert_same, copy_dir, Lab, DAY, HOUR, T0};

#[test]
fn a_history_longer_than_the_file_limit_3_10() {
    let test = "a_history_longer_than_the_file_limit_3_10";
    let Some(lab) = Lab::new(test, false, &[]) else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    let days = 500;
    let points: Vec<String> = (0..days)
        .map(|d| {
            format!(
                "daily,host=a f1={d}i,f2={}i {}",
                d * 7,
                T0 - (days - d) * DAY + 12 * HOUR
            )
        })
        .collect();
    lab.write_rounds(base.path(), "500 days", "daily", &[points.join("\n")]);
    let before = lab.answers(base.path(), "before", "daily", &["f1", "f2"]);
    let plan = lab.kompactor(base.path(), &["--dry-run"]);
    let t = &plan["nodes"][0]["tables"][0];
    assert_eq!(t["files_now"], days, "{test}: one file per day");
    assert_eq!(t["exceeds_limit_after"], false, "{test}: {t}");
    let copy = copy_dir(base.path());
    let report = lab.kompactor(copy.path(), &[]);
    let files_after = report["nodes"][0]["tables"][0]["files_after"]
        .as_u64()
        .unwrap();
    // At most two calendar years, a year of months, a month of days and the newest day's
    // pieces.
    assert!(files_after <= 64, "{test}: {files_after} files after");
    // Under the server's default file limit.
    let after = lab.answers_within(copy.path(), "after", "daily", &["f1", "f2"], None);
    assert_same(test, "after kompactor", &before, &after);
    lab.passed();
}
