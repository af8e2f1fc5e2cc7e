//! The one DuckDB statement that writes the Parquet files of a batch of snapshots: every value
//! a function of the seed and the point's coordinates, so the same options give the same bytes.

use crate::shape::{Cfg, FileJob, Kind};
use crate::GEN1;
use kompactor::format::parquet::{encode_arrow_schema, sql_ident, sql_str, Column};
use std::path::Path;

/// Rows per row group of every file written.
const ROW_GROUP_SIZE: u64 = 100_000;
/// The `region` tag's values: one has a space and a non-ASCII letter.
const REGIONS: [&str; 6] = [
    "us-east-1",
    "us-west-2",
    "eu-central-1",
    "ap-south-1",
    "sa east ü",
    "af-south-1",
];

/// The `COPY` statement that writes the files of a batch of snapshots (each `events[e]`
/// holds one job per database and table, all of one window; every event of the batch
/// has the same kind and columns): one partitioned write into
/// `dir/e=<e>/db=<db>/t=<table>/`, since a statement per snapshot costs far more than
/// the bytes of a small one. The directories are reused, emptied of their files, from
/// one batch to the next: removing them would make ext4 allocate the next inodes slowly.
pub fn copy_sql(cfg: &Cfg, events: &[&[FileJob]], dir: &Path) -> String {
    let a = &cfg.args;
    let (window, kind) = (events[0][0].window, events[0][0].kind);
    let seed = a.seed;
    let iv = cfg.args.interval.0;
    let ppw = cfg.points_per_window;
    let start = cfg.start_ns;
    let windows: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(e, jobs)| format!("({e}::BIGINT, {}::BIGINT)", jobs[0].window))
        .collect();
    let h = |salt: &str| format!("hash({seed}, db, t, s, k, '{salt}')");
    let (first, step, over) = match kind {
        Kind::Base(g) => (g, a.files_per_window, false),
        Kind::Overwrite => (0, 1, true),
    };
    let n_series = (cfg.series - first).div_ceil(step);
    let filter = if over {
        format!("WHERE {} % 100 < {}", h("overwrite"), a.overwrite_pct)
    } else {
        String::new()
    };
    let (cols, key) = cfg.columns(window);
    let regions: Vec<String> = REGIONS.iter().map(|r| sql_str(r)).collect();
    let exprs: Vec<String> = cols
        .iter()
        .map(|c| {
            let e = column_expr(c, seed, over, &regions);
            format!("{e} AS {}", sql_ident(&c.name))
        })
        .collect();
    let kv = encode_arrow_schema(&cols, &key);
    // Host names are zero-padded and unique per series, so (s, tns) is each file's sort
    // order: series key, then time.
    format!(
        "COPY (SELECT e, db, t, {exprs} FROM (\
           SELECT e, db, t, s, w * {ppw} + j AS k, \
             {start} + w * {GEN1} + j * {iv} + (hash({seed}, db, t, s, 'offset') % {iv})::BIGINT AS tns \
           FROM (VALUES {windows}) ev(e, w), range(1, {dbs_end}) d(db), range(0, {tables}) tb(t), \
                (SELECT {first} + {step} * (i // {ppw}) AS s, i % {ppw} AS j \
                 FROM range(0, {n}) r(i))) {filter} ORDER BY e, db, t, s, tns) \
         TO {dir} (FORMAT parquet, PARTITION_BY (e, db, t), OVERWRITE_OR_IGNORE, COMPRESSION zstd, \
         ROW_GROUP_SIZE {ROW_GROUP_SIZE}, KV_METADATA {{'ARROW:schema': {kv}}})",
        exprs = exprs.join(", "),
        windows = windows.join(", "),
        dbs_end = a.dbs + 1,
        tables = a.tables,
        n = n_series * ppw,
        dir = sql_str(&dir.to_string_lossy()),
        kv = sql_str(&kv),
    )
}

/// The SQL of column `c`'s values, from the series `s`, point `k`, database `db` and table
/// `t`; `over`: of an overwrite file. `regions` are the region names as SQL strings.
fn column_expr(c: &Column, seed: u64, over: bool, regions: &[String]) -> String {
    let h = |salt: &str| format!("hash({seed}, db, t, s, k, '{salt}')");
    match c.name.as_str() {
        "host" => "'host-' || lpad(s::VARCHAR, 6, '0')".to_string(),
        "region" => format!(
            "CASE WHEN s % 37 = 36 THEN NULL ELSE [{}][1 + (hash({seed}, db, t, s, 'region') % {})::BIGINT] END",
            regions.join(", "),
            REGIONS.len()
        ),
        "zone" => "CASE WHEN s % 11 = 10 THEN NULL ELSE 'zone-' || (s % 5)::VARCHAR END"
            .to_string(),
        "time" => "make_timestamp_ns(tns)".to_string(),
        "bytes" if !over => format!(
            "(s * 1000000000000 + k * 4096 + {} % 4096)::UBIGINT",
            h("bytes")
        ),
        "count" if !over => format!("(({} % 2001)::BIGINT - 1000)", h("count")),
        "count" => format!("(({} % 2001)::BIGINT - 1000)", h("count2")),
        "msg" if !over => format!(
            "CASE WHEN {} % 5 = 0 THEN 'status ' || ({} % 100)::VARCHAR || ', \"quoted\" \\ ü' END",
            h("msg?"),
            h("msg")
        ),
        "ok" if !over => format!("{} % 2 = 0", h("ok")),
        "usage" if !over => format!("({} % 10000)::DOUBLE / 100.0", h("usage")),
        "usage" => format!("({} % 10000)::DOUBLE / 100.0", h("usage2")),
        "load" if !over => format!("({} % 10000)::DOUBLE / 100.0", h("load")),
        "load" => format!("({} % 10000)::DOUBLE / 100.0", h("load2")),
        _ => format!("CAST(NULL AS {})", c.ty.duckdb_type()),
    }
}
