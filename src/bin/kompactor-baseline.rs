//! kompactor-baseline: the floor kompactor's merge is measured against.
//!
//! It plans like kompactor (same discovery, same groups: every window with two or more live
//! files, `--min-age 0`, no row cap) and then, per group, runs only the bare DuckDB statement
//! `COPY (SELECT * FROM read_parquet([inputs], union_by_name = true) ORDER BY <tags>, time)
//! TO '<tmp>/<n>.parquet' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)` (the same
//! codec and level kompactor writes, the server's): no deduplication, no type
//! casts, no verification, no fsync, no metadata. It sets up glibc's allocator as kompactor
//! does (`heap::tune`), so that both are measured with the same malloc. The
//! outputs go to a temporary directory inside the data dir (same file system as
//! kompactor's) that is deleted at the end. Nothing else under the data dir is touched.
//!
//! The ORDER BY needs the tag columns: they are taken from the `ARROW:schema` of one input per
//! group (the newest, which has every column the table had so far), the only footer read.

use clap::Parser;
use duckdb::Connection;
use kompactor::format::ids::Nanos;
use kompactor::format::parquet::{read_footer, sql_ident, sql_str, ColumnType};
use kompactor::pipeline::discover::discover_node;
use kompactor::pipeline::plan::{plan_node, Group, PlanOptions, Tiers, Width};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const ABOUT: &str = "The benchmark floor: per planned group, only a bare DuckDB sort-and-write (no dedup, no verification, no commit).

Groups are planned as `kompactor --window <W> --min-age 0 --writer-reach 0 --max-rows-per-file <unlimited>` would plan them.
Outputs are written to a temporary directory in the data dir and deleted at the end.";

#[derive(Parser, Debug)]
#[command(name = "kompactor-baseline", about = ABOUT)]
struct Args {
    /// The data dir (as given to kompactor).
    #[arg(value_name = "DATA_DIR")]
    data_dir: PathBuf,

    /// The node to work on.
    #[arg(long, alias = "hosts", default_value = "node0")]
    node: String,

    /// Compaction window, as kompactor's --window (e.g. 10m, 1h, 1d).
    #[arg(long, default_value = "1h", value_parser = Width::parse)]
    window: Width,

    /// DuckDB worker threads (default: DuckDB's, the number of CPUs).
    #[arg(long)]
    threads: Option<u64>,

    /// DuckDB memory limit, e.g. 256MB (default: DuckDB's, 80% of RAM).
    #[arg(long)]
    memory_limit: Option<String>,

    /// Only print the plan's totals (`groups=… files=… rows=… bytes=…`) and exit.
    #[arg(long)]
    plan_only: bool,

    /// Print one line per group.
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kompactor-baseline: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let node = discover_node(&args.data_dir, &args.node).map_err(|e| e.to_string())?;
    let opts = PlanOptions {
        tiers: Tiers::single(args.window),
        min_age: Nanos(0),
        max_rows_per_file: u64::MAX,
        include_hidden: false,
        writer_reach: Some(Nanos(0)),
    };
    let plans = plan_node(&node, &opts, &Default::default(), "baseline");
    let groups: Vec<_> = plans.iter().flat_map(|p| &p.groups).collect();
    let files: usize = groups.iter().map(|g| g.inputs.len()).sum();
    let rows: u64 = groups.iter().map(|g| g.rows).sum();
    let bytes: u64 = groups.iter().map(|g| g.bytes).sum();
    if args.plan_only {
        println!(
            "groups={} files={files} rows={rows} bytes={bytes}",
            groups.len()
        );
        return Ok(());
    }

    let tmp = tempfile::Builder::new()
        .prefix(".kompactor-baseline-")
        .tempdir_in(&args.data_dir)
        .map_err(|e| {
            format!(
                "{}: could not create a temporary directory: {e}",
                args.data_dir.display()
            )
        })?;
    let conn = open_duckdb(args, tmp.path())?;
    let mut out_bytes = 0u64;
    for (i, g) in groups.iter().enumerate() {
        out_bytes += sort_and_write(args, &conn, i, g, tmp.path())?;
    }
    drop(conn);
    tmp.close()
        .map_err(|e| format!("could not remove the temporary directory: {e}"))?;
    println!(
        "baseline: {} groups, {files} input files, {rows} rows, {bytes} bytes in, {out_bytes} bytes out, {:.2}s",
        groups.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// DuckDB set up as the options say, spilling into `tmp`, with the allocator tuned as
/// kompactor's engine tunes it.
fn open_duckdb(args: &Args, tmp: &Path) -> Result<Connection, String> {
    // The same allocator settings as kompactor's engine, so that the floor is measured
    // with them too (kompactor's default budget when no limit is given).
    let budget = kompactor::units::parse_size(
        args.memory_limit
            .as_deref()
            .unwrap_or(kompactor::units::DEFAULT_MEMORY_LIMIT),
    )?;
    kompactor::heap::tune(budget);
    let conn = Connection::open_in_memory().map_err(|e| format!("DuckDB: {e}"))?;
    let mut settings = format!(
        "SET temp_directory = {}; SET preserve_insertion_order = true;",
        sql_str(&tmp.join("spill").to_string_lossy())
    );
    if let Some(t) = args.threads {
        settings += &format!(" SET threads = {t};");
    }
    if let Some(m) = &args.memory_limit {
        settings += &format!(" SET memory_limit = {};", sql_str(m));
    }
    conn.execute_batch(&settings)
        .map_err(|e| format!("DuckDB: {e}"))?;
    Ok(conn)
}

/// Sorts the rows of group `i` by series key and time into `<tmp>/<i>.parquet`; the bytes
/// written.
fn sort_and_write(
    args: &Args,
    conn: &Connection,
    i: usize,
    g: &Group,
    tmp: &Path,
) -> Result<u64, String> {
    let paths: Vec<PathBuf> = g
        .inputs
        .iter()
        .map(|f| f.entry.path.under(&args.data_dir))
        .collect();
    let order: Vec<String> = sort_order(g, &paths)?
        .iter()
        .map(|c| sql_ident(c))
        .collect();
    let list: Vec<String> = paths
        .iter()
        .map(|p| sql_str(&p.to_string_lossy()))
        .collect();
    let out = tmp.join(format!("{i}.parquet"));
    let t0 = Instant::now();
    conn.execute_batch(&format!(
        "COPY (SELECT * FROM read_parquet([{}], union_by_name = true) ORDER BY {}) TO {} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {})",
        list.join(", "),
        order.join(", "),
        sql_str(&out.to_string_lossy()),
        kompactor::pipeline::merge::ZSTD_LEVEL
    ))
    .map_err(|e| format!("group {i} ({} files): DuckDB: {e}", g.inputs.len()))?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    if args.verbose {
        eprintln!(
            "group {i}: table {} window {}: {} files, {} rows, {} -> {} bytes in {:.3}s",
            g.table,
            g.window_start.to_rfc3339(),
            g.inputs.len(),
            g.rows,
            g.bytes,
            size,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(size)
}

/// The group's sort columns: the series key and the other tags of its newest input (which
/// has every column the table had so far), then time.
fn sort_order(g: &Group, paths: &[PathBuf]) -> Result<Vec<String>, String> {
    let newest = g
        .inputs
        .iter()
        .zip(paths)
        .max_by_key(|(f, _)| f.entry.id)
        .map(|(_, p)| p.clone())
        .expect("a group has inputs");
    let footer = read_footer(&newest).map_err(|e| e.to_string())?;
    let mut order: Vec<String> = footer.series_key.clone().unwrap_or_default();
    for c in &footer.columns {
        if c.ty == ColumnType::Tag && !order.contains(&c.name) {
            order.push(c.name.clone());
        }
    }
    order.push("time".to_string());
    Ok(order)
}
