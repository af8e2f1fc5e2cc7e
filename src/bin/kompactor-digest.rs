//! kompactor-digest: what a node's tables hold, to compare before and after a run.
//!
//! For each table, the files the server loads (with `--all-listed`, also those its load
//! window hides), their rows, time range and kompactor's order-independent checksum over
//! every column of every row, read as they are (no deduplication: for generated nodes
//! without overwrites, equal digests mean every row is kept). Files are read a few thousand
//! at a time, so that a node of millions of files is digested in bounded memory.

use clap::Parser;
use duckdb::Connection;
use kompactor::format::parquet::{read_footers, sql_ident, sql_str};
use kompactor::pipeline::checksum::{checksum, Checksum};
use kompactor::pipeline::discover::discover_node;
use kompactor::pipeline::merge::TableSchema;
use std::path::PathBuf;
use std::process::ExitCode;

/// Files per query: DuckDB holds every file of a `read_parquet` list open at once.
const CHUNK: usize = 4096;

#[derive(Parser, Debug)]
#[command(
    name = "kompactor-digest",
    about = "Rows, time range and checksum of each table of a node"
)]
struct Args {
    /// The data dir.
    #[arg(value_name = "DATA_DIR")]
    data_dir: PathBuf,

    /// The node.
    #[arg(long, alias = "hosts", default_value = "node0")]
    node: String,

    /// Include the files the server's load window hides.
    #[arg(long)]
    all_listed: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let node = match discover_node(&a.data_dir, &a.node) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("kompactor-digest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let conn = Connection::open_in_memory().expect("DuckDB opens");
    let none = Vec::new();
    let keys: std::collections::BTreeSet<_> = node.live.keys().chain(node.hidden.keys()).collect();
    for key in keys {
        let mut files: Vec<_> = node.live.get(key).unwrap_or(&none).iter().collect();
        if a.all_listed {
            files.extend(node.hidden.get(key).unwrap_or(&none));
        }
        let paths: Vec<PathBuf> = files.iter().map(|f| f.path.under(&a.data_dir)).collect();
        let footers = read_footers(&paths).expect("footers read");
        let pairs: Vec<_> = files.iter().map(|f| f.id).zip(footers.iter()).collect();
        let schema = TableSchema::union(&pairs).expect("one schema");
        let mut c = Checksum::empty();
        for (paths, footers) in paths.chunks(CHUNK).zip(footers.chunks(CHUNK)) {
            // Every column of the table in every chunk: null where the chunk's files lack it,
            // as the whole table would read.
            let present: std::collections::HashSet<&str> = footers
                .iter()
                .flat_map(|f| f.columns.iter().map(|c| c.name.as_str()))
                .collect();
            let cols: Vec<String> = schema
                .columns
                .iter()
                .map(|c| {
                    let id = sql_ident(&c.name);
                    if present.contains(c.name.as_str()) {
                        id
                    } else {
                        format!("CAST(NULL AS {}) AS {id}", c.ty.duckdb_type())
                    }
                })
                .collect();
            let list: Vec<String> = paths
                .iter()
                .map(|p| sql_str(&p.to_string_lossy()))
                .collect();
            let source = format!(
                "(SELECT {} FROM read_parquet([{}], union_by_name = true))",
                cols.join(", "),
                list.join(", ")
            );
            c = c + checksum(&conn, &schema.columns, &source).expect("checksum");
        }
        println!(
            "table {key}: files={} rows={} min={} max={} checksum={}",
            files.len(),
            c.rows,
            c.min_time.to_rfc3339(),
            c.max_time.to_rfc3339(),
            c.hash_sum
        );
    }
    ExitCode::SUCCESS
}
