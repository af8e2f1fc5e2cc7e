//! The maintenance window as one routine (`kompactor maintain`): measure every table through
//! the running server, prepare, stop it, verify, compact, start it, measure again and compare;
//! undo the run when anything differs.
//!
//! - [`service`]: stopping and starting the server (systemd, or a pid file and a command).
//! - [`children`]: kompactor's own steps, run as child processes.
//! - [`report`]: the typed report and its verdict.
//!
//! Whatever fails, the server is started again if this routine stopped it, and the verdict
//! says what state the node is in.

pub mod children;
pub mod report;
pub mod service;

use crate::durable::journal::RunDirs;
use crate::pipeline::archive::{NamedDb, NamedTable, NamesFile};
use crate::server::compare::{compare, TableComparison, TableResult};
use crate::server::http::Client;
use crate::server::measure::{measure_all, Measurement, TableMeasure};
use crate::units::human_bytes;
use children::{Ended, Kompactor, PlanView, PrepareView, RunView};
use report::{
    compared_summary, differing_summary, MaintainReport, Step, Verdict, MAINTAIN_FORMAT_VERSION,
};
use service::Service;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the routine works on and how.
pub struct Options {
    pub data_dir: PathBuf,
    pub hosts: Vec<String>,
    pub service: Service,
    /// How long the server may take to stop, and to answer `/health` after a start.
    pub timeout: Duration,
    /// Merge while the server runs (`kompactor prepare`) before stopping it.
    pub prepare: bool,
    pub kompactor: PathBuf,
    pub compaction_args: Vec<String>,
    /// Progress lines go to stderr (stdout carries the JSON report).
    pub json: bool,
}

/// The routine's state as it goes.
struct Routine<'a> {
    client: &'a Client,
    service: Service,
    k: Kompactor,
    timeout: Duration,
    prepare: bool,
    json: bool,
    report: MaintainReport,
    /// The server was stopped by this routine and is not running again.
    stopped_by_us: bool,
    before: Option<Measurement>,
    /// When the server was asked to stop.
    down_from: Option<Instant>,
}

/// Runs the maintenance and returns its report (also written to the record directory).
pub fn run(o: Options, client: &Client) -> MaintainReport {
    let started = Instant::now();
    let stamp = chrono::Utc::now();
    let record = RunDirs::state_dir(&o.data_dir)
        .join("maintenance")
        .join(format!(
            "{}-{}",
            stamp.format("%Y%m%dT%H%M%SZ"),
            std::process::id()
        ));
    let report = MaintainReport {
        format_version: MAINTAIN_FORMAT_VERSION,
        data_dir: o.data_dir.display().to_string(),
        hosts: o.hosts.clone(),
        url: client.url().to_string(),
        started_at: stamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        seconds: 0.0,
        verdict: Verdict::NotCompacted,
        message: String::new(),
        run_id: None,
        undone: false,
        server_running: false,
        downtime_seconds: None,
        steps: Vec::new(),
        tables: Vec::new(),
        tables_after_undo: Vec::new(),
        record_dir: record.display().to_string(),
    };
    let mut r = Routine {
        client,
        service: o.service,
        k: Kompactor {
            exe: o.kompactor,
            data_dir: o.data_dir.clone(),
            hosts: o.hosts.join(","),
            compaction_args: o.compaction_args,
            record: record.clone(),
        },
        timeout: o.timeout,
        prepare: o.prepare,
        json: o.json,
        report,
        stopped_by_us: false,
        before: None,
        down_from: None,
    };
    let (verdict, message) = match fs::create_dir_all(&record) {
        Ok(()) => r.routine(),
        Err(e) => (
            Verdict::NotCompacted,
            format!("cannot create {}: {e}; nothing changed", record.display()),
        ),
    };
    r.report.verdict = verdict;
    r.report.message = message;
    r.report.server_running = client.healthy();
    r.report.seconds = started.elapsed().as_secs_f64();
    let text = crate::json::to_string(&r.report);
    if let Err(e) = fs::write(record.join("report.json"), text + "\n") {
        r.say(&format!(
            "warning: could not write {}: {e}",
            record.join("report.json").display()
        ));
    }
    r.report
}

impl Routine<'_> {
    fn say(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn step(&mut self, name: &'static str, since: Instant, ok: bool, detail: String) {
        self.say(&format!("  {detail}"));
        self.report.steps.push(Step {
            name,
            ok,
            detail,
            seconds: since.elapsed().as_secs_f64(),
        });
    }

    fn heading(&self, what: &str) {
        self.say(&format!("\n== {what}"));
    }

    fn routine(&mut self) -> (Verdict, String) {
        self.say(&format!(
            "kompactor maintain: {} (nodes {}), server {} ({})",
            self.report.data_dir,
            self.k.hosts,
            self.client.url(),
            self.service.describe()
        ));
        if let Err(why) = self.preflight() {
            return self.not_compacted(why);
        }
        let before = match self.measure("measure", "measuring every table on the running server") {
            Ok(m) => m,
            Err(why) => return self.not_compacted(why),
        };
        let unmeasured: Vec<String> = before
            .tables
            .iter()
            .filter(|t| t.error.is_some())
            .map(label)
            .collect();
        if !unmeasured.is_empty() {
            self.say("  A table that cannot be measured now cannot be compared afterwards. If the query file");
            self.say(
                "  limit is the cause, start the server once with a higher --query-file-limit.",
            );
            return self.not_compacted(format!(
                "could not measure {} table(s): {}",
                unmeasured.len(),
                unmeasured.join(", ")
            ));
        }
        self.write_names(&before);
        self.before = Some(before);
        if self.prepare {
            self.prepare_step();
        }
        if let Err(why) = self.stop_step() {
            return self.not_compacted(why);
        }
        if let Err(why) = self.verify_step() {
            return self.not_compacted(why);
        }
        let compacted = match self.compact_step() {
            Ok(c) => c,
            Err(why) => return self.not_compacted(why),
        };
        if let Err(why) = self.start_step("start") {
            return self.after_failed_start(why);
        }
        self.report.downtime_seconds = self.down_from.map(|t| t.elapsed().as_secs_f64());
        let after = match self.measure("measure_after", "measuring every table again") {
            Ok(m) => m,
            Err(why) => {
                return self.undo_and_prove(format!(
                    "the tables could not be listed after the restart: {why}"
                ))
            }
        };
        self.report.tables = compare(self.before.as_ref().unwrap(), &after);
        self.print_comparison(&self.report.tables.clone());
        let equal = self
            .report
            .tables
            .iter()
            .all(|t| t.result == TableResult::Equal);
        if equal && compacted.normal {
            let run = match &self.report.run_id {
                Some(id) => format!("run {id}"),
                None => "nothing to compact".into(),
            };
            if let Some(id) = &self.report.run_id {
                self.say(&format!(
                    "\nThe replaced files are kept in {}/trash/{id}/; until they are purged the run can be undone\n(server stopped): {} undo {} --run {id}",
                    RunDirs::state_dir(&self.k.data_dir).display(),
                    self.k.exe.display(),
                    self.k.data_dir.display()
                ));
            }
            let partial = if compacted.partial {
                "; partial: some windows were skipped"
            } else {
                ""
            };
            return (
                Verdict::Proven,
                format!("{}{partial}; {run}", compared_summary(&self.report.tables)),
            );
        }
        let why = if equal {
            format!(
                "kompactor's compaction ended abnormally ({})",
                compacted.status
            )
        } else {
            format!(
                "after the compaction {}",
                differing_summary(&self.report.tables)
            )
        };
        self.undo_and_prove(why)
    }

    fn preflight(&mut self) -> Result<(), String> {
        self.heading("preflight");
        let t = Instant::now();
        self.service.check_running()?;
        if !self.client.healthy() {
            return Err(format!("{}/health does not answer 200", self.client.url()));
        }
        let dry = self.k.dry_run()?;
        if dry.code != Some(0) {
            return Err(format!(
                "kompactor's dry run refused ({}):\n{}",
                dry.status(),
                dry.stderr_tail
            ));
        }
        let plan: PlanView = dry
            .document()
            .ok_or_else(|| format!("the dry run printed no plan (see {})", dry.log.display()))?;
        if plan.space.total > plan.space.available {
            return Err(format!(
                "not enough disk space: the run needs {}, {} is free on {}",
                human_bytes(plan.space.total),
                human_bytes(plan.space.available),
                plan.space.mount
            ));
        }
        self.step(
            "preflight",
            t,
            true,
            format!(
                "the server runs; the plan needs {} of disk, {} free on {}",
                human_bytes(plan.space.total),
                human_bytes(plan.space.available),
                plan.space.mount
            ),
        );
        Ok(())
    }

    fn measure(&mut self, step: &'static str, what: &str) -> Result<Measurement, String> {
        self.heading(what);
        let t = Instant::now();
        let json = self.json;
        let m = measure_all(self.client, |tm| {
            let line = if let Some(e) = &tm.error {
                Some(format!("  {}: NOT MEASURED: {e}", label(tm)))
            } else if tm.slices.unwrap_or(1) > 1 {
                Some(format!(
                    "  {}: over the query file limit ({} files, limit {}): measured in {} time slices",
                    label(tm),
                    tm.files.unwrap_or(0),
                    tm.file_limit.map_or("?".into(), |l| l.to_string()),
                    tm.slices.unwrap_or(0)
                ))
            } else {
                None
            };
            if let Some(l) = line {
                if json {
                    eprintln!("{l}");
                } else {
                    println!("{l}");
                }
            }
        })
        .map_err(|e| format!("listing the databases and tables: {e}"))?;
        let path = self.k.record.join(format!("{step}.measurement.json"));
        let _ = fs::write(&path, crate::json::to_string(&m) + "\n");
        let ok: Vec<&TableMeasure> = m.tables.iter().filter(|t| t.figures.is_some()).collect();
        let rows: u64 = ok
            .iter()
            .filter_map(|t| t.figures.as_ref())
            .map(|f| f.rows)
            .sum();
        self.step(
            step,
            t,
            ok.len() == m.tables.len(),
            format!(
                "{} of {} table(s) in {} database(s) measured: {rows} rows, {} requests",
                ok.len(),
                m.tables.len(),
                m.databases.len(),
                m.requests
            ),
        );
        Ok(m)
    }

    /// `.kompactor/names.json`: the names the server shows, by the ids of the tables' files,
    /// for the commands that name tables while the server is stopped.
    fn write_names(&self, m: &Measurement) {
        let mut doc = NamesFile {
            format_version: 1,
            url: Some(m.url.clone()),
            written_at: Some(m.started_at.clone()),
            databases: Default::default(),
        };
        for db in &m.databases {
            doc.databases.insert(
                db.clone(),
                NamedDb {
                    id: None,
                    tables: Default::default(),
                },
            );
        }
        for t in &m.tables {
            let d = doc.databases.entry(t.db.clone()).or_insert(NamedDb {
                id: None,
                tables: Default::default(),
            });
            if d.id.is_none() {
                d.id = t.ids.map(|(db, _)| crate::format::ids::DbId(db));
            }
            d.tables.insert(
                t.table.clone(),
                NamedTable {
                    id: t.ids.map(|(_, table)| crate::format::ids::TableId(table)),
                },
            );
        }
        let path = RunDirs::state_dir(&self.k.data_dir).join("names.json");
        let tmp = path.with_extension("json.tmp");
        if fs::write(&tmp, crate::json::to_string(&doc) + "\n")
            .and_then(|_| fs::rename(&tmp, &path))
            .is_err()
        {
            self.say(&format!("  warning: could not write {}", path.display()));
        }
    }

    fn prepare_step(&mut self) {
        self.heading("preparing: merging while the server runs");
        let t = Instant::now();
        let detail = match self.k.prepare() {
            Ok(e) if e.code == Some(0) || e.code == Some(3) => match e.document::<PrepareView>() {
                Some(p) => format!(
                    "{} window(s) prepared ({}){}",
                    p.windows_prepared,
                    human_bytes(p.bytes),
                    if p.windows_failed > 0 {
                        format!(", {} failed: the compaction merges them itself", p.windows_failed)
                    } else {
                        String::new()
                    }
                ),
                None => "prepared".into(),
            },
            Ok(e) => format!(
                "kompactor prepare ended with {} (see {}): the compaction merges everything with the server stopped",
                e.status(),
                e.log.display()
            ),
            Err(why) => format!("{why}: the compaction merges everything with the server stopped"),
        };
        self.step("prepare", t, true, detail);
    }

    fn stop_step(&mut self) -> Result<(), String> {
        self.heading("stopping the server");
        let t = Instant::now();
        self.down_from = Some(t);
        match self.service.stop(self.timeout) {
            Ok(detail) => {
                self.stopped_by_us = true;
                self.step("stop", t, true, detail);
            }
            Err(why) => {
                self.step("stop", t, false, why.clone());
                return Err(format!(
                    "{why}; it was asked to stop: once it has, start it again ({}) and run the maintenance again",
                    self.service.start_command()
                ));
            }
        }
        if self.client.healthy() {
            // Something else serves the address: starting ours again would not help.
            self.stopped_by_us = false;
            return Err(format!(
                "{}/health still answers although the server has stopped: another process serves it; this server is left stopped (start it: {})",
                self.client.url(),
                self.service.start_command()
            ));
        }
        Ok(())
    }

    fn verify_step(&mut self) -> Result<(), String> {
        self.heading("checking the data dir");
        let t = Instant::now();
        let e = self.k.verify()?;
        let ok = e.code == Some(0);
        let detail = if ok {
            "consistent".to_string()
        } else {
            format!(
                "kompactor verify: {} (see {}):\n{}",
                e.status(),
                e.log.display(),
                e.stderr_tail
            )
        };
        self.step("verify", t, ok, detail.clone());
        if ok {
            Ok(())
        } else {
            Err(format!("kompactor verify found problems ({})", e.status()))
        }
    }

    fn compact_step(&mut self) -> Result<Compacted, String> {
        self.heading("compacting");
        let t = Instant::now();
        let e: Ended = self.k.compact()?;
        match e.code {
            Some(0) | Some(3) => {
                let view: Option<RunView> = e.document();
                let mut detail = String::new();
                if view.is_none() {
                    // Its report is the only word on what it committed: find its run by pid.
                    self.report.run_id = self.k.run_of_pid(e.pid);
                    detail = format!(
                        "its --json report could not be read (see {})",
                        e.log.display()
                    );
                }
                if let Some(v) = &view {
                    if self.k.run_recorded(&v.run_id)
                        && v.nodes.iter().any(|n| n.committed.is_some())
                    {
                        self.report.run_id = Some(v.run_id.clone());
                    }
                    let tables = v.nodes.iter().flat_map(|n| &n.tables);
                    let (mut before, mut after, mut merged, mut prepared) = (0, 0, 0, 0);
                    for t in tables {
                        before += t.files_before;
                        after += t.files_after;
                        merged += t.groups_merged;
                        prepared += t.windows_prepared;
                    }
                    detail = format!(
                        "{before} -> {after} files; {prepared} window(s) came prepared, {} merged with the server stopped",
                        merged - prepared
                    );
                }
                let run = match &self.report.run_id {
                    Some(id) => format!("run {id}"),
                    None => "nothing committed".into(),
                };
                let partial = e.code == Some(3);
                let detail = format!(
                    "{run}: {detail}{}",
                    if partial {
                        " (partial: see the report)"
                    } else {
                        ""
                    }
                );
                self.step("compact", t, true, detail);
                Ok(Compacted {
                    normal: true,
                    partial,
                    status: e.status(),
                })
            }
            Some(1) | Some(2) => {
                let detail = format!(
                    "kompactor: {} (see {}):\n{}",
                    e.status(),
                    e.log.display(),
                    e.stderr_tail
                );
                self.step("compact", t, false, detail);
                Err(format!(
                    "the compaction refused or failed before changing anything ({})",
                    e.status()
                ))
            }
            _ => {
                // Ended abnormally: whatever it got to, the commit protocol keeps the data dir
                // valid; its run, if it recorded one, is undone below.
                self.report.run_id = self.k.run_of_pid(e.pid);
                let detail = format!(
                    "kompactor ended abnormally ({}); run {} (see {}):\n{}",
                    e.status(),
                    self.report.run_id.as_deref().unwrap_or("none recorded"),
                    e.log.display(),
                    e.stderr_tail
                );
                self.step("compact", t, false, detail);
                Ok(Compacted {
                    normal: false,
                    partial: false,
                    status: e.status(),
                })
            }
        }
    }

    fn start_step(&mut self, name: &'static str) -> Result<(), String> {
        self.heading("starting the server");
        let t = Instant::now();
        match self.service.start(self.client, self.timeout) {
            Ok(detail) => {
                self.stopped_by_us = false;
                self.step(name, t, true, detail);
                Ok(())
            }
            Err(why) => {
                self.step(name, t, false, why.clone());
                // The verdict is one line; the step above keeps the log's end.
                Err(why.lines().next().unwrap_or_default().to_string())
            }
        }
    }

    fn print_comparison(&self, tables: &[TableComparison]) {
        for t in tables {
            match t.result {
                TableResult::Equal => self.say(&format!("  {} ok", t.table)),
                _ => self.say(&format!(
                    "  {} DIFFERS: {}",
                    t.table,
                    t.differences.join("; ")
                )),
            }
        }
    }

    /// Nothing was changed: the server starts again if this routine stopped it.
    fn not_compacted(&mut self, why: String) -> (Verdict, String) {
        if self.stopped_by_us {
            if let Err(e) = self.start_step("start") {
                return (
                    Verdict::Attention,
                    format!("not compacted: {why}; nothing changed, but the server did NOT start again: {e}; start it: {}", self.service.start_command()),
                );
            }
            return (
                Verdict::NotCompacted,
                format!("{why}; nothing changed; the server runs again"),
            );
        }
        (Verdict::NotCompacted, format!("{why}; nothing changed"))
    }

    /// The server did not come back after the compaction: undo the run (the server is stopped),
    /// start it again and prove the answers are as before.
    fn after_failed_start(&mut self, why: String) -> (Verdict, String) {
        // Half up (it did not answer in time)? Stopped first: undo refuses a running server.
        if self.service.check_running().is_ok() {
            let _ = self.service.stop(self.timeout);
        }
        self.stopped_by_us = true;
        let why = format!("the server did not start after the compaction: {why}");
        match self.report.run_id.clone() {
            Some(_) => self.undo_and_prove(why),
            None => (
                Verdict::Attention,
                format!(
                    "{why}; nothing was committed, the node is as before; start it: {}",
                    self.service.start_command()
                ),
            ),
        }
    }

    /// Something is wrong after the compaction: stop the server, undo the run, start it again,
    /// measure and compare with the first measurement.
    fn undo_and_prove(&mut self, why: String) -> (Verdict, String) {
        self.say(&format!("\n{why}"));
        let Some(run_id) = self.report.run_id.clone() else {
            return (
                Verdict::Attention,
                format!("{why}; no run was committed, so there is nothing to undo: look for another cause (rows written during the maintenance?)"),
            );
        };
        if !self.stopped_by_us {
            self.heading("stopping the server to undo the run");
            let t = Instant::now();
            match self.service.stop(self.timeout) {
                Ok(d) => {
                    self.stopped_by_us = true;
                    self.step("stop_for_undo", t, true, d);
                }
                Err(e) => {
                    self.step("stop_for_undo", t, false, e.clone());
                    return (Verdict::Attention, format!("{why}; the server did not stop to undo run {run_id}: {e}; stop it, then run: {} undo {} --run {run_id}", self.k.exe.display(), self.k.data_dir.display()));
                }
            }
        }
        self.heading(&format!("undoing run {run_id}"));
        let t = Instant::now();
        let undo = self.k.undo(&run_id);
        let undone = matches!(&undo, Ok(e) if e.code == Some(0));
        let detail = match &undo {
            Ok(e) if undone => format!("run {run_id} undone ({})", e.status()),
            Ok(e) => format!(
                "kompactor undo: {} (see {}):\n{}",
                e.status(),
                e.log.display(),
                e.stderr_tail
            ),
            Err(e) => e.clone(),
        };
        self.step("undo", t, undone, detail);
        self.report.undone = undone;
        if let Err(e) = self.start_step("start_after_undo") {
            let state = if undone {
                format!("run {run_id} was undone: the node is as before the maintenance")
            } else {
                format!("run {run_id} could NOT be undone")
            };
            return (
                Verdict::Attention,
                format!(
                    "{why}; {state}; the server did NOT start: {e}; start it: {}",
                    self.service.start_command()
                ),
            );
        }
        let after = match self.measure("measure_after_undo", "measuring every table after the undo")
        {
            Ok(m) => m,
            Err(e) => {
                return (
                    Verdict::Attention,
                    format!(
                        "{why}; run {run_id} {}; the tables could not be measured after it: {e}",
                        if undone {
                            "was undone"
                        } else {
                            "could NOT be undone"
                        }
                    ),
                )
            }
        };
        self.report.tables_after_undo = compare(self.before.as_ref().unwrap(), &after);
        self.print_comparison(&self.report.tables_after_undo.clone());
        let equal = self
            .report
            .tables_after_undo
            .iter()
            .all(|t| t.result == TableResult::Equal);
        if undone && equal {
            (
                Verdict::Undone,
                format!(
                    "{why}; run {run_id} was undone and every table answers as before ({})",
                    compared_summary(&self.report.tables_after_undo)
                ),
            )
        } else {
            (
                Verdict::Attention,
                format!(
                    "{why}; run {run_id} {}; after it: {}",
                    if undone {
                        "was undone"
                    } else {
                        "could NOT be undone"
                    },
                    if equal {
                        "every table answers as before".to_string()
                    } else {
                        differing_summary(&self.report.tables_after_undo)
                    }
                ),
            )
        }
    }
}

/// How the compaction ended.
struct Compacted {
    /// It exited 0 or 3 (not killed, not crashed).
    normal: bool,
    /// Some windows were skipped (exit 3).
    partial: bool,
    status: String,
}

fn label(t: &TableMeasure) -> String {
    format!("{}.{}", t.db, t.table)
}

/// The data dir's maintenance lock: one routine at a time (kompactor's own steps take
/// `.kompactor/lock` themselves).
pub fn lock(data_dir: &Path) -> Result<fs::File, String> {
    let dir = RunDirs::state_dir(data_dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("maintenance.lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "another kompactor maintain is running on this data dir ({})",
            path.display()
        )),
        Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}
