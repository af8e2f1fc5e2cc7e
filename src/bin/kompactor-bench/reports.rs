//! The few fields of kompactor's JSON documents that the benchmarks read: `status --json`
//! (how each table ends up) and a run's report.json (its phases and files). The library's
//! own types only serialize, so these are read into structs of their own; other fields are
//! ignored.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `kompactor status --json`.
#[derive(Deserialize)]
struct Status {
    nodes: Vec<StatusNode>,
}

#[derive(Deserialize)]
struct StatusNode {
    node: String,
    tables: Vec<StatusTable>,
}

#[derive(Deserialize)]
struct StatusTable {
    table: String,
    files: u64,
    rows_in_files: u64,
    min_time: String,
    max_time: String,
}

/// A run's report.json.
#[derive(Deserialize)]
pub struct RunReport {
    pub phases: Phases,
    nodes: Vec<RunNode>,
}

/// Seconds of each phase of a run.
#[derive(Clone, Copy, Deserialize)]
pub struct Phases {
    pub read_and_plan: f64,
    pub merge: f64,
    pub commit: f64,
}

#[derive(Deserialize)]
struct RunNode {
    committed: Option<Committed>,
    tables: Vec<RunTable>,
}

#[derive(Deserialize)]
struct Committed {
    snapshots_rewritten: u64,
}

#[derive(Deserialize)]
struct RunTable {
    files_before: u64,
    files_after: u64,
}

impl RunReport {
    /// Live files of every table before and after the run.
    pub fn files(&self) -> (u64, u64) {
        let tables = || self.nodes.iter().flat_map(|n| &n.tables);
        (
            tables().map(|t| t.files_before).sum(),
            tables().map(|t| t.files_after).sum(),
        )
    }

    /// The most files one table was left with.
    pub fn largest_table(&self) -> u64 {
        let tables = self.nodes.iter().flat_map(|n| &n.tables);
        tables.map(|t| t.files_after).max().unwrap_or(0)
    }

    /// Snapshots the commit rewrote, over every node.
    pub fn snapshots_rewritten(&self) -> u64 {
        let committed = self.nodes.iter().filter_map(|n| n.committed.as_ref());
        committed.map(|c| c.snapshots_rewritten).sum()
    }
}

/// The report of the one run made on `data_dir`.
pub fn run_report(data_dir: &Path) -> Result<RunReport, String> {
    let runs = data_dir.join(".kompactor/runs");
    let reports: Vec<PathBuf> = std::fs::read_dir(&runs)
        .map_err(|e| format!("{}: {e}", runs.display()))?
        .flatten()
        .map(|e| e.path().join("report.json"))
        .filter(|p| p.is_file())
        .collect();
    let [report] = reports.as_slice() else {
        return Err(format!(
            "{}: expected the report of one run, found {}",
            runs.display(),
            reports.len()
        ));
    };
    parse(
        report,
        &std::fs::read(report).map_err(|e| format!("{}: {e}", report.display()))?,
    )
}

/// One line per table of `data_dir` as `kompactor status --json` gives it: node, table, live
/// files, rows in them, and their time range.
pub fn tables(kompactor: &Path, data_dir: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(kompactor)
        .arg("status")
        .arg(data_dir)
        .args(["--hosts", crate::dataset::NODE, "--json"])
        .output()
        .map_err(|e| format!("cannot start {}: {e}", kompactor.display()))?;
    if !out.status.success() {
        return Err(format!(
            "kompactor status {} failed ({}): {}",
            data_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let status: Status = parse(data_dir, &out.stdout)?;
    Ok(table_lines(&status))
}

/// One line per table: node, table, files, rows, first and last time.
fn table_lines(status: &Status) -> Vec<String> {
    let tables = status
        .nodes
        .iter()
        .flat_map(|n| n.tables.iter().map(move |t| (n, t)));
    tables
        .map(|(n, t)| {
            let (node, table) = (&n.node, &t.table);
            let (files, rows, min, max) = (t.files, t.rows_in_files, &t.min_time, &t.max_time);
            format!("{node} {table} {files} {rows} {min} {max}")
        })
        .collect()
}

/// `bytes` as JSON read from `source` (named in the error).
fn parse<T: DeserializeOwned>(source: &Path, bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{}: unexpected JSON: {e}", source.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_it_needs_and_ignores_the_rest() {
        let report: RunReport = parse(
            Path::new("report.json"),
            br#"{"run_id": "x", "phases": {"read_and_plan": 1.5, "merge": 2.0, "commit": 0.25},
                "nodes": [{"node": "n", "committed": {"snapshots_rewritten": 3, "files_added": 1},
                           "tables": [{"files_before": 10, "files_after": 2, "table": "a"},
                                      {"files_before": 5, "files_after": 4}]},
                          {"node": "m", "committed": null, "tables": []}]}"#,
        )
        .unwrap();
        assert_eq!(report.files(), (15, 6));
        assert_eq!(report.largest_table(), 4);
        assert_eq!(report.snapshots_rewritten(), 3);
        assert_eq!(report.phases.commit, 0.25);

        let status: Status = parse(
            Path::new("status"),
            br#"{"nodes": [{"node": "n", "generation": "3.10", "tables": [{"table": "db.t",
                "files": 2, "rows_in_files": 7, "min_time": "a", "max_time": "b", "bytes": 1}]}]}"#,
        )
        .unwrap();
        assert_eq!(table_lines(&status), vec!["n db.t 2 7 a b".to_string()]);
    }
}
