//! The maintenance window as one routine (`kompactor maintain`): measure every table through
//! the running server, prepare, stop it, verify, compact, start it, measure again and compare;
//! undo the run when anything differs.
//!
//! - [`service`]: stopping and starting the server (systemd, or a pid file and a command).
//! - [`children`]: kompactor's own steps, run as child processes.
//! - [`report`]: the typed report and its verdict.
//! - [`names`]: `names.json`, from the first measurement.
//! - [`signals`]: a signal ends the routine only where the server runs.
//! - `steps`: each step of the routine; `undo`: what it does when something failed.
//!
//! Whatever fails, the server is started again if this routine stopped it, and the verdict
//! says what state the node is in.

pub mod children;
pub mod names;
pub mod report;
pub mod service;
pub mod signals;
mod steps;
mod undo;

use crate::durable::journal::RunDirs;
use crate::server::http::Client;
use crate::server::measure::{Measurement, TableMeasure};
use children::Kompactor;
use report::{differing_summary, MaintainReport, Step, Verdict, MAINTAIN_FORMAT_VERSION};
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
    signals::defer();
    let (verdict, message) = match fs::create_dir_all(&record) {
        Ok(()) => r.routine(),
        Err(e) => (
            Verdict::NotCompacted,
            format!("cannot create {}: {e}; nothing changed", record.display()),
        ),
    };
    let message = match signals::received() {
        Some(sig) if !message.starts_with("interrupted") => {
            format!("{message} ({sig} received meanwhile: the routine ended once the server ran)")
        }
        _ => message,
    };
    r.report.verdict = verdict;
    // One line: the steps above hold the details.
    r.report.message = message.split_whitespace().collect::<Vec<_>>().join(" ");
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
        match self.preflight() {
            Ok(true) => {}
            Ok(false) => {
                return (
                    Verdict::Proven,
                    "nothing to compact: the plan merges no window; the server was not stopped"
                        .into(),
                )
            }
            Err(why) => return self.not_compacted(why),
        }
        match self.measure_before() {
            Ok(m) => self.before = Some(m),
            Err(why) => return self.not_compacted(why),
        }
        if self.prepare && signals::received().is_none() {
            self.prepare_step();
        }
        if let Some(sig) = signals::received() {
            return self
                .not_compacted(format!("interrupted ({sig}) before the server was stopped"));
        }
        if let Err(why) = self.stop_step() {
            return self.not_compacted(why);
        }
        if let Err(why) = self.verify_step() {
            return self.not_compacted(why);
        }
        if let Some(sig) = signals::received() {
            return self.not_compacted(format!("interrupted ({sig}) before the compaction"));
        }
        let compacted = match self.compact_step() {
            Ok(c) => c,
            Err(why) => return self.not_compacted(why),
        };
        if !compacted.normal {
            // Whatever it got to, the commit protocol left the data dir valid; its run, if it
            // recorded one, is undone with the server still stopped.
            let why = format!("the compaction ended abnormally ({})", compacted.status);
            return self.undo_and_prove(why);
        }
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
        let (tables, equal) = self.compare_with_before(&after);
        self.report.tables = tables;
        if equal {
            return self.proven(&compacted);
        }
        let why = format!(
            "after the compaction {}",
            differing_summary(&self.report.tables)
        );
        self.undo_and_prove(why)
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
