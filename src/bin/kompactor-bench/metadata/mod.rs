//! `metadata`: a node with a deep history (many snapshots, millions of tiny files), and how
//! long the read-only commands and a compaction take on it, with their peak memory and how
//! many lines they print; optionally beside another build, the two taking turns.
//!
//! The first run of a command may find less of the node in the page cache than the later
//! ones: with a baseline build, the builds take turns, so both see that.

mod compactions;
mod reads;

use crate::dataset::{self, NODE};
use crate::measure::{self, Measured};
use clap::builder::BoolishValueParser;
use clap::ArgAction;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Options of `metadata`; each can come from the environment variable it names.
#[derive(clap::Args)]
pub struct MetaArgs {
    /// Days of history: snapshots = days x 144 x --files.
    #[arg(long, env = "META_DAYS", default_value_t = 87)]
    days: u64,

    /// Databases; file entries = snapshots x --dbs x --tables (one 1-row file per table and
    /// snapshot).
    #[arg(long, env = "META_DBS", default_value_t = 4)]
    dbs: u64,

    /// Tables per database.
    #[arg(long, env = "META_TABLES", default_value_t = 10)]
    tables: u64,

    /// Files per table and 10-minute window (one snapshot each).
    #[arg(long, env = "META_FILES", default_value_t = 4)]
    files: u64,

    /// Also time full compactions, each on a fresh hard-linked copy (the merge reads every
    /// file, so they take long; the report's phases show the rest).
    #[arg(long, env = "META_COMPACT", default_value_t = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    compact: bool,

    /// Compactions by each build.
    #[arg(long, env = "META_COMPACT_RUNS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    compact_runs: u32,

    /// Runs of each read-only command (dry run, status, verify) by each build; 0: none.
    #[arg(long, env = "META_READ_RUNS", default_value_t = 1)]
    read_runs: u32,

    /// Extra arguments of every kompactor command, split at spaces (e.g. "--load-window 1000").
    #[arg(
        long,
        env = "META_ARGS",
        allow_hyphen_values = true,
        default_value = ""
    )]
    kompactor_args: String,

    /// Another kompactor binary (copied out of the target dir after building an older
    /// revision): its runs alternate with this build's, both builds' medians are printed side
    /// by side with their ratio, and the read-only commands' outputs are compared.
    #[arg(long, env = "META_BASELINE", value_name = "BINARY")]
    baseline: Option<PathBuf>,

    /// Where the node is generated (kept, reused) [default: ~/.cache/kompactor-bench].
    #[arg(long, env = "BENCH_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// One kompactor binary under test.
struct Build {
    /// "this", or "baseline" (--baseline).
    label: &'static str,
    bin: PathBuf,
}

/// Where the runs' outputs go, and what every command is given.
struct Ctx {
    builds: Vec<Build>,
    extra: Vec<String>,
    logs: PathBuf,
}

impl Ctx {
    /// `build`'s command line: `args`, then the extra arguments.
    fn argv(&self, build: &Build, args: Vec<OsString>) -> Vec<OsString> {
        let mut argv = vec![build.bin.clone().into_os_string()];
        argv.extend(args);
        argv.extend(self.extra.iter().map(OsString::from));
        argv
    }

    /// Runs `argv` as `name` (its output in `<logs>/<name>.out`) and prints a line of figures.
    fn measure(&self, name: &str, argv: &[OsString]) -> Result<Measured, String> {
        let out = self.out(name);
        let m = measure::run(argv, &out)?;
        let lines = std::fs::read(&out).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        let (wall, rss) = (format!("{:.2}", m.wall), m.rss_mib());
        println!(
            "{name:<28} {wall:>9} s {rss:>9.1} MiB {lines:>8} lines   exit {}",
            m.exit
        );
        if !m.ok() {
            for line in measure::excerpt(&out) {
                println!("     | {line}");
            }
        }
        Ok(m)
    }

    /// Where the run `name` writes its output.
    fn out(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{}.out", name.replace(' ', "-")))
    }
}

/// Runs the `metadata` benchmark; false when a run failed.
pub fn run(a: &MetaArgs) -> Result<bool, String> {
    let mut builds = vec![Build {
        label: "this",
        bin: crate::sibling("kompactor")?,
    }];
    if let Some(bin) = &a.baseline {
        if !bin.is_file() {
            return Err(format!(
                "--baseline (META_BASELINE) {} is not a file",
                bin.display()
            ));
        }
        builds.insert(
            0,
            Build {
                label: "baseline",
                bin: bin.clone(),
            },
        );
    }
    let dir = dataset::bench_dir(a.dir.as_deref())?;
    let ds = generate(a, &dir)?;
    let logs = tempfile::Builder::new()
        .prefix("kompactor-bench-metadata.")
        .tempdir()
        .map_err(|e| format!("cannot create a log directory: {e}"))?
        .keep();
    let ctx = Ctx {
        builds,
        extra: a
            .kompactor_args
            .split_whitespace()
            .map(String::from)
            .collect(),
        logs,
    };
    let mut ok = true;
    if a.read_runs > 0 {
        ok &= reads::run(&ctx, &ds, a.read_runs)?;
    }
    if a.compact {
        ok &= compactions::run(&ctx, &ds, &dir, a.compact_runs)?;
    }
    Ok(ok)
}

/// The node (generated once), and what it holds.
fn generate(a: &MetaArgs, dir: &Path) -> Result<PathBuf, String> {
    let gen_args = format!(
        "--days {} --dbs {} --tables {} --files-per-window {f} --series {f} --interval 10m --overwrite-every 0 --seed 42 --quiet",
        a.days,
        a.dbs,
        a.tables,
        f = a.files
    );
    let gen_args: Vec<String> = gen_args.split(' ').map(String::from).collect();
    let name = format!("meta-d{}-b{}-t{}-f{}", a.days, a.dbs, a.tables, a.files);
    let ds = dataset::ensure(dir, &name, &gen_args, false)?;
    let node = ds.join(NODE);
    let count = |sub: &str, suffix: &str| {
        let files = walkdir::WalkDir::new(node.join(sub)).into_iter().flatten();
        let files = files.filter(|e| {
            e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(suffix)
        });
        files.fold((0u64, 0u64), |(n, bytes), e| {
            (n + 1, bytes + e.metadata().map_or(0, |m| m.len()))
        })
    };
    let (snapshots, snapshot_bytes) = count("snapshots", ".info.json");
    let (_, checkpoint_bytes) = count("snapshot-checkpoints", "");
    let (parquet, _) = count("dbs", ".parquet");
    let mb = (snapshot_bytes + checkpoint_bytes) as f64 / 1e6;
    println!("   {snapshots} snapshots, {parquet} Parquet files, {mb:.0} MB of snapshots and checkpoints");
    Ok(ds)
}
