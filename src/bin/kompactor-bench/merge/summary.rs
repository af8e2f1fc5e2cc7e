//! What `merge` prints at the end: medians of the tools side by side with their ratio, the
//! downtime of prepare + commit against the full run, and what failed.

use super::{Bench, Plan, Scenario};
use crate::measure::Measured;
use crate::print::Table;
use crate::stats::{fixed, median, ratio, times};
use std::process::Command;

impl Bench {
    /// The median of `f` over the successful runs of `name`.
    fn median(&self, name: &str, f: fn(&Measured) -> f64) -> Option<f64> {
        let runs = self.runs.get(name).map(Vec::as_slice).unwrap_or_default();
        median(&runs.iter().filter(|m| m.ok()).map(f).collect::<Vec<_>>())
    }
}

/// Prints the medians; `same_tables` is the check of prepare + commit against the full run,
/// when it was made.
pub fn print(b: &Bench, s: &Scenario, plan: &Plan, same_tables: Option<&Result<(), String>>) {
    println!();
    println!(
        "== medians of {} run(s): {} scenario, window {}, {} files / {} rows / {:.1} MB in {} groups",
        s.runs,
        s.name,
        s.window,
        plan.files,
        plan.rows,
        plan.bytes as f64 / 1e6,
        plan.groups
    );
    println!(
        "   (kompactor {}, {} CPU(s), {} RAM)",
        revision(),
        cpus(),
        ram()
    );
    tools(b, plan);
    if s.two_step {
        downtime(b, same_tables);
    }
    for name in ["kompactor", "baseline", "prepare", "commit"] {
        let runs = b.runs.get(name).map(Vec::as_slice).unwrap_or_default();
        let failed: Vec<&Measured> = runs.iter().filter(|m| !m.ok()).collect();
        if let Some(last) = failed.last() {
            println!(
                "FAILED: {name}: {} of {} run(s) failed (last exit {}); medians are over the successful runs (logs: {})",
                failed.len(),
                runs.len(),
                last.exit,
                b.logs.display()
            );
        }
    }
    if let Some(note) = &b.k_note {
        println!();
        println!("NOTE: {note}");
    }
}

/// kompactor against the baseline. Throughput ratios are baseline over kompactor, so that
/// every ratio above 1 is kompactor's cost.
fn tools(b: &Bench, plan: &Plan) {
    let (kw, bw) = (
        b.median("kompactor", |m| m.wall),
        b.median("baseline", |m| m.wall),
    );
    let (kc, bc) = (
        b.median("kompactor", Measured::cpu),
        b.median("baseline", Measured::cpu),
    );
    let (kr, br) = (
        b.median("kompactor", Measured::rss_mib),
        b.median("baseline", Measured::rss_mib),
    );
    let per_second =
        |amount: f64, wall: Option<f64>, decimals| fixed(ratio(Some(amount), wall), decimals);
    let (rows, mb) = (plan.rows as f64, plan.bytes as f64 / 1e6);
    let t = Table::new("", &[28, 14, 14, 12]);
    t.row(&["", "kompactor", "baseline", "k/b"]);
    t.row(&[
        "wall time (s)",
        &fixed(kw, 2),
        &fixed(bw, 2),
        &times(ratio(kw, bw), 2),
    ]);
    t.row(&[
        "CPU time user+sys (s)",
        &fixed(kc, 2),
        &fixed(bc, 2),
        &times(ratio(kc, bc), 2),
    ]);
    let (krs, brs) = (per_second(rows, kw, 0), per_second(rows, bw, 0));
    t.row(&[
        "rows/s (input rows / wall)",
        &krs,
        &brs,
        &times(ratio(bw, kw), 2),
    ]);
    let (kmb, bmb) = (per_second(mb, kw, 1), per_second(mb, bw, 1));
    t.row(&["input MB/s", &kmb, &bmb, &times(ratio(bw, kw), 2)]);
    t.row(&[
        "peak RSS (MB)",
        &fixed(kr, 1),
        &fixed(br, 1),
        &times(ratio(kr, br), 2),
    ]);
}

/// The full run against prepare and the commit after it.
fn downtime(b: &Bench, same_tables: Option<&Result<(), String>>) {
    let kw = b.median("kompactor", |m| m.wall);
    println!();
    println!("== downtime: the server is stopped for the whole full run, or only for the commit after prepare");
    let t = Table::new("", &[40, 12, 14, 16]);
    t.row(&["", "wall (s)", "peak RSS (MB)", "x full run wall"]);
    let rows = [
        ("full offline run (all downtime)", "kompactor"),
        ("prepare (server running)", "prepare"),
        ("commit after prepare (all downtime)", "commit"),
    ];
    for (label, name) in rows {
        let w = b.median(name, |m| m.wall);
        let share = if name == "kompactor" {
            "1".to_string()
        } else {
            fixed(ratio(w, kw), 3)
        };
        t.row(&[
            label,
            &fixed(w, 2),
            &fixed(b.median(name, Measured::rss_mib), 1),
            &share,
        ]);
    }
    let verdict = match same_tables {
        None => "not compared (a run failed)".to_string(),
        Some(Ok(())) => "identical".to_string(),
        Some(Err(e)) => format!("DIFFERENT or not read: {e}"),
    };
    println!("   per table (live files, rows, min and max time), full run vs prepare + commit: {verdict}");
}

/// The commit this build is from (`+dirty` with uncommitted changes), or `?`.
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(out) if out.status.success() => {
            let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let clean = git(&["diff", "--quiet", "HEAD"]).is_some_and(|o| o.status.success());
            if clean {
                rev
            } else {
                format!("{rev}+dirty")
            }
        }
        _ => "?".to_string(),
    }
}

/// CPUs this process may use.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Total memory from /proc/meminfo, e.g. "24 GB".
fn ram() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse::<f64>().ok()
    });
    kib.map_or_else(
        || "? GB".to_string(),
        |k| format!("{:.0} GB", k / 1_048_576.0),
    )
}
