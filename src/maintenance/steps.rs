//! The routine's steps, each recorded in the report as it ends.

use super::children::{Ended, PlanView, PrepareView, RunView};
use super::report::{compared_summary, Verdict};
use super::{label, Compacted, Routine};
use crate::durable::journal::RunDirs;
use crate::server::compare::{compare, TableComparison, TableResult};
use crate::server::measure::{measure_all, Measurement, TableMeasure};
use crate::units::human_bytes;
use std::fs;
use std::time::{Duration, Instant};

/// How long a started server that never answered may take to go on SIGTERM before SIGKILL.
pub(super) const UNANSWERING_GRACE: Duration = Duration::from_secs(10);

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

impl Routine<'_> {
    /// Whether the server runs, the options are valid and the disk has room; Ok(false) when
    /// the plan has nothing to do (the server is then not stopped at all).
    pub(super) fn preflight(&mut self) -> Result<bool, String> {
        self.heading("preflight");
        let t = Instant::now();
        self.service.check_running()?;
        if !self.client.healthy() {
            return Err(format!("{}/health does not answer 200", self.client.url()));
        }
        let dry = self.k.dry_run()?;
        if dry.code != Some(0) {
            let detail = dry.failure("kompactor's dry run");
            self.step("preflight", t, false, detail);
            return Err(format!("kompactor's dry run refused ({})", dry.status()));
        }
        let plan: PlanView = dry
            .document()
            .ok_or_else(|| format!("the dry run printed no plan (see {})", dry.log.display()))?;
        let space = format!(
            "{} of disk needed, {} free on {}",
            human_bytes(plan.space.total),
            human_bytes(plan.space.available),
            plan.space.mount
        );
        if plan.space.total > plan.space.available {
            self.step("preflight", t, false, space.clone());
            return Err(format!("not enough disk space: {space}"));
        }
        let work = plan.has_work();
        let what = if work {
            "windows to merge"
        } else {
            "nothing to compact"
        };
        self.step(
            "preflight",
            t,
            true,
            format!("the server runs; {what}; {space}"),
        );
        Ok(work)
    }

    /// The first measurement; every table must be measured, or nothing can be proven.
    pub(super) fn measure_before(&mut self) -> Result<Measurement, String> {
        let before = self.measure("measure", "measuring every table on the running server")?;
        let unmeasured: Vec<String> = before
            .tables
            .iter()
            .filter(|t| t.error.is_some())
            .map(label)
            .collect();
        if !unmeasured.is_empty() {
            self.say("  A table that cannot be measured now cannot be compared afterwards. If the");
            self.say("  query file limit is the cause, start the server once with a higher --query-file-limit.");
            return Err(format!(
                "could not measure {} table(s): {}",
                unmeasured.len(),
                unmeasured.join(", ")
            ));
        }
        if let Err(e) = super::names::write_names(&self.k.data_dir, &before) {
            self.say(&format!("  warning: {e}"));
        }
        Ok(before)
    }

    /// Every table answers as before: the verdict, and how to undo the run all the same.
    pub(super) fn proven(&self, compacted: &Compacted) -> (Verdict, String) {
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
        (
            Verdict::Proven,
            format!("{}{partial}; {run}", compared_summary(&self.report.tables)),
        )
    }

    pub(super) fn measure(
        &mut self,
        step: &'static str,
        what: &str,
    ) -> Result<Measurement, String> {
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
        if let Err(e) = fs::write(&path, crate::json::to_string(&m) + "\n") {
            // The comparison goes on from memory; only the record lacks the file.
            self.say(&format!(
                "  warning: could not write {}: {e}",
                path.display()
            ));
        }
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

    pub(super) fn prepare_step(&mut self) {
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

    /// Stops the server and records the step as `name`: the reason if it did not stop.
    pub(super) fn stop_server(&mut self, name: &'static str, heading: &str) -> Result<(), String> {
        self.heading(heading);
        let t = Instant::now();
        match self.service.stop(self.timeout) {
            Ok(detail) => {
                self.stopped_by_us = true;
                self.step(name, t, true, detail);
                Ok(())
            }
            Err(why) => {
                self.step(name, t, false, why.clone());
                Err(why)
            }
        }
    }

    pub(super) fn stop_step(&mut self) -> Result<(), String> {
        self.down_from = Some(Instant::now());
        self.stop_server("stop", "stopping the server").map_err(|why| {
            format!(
                "{why}; it was asked to stop: once it has, start it again ({}) and run the maintenance again",
                self.service.start_command()
            )
        })?;
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

    pub(super) fn verify_step(&mut self) -> Result<(), String> {
        self.heading("checking the data dir");
        let t = Instant::now();
        let e = self.k.verify()?;
        let ok = e.code == Some(0);
        let detail = if ok {
            "consistent".to_string()
        } else {
            e.failure("kompactor verify")
        };
        self.step("verify", t, ok, detail.clone());
        if ok {
            Ok(())
        } else {
            Err(format!("kompactor verify found problems ({})", e.status()))
        }
    }

    pub(super) fn compact_step(&mut self) -> Result<Compacted, String> {
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
                let mut detail = format!(
                    "{run}: {detail}{}",
                    if partial {
                        " (partial: see the report)"
                    } else {
                        ""
                    }
                );
                let warnings = e.warnings();
                if warnings > 0 {
                    detail.push_str(&format!("; {warnings} warning(s) in {}", e.log.display()));
                }
                self.step("compact", t, true, detail);
                Ok(Compacted {
                    normal: true,
                    partial,
                    status: e.status(),
                })
            }
            Some(1) | Some(2) => {
                let detail = e.failure("kompactor");
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

    /// Starts the server and waits for `/health`. A server that comes up but does not answer
    /// is ended and started once more: InfluxDB 3.0.x can hang at start (its main thread
    /// spinning while it lists its WAL directory), whatever the data dir holds, and a second
    /// start goes on.
    pub(super) fn start_step(&mut self, name: &'static str) -> Result<(), String> {
        self.heading("starting the server");
        let t = Instant::now();
        let why = match self.service.start(self.client, self.timeout) {
            Ok(detail) => return self.started(name, t, detail),
            Err(why) => why,
        };
        // The verdict is one line; the steps keep the log's end.
        let first = first_line(&why);
        if !self.service.adopt_started() {
            self.step(name, t, false, why);
            return Err(first);
        }
        // Indented like the lines of the log's end above it.
        match self
            .service
            .kill_started(self.timeout.min(UNANSWERING_GRACE))
        {
            Ok(gone) => self.step(
                name,
                t,
                false,
                format!("{why}\n  it ran without answering: {gone}; starting it once more"),
            ),
            Err(e) => {
                self.step(
                    name,
                    t,
                    false,
                    format!("{why}\n  it could not be ended: {e}"),
                );
                return Err(format!("{first}; it could not be ended: {e}"));
            }
        }
        let t = Instant::now();
        match self.service.start(self.client, self.timeout) {
            Ok(detail) => self.started(name, t, detail),
            Err(again) => {
                let line = format!("{first}; started once more: {}", first_line(&again));
                self.step(name, t, false, again);
                Err(line)
            }
        }
    }

    fn started(
        &mut self,
        name: &'static str,
        since: Instant,
        detail: String,
    ) -> Result<(), String> {
        self.stopped_by_us = false;
        self.step(name, since, true, detail);
        Ok(())
    }

    /// Compares `after` with the first measurement and prints each table's result; the
    /// comparisons, and whether every table is equal.
    pub(super) fn compare_with_before(&self, after: &Measurement) -> (Vec<TableComparison>, bool) {
        let before = self.before.as_ref().expect("measured before the stop");
        let tables = compare(before, after);
        self.print_comparison(&tables);
        let equal = tables.iter().all(|t| t.result == TableResult::Equal);
        (tables, equal)
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
}
