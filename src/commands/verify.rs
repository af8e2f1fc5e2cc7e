//! `kompactor verify`: is a data dir consistent (files, sizes, rows, ids, snapshots/); read-only.

use crate::commands::args::InspectArgs;
use crate::commands::status::{unfinished_runs, UnfinishedRun};
use crate::commands::{EXIT_INCONSISTENT, EXIT_OK};
use crate::error::Result;
use crate::format::ids::{FileId, FileIdSet, TableKey};
use crate::format::layout::check_hosts;
use crate::format::model::EntryRc;
use crate::format::model::{Doc, FileEntry, TableIndex};
use crate::json;
use crate::pipeline::discover::{discover_node_counting_rows, leave_to_exit, Finding, Node};
use crate::pipeline::workers::parallel_map;
use crate::progress::StepClock;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

/// One node in the `verify --json` document.
#[derive(Serialize)]
struct NodeVerify {
    node: String,
    /// What makes the node inconsistent, one sentence each.
    problems: Vec<String>,
    /// The problems discovery found, as finding objects (`docs/json.md`): each is also one
    /// of `problems`.
    findings: Vec<Finding>,
    /// Normal state worth knowing (purged entries still listed); not a problem.
    information: Vec<String>,
}

/// The `verify --json` document.
#[derive(Serialize)]
struct VerifyDoc {
    format_version: u32,
    /// True when no node has a problem and no run is unfinished.
    consistent: bool,
    nodes: Vec<NodeVerify>,
    unfinished_runs: Vec<UnfinishedRun>,
}

/// The findings of discovery that make a node inconsistent.
fn problem_findings(n: &Node) -> impl Iterator<Item = &Finding> {
    n.findings.iter().filter(|f| f.is_inconsistency())
}

/// The problems `verify` finds on one node.
fn problems(data_dir: &Path, n: &Node) -> Result<Vec<String>> {
    let mut out: Vec<String> = problem_findings(n).map(Finding::describe).collect();
    let mut clock = StepClock::new(&n.id);
    let bad: BTreeSet<FileId> = n.findings.iter().filter_map(|f| f.blocks_file()).collect();
    // An id listed twice is a finding of discovery (`DuplicateId`, above): the live set
    // holds each id once, as the server's does.
    if let Some(newest) = n.newest_snapshot() {
        let next = newest.doc.value.next_file_id;
        if let Some(max) = n.next_free_file_id().0.checked_sub(1) {
            if next.0 <= max {
                out.push(format!(
                    "the newest snapshot's next_file_id {next} is not above every file id (highest {max}): the server would reuse ids"
                ));
            }
        }
    }
    // Checkpoints must describe the same files as the snapshots they stand for.
    if !n.checkpoints.is_empty() {
        // What the snapshots add, less what they remove and what the server purged.
        let listed = || {
            n.snapshots
                .iter()
                .flat_map(|s| s.doc.value.databases.iter())
        };
        let added = FileIdSet::new(listed().map(|(_, _, f)| f.id));
        let removals = n
            .snapshots
            .iter()
            .flat_map(|s| s.doc.value.removed_files.iter());
        let purged = n
            .purged
            .values()
            .flat_map(|t| t.entries.iter().map(|f| f.id));
        let removed = FileIdSet::new(
            removals
                .flat_map(|r| r.iter().map(|(_, _, f)| f.id))
                .chain(purged),
        );
        let from_snapshots = |id| added.contains(id) && !removed.contains(id);
        let live = n.live_ids();
        // Sets of the few that differ, for their count and the smallest.
        let only_cp: BTreeSet<FileId> = n
            .live
            .values()
            .flatten()
            .map(|f| f.id)
            .filter(|&id| !from_snapshots(id))
            .collect();
        let only_snap: BTreeSet<FileId> = listed()
            .map(|(_, _, f)| f.id)
            .filter(|&id| from_snapshots(id) && !live.contains(id))
            .collect();
        if !only_cp.is_empty() || !only_snap.is_empty() {
            out.push(format!(
                "checkpoints and snapshots disagree: {} live file(s) are listed by no snapshot (e.g. {:?}), {} file(s) of the snapshots are not live through the checkpoints (e.g. {:?})",
                only_cp.len(),
                only_cp.first(),
                only_snap.len(),
                only_snap.first()
            ));
        }
    }
    clock.done("checkpoints against snapshots");
    // The table index may only name files that exist. Discovery found the live and the
    // hidden ones on disk (by listing their directories), less those it reports missing:
    // only the others are looked for, one at a time.
    let found = |t: &TableIndex, f: &FileEntry| {
        let table = TableKey {
            db: t.db_id,
            table: t.table_id,
        };
        let listed = |set: &BTreeMap<TableKey, Vec<EntryRc>>| {
            let files = set.get(&table).map_or(&[][..], Vec::as_slice);
            files
                .binary_search_by_key(&f.id, |l| l.id)
                .is_ok_and(|i| files[i].path == f.path)
        };
        (listed(&n.live) && !bad.contains(&f.id)) || listed(&n.hidden)
    };
    let indexes = parallel_map(&n.table_index_files, |p| {
        let mut wrong = Vec::new();
        if !p.to_string_lossy().ends_with("index.info.json") {
            return wrong;
        }
        match Doc::<TableIndex>::parse(&std::fs::read(p).unwrap_or_default()) {
            Ok(doc) => {
                for f in &doc.value.files {
                    if !found(&doc.value, f) && !f.path.under(data_dir).exists() {
                        wrong.push(format!(
                            "table index {} lists file {} which does not exist: {}",
                            p.display(),
                            f.id,
                            f.path
                        ));
                    }
                }
            }
            Err(_) => wrong.push(format!(
                "table index file {} is not valid JSON of the expected shape",
                p.display()
            )),
        }
        wrong
    });
    out.extend(indexes.into_iter().flatten());
    clock.done("the table index");
    Ok(out)
}

/// `kompactor verify`: exit 0 when consistent, 4 when not.
pub fn run(a: &InspectArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let mut all: Vec<(String, Vec<String>)> = Vec::new();
    // Normal state worth knowing, that does not make the data dir inconsistent.
    let mut info: Vec<(String, Vec<String>)> = Vec::new();
    let mut findings: Vec<Vec<Finding>> = Vec::new();
    for h in &a.hosts.hosts {
        // The footers' row counts are read as the files are listed: one open of each.
        let n = discover_node_counting_rows(data_dir, h, a.server.load_window())?;
        all.push((h.clone(), problems(data_dir, &n)?));
        findings.push(problem_findings(&n).cloned().collect());
        let purged = n
            .findings
            .iter()
            .filter(|f| matches!(f, Finding::Purged { .. }));
        info.push((h.clone(), purged.map(Finding::describe).collect()));
        leave_to_exit(vec![n]);
    }
    let unfinished = unfinished_runs(data_dir)?;
    let total: usize = all.iter().map(|(_, p)| p.len()).sum::<usize>() + unfinished.len();
    if a.json {
        json::print(&VerifyDoc {
            format_version: json::FORMAT_VERSION,
            consistent: total == 0,
            nodes: all
                .into_iter()
                .zip(info)
                .zip(findings)
                .map(
                    |(((node, problems), (_, information)), findings)| NodeVerify {
                        node,
                        problems,
                        findings,
                        information,
                    },
                )
                .collect(),
            unfinished_runs: unfinished,
        });
    } else {
        for (node, ps) in &all {
            for p in ps {
                println!("node {node}: {p}");
            }
        }
        if !quiet {
            for (node, is) in &info {
                for i in is {
                    println!("node {node}: (information) {i}");
                }
            }
        }
        for u in &unfinished {
            println!("unfinished kompactor run {} ({:?}): run kompactor on this data dir to finish or roll it back", u.run_id, u.state);
        }
        if !quiet {
            if total == 0 {
                println!("consistent: {} node(s) checked", all.len());
            } else {
                println!("{total} problem(s) found");
            }
        }
    }
    Ok(ExitCode::from(if total == 0 {
        EXIT_OK
    } else {
        EXIT_INCONSISTENT
    }))
}
