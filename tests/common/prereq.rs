//! Tests that need something beyond the repo (a real server, root): they fail when it is
//! missing, unless the run says on purpose that it goes without (`$KOMPACTOR_TESTS_SKIP`), and
//! each records that it ran to its end, for `.ci/run` and `scripts/test.sh` to count.
//!
//! `KOMPACTOR_TESTS_SKIP` is a comma-separated list of what may be missing: `real-server`
//! (`$INFLUXDB3_BIN`, a 3.10 server), `real-server-3.0` (`$INFLUXDB3_BIN_3_0`, a 3.0.x server),
//! `root` (mounting a tmpfs). A test skipped that way appends a line to `$KOMPACTOR_SKIPPED`
//! (if set); one that ran to its end appends a line to `$KOMPACTOR_TEST_MARKER` (if set).

use std::io::Write;

/// What a test needs from outside the repo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A 3.10 server in `$INFLUXDB3_BIN`.
    Server,
    /// A 3.0.x server in `$INFLUXDB3_BIN_3_0`.
    Server3_0,
    /// Root, to mount a tmpfs.
    Root,
}

impl Need {
    /// Its name in `$KOMPACTOR_TESTS_SKIP`.
    pub fn name(self) -> &'static str {
        match self {
            Need::Server => "real-server",
            Need::Server3_0 => "real-server-3.0",
            Need::Root => "root",
        }
    }

    fn how(self) -> &'static str {
        match self {
            Need::Server => "set $INFLUXDB3_BIN to an InfluxDB 3 Core 3.10 `influxdb3` (scripts/test.sh takes `influxdb3` from PATH; on CI, .ci/run unpacks the servers it is given)",
            Need::Server3_0 => "set $INFLUXDB3_BIN_3_0 to an InfluxDB 3 Core 3.0.x `influxdb3` (on CI, .ci/run unpacks the servers it is given)",
            Need::Root => "run the tests as root (they mount a small tmpfs)",
        }
    }
}

/// Whether the run goes without `need` on purpose.
fn skipped_on_purpose(need: Need) -> bool {
    std::env::var("KOMPACTOR_TESTS_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|s| s.trim() == need.name())
}

/// Called by a test whose prerequisite `need` is missing: `false` (the test returns) when the
/// run opted out of it, after saying so; otherwise the test fails with how to get it.
pub fn missing(test: &str, need: Need, what: &str) -> bool {
    if !skipped_on_purpose(need) {
        panic!(
            "{test}: {what} is missing: {}; or set KOMPACTOR_TESTS_SKIP={} to run without it on purpose",
            need.how(),
            need.name()
        );
    }
    let line = format!(
        "{test}: not run: {what} is missing (KOMPACTOR_TESTS_SKIP={})",
        need.name()
    );
    let _ = writeln!(std::io::stderr(), "{line}");
    append("KOMPACTOR_SKIPPED", &line);
    false
}

/// Records that `test` ran to its end.
pub fn ran(test: &str, what: &str) {
    let line = format!("{test} ok: {what}");
    let _ = writeln!(std::io::stderr(), "{line}");
    append("KOMPACTOR_TEST_MARKER", &line);
}

fn append(var: &str, line: &str) {
    if let Some(path) = std::env::var_os(var) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("${var}: {e}"));
        writeln!(f, "{line}").unwrap();
    }
}

/// Records, when dropped at the end of a test that did not fail, that the test ran to its
/// end ([`ran`]), under the test's own name.
pub struct RanToEnd(String);

impl RanToEnd {
    pub fn here() -> RanToEnd {
        RanToEnd(std::thread::current().name().unwrap_or("test").to_string())
    }
}

impl Drop for RanToEnd {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            ran(&self.0, "ran to its end");
        }
    }
}
