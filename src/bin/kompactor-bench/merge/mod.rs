//! `merge`: kompactor against kompactor-baseline, the floor (a bare DuckDB sort-and-write of
//! the same groups: no dedup, no verification, no commit), on a generated data dir; and
//! `prepare` followed by the compaction that commits it, the server's downtime.
//!
//! The tools take turns, each run on a fresh copy of the dataset. No copy is deleted before
//! the end: ext4 allocates inodes slowly for about half a minute after thousands were freed,
//! which would charge the harness's own clean-up to whichever tool creates more files
//! (kompactor's trash and staged metadata) rather than measure the tools.

mod summary;

use crate::dataset::{self, Scratch, NODE};
use crate::measure::{self, Measured};
use crate::{argv, reports};
use clap::builder::{BoolishValueParser, FalseyValueParser};
use clap::ArgAction;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `merge`; each can come from the environment variable it names.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// Run the big-window scenario instead: one 1d window of --big-rows rows (1 table, 1 day),
    /// both tools under --memory-limit.
    #[arg(long, alias = "big-window", env = "BENCH_BIGWINDOW", value_parser = FalseyValueParser::new())]
    bigwindow: bool,

    /// Rows to generate (normal scenario: 1 db, 2 tables, 2 days).
    #[arg(long, env = "BENCH_ROWS", default_value_t = 10_000_000)]
    rows: u64,

    /// Runs of each tool [default: 3; big-window scenario: 1].
    #[arg(long, env = "BENCH_RUNS", value_parser = clap::value_parser!(u32).range(1..))]
    runs: Option<u32>,

    /// --window of the normal scenario.
    #[arg(long, env = "BENCH_WINDOW", default_value = "1h")]
    window: String,

    /// Generator seed.
    #[arg(long, env = "BENCH_SEED", default_value_t = 42)]
    seed: u64,

    /// Where datasets (kept, reused) and scratch copies live; it needs room for 2 x runs
    /// copies (3 x with prepare) [default: ~/.cache/kompactor-bench].
    #[arg(long, env = "BENCH_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Regenerate the dataset even if it exists.
    #[arg(long, env = "BENCH_REGEN", value_parser = FalseyValueParser::new())]
    regen: bool,

    /// Keep the per-run logs (always kept when a run fails).
    #[arg(long, env = "BENCH_KEEP_LOGS", value_parser = FalseyValueParser::new())]
    keep_logs: bool,

    /// Extra kompactor arguments, split at spaces (e.g. "--threads 2").
    #[arg(
        long,
        env = "BENCH_KOMPACTOR_ARGS",
        allow_hyphen_values = true,
        default_value = ""
    )]
    kompactor_args: String,

    /// Extra kompactor-baseline arguments, split at spaces (e.g. "--threads 2").
    #[arg(
        long,
        env = "BENCH_BASELINE_ARGS",
        allow_hyphen_values = true,
        default_value = ""
    )]
    baseline_args: String,

    /// Rows of the big-window dataset.
    #[arg(long, env = "BENCH_BIG_ROWS", default_value_t = 20_000_000)]
    big_rows: u64,

    /// --memory-limit of both tools in the big-window scenario.
    #[arg(long, env = "BENCH_MEMORY_LIMIT", default_value = "256MB")]
    memory_limit: String,

    /// --threads of both tools in the big-window scenario [default: not passed].
    #[arg(long, env = "BENCH_THREADS")]
    threads: Option<u32>,

    /// Normal scenario: also time `kompactor prepare` and the compaction that commits what it
    /// prepared (the server's downtime), on one copy, and check that every table ends as after
    /// the full run.
    #[arg(long, env = "BENCH_PREPARE", default_value_t = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    prepare: bool,
}

/// What one invocation measures, settled from the options.
struct Scenario {
    name: &'static str,
    runs: u32,
    window: String,
    gen_args: Vec<String>,
    k_extra: Vec<String>,
    b_extra: Vec<String>,
    two_step: bool,
}

impl Scenario {
    /// The scenario the options ask for.
    fn of(a: &MergeArgs) -> Scenario {
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let (mut k_extra, mut b_extra) = (Vec::new(), Vec::new());
        let s = if a.bigwindow {
            let mut limits = vec!["--memory-limit".to_string(), a.memory_limit.clone()];
            if let Some(t) = a.threads {
                limits.extend(["--threads".to_string(), t.to_string()]);
            }
            k_extra.clone_from(&limits);
            b_extra = limits;
            let gen = format!(
                "--rows {} --dbs 1 --tables 1 --days 1 --seed {}",
                a.big_rows, a.seed
            );
            ("big window", a.runs.unwrap_or(1), "1d".to_string(), gen)
        } else {
            let gen = format!(
                "--rows {} --dbs 1 --tables 2 --days 2 --seed {}",
                a.rows, a.seed
            );
            ("normal", a.runs.unwrap_or(3), a.window.clone(), gen)
        };
        k_extra.extend(words(&a.kompactor_args));
        b_extra.extend(words(&a.baseline_args));
        Scenario {
            name: s.0,
            runs: s.1,
            window: s.2,
            gen_args: words(&s.3),
            k_extra,
            b_extra,
            two_step: !a.bigwindow && a.prepare,
        }
    }
}

/// The groups both tools are given, as kompactor-baseline plans them.
struct Plan {
    groups: u64,
    files: u64,
    rows: u64,
    bytes: u64,
}

impl Plan {
    /// The plan of `ds` with `window`, from `kompactor-baseline --plan-only`.
    fn read(baseline: &Path, ds: &Path, window: &str) -> Result<Plan, String> {
        let out = Command::new(baseline)
            .arg(ds)
            .args(["--node", NODE, "--window", window, "--plan-only"])
            .output()
            .map_err(|e| format!("cannot start {}: {e}", baseline.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            let prefix = format!("{name}=");
            let value = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&prefix));
            value.and_then(|v| v.parse().ok()).ok_or_else(|| {
                let err = String::from_utf8_lossy(&out.stderr);
                format!(
                    "kompactor-baseline --plan-only gave no {name} ({}): {}",
                    out.status,
                    err.trim()
                )
            })
        };
        Ok(Plan {
            groups: field("groups")?,
            files: field("files")?,
            rows: field("rows")?,
            bytes: field("bytes")?,
        })
    }
}

/// The runs so far, by what was run ("kompactor", "baseline", "prepare", "commit").
struct Bench {
    kompactor: PathBuf,
    baseline: PathBuf,
    logs: PathBuf,
    work: PathBuf,
    runs: BTreeMap<&'static str, Vec<Measured>>,
    /// Why kompactor ran without the extra arguments, when it rejected them.
    k_note: Option<String>,
}

/// Runs the `merge` benchmark; false when a run failed (its figures are left out).
pub fn run(a: &MergeArgs) -> Result<bool, String> {
    let mut s = Scenario::of(a);
    let kompactor = crate::sibling("kompactor")?;
    let baseline = crate::sibling("kompactor-baseline")?;
    let dir = dataset::bench_dir(a.dir.as_deref())?;
    let name = format!("data{}", dataset::args_key(&s.gen_args));
    let ds = dataset::ensure(&dir, &name, &s.gen_args, a.regen)?;
    let plan = Plan::read(&baseline, &ds, &s.window)?;
    println!(
        "== plan (window {}, --min-age 0): {} groups, {} input files, {} rows, {} bytes",
        s.window, plan.groups, plan.files, plan.rows, plan.bytes
    );
    if plan.groups == 0 {
        return Err(format!(
            "nothing to merge in {} with --window {}",
            ds.display(),
            s.window
        ));
    }
    let logs = tempfile::Builder::new()
        .prefix("logs-")
        .tempdir_in(&dir)
        .map_err(|e| format!("{}: cannot create a log directory: {e}", dir.display()))?;
    let work = Scratch(dir.join(format!("work-{}", std::process::id())));
    std::fs::create_dir_all(&work.0).map_err(|e| format!("{}: {e}", work.0.display()))?;
    let mut bench = Bench {
        kompactor,
        baseline,
        logs: logs.path().to_path_buf(),
        work: work.0.clone(),
        runs: BTreeMap::new(),
        k_note: None,
    };
    bench.alternate(&mut s, &ds)?;
    let same_tables = (s.two_step && bench.all_ok()).then(|| bench.same_tables());
    summary::print(&bench, &s, &plan, same_tables.as_ref());
    let ok = bench.all_ok() && same_tables.as_ref().is_none_or(|r| r.is_ok());
    if a.keep_logs || !ok {
        println!("logs: {}", logs.keep().display());
    }
    Ok(ok)
}

impl Bench {
    /// The runs of the scenario, the tools taking turns.
    fn alternate(&mut self, s: &mut Scenario, ds: &Path) -> Result<(), String> {
        println!(
            "== {} scenario: {} run(s) each, alternating; logs in {}",
            s.name,
            s.runs,
            self.logs.display()
        );
        let w = s.window.clone();
        println!(
            "   kompactor: kompactor <copy> --hosts {NODE} --window {w} --min-age 0 --writer-reach 0 {}",
            s.k_extra.join(" ")
        );
        println!(
            "   baseline:  kompactor-baseline <copy> --node {NODE} --window {w} {}",
            s.b_extra.join(" ")
        );
        for i in 1..=s.runs {
            let copy = self.copy(ds, "kompactor", i)?;
            let mut m = self.measure("kompactor", i, self.k_argv(&copy, s))?;
            if let Some(note) = self.rejected(&m, i, &s.k_extra) {
                println!("   NOTE: {note}");
                self.k_note = Some(note);
                s.k_extra.clear();
                dataset::remove(&copy)?;
                let copy = self.copy(ds, "kompactor", i)?;
                m = self.measure("kompactor", i, self.k_argv(&copy, s))?;
            }
            self.record("kompactor", m);
            let copy = self.copy(ds, "baseline", i)?;
            let mut argv = argv![&self.baseline, &copy, "--node", NODE, "--window", &w];
            argv.extend(s.b_extra.iter().map(OsString::from));
            let m = self.measure("baseline", i, argv)?;
            self.record("baseline", m);
            if s.two_step {
                // prepare (the server running: not downtime), then the compaction that
                // commits it, on the same copy.
                let copy = self.copy(ds, "prepare", i)?;
                let mut argv = self.k_argv(&copy, s);
                argv.insert(1, "prepare".into());
                let m = self.measure("prepare", i, argv)?;
                self.record("prepare", m);
                let m = self.measure("commit", i, self.k_argv(&copy, s))?;
                self.record("commit", m);
            }
        }
        Ok(())
    }

    /// kompactor's full run on `copy`.
    fn k_argv(&self, copy: &Path, s: &Scenario) -> Vec<OsString> {
        let w = &s.window;
        let mut argv = argv![&self.kompactor, copy, "--hosts", NODE, "--window", w];
        argv.extend(argv!["--min-age", "0", "--writer-reach", "0"]);
        argv.extend(s.k_extra.iter().map(OsString::from));
        argv
    }

    /// A fresh copy of the dataset for run `i` of `name`.
    fn copy(&self, ds: &Path, name: &str, i: u32) -> Result<PathBuf, String> {
        let copy = self.work.join(format!("{name}-{i}"));
        dataset::copy(ds, &copy, false)?;
        Ok(copy)
    }

    /// Runs `argv` as run `i` of `name`, and prints its figures.
    fn measure(&self, name: &str, i: u32, argv: Vec<OsString>) -> Result<Measured, String> {
        let log = self.log(name, i);
        let m = measure::run(&argv, &log)?;
        println!(
            "   {name:<10} run {i}: wall {:7.2}s  user {:7.2}s  sys {:6.2}s  peak RSS {:7.1} MB  exit {}",
            m.wall,
            m.user,
            m.sys,
            m.rss_mib(),
            m.exit
        );
        if !m.ok() {
            println!(
                "   {name} run {i} FAILED (exit {}); last lines of {}:",
                m.exit,
                log.display()
            );
            for line in measure::excerpt(&log) {
                println!("     | {line}");
            }
        }
        Ok(m)
    }

    /// Where run `i` of `name` writes its output.
    fn log(&self, name: &str, i: u32) -> PathBuf {
        self.logs.join(format!("{name}-{i}.log"))
    }

    /// Why kompactor refused `extra` (an older build given options it lacks), when it did.
    fn rejected(&self, m: &Measured, i: u32, extra: &[String]) -> Option<String> {
        if m.exit != 2 || extra.is_empty() {
            return None;
        }
        let log = std::fs::read_to_string(self.log("kompactor", i)).unwrap_or_default();
        let patterns = ["unexpected argument", "unrecognized", "invalid value"];
        let line = log
            .lines()
            .find(|l| patterns.iter().any(|p| l.contains(p)))?;
        Some(format!(
            "kompactor rejected: {} ({}); it ran WITHOUT them, so its peak RSS is not bounded by a memory limit.",
            extra.join(" "),
            line.trim_start_matches("error: ")
        ))
    }

    /// Keeps the figures of a run of `name`.
    fn record(&mut self, name: &'static str, m: Measured) {
        self.runs.entry(name).or_default().push(m);
    }

    /// Whether every run so far succeeded.
    fn all_ok(&self) -> bool {
        self.runs.values().flatten().all(Measured::ok)
    }

    /// Whether every table holds the same (live files, rows, time range) after the first
    /// full run as after the first prepare + commit; the tests compare the rows themselves.
    fn same_tables(&self) -> Result<(), String> {
        let full = reports::tables(&self.kompactor, &self.work.join("kompactor-1"))?;
        let two_step = reports::tables(&self.kompactor, &self.work.join("prepare-1"))?;
        if full.is_empty() {
            return Err("status lists no table".into());
        }
        match full.iter().zip(&two_step).find(|(f, t)| f != t) {
            Some((f, t)) => Err(format!("full run `{f}`, prepare + commit `{t}`")),
            None if full.len() != two_step.len() => Err(format!(
                "{} tables after the full run, {} after prepare + commit",
                full.len(),
                two_step.len()
            )),
            None => Ok(()),
        }
    }
}
