//! Full compactions of the node with the default options, each on a fresh hard-linked copy,
//! by each build in turn; the phases of each from its report, and their medians.

use super::Ctx;
use crate::dataset::{self, Scratch, NODE};
use crate::print::Table;
use crate::reports::{self, Phases};
use crate::stats::{fixed, median};
use std::path::Path;

/// Runs `runs` compactions by each build; false when one failed.
pub fn run(ctx: &Ctx, ds: &Path, dir: &Path, runs: u32) -> Result<bool, String> {
    let copy = Scratch(dir.join(format!("meta-copy-{}", std::process::id())));
    let labels: Vec<&str> = ctx.builds.iter().map(|b| b.label).collect();
    println!(
        "== full compactions (defaults) on hard-linked copies: {runs} of each of: {}",
        labels.join(" ")
    );
    let mut phases: Vec<(&str, Phases)> = Vec::new();
    let mut ok = true;
    for i in 1..=runs {
        for build in &ctx.builds {
            // Hard links: kompactor never writes into a file it did not create (new files
            // and metadata are written under new names and renamed), so the dataset stays
            // as it was.
            dataset::remove(&copy.0)?;
            dataset::copy(ds, &copy.0, true)?;
            let args = vec![copy.0.clone().into(), "--hosts".into(), NODE.into()];
            let m = ctx.measure(
                &format!("compaction {} {i}", build.label),
                &ctx.argv(build, args),
            )?;
            if !m.ok() {
                ok = false;
                continue;
            }
            match reports::run_report(&copy.0) {
                Ok(r) => {
                    let p = r.phases;
                    println!(
                        "   phases: read and plan {:.1} s, merge {:.1} s, commit {:.1} s; non-merge work {:.1} s",
                        p.read_and_plan,
                        p.merge,
                        p.commit,
                        p.read_and_plan + p.commit
                    );
                    let (before, after) = r.files();
                    println!(
                        "   files {before} -> {after} (largest table {} files); {} snapshot(s) rewritten",
                        r.largest_table(),
                        r.snapshots_rewritten()
                    );
                    phases.push((build.label, p));
                }
                Err(e) => {
                    println!("   no phases: {e}");
                    ok = false;
                }
            }
        }
    }
    medians(&labels, &phases, runs);
    Ok(ok)
}

/// Each build's median phases; "non-merge work" is reading and planning plus the commit.
fn medians(labels: &[&str], phases: &[(&str, Phases)], runs: u32) {
    println!("== medians of {runs} compaction(s) of each build, in seconds");
    let t = Table::new("", &[10, 14, 10, 10, 16]);
    t.row(&[
        "build",
        "read and plan",
        "merge",
        "commit",
        "non-merge work",
    ]);
    for label in labels {
        let mine: Vec<Phases> = phases
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, p)| *p)
            .collect();
        let of = |f: fn(&Phases) -> f64| fixed(median(&mine.iter().map(f).collect::<Vec<_>>()), 2);
        t.row(&[
            label.to_string(),
            of(|p| p.read_and_plan),
            of(|p| p.merge),
            of(|p| p.commit),
            of(|p| p.read_and_plan + p.commit),
        ]);
    }
}
