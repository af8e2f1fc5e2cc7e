//! When something failed: start the server again if nothing changed; undo the run and prove
//! the answers are back if something did.

use super::report::{compared_summary, differing_summary, Verdict};
use super::steps::UNANSWERING_GRACE;
use super::Routine;
use std::time::Instant;

impl Routine<'_> {
    /// Nothing was changed: the server starts again if this routine stopped it.
    pub(super) fn not_compacted(&mut self, why: String) -> (Verdict, String) {
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
    pub(super) fn after_failed_start(&mut self, why: String) -> (Verdict, String) {
        // Half up (it did not answer in time)? Stopped first: undo refuses a running server.
        // Only what this routine started: the pid file may still name the old server's pid,
        // which another process may have by now.
        if self.service.adopt_started() {
            let _ = self
                .service
                .kill_started(self.timeout.min(UNANSWERING_GRACE));
        }
        self.stopped_by_us = true;
        self.undo_and_prove(format!(
            "the server did not start after the compaction: {why}"
        ))
    }

    /// Something is wrong after the compaction: stop the server, undo the run (if it recorded
    /// one), start the server again, measure and compare with the first measurement.
    pub(super) fn undo_and_prove(&mut self, why: String) -> (Verdict, String) {
        self.say(&format!("\n{why}"));
        let run_id = self.report.run_id.clone();
        let state = match &run_id {
            Some(id) => match self.undo_run(id) {
                Ok(state) => state,
                Err(e) => return (Verdict::Attention, format!("{why}; {e}")),
            },
            None => "it recorded no run: nothing was changed".to_string(),
        };
        if self.stopped_by_us {
            if let Err(e) = self.start_step("start_after_undo") {
                return (
                    Verdict::Attention,
                    format!(
                        "{why}; {state}; the server did NOT start: {e}; start it: {}",
                        self.service.start_command()
                    ),
                );
            }
        }
        let after = match self.measure("measure_after_undo", "measuring every table again") {
            Ok(m) => m,
            Err(e) => {
                return (
                    Verdict::Attention,
                    format!("{why}; {state}; the tables could not be measured after it: {e}"),
                )
            }
        };
        let (tables, equal) = self.compare_with_before(&after);
        self.report.tables_after_undo = tables;
        let changed = run_id.is_some();
        match (equal, changed, self.report.undone) {
            (true, true, true) => (
                Verdict::Undone,
                format!(
                    "{why}; {state} and every table answers as before ({})",
                    compared_summary(&self.report.tables_after_undo)
                ),
            ),
            (true, false, _) => (
                Verdict::NotCompacted,
                format!(
                    "{why}; {state}; every table answers as before ({})",
                    compared_summary(&self.report.tables_after_undo)
                ),
            ),
            (true, true, false) => (
                Verdict::Attention,
                format!("{why}; {state}; every table answers as before"),
            ),
            (false, _, _) => (
                Verdict::Attention,
                format!(
                    "{why}; {state}; now: {} (rows written during the maintenance?)",
                    differing_summary(&self.report.tables_after_undo)
                ),
            ),
        }
    }

    /// Stops the server if it runs and undoes `run_id`: what state that left, or why it could
    /// not be tried.
    fn undo_run(&mut self, run_id: &str) -> Result<String, String> {
        if !self.stopped_by_us {
            self.stop_server("stop_for_undo", "stopping the server to undo the run")
                .map_err(|e| {
                    format!(
                        "the server did not stop to undo run {run_id}: {e}; stop it, then run: {} undo {} --run {run_id}",
                        self.k.exe.display(),
                        self.k.data_dir.display()
                    )
                })?;
        }
        self.heading(&format!("undoing run {run_id}"));
        let t = Instant::now();
        let undo = self.k.undo(run_id);
        let undone = matches!(&undo, Ok(e) if e.code == Some(0));
        let detail = match &undo {
            Ok(_) if undone => format!("run {run_id} undone"),
            Ok(e) => e.failure("kompactor undo"),
            Err(e) => e.clone(),
        };
        self.step("undo", t, undone, detail);
        self.report.undone = undone;
        Ok(if undone {
            format!("run {run_id} was undone: the node is as before the maintenance")
        } else {
            format!("run {run_id} could NOT be undone (see above)")
        })
    }
}
