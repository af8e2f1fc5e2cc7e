//! The read-only commands (dry run, `status`, `verify`) on the node, by each build in turn;
//! their medians, and whether the builds print the same.

use super::Ctx;
use crate::dataset::NODE;
use crate::measure::Measured;
use crate::print::Table;
use crate::stats::{median, ratio, times};
use std::collections::BTreeMap;
use std::path::Path;

/// The commands: label, and arguments before the data dir and after it.
const COMMANDS: [(&str, &[&str], &[&str]); 3] = [
    ("dry run", &[], &["--dry-run"]),
    ("status", &["status"], &[]),
    ("verify", &["verify"], &[]),
];

/// Runs each command `runs` times by each build; false when a run failed.
pub fn run(ctx: &Ctx, ds: &Path, runs: u32) -> Result<bool, String> {
    let labels: Vec<&str> = ctx.builds.iter().map(|b| b.label).collect();
    println!(
        "== read-only commands on {}, {runs} run(s) of each of: {} (logs in {})",
        ds.display(),
        labels.join(" "),
        ctx.logs.display()
    );
    println!(
        "{:<28} {:>11} {:>12} {:>14}",
        "", "wall", "peak RSS", "output"
    );
    let mut figures: BTreeMap<(&str, &str), Vec<Measured>> = BTreeMap::new();
    for i in 1..=runs {
        for build in &ctx.builds {
            for (command, before, after) in COMMANDS {
                let mut args: Vec<_> = before.iter().map(Into::into).collect();
                args.extend([ds.into(), "--hosts".into(), NODE.into()]);
                args.extend(after.iter().map(Into::into));
                let name = format!("{command} {} {i}", build.label);
                let m = ctx.measure(&name, &ctx.argv(build, args))?;
                figures.entry((build.label, command)).or_default().push(m);
            }
        }
    }
    medians(ctx, &figures, runs);
    if let [a, b] = labels.as_slice() {
        for (command, _, _) in COMMANDS {
            let (x, y) = (
                ctx.out(&format!("{command} {a} 1")),
                ctx.out(&format!("{command} {b} 1")),
            );
            if output(&x) == output(&y) {
                println!("   {command}: both builds print the same output");
            } else {
                println!(
                    "   {command}: the outputs DIFFER (see {} and {})",
                    x.display(),
                    y.display()
                );
            }
        }
    }
    Ok(figures.values().flatten().all(Measured::ok))
}

/// Medians of each build's wall time and peak RSS per command, and with two builds their
/// ratio (this build over the baseline).
fn medians(ctx: &Ctx, figures: &BTreeMap<(&str, &str), Vec<Measured>>, runs: u32) {
    println!("== medians of {runs} run(s): wall seconds and peak RSS MiB");
    let mut header = vec!["command".to_string()];
    for b in &ctx.builds {
        header.extend([format!("{} s", b.label), format!("{} MiB", b.label)]);
    }
    if ctx.builds.len() == 2 {
        header.extend(["ratio s".to_string(), "ratio MiB".to_string()]);
    }
    let widths: Vec<usize> = header.iter().map(|h| h.len().max(10)).collect();
    let t = Table::new("", &widths);
    t.row(&header);
    for (command, _, _) in COMMANDS {
        let mut row = vec![command.to_string()];
        let mut pairs = Vec::new();
        for b in &ctx.builds {
            let runs = figures
                .get(&(b.label, command))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let ok: Vec<&Measured> = runs.iter().filter(|m| m.ok()).collect();
            let wall = median(&ok.iter().map(|m| m.wall).collect::<Vec<_>>());
            let rss = median(&ok.iter().map(|m| m.rss_mib()).collect::<Vec<_>>());
            row.extend([crate::stats::fixed(wall, 2), crate::stats::fixed(rss, 1)]);
            pairs.push((wall, rss));
        }
        if let [(bw, br), (tw, tr)] = pairs.as_slice() {
            row.extend([times(ratio(*tw, *bw), 2), times(ratio(*tr, *br), 2)]);
        }
        t.row(&row);
    }
}

/// A command's output without the lines that move from run to run: the dry run's disk line
/// gives the free space.
fn output(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.contains(" free on "))
            .map(String::from)
            .collect(),
    )
}
