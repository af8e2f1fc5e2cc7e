//! A real InfluxDB 3 Core server for the tests: found through `$INFLUXDB3_BIN` (3.10 line) or
//! `$INFLUXDB3_BIN_3_0` (3.0.x), started on a data dir on a free loopback port, queried and
//! written to over HTTP with kompactor's own client (`kompactor::server::http`, the one
//! `kompactor maintain` measures with), and always stopped, also when a test panics.

use super::prereq::{missing, Need};
use super::Fixture;
pub use kompactor::server::http::HttpError;
use kompactor::server::http::{Client, Endpoint};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take to answer `/health` (a busy two-core machine is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a single HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The `--query-file-limit` used where every file must be readable (before compaction).
pub const LARGE_FILE_LIMIT: u64 = 1_000_000;

/// A server binary and the release line it belongs to.
#[derive(Clone, Debug)]
pub struct ServerBin {
    pub path: PathBuf,
    /// The environment variable it came from.
    pub var: &'static str,
    /// A 3.0.x server (its flags differ slightly).
    pub v3_0: bool,
}

impl ServerBin {
    /// The server that reads `f`: `$INFLUXDB3_BIN_3_0` for a fixture written by 3.0.x, else
    /// `$INFLUXDB3_BIN` ([`ServerBin::release`]).
    pub fn for_fixture(f: &Fixture) -> Option<ServerBin> {
        let version = std::fs::read_to_string(f.dir.join("SERVER_VERSION")).unwrap_or_default();
        ServerBin::release(version.trim().starts_with("3.0."))
    }

    /// The 3.0.x server (`v3_0`) or the 3.10 one, as `for_fixture` finds them; `None` when
    /// the run goes without it on purpose ([`super::prereq`]), a failure when it is missing.
    pub fn release(v3_0: bool) -> Option<ServerBin> {
        let (var, need) = if v3_0 {
            ("INFLUXDB3_BIN_3_0", Need::Server3_0)
        } else {
            ("INFLUXDB3_BIN", Need::Server)
        };
        match std::env::var_os(var).filter(|v| !v.is_empty()) {
            Some(p) => {
                let path = PathBuf::from(p);
                assert!(path.is_file(), "${var} = {} is not a file", path.display());
                Some(ServerBin { path, var, v3_0 })
            }
            None => {
                let test = std::thread::current().name().unwrap_or("test").to_string();
                missing(&test, need, &format!("${var}"));
                None
            }
        }
    }
}

/// Records that a real-server test ran to its end ([`super::prereq::ran`]).
/// The log files of one test's server starts, numbered in start order, under
/// `$CARGO_TARGET_TMPDIR/real-server/<test>/` (emptied when the test begins).
pub struct ServerLogs {
    dir: PathBuf,
    starts: std::cell::Cell<usize>,
}

impl ServerLogs {
    pub fn new(test: &str) -> ServerLogs {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("real-server")
            .join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ServerLogs {
            dir,
            starts: Default::default(),
        }
    }

    /// The log file of the next start, named by its number, `stage` and `node`.
    pub fn next(&self, stage: &str, node: &str) -> PathBuf {
        let n = self.starts.get() + 1;
        self.starts.set(n);
        let slug: String = format!("{stage}-{node}")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.dir.join(format!("{n:03}-{slug}.log"))
    }

    /// How many times the server was started.
    pub fn starts(&self) -> usize {
        self.starts.get()
    }
}

pub fn passed(test: &str, what: &str) {
    super::prereq::ran(test, what);
}

/// One line on the test process's stderr that the test harness does not capture.
pub fn notice(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// How to start a server.
#[derive(Clone, Debug, Default)]
pub struct Serve {
    /// `--query-file-limit`; `None` leaves the server's default (432).
    pub file_limit: Option<u64>,
    /// Snapshot after every WAL flush and whenever anything is buffered, so new writes reach
    /// Parquet files within seconds.
    pub fast_snapshots: bool,
    /// Further `serve` flags (a fixture's `SERVER_FLAGS`).
    pub extra: Vec<String>,
}

/// Why a server did not come up.
#[derive(Debug)]
pub enum StartError {
    /// It exited before answering `/health` (it refused the data dir, for example).
    Exited { status: String, log_tail: String },
    /// It did not answer `/health` in time; it was killed, after its threads' stacks and a
    /// copy of the data dir were kept beside its log (`evidence` says where).
    /// `wal_listing_race` is set when the stacks show 3.0.x's start-up race (see
    /// [`WAL_LISTING_RACE`]).
    NotReady {
        log_tail: String,
        evidence: String,
        wal_listing_race: bool,
    },
}

/// Frames of the main thread when an InfluxDB 3.0.3 server hangs at start, right after
/// "catalog initialized": it spins forever listing its WAL directory, in its own wrapper of
/// the local object store (a blocking collect of the listing inside the async runtime;
/// later releases list differently). Seen in about one start in forty on a loaded two-core
/// machine, on untouched fixture copies as on compacted ones; a later start of the same data
/// dir goes on. `kompactor maintain` ends such a start and tries once more too.
/// The spinning thread is caught in `list_with_offset` or in the `list` it calls: the first
/// frame is a prefix of both.
pub const WAL_LISTING_RACE: [&str; 2] = [
    "LocalFileSystemWithSortedListOp as object_store::ObjectStore>::list",
    "influxdb3_wal::object_store::WalObjectStore::new",
];

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Exited { status, log_tail } => {
                write!(
                    f,
                    "it exited ({status}) before answering /health\n{log_tail}"
                )
            }
            StartError::NotReady {
                log_tail, evidence, ..
            } => write!(
                f,
                "no answer from /health within {READY_TIMEOUT:?}; killed\n{evidence}\n{log_tail}"
            ),
        }
    }
}

/// A running server; dropping it stops it (SIGTERM, then SIGKILL after a timeout).
pub struct Server {
    child: Child,
    pub port: u16,
    pub node: String,
    /// The server's stdout and stderr.
    pub log: PathBuf,
    /// The data dir it serves.
    data_dir: PathBuf,
    client: Client,
}

impl Server {
    /// Starts `bin` on node `node` of `data_dir` with its output in `log`, and waits until it
    /// answers `/health`. A port taken between choosing and binding it is retried.
    pub fn start(
        bin: &ServerBin,
        data_dir: &Path,
        node: &str,
        opts: &Serve,
        log: &Path,
    ) -> Result<Server, StartError> {
        let mut attempts = 0;
        let mut this_log = log.to_path_buf();
        loop {
            attempts += 1;
            match Self::start_once(bin, data_dir, node, opts, &this_log) {
                Err(StartError::Exited { log_tail, .. })
                    if attempts < 3 && log_tail.contains("in use") =>
                {
                    continue
                }
                // The server's own bug, not the data dir's: said, and started once more (an
                // operator would restart it too). Any other hang fails the test.
                Err(StartError::NotReady {
                    evidence,
                    wal_listing_race: true,
                    ..
                }) if attempts < 3 => {
                    this_log = log.with_extension(format!("retry{attempts}.log"));
                    notice(&format!(
                        "real-server: a server start hung in its WAL listing (InfluxDB 3.0.x's \
                         start-up race, not the data dir's doing; {evidence}); starting it \
                         again, logging to {}",
                        this_log.display()
                    ));
                }
                other => return other,
            }
        }
    }

    fn start_once(
        bin: &ServerBin,
        data_dir: &Path,
        node: &str,
        opts: &Serve,
        log: &Path,
    ) -> Result<Server, StartError> {
        let port = free_port();
        let out = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new(&bin.path)
            .args(serve_args(bin, data_dir, node, port, opts))
            .env_remove("INFLUXDB3_DB_DIR")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.path.display()));
        let mut server = Server {
            child,
            port,
            node: node.to_string(),
            log: log.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            client: Client::new(Endpoint {
                url: format!("http://127.0.0.1:{port}"),
                token: None,
                ca_file: None,
                timeout: REQUEST_TIMEOUT,
            })
            .unwrap(),
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Polls `/health` until it answers, the process exits, or the timeout passes.
    fn wait_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(StartError::Exited {
                    status: status.to_string(),
                    log_tail: self.log_tail(40),
                });
            }
            if self.client.healthy() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let (evidence, stacks) = self.keep_evidence();
                self.terminate();
                return Err(StartError::NotReady {
                    log_tail: self.log_tail(40),
                    evidence,
                    wal_listing_race: WAL_LISTING_RACE.iter().all(|f| stacks.contains(f)),
                });
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Keeps what a start-up hang leaves to study, beside the log: every thread's stack (from
    /// gdb, and the kernel's view from /proc) and a copy of the data dir as the server saw it.
    /// Returns where they are, and the stacks.
    fn keep_evidence(&self) -> (String, String) {
        let pid = self.child.id().to_string();
        let stacks = self.log.with_extension("stacks.txt");
        let mut out = String::new();
        match Command::new("gdb")
            .args(["-p", &pid, "-batch", "-ex", "thread apply all bt"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) => out.push_str(&String::from_utf8_lossy(&o.stdout)),
            Err(e) => out.push_str(&format!("gdb did not run: {e}\n")),
        }
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let p = task.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            out.push_str(&format!(
                "--- task {}: {} wchan {}\n{}",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan"),
                read("stack")
            ));
        }
        let _ = std::fs::write(&stacks, &out);
        let copy = self.log.with_extension("data");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&self.data_dir)
            .arg(&copy)
            .status()
            .is_ok_and(|s| s.success());
        let evidence = format!(
            "stacks: {}; data dir {}",
            stacks.display(),
            if copied {
                format!("copied to {}", copy.display())
            } else {
                "could not be copied".to_string()
            }
        );
        (evidence, out)
    }

    /// The names of the node's databases (`_internal` and deleted ones left out).
    pub fn databases(&self) -> Vec<String> {
        kompactor::server::measure::databases(&self.client)
            .unwrap_or_else(|e| panic!("{}: listing databases: {e}", self.node))
    }

    /// The rows `sql` returns on database `db`, one JSON object each (NULL columns absent).
    pub fn query(&self, db: &str, sql: &str) -> Result<Vec<Value>, HttpError> {
        Ok(self
            .client
            .query(db, sql)?
            .into_iter()
            .map(Value::Object)
            .collect())
    }

    /// Writes line protocol (nanosecond timestamps) to database `db`.
    pub fn write_lp(&self, db: &str, lines: &str) -> Result<(), HttpError> {
        let params = [("db", db), ("precision", "nanosecond")];
        match self.client.post("/api/v3/write_lp", &params, lines)? {
            (200..=299, _) => Ok(()),
            (status, body) => Err(HttpError::Status { status, body }),
        }
    }

    /// The last `n` lines of the server's log, with its path.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// SIGTERM, then SIGKILL if it has not exited within `STOP_TIMEOUT`; reaps it either way.
    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The `serve` command line.
fn serve_args(bin: &ServerBin, data_dir: &Path, node: &str, port: u16, o: &Serve) -> Vec<String> {
    let mut a: Vec<String> = [
        "serve",
        "--node-id",
        node,
        "--object-store",
        "file",
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--http-bind",
        &format!("127.0.0.1:{port}"),
        "--without-auth",
        "--disable-telemetry-upload",
        "--datafusion-config",
        "datafusion.execution.skip_physical_aggregate_schema_check:true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(limit) = o.file_limit {
        a.extend(["--query-file-limit".into(), limit.to_string()]);
    }
    if o.fast_snapshots {
        // 3.0.x takes the threshold without a unit.
        let threshold = if bin.v3_0 { "0" } else { "1b" };
        for s in [
            "--wal-snapshot-size",
            "1",
            "--force-snapshot-mem-threshold",
            threshold,
            "--wal-flush-interval",
            "1s",
            "--gen1-duration",
            "10m",
        ] {
            a.push(s.into());
        }
    }
    a.extend(o.extra.iter().cloned());
    a
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The last `n` lines of a log file, headed by its path.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- last {} lines of {} ---\n{}",
        lines.len() - from,
        path.display(),
        lines[from..].join("\n")
    )
}

/// The extra `serve` flags a fixture needs (its `SERVER_FLAGS`, if any).
pub fn fixture_flags(f: &Fixture) -> Vec<String> {
    std::fs::read_to_string(f.dir.join("SERVER_FLAGS"))
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}
