//! kompactor-bench: how fast kompactor is on generated data dirs, in figures people can compare
//! (scripts/bench.sh and scripts/bench-metadata.sh run it).
//!
//! `merge` times kompactor against kompactor-baseline, the floor, and `prepare` + commit, the
//! server's downtime; `metadata` times the read-only commands and a compaction on a deep
//! history, optionally beside another build. Every command runs as a child whose wall time,
//! CPU time and peak memory are measured, and medians over the runs are printed.

mod dataset;
mod measure;
mod merge;
mod metadata;
mod print;
mod reports;
mod stats;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

const ABOUT: &str =
    "Benchmarks of kompactor on generated data dirs: medians of alternating runs, each measured \
(wall time, user + system CPU, peak RSS).

Options can also come from the environment (BENCH_* for `merge`, META_* for `metadata`), as the
scripts scripts/bench.sh and scripts/bench-metadata.sh document.";

#[derive(Parser)]
#[command(name = "kompactor-bench", about = ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// kompactor against kompactor-baseline (a bare DuckDB sort-and-write of the same groups),
    /// and the downtime of prepare + commit (scripts/bench.sh).
    Merge(merge::MergeArgs),
    /// The read-only commands and a compaction on a node with a deep history, optionally
    /// beside another build (scripts/bench-metadata.sh).
    Metadata(metadata::MetaArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Merge(a) => merge::run(a),
        Command::Metadata(a) => metadata::run(a),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        // The figures are printed; a run that failed is said there.
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kompactor-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A program built beside this one (kompactor, kompactor-baseline, kompactor-gen).
fn sibling(name: &str) -> Result<PathBuf, String> {
    let me =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let path = me.with_file_name(name);
    if !path.is_file() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release --features dev-tools`",
            path.display()
        ));
    }
    Ok(path)
}
