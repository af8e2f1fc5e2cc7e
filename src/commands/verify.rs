//! `kompactor verify`: is a data dir consistent (files, sizes, rows, ids, snapshots/); read-only.

use crate::commands::args::InspectArgs;
use crate::commands::status::{unfinished_runs, UnfinishedRun};
use crate::commands::{EXIT_INCONSISTENT, EXIT_OK};
use crate::error::Result;
use crate::format::ids::{FileId, FileIdSet, TableKey};
use crate::format::layout::check_hosts;
use crate::format::model::EntryRc;
use crate::format::model::{IndexedFile, TableIndexFiles};
use crate::json;
use crate::pipeline::discover::{
    discover_node_counting_rows, few_per_kind, leave_to_exit, summarize, Finding, Node,
};
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
    /// The problems `verify` found itself (table index, checkpoints, ids), as objects: each
    /// is also one of `problems`.
    checks: Vec<Problem>,
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

/// A problem `verify` finds itself, beyond discovery's findings: in `--json`, `checks[]`
/// (`docs/json.md`).
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Problem {
    /// The newest snapshot's `next_file_id` is not above every file id.
    NextFileIdTooLow {
        next_file_id: FileId,
        highest_id: u64,
    },
    /// The checkpoints describe other files than the snapshots they stand for.
    CheckpointsDisagree {
        /// Live files (through the checkpoints) that no snapshot lists, and the smallest id.
        live_in_no_snapshot: usize,
        first_live_in_no_snapshot: Option<FileId>,
        /// Files the snapshots list that are not live through the checkpoints.
        not_live_through_checkpoints: usize,
        first_not_live_through_checkpoints: Option<FileId>,
    },
    /// A table-index file that cannot be read.
    TableIndexUnreadable { index: String, error: String },
    /// A table-index file that is not JSON of the shape the server writes.
    TableIndexMalformed { index: String, error: String },
    /// A table-index entry whose file does not exist.
    TableIndexNamesMissingFile {
        index: String,
        id: FileId,
        path: String,
    },
}

impl Problem {
    /// One sentence for the operator.
    fn describe(&self) -> String {
        match self {
            Problem::NextFileIdTooLow { next_file_id, highest_id } => format!(
                "the newest snapshot's next_file_id {next_file_id} is not above every file id (highest {highest_id}): the server would reuse ids"
            ),
            Problem::CheckpointsDisagree {
                live_in_no_snapshot,
                first_live_in_no_snapshot,
                not_live_through_checkpoints,
                first_not_live_through_checkpoints,
            } => format!(
                "checkpoints and snapshots disagree: {live_in_no_snapshot} live file(s) are listed by no snapshot (e.g. {first_live_in_no_snapshot:?}), {not_live_through_checkpoints} file(s) of the snapshots are not live through the checkpoints (e.g. {first_not_live_through_checkpoints:?})"
            ),
            Problem::TableIndexUnreadable { index, error } => {
                format!("table index file {index} cannot be read: {error}")
            }
            Problem::TableIndexMalformed { index, error } => {
                format!("table index file {index} is not valid JSON of the expected shape: {error}")
            }
            Problem::TableIndexNamesMissingFile { index, id, path } => {
                format!("table index {index} lists file {id} which does not exist: {path}")
            }
        }
    }

    /// Its kind for the summary, and whether there is one per file (then many are counted).
    fn kind(&self) -> (&'static str, bool) {
        match self {
            Problem::NextFileIdTooLow { .. } => ("id", false),
            Problem::CheckpointsDisagree { .. } => ("checkpoint", false),
            Problem::TableIndexUnreadable { .. } | Problem::TableIndexMalformed { .. } => {
                ("unreadable table-index", true)
            }
            Problem::TableIndexNamesMissingFile { .. } => ("indexed but absent", true),
        }
    }
}

/// What `verify` found on one node.
struct Checked {
    node: String,
    /// The findings of discovery that make it inconsistent.
    findings: Vec<Finding>,
    /// The problems `verify` found itself.
    problems: Vec<Problem>,
    /// Normal state worth knowing (purged entries still listed).
    information: Vec<String>,
}

impl Checked {
    fn count(&self) -> usize {
        self.findings.len() + self.problems.len()
    }

    /// Every problem, one sentence each: findings first.
    fn sentences(&self) -> Vec<String> {
        let findings = self.findings.iter().map(Finding::describe);
        findings
            .chain(self.problems.iter().map(Problem::describe))
            .collect()
    }

    /// The problems for the operator: a few lines per kind, unless `verbose`.
    fn lines(&self, verbose: bool) -> Vec<String> {
        let mut out = summarize(&self.findings, verbose);
        out.extend(few_per_kind(
            &self.problems,
            Problem::kind,
            Problem::describe,
            verbose,
        ));
        out
    }
}

/// The problems `verify` finds on one node beyond discovery's findings.
fn problems(data_dir: &Path, n: &Node) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut clock = StepClock::new(&n.id);
    let bad: BTreeSet<FileId> = n.findings.iter().filter_map(|f| f.blocks_file()).collect();
    // An id listed twice is a finding of discovery (`DuplicateId`, above): the live set
    // holds each id once, as the server's does.
    if let Some(newest) = n.newest_snapshot() {
        let next = newest.doc.value.next_file_id;
        if let Some(max) = n.next_free_file_id().0.checked_sub(1) {
            if next.0 <= max {
                out.push(Problem::NextFileIdTooLow {
                    next_file_id: next,
                    highest_id: max,
                });
            }
        }
    }
    // Side by side: each walks all of a deep history's millions of entries, and the first
    // uses one core only.
    let (checkpoints, index) = std::thread::scope(|scope| {
        let checkpoints = scope.spawn(|| checkpoint_problem(n));
        let index = table_index_problems(data_dir, n, &bad);
        let checkpoints = checkpoints
            .join()
            .expect("comparing checkpoints and snapshots does not panic");
        (checkpoints, index)
    });
    out.extend(checkpoints);
    out.extend(index);
    clock.done("checkpoints against snapshots, and the table index");
    out
}

/// Whether the checkpoints describe other files than the snapshots they stand for.
fn checkpoint_problem(n: &Node) -> Option<Problem> {
    if n.checkpoints.is_empty() {
        return None;
    }
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
    (!only_cp.is_empty() || !only_snap.is_empty()).then(|| Problem::CheckpointsDisagree {
        live_in_no_snapshot: only_cp.len(),
        first_live_in_no_snapshot: only_cp.first().copied(),
        not_live_through_checkpoints: only_snap.len(),
        first_not_live_through_checkpoints: only_snap.first().copied(),
    })
}

/// The files the table index lists that do not exist, and the index files that cannot be read.
///
/// Discovery found the live and the hidden files on disk (by listing their directories), less
/// those it reports missing or damaged (`bad`): only the others are looked for, one at a time.
fn table_index_problems(data_dir: &Path, n: &Node, bad: &BTreeSet<FileId>) -> Vec<Problem> {
    let indexes = parallel_map(&n.table_index_files, |p| {
        let mut wrong = Vec::new();
        if !p.to_string_lossy().ends_with("index.info.json") {
            return wrong;
        }
        let index_path = p.display().to_string();
        let text = match std::fs::read(p) {
            Ok(text) => text,
            Err(e) => {
                return vec![Problem::TableIndexUnreadable {
                    index: index_path,
                    error: e.to_string(),
                }]
            }
        };
        let index = match serde_json::from_slice::<TableIndexFiles>(&text) {
            Ok(index) => index,
            Err(e) => {
                return vec![Problem::TableIndexMalformed {
                    index: index_path,
                    error: e.to_string(),
                }]
            }
        };
        let table = TableKey {
            db: index.db_id,
            table: index.table_id,
        };
        let (mut live, mut hidden) = (
            OrderedFiles::of(&n.live, table),
            OrderedFiles::of(&n.hidden, table),
        );
        for f in &index.files {
            let found = (live.has(f) && !bad.contains(&f.id)) || hidden.has(f);
            if !found && !data_dir.join(&*f.path).exists() {
                wrong.push(Problem::TableIndexNamesMissingFile {
                    index: index_path.clone(),
                    id: f.id,
                    path: f.path.to_string(),
                });
            }
        }
        wrong
    });
    indexes.into_iter().flatten().collect()
}

/// A table's files, ordered by id, looked through for the files an index lists: in the same
/// order, as a rule, so each is looked for first just after the last one found.
struct OrderedFiles<'a> {
    files: &'a [EntryRc],
    next: usize,
}

impl<'a> OrderedFiles<'a> {
    /// The files of `table` in `set`.
    fn of(set: &'a BTreeMap<TableKey, Vec<EntryRc>>, table: TableKey) -> OrderedFiles<'a> {
        OrderedFiles {
            files: set.get(&table).map_or(&[][..], Vec::as_slice),
            next: 0,
        }
    }

    /// Whether one of the files has the id and the path of `f`.
    fn has(&mut self, f: &IndexedFile) -> bool {
        let at = match self.files.get(self.next) {
            Some(l) if l.id == f.id => self.next,
            _ => match self.files.binary_search_by_key(&f.id, |l| l.id) {
                Ok(i) => i,
                Err(_) => return false,
            },
        };
        self.next = at + 1;
        self.files[at].path.with_str(|p| p == f.path)
    }
}

/// `kompactor verify`: exit 0 when consistent, 4 when not. The problems are listed a few
/// lines per kind, each of them with `verbose` or in the JSON document.
pub fn run(a: &InspectArgs, quiet: bool, verbose: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let mut all: Vec<Checked> = Vec::new();
    for h in &a.hosts.hosts {
        // The footers' row counts are read as the files are listed: one open of each.
        let n = discover_node_counting_rows(data_dir, h, a.server.load_window())?;
        let purged = n
            .findings
            .iter()
            .filter(|f| matches!(f, Finding::Purged { .. }));
        all.push(Checked {
            node: h.clone(),
            findings: problem_findings(&n).cloned().collect(),
            problems: problems(data_dir, &n),
            information: purged.map(Finding::describe).collect(),
        });
        leave_to_exit(vec![n]);
    }
    let unfinished = unfinished_runs(data_dir)?;
    let total: usize = all.iter().map(Checked::count).sum::<usize>() + unfinished.len();
    if a.json {
        json::print(&VerifyDoc {
            format_version: json::FORMAT_VERSION,
            consistent: total == 0,
            nodes: all
                .into_iter()
                .map(|c| NodeVerify {
                    problems: c.sentences(),
                    node: c.node,
                    findings: c.findings,
                    checks: c.problems,
                    information: c.information,
                })
                .collect(),
            unfinished_runs: unfinished,
        });
    } else {
        for c in &all {
            for p in c.lines(verbose) {
                println!("node {}: {p}", c.node);
            }
        }
        if !quiet {
            for c in &all {
                for i in &c.information {
                    println!("node {}: (information) {i}", c.node);
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
