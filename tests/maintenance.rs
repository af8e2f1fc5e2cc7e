//! `kompactor maintain` end to end against the real InfluxDB 3 Core server (3.10 line from
//! `$INFLUXDB3_BIN`, 3.0.x from `$INFLUXDB3_BIN_3_0`; see `tests/common/server.rs`), with the
//! real kompactor or a stand-in around it, all on 127.0.0.1:
//!
//! - every fixture the servers read (3.10 small, with an API token, and multi, node by node;
//!   3.5.0 and 3.8.3 with the 3.10 server; 3.0.3 with the 3.0.3 server), served with the
//!   default query file limit of 432, so that the big tables are over it before: every table is
//!   measured before (those over the limit in time slices) and after, with numbers that are
//!   equal, and `VERDICT: PROVEN`; on 3.10 small the sliced measurements equal what one query
//!   returns on a server without the limit;
//! - a stand-in that runs kompactor, then drops one row of `metrics.cpu`'s compacted file
//!   (the file rewritten with one row fewer, its size and row count fixed in the metadata, so
//!   that the server reads it without complaint): the run is undone, exit 3, the verdict
//!   names `metrics.cpu`, and the server answers as before;
//! - a stand-in that runs kompactor, then deletes one compacted file of `events.log`: the
//!   table cannot be measured after the restart; the verdict names it;
//! - a server that comes up after the compaction but never answers and ignores SIGTERM: it
//!   is killed and started once more, and the verdict is proven;
//! - a server that will not start again: exit 4, the verdict says so and that the run was
//!   undone, and the node, served again, answers as before;
//! - a server whose query file limit (1) no time slice can meet: nothing is stopped or
//!   compacted, exit 1, the tables are named;
//! - `kompactor verify` fails: no compaction, the server is started again, exit 1;
//! - `--systemd-unit`, through a fake `systemctl` on PATH that stops and starts the real
//!   server; run twice (the second finds nothing to compact);
//! - bad command lines (no server).
//!
//! No fake server is left: every failure mode above is one the real server shows (an
//! unreadable file, a limit no slice meets, a token it requires). Without the servers each
//! test fails, unless the run opts out (`KOMPACTOR_TESTS_SKIP`, see `tests/common/prereq.rs`).
//!
//! Every wait is bounded: the server's start (180 s, in `Server::start`), the routine (900 s,
//! then its whole process group is killed), the stand-in waiting for the damage (120 s). Every
//! server a case started, or that the script started for it, is stopped when the case ends,
//! passed or failed (`Guard`). Linux only: processes are found through /proc.

mod common;

use common::server::{fixture_flags, log_tail, Serve, Server, ServerBin, LARGE_FILE_LIMIT};
use common::{copy_fixture, fixture, read_json, Fixture};
use kompactor::format::parquet::sql_str;
use kompactor::server::http::{Client, Endpoint};
use kompactor::server::measure::{measure_all, Measurement, TableMeasure};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The longest the routine may run (a first compaction on a slow machine included).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);
/// The longest a server may take to exit after SIGTERM before the guard kills it.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Single-quoted for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn write_exe(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The process's command line, if it runs and is not a zombie.
fn cmdline(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    if matches!(stat.rsplit_once(')'), Some((_, rest)) if rest.trim_start().starts_with('Z')) {
        return None;
    }
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

fn alive(pid: u32) -> bool {
    cmdline(pid).is_some()
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid (or process group) this test started.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The server process listening on `port` (found by its `--http-bind` argument).
fn server_pid(port: u16) -> u32 {
    let bind = format!("127.0.0.1:{port}");
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(argv) = cmdline(pid) {
            if argv.iter().any(|a| a == "serve") && argv.contains(&bind) {
                return pid;
            }
        }
    }
    panic!("no server process with --http-bind {bind}")
}

/// A client for the case's server (with the token, if any).
fn client(port: u16, token: Option<&str>) -> Client {
    Client::new(Endpoint {
        url: format!("http://127.0.0.1:{port}"),
        token: token.map(String::from),
        ca_file: None,
        timeout: Duration::from_secs(120),
    })
    .unwrap()
}

/// `GET /health` answered 200 (with the token, if any).
fn healthy(port: u16, token: Option<&str>) -> bool {
    client(port, token).healthy()
}

/// Stops, when the case ends, the servers it started itself (`children`, reaped) and the one
/// the script left running (named by the pid file, and only if its command line names the
/// case's data dir).
struct Guard {
    pid_file: PathBuf,
    data_dir: String,
    children: Vec<Child>,
}

impl Guard {
    fn stop(pid: u32, mut exited: impl FnMut() -> bool) {
        signal(pid as i32, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !exited() && Instant::now() < deadline {
            sleep(Duration::from_millis(100));
        }
        if !exited() {
            signal(pid as i32, libc::SIGKILL);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            if c.try_wait().ok().flatten().is_none() {
                let pid = c.id();
                Self::stop(pid, || c.try_wait().ok().flatten().is_some());
                let _ = c.wait();
            }
        }
        let pid = fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            let ours = |pid| cmdline(pid).is_some_and(|a| a.iter().any(|x| x == &self.data_dir));
            if ours(pid) {
                Self::stop(pid, || !ours(pid));
            }
        }
    }
}

/// How a case's first server runs.
#[derive(Clone, Copy, Default)]
struct Opts {
    /// `--query-file-limit` (None: the default, 432).
    file_limit: Option<u64>,
    /// Require an API token (an offline admin token, `--admin-token-file`).
    token: bool,
}

/// One case: a copy of a fixture served by a real server on a free port, a pid file naming it
/// and the command that starts it again.
struct Case {
    _guard: Guard, // dropped first: the servers stop before their directories go
    /// Records that the test ran to its end, when the case is dropped and nothing failed.
    _ran: common::prereq::RanToEnd,
    _first: Option<Server>,
    f: Fixture,
    node: String,
    port: u16,
    /// The API token the server requires, and the file it is in.
    token: Option<(String, PathBuf)>,
    pid_file: PathBuf,
    start_cmd: String,
    first_pid: u32,
    bin: ServerBin,
    work: tempfile::TempDir,
    data: tempfile::TempDir,
    started: Instant,
}

impl Case {
    /// None (after one line on stderr) when the server for the fixture is not available.
    fn new(fixture_name: &str, opts: Opts) -> Option<Case> {
        let f = fixture(fixture_name);
        let bin = ServerBin::for_fixture(&f)?;
        let data = copy_fixture(&f);
        Some(Case::on(f, bin, data, "node0", opts))
    }

    /// Starts a server for `node` of `data` (a copy of `f`).
    fn on(f: Fixture, bin: ServerBin, data: tempfile::TempDir, node: &str, opts: Opts) -> Case {
        let started = Instant::now();
        let work = tempfile::Builder::new()
            .prefix("kompactor-maintenance-test")
            .tempdir()
            .unwrap();
        let serve = Serve {
            file_limit: opts.file_limit,
            extra: fixture_flags(&f),
            ..Serve::default()
        };
        let log = work.path().join("first-server.log");
        let server = Server::start(&bin, data.path(), node, &serve, &log)
            .unwrap_or_else(|e| panic!("{}: the server did not start: {e:?}", f.name));
        let port = server.port;
        let pid = server_pid(port);
        // The exact command line the server runs with is the one the script starts it with.
        let mut argv = cmdline(pid).unwrap();
        let pid_file = work.path().join("influxdb3.pid");
        let mut guard = Guard {
            pid_file: pid_file.clone(),
            data_dir: data.path().display().to_string(),
            children: Vec::new(),
        };
        let (first, first_pid, token) = if opts.token {
            server.stop();
            let token_file = work.path().join("admin-token.json");
            let out = Command::new(&bin.path)
                .args(["create", "token", "--admin", "--offline", "--output-file"])
                .arg(&token_file)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let token = read_json(&token_file)["token"]
                .as_str()
                .unwrap()
                .to_string();
            argv.retain(|a| a != "--without-auth");
            argv.extend([
                "--admin-token-file".into(),
                token_file.display().to_string(),
            ]);
            let out = fs::File::create(&log).unwrap();
            let child = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            let pid = child.id();
            guard.children.push(child);
            let deadline = Instant::now() + Duration::from_secs(180);
            while !healthy(port, Some(&token)) {
                assert!(
                    Instant::now() < deadline && alive(pid),
                    "the server with a token did not answer\n{}",
                    log_tail(&log, 30)
                );
                sleep(Duration::from_millis(200));
            }
            (None, pid, Some((token, token_file)))
        } else {
            (Some(server), pid, None)
        };
        fs::write(&pid_file, format!("{first_pid}\n")).unwrap();
        let start_cmd = format!(
            "exec {}",
            argv.iter()
                .map(|a| sh_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Case {
            _guard: guard,
            _ran: common::prereq::RanToEnd::here(),
            _first: first,
            f,
            node: node.to_string(),
            port,
            token,
            pid_file,
            start_cmd,
            first_pid,
            bin,
            work,
            data,
            started,
        }
    }

    fn data(&self) -> String {
        self.data.path().display().to_string()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The pid-file form of the command line, with `kompactor` as the kompactor.
    fn pid_args(&self, kompactor: &Path) -> Vec<String> {
        let mut a: Vec<String> = [
            "maintain",
            &self.data(),
            "--hosts",
            &self.node,
            "--pid-file",
            &self.pid_file.display().to_string(),
            "--start-cmd",
            &self.start_cmd,
            "--url",
            &self.url(),
            "--kompactor",
            &kompactor.display().to_string(),
            "--timeout",
            "180",
        ]
        .map(String::from)
        .to_vec();
        if let Some((_, file)) = &self.token {
            a.extend(["--token-file".into(), file.display().to_string()]);
        }
        a
    }

    /// A stand-in kompactor: logs its arguments to `kompactor-calls.log`, then runs `body`
    /// (sh; `$REAL` is the real kompactor, `$W` the case's work directory).
    fn stand_in(&self, name: &str, body: &str) -> PathBuf {
        let path = self.work.path().join(name);
        write_exe(
            &path,
            &format!(
                "#!/bin/sh\nREAL={}\nW={}\nprintf '%s\\n' \"$*\" >> \"$W/kompactor-calls.log\"\n{body}\n",
                sh_quote(env!("CARGO_BIN_EXE_kompactor")),
                sh_quote(&self.work.path().display().to_string()),
            ),
        );
        path
    }

    /// The real kompactor, its calls logged.
    fn real_kompactor(&self) -> PathBuf {
        self.stand_in("kompactor", "exec \"$REAL\" \"$@\"")
    }

    /// Runs kompactor, then (a compaction that succeeded) asks the test to damage the data
    /// dir and waits for it (at most 120 s): see `run`'s `damage`.
    fn damaging_kompactor(&self) -> PathBuf {
        self.stand_in(
            "damaging-kompactor",
            r#""$REAL" "$@" || exit $?
case " $* " in *" --dry-run "*) exit 0 ;; esac
case $1 in verify | prepare | undo) exit 0 ;; esac
: > "$W/damage-request"
i=0
while [ ! -e "$W/damage-done" ]; do
    i=$((i + 1))
    if [ $i -gt 1200 ]; then echo "stand-in: the test did not damage the data dir" >&2; exit 70; fi
    sleep 0.1
done
echo "stand-in: the data dir was damaged after the compaction: $(cat "$W/damage-done")" >&2"#,
        )
    }

    /// The first `n` of the calls a routine makes: the dry run, prepare, verify, the
    /// compaction.
    fn expected_calls(&self, n: usize) -> Vec<String> {
        let (d, node) = (self.data(), &self.node);
        [
            format!("{d} --hosts {node} --dry-run --json"),
            format!("prepare {d} --hosts {node} --json"),
            format!("verify {d} --hosts {node}"),
            format!("{d} --hosts {node} --json"),
        ][..n]
            .to_vec()
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.work.path().join("kompactor-calls.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Runs `kompactor maintain` (at most `SCRIPT_TIMEOUT`, in its own process group, which
    /// is killed on timeout): its exit code and its output (stdout and stderr together). When
    /// a stand-in asks for it, `damage` is called on the data dir and what it returns is
    /// handed back to the stand-in.
    fn run(
        &mut self,
        args: &[String],
        path: Option<String>,
        damage: Option<&dyn Fn(&Path) -> String>,
    ) -> (i32, String) {
        let out_path = self.work.path().join("maintenance-output.txt");
        let out = fs::File::create(&out_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kompactor"));
        cmd.args(args)
            .env_remove("INFLUXDB3_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + SCRIPT_TIMEOUT;
        let request = self.work.path().join("damage-request");
        let done = self.work.path().join("damage-done");
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if let Some(d) = damage {
                if request.exists() && !done.exists() {
                    let what = d(self.data.path());
                    fs::write(&done, what).unwrap();
                }
            }
            if Instant::now() > deadline {
                signal(-(child.id() as i32), libc::SIGKILL);
                let _ = child.wait();
                panic!(
                    "kompactor maintain still running after {SCRIPT_TIMEOUT:?}:\n{}",
                    fs::read_to_string(&out_path).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(100));
        };
        let text = fs::read_to_string(&out_path).unwrap();
        println!("{text}");
        (status.code().unwrap_or(-1), text)
    }

    /// A file the last routine kept in its record directory.
    fn record_file(&self, name: &str) -> String {
        let root = self.data.path().join(".kompactor/maintenance");
        let mut runs: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        runs.sort();
        fs::read_to_string(runs.last().unwrap().join(name)).unwrap_or_default()
    }

    /// The pid the pid file names now.
    fn pid(&self) -> u32 {
        fs::read_to_string(&self.pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The server runs again, as a new process named by the pid file.
    fn assert_restarted(&self, out: &str) {
        let pid = self.pid();
        assert_ne!(
            pid, self.first_pid,
            "the pid file still names the first server\n{out}"
        );
        assert!(!alive(self.first_pid), "the first server still runs\n{out}");
        assert!(
            alive(pid),
            "the restarted server (pid {pid}) is not running\n{out}"
        );
        assert!(
            healthy(self.port, self.token.as_ref().map(|t| t.0.as_str())),
            "the restarted server does not answer\n{out}"
        );
    }

    /// The server runs again and answers as before the maintenance (the run was undone), as
    /// the test measures it.
    fn assert_restarted_as_before(&self, out: &str) {
        self.assert_restarted(out);
        assert_same_figures(&self.measured("measure"), &self.measure_now(), out);
    }

    /// A measurement the last routine recorded: `measure` (before), `measure_after` or
    /// `measure_after_undo`.
    fn measured(&self, which: &str) -> Measurement {
        let root = self.data.path().join(".kompactor/maintenance");
        let mut runs: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        runs.sort();
        let path = runs
            .last()
            .unwrap()
            .join(format!("{which}.measurement.json"));
        serde_json::from_value(read_json(&path)).unwrap()
    }

    /// Every table measured now through the case's server, as the routine measures them.
    fn measure_now(&self) -> Measurement {
        let c = client(self.port, self.token.as_ref().map(|t| t.0.as_str()));
        measure_all(&c, |_| {}).unwrap()
    }

    /// One line on stderr with the case's figures (the test harness does not capture it).
    fn report(&self, what: &str) {
        common::server::notice(&format!(
            "maintenance: {} {}: {what} in {:.1?}",
            self.f.name,
            self.node,
            self.started.elapsed()
        ));
    }
}

fn last_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

/// The tables of a measurement, by "db.table".
fn tables(m: &Measurement) -> Vec<(String, &TableMeasure)> {
    m.tables
        .iter()
        .map(|t| (format!("{}.{}", t.db, t.table), t))
        .collect()
}

/// Asserts that every table of `got` has the figures it has in `want`.
fn assert_same_figures(want: &Measurement, got: &Measurement, out: &str) {
    let (tw, tg) = (tables(want), tables(got));
    assert_eq!(
        tw.iter().map(|t| &t.0).collect::<Vec<_>>(),
        tg.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "{out}"
    );
    let diff = kompactor::server::compare::compare(want, got);
    for t in &diff {
        assert_eq!(
            t.result,
            kompactor::server::compare::TableResult::Equal,
            "{}: {:?}\n{out}",
            t.table,
            t.differences
        );
    }
}

/// The whole routine with the real kompactor on a case: exit 0, `VERDICT: OK`, and every table
/// measured before and after with equal numbers. Returns a one-line summary of what was
/// compared.
fn assert_routine_ok(c: &mut Case) -> String {
    let k = c.real_kompactor();
    let args = c.pid_args(&k);
    let (code, out) = c.run(&args, None, None);
    assert_eq!(code, 0, "{out}");
    let verdict = last_line(&out);
    assert!(verdict.starts_with("VERDICT: PROVEN"), "{out}");
    assert!(verdict.contains("row count, min and max time"), "{out}");
    assert_eq!(c.calls(), c.expected_calls(4), "{out}");
    // Merged while the server ran; the compaction only committed.
    assert!(
        out.contains("came prepared, 0 merged with the server stopped"),
        "{out}"
    );
    assert!(out.contains("downtime: "), "{out}");
    let run_id = verdict
        .rsplit_once("; run ")
        .map(|(_, r)| r.trim_end_matches(')').to_string())
        .unwrap_or_else(|| panic!("no run in the verdict: compacted nothing?\n{out}"));
    assert!(
        c.data.path().join(".kompactor/runs").join(&run_id).is_dir(),
        "{out}"
    );
    c.assert_restarted(&out);

    let (before, after) = (c.measured("measure"), c.measured("measure_after"));
    assert!(!before.tables.is_empty(), "no tables measured\n{out}");
    assert_same_figures(&before, &after, &out);
    // What the routine compared is what the server answers now, measured by the test.
    assert_same_figures(&before, &c.measure_now(), &out);
    let mut sliced = Vec::new();
    for (name, b) in tables(&before) {
        let f = b
            .figures
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: not measured\n{out}"));
        assert!(
            f.rows > 0 && f.min_time.is_some() && !f.fields.is_empty(),
            "{name}\n{out}"
        );
        if b.slices.unwrap() > 1 {
            sliced.push(format!(
                "{name} ({} files, {} slices)",
                b.files.unwrap(),
                b.slices.unwrap()
            ));
        }
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")) && l.ends_with(" ok"));
        assert!(line.is_some(), "no 'ok' line for {name}\n{out}");
    }
    format!(
        "{} tables, {} over the limit before: {}",
        before.tables.len(),
        sliced.len(),
        sliced.join(", ")
    )
}

#[test]
fn every_table_compared_on_3_10_small_with_a_token() {
    let Some(mut c) = Case::new(
        "influxdb3-3.10/small",
        Opts {
            token: true,
            ..Opts::default()
        },
    ) else {
        return;
    };
    // What one query returns on a server without the limit.
    let reference = reference_answers(&c);
    let summary = assert_routine_ok(&mut c);
    let before = c.measured("measure");
    for (name, t) in tables(&before) {
        let r = &reference[&name];
        let f = t.figures.as_ref().unwrap();
        assert_eq!(Some(f.rows), r["n"].as_u64(), "{name}: sliced vs one query");
        assert_eq!(f.min_time, r["t0"].as_i64(), "{name}");
        assert_eq!(f.max_time, r["t1"].as_i64(), "{name}");
    }
    // The two big tables were over the limit before, and counted in slices.
    for name in ["events.log", "metrics.cpu"] {
        let t = tables(&before).into_iter().find(|t| t.0 == name).unwrap().1;
        assert!(t.slices.unwrap() > 1, "{name}: {t:?}");
        assert_eq!(t.file_limit, Some(432), "{name}: {t:?}");
    }
    c.report(&summary);
}

/// `count(*)`, min and max time per table ("db.table") of a fresh copy of the case's fixture,
/// served with no file limit.
fn reference_answers(c: &Case) -> serde_json::Map<String, Value> {
    let copy = copy_fixture(&c.f);
    let serve = Serve {
        file_limit: Some(LARGE_FILE_LIMIT),
        extra: fixture_flags(&c.f),
        ..Serve::default()
    };
    let log = c.work.path().join("reference-server.log");
    let s = Server::start(&c.bin, copy.path(), &c.node, &serve, &log)
        .unwrap_or_else(|e| panic!("reference server: {e:?}"));
    let mut out = serde_json::Map::new();
    for db in s.databases() {
        let names = s
            .query(
                &db,
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'iox'",
            )
            .unwrap();
        for t in names {
            let t = t["table_name"].as_str().unwrap();
            let sql = format!(
                "SELECT count(*) AS n, CAST(min(time) AS BIGINT) AS t0, \
                 CAST(max(time) AS BIGINT) AS t1 FROM \"{}\"",
                t.replace('"', "\"\"")
            );
            let row = s
                .query(&db, &sql)
                .unwrap_or_else(|e| panic!("{db}.{t}: {e}"));
            out.insert(format!("{db}.{t}"), row[0].clone());
        }
    }
    out
}

fn routine_ok_on(fixture_name: &str, node: &str) {
    let f = fixture(fixture_name);
    let Some(bin) = ServerBin::for_fixture(&f) else {
        return;
    };
    let data = copy_fixture(&f);
    let mut c = Case::on(f, bin, data, node, Opts::default());
    let summary = assert_routine_ok(&mut c);
    c.report(&summary);
}

#[test]
fn every_table_compared_on_3_10_multi_node0() {
    routine_ok_on("influxdb3-3.10/multi", "node0");
}

#[test]
fn every_table_compared_on_3_10_multi_node1() {
    routine_ok_on("influxdb3-3.10/multi", "node1");
}

#[test]
fn every_table_compared_on_3_5_0_small() {
    routine_ok_on("influxdb3-3.5.0/small", "node0");
}

#[test]
fn every_table_compared_on_3_8_3_small() {
    routine_ok_on("influxdb3-3.8.3/small", "node0");
}

#[test]
fn every_table_compared_on_3_0_3_small() {
    routine_ok_on("influxdb3-3.0.3/small", "node0");
}

/// The last numeric segment of a path segment: "1" (3.6+) or "cpu-1" (up to 3.5) -> 1.
fn dir_id(seg: &str) -> Option<u64> {
    seg.rsplit('-').next()?.parse().ok()
}

/// The compacted files (`kompactor-*.parquet`) of `db.table` on `node`, found by the ids the
/// script recorded in `.kompactor/names.json`.
fn compacted_files(data: &Path, node: &str, db: &str, table: &str) -> Vec<PathBuf> {
    let names = read_json(&data.join(".kompactor/names.json"));
    let db_id = names["databases"][db]["id"].as_u64().unwrap();
    let table_id = names["databases"][db]["tables"][table]["id"]
        .as_u64()
        .unwrap();
    let dbs = data.join(node).join("dbs");
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(&dbs)
        .into_iter()
        .flatten()
        .map(|e| e.into_path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            let rel: Vec<String> = p
                .strip_prefix(&dbs)
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            name.starts_with("kompactor-")
                && name.ends_with(".parquet")
                && rel.len() > 2
                && dir_id(&rel[0]) == Some(db_id)
                && dir_id(&rel[1]) == Some(table_id)
        })
        .collect();
    out.sort();
    assert!(
        !out.is_empty(),
        "no compacted file of {db}.{table} under {}",
        dbs.display()
    );
    out
}

/// In every JSON file of the node that lists `rel` (snapshots, checkpoints, table index), sets
/// that entry's `size_bytes` and `row_count`, and the document's totals by the same amounts;
/// each file keeps its modification time. Returns how many files were changed.
fn fix_metadata(data: &Path, node: &str, rel: &str, size: u64, rows_removed: u64) -> usize {
    fn fix(v: &mut Value, rel: &str, size: u64, rows_removed: u64, delta: &mut (i64, u64)) {
        match v {
            Value::Object(m) => {
                if m.get("path").and_then(Value::as_str) == Some(rel) {
                    let old = m["size_bytes"].as_u64().unwrap();
                    delta.0 += size as i64 - old as i64;
                    delta.1 += rows_removed;
                    m["size_bytes"] = size.into();
                    m["row_count"] = (m["row_count"].as_u64().unwrap() - rows_removed).into();
                    return;
                }
                m.values_mut()
                    .for_each(|x| fix(x, rel, size, rows_removed, delta));
            }
            Value::Array(a) => a
                .iter_mut()
                .for_each(|x| fix(x, rel, size, rows_removed, delta)),
            _ => {}
        }
    }
    let mut changed = 0;
    for e in walkdir::WalkDir::new(data.join(node)).into_iter().flatten() {
        let p = e.path();
        if !e.file_type().is_file() || p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = fs::read_to_string(p).unwrap();
        if !text.contains(rel) {
            continue;
        }
        let mtime = fs::metadata(p).unwrap().modified().unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        let mut delta = (0i64, 0u64);
        fix(&mut v, rel, size, rows_removed, &mut delta);
        if let Some(m) = v.as_object_mut() {
            if let Some(n) = m.get("row_count").and_then(Value::as_u64) {
                m["row_count"] = (n - delta.1).into();
            }
            if let Some(n) = m.get("parquet_size_bytes").and_then(Value::as_u64) {
                m["parquet_size_bytes"] = ((n as i64 + delta.0) as u64).into();
            }
        }
        fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        changed += 1;
    }
    changed
}

/// Rewrites the first compacted file of `db.table` without one row (one whose time lies
/// strictly inside the file's time range, so the table's min and max time stay), with the
/// file's own `ARROW:schema`, and fixes its size and row count in the metadata: the server
/// reads it as it reads any file, one row short.
fn drop_one_row(data: &Path, node: &str, db: &str, table: &str) -> String {
    let path = compacted_files(data, node, db, table).remove(0);
    let p = sql_str(&path.to_string_lossy());
    let src = format!("read_parquet({p}, file_row_number = true)");
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let schema: String = conn
        .query_row(
            &format!(
                "SELECT decode(value) FROM parquet_kv_metadata({p}) \
                 WHERE decode(key) = 'ARROW:schema'"
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (rows, victim): (i64, i64) = conn
        .query_row(
            &format!(
                "SELECT (SELECT count(*) FROM {src}), min(file_row_number) FROM {src} \
                 WHERE time > (SELECT min(time) FROM {src}) \
                 AND time < (SELECT max(time) FROM {src})"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let tmp = path.with_extension("damaged");
    conn.execute_batch(&format!(
        "COPY (SELECT * EXCLUDE (file_row_number) FROM {src} WHERE file_row_number <> {victim} \
         ORDER BY file_row_number) TO {} \
         (FORMAT parquet, COMPRESSION zstd, KV_METADATA {{'ARROW:schema': {}}})",
        sql_str(&tmp.to_string_lossy()),
        sql_str(&schema)
    ))
    .unwrap();
    fs::rename(&tmp, &path).unwrap();
    let left: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM read_parquet({p})"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, rows - 1);
    let size = fs::metadata(&path).unwrap().len();
    let rel = path
        .strip_prefix(data)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let fixed = fix_metadata(data, node, &rel, size, 1);
    assert!(fixed > 0, "no metadata lists {rel}");
    format!("row {victim} of {rel} dropped ({rows} -> {left} rows), {fixed} metadata file(s) fixed")
}

#[test]
fn a_dropped_row_fails_and_names_the_table() {
    let Some(mut c) = Case::new("influxdb3-3.10/small", Opts::default()) else {
        return;
    };
    let k = c.damaging_kompactor();
    let args = c.pid_args(&k);
    let damage = |d: &Path| drop_one_row(d, "node0", "metrics", "cpu");
    let (code, out) = c.run(&args, None, Some(&damage));

    assert_eq!(code, 3, "{out}");
    let verdict = last_line(&out);
    assert!(
        verdict.starts_with("VERDICT: UNDONE (after the compaction metrics.cpu: rows "),
        "{out}"
    );
    assert!(verdict.contains("(-1)"), "{out}");
    assert!(
        verdict.contains(
            "was undone: the node is as before the maintenance and every table answers as before"
        ),
        "{out}"
    );
    for ok in ["events.log", "metrics.mem"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{ok} ")) && l.ends_with(" ok")),
            "{ok} should compare equal\n{out}"
        );
    }
    assert!(
        c.record_file("compact.log")
            .contains("stand-in: the data dir was damaged"),
        "{out}"
    );
    c.assert_restarted_as_before(&out);
    c.report("one row dropped from metrics.cpu: undone, exit 3, named");
}

#[test]
fn a_lost_file_fails_and_names_the_table() {
    let Some(mut c) = Case::new("influxdb3-3.10/small", Opts::default()) else {
        return;
    };
    let k = c.damaging_kompactor();
    let args = c.pid_args(&k);
    let damage = |d: &Path| {
        let f = compacted_files(d, "node0", "events", "log").remove(0);
        fs::remove_file(&f).unwrap();
        format!("{} deleted", f.display())
    };
    let (code, out) = c.run(&args, None, Some(&damage));

    let verdict = last_line(&out);
    assert!(
        verdict.contains("after the compaction events.log: NOT MEASURED after"),
        "{out}"
    );
    c.assert_restarted(&out);
    // The undo puts back the original files, the lost one's inputs among them.
    assert_eq!(code, 3, "{out}");
    assert!(verdict.starts_with("VERDICT: UNDONE"), "{out}");
    assert_same_figures(&c.measured("measure"), &c.measure_now(), &out);
    c.report("a compacted file of events.log deleted: undone, exit 3, named");
}

#[test]
fn a_file_limit_no_slice_meets_stops_before_anything() {
    // With a limit of 1, the overlapping files of every table cannot be sliced apart.
    let opts = Opts {
        file_limit: Some(1),
        ..Opts::default()
    };
    let Some(mut c) = Case::new("influxdb3-3.10/small", opts) else {
        return;
    };
    let k = c.real_kompactor();
    let args = c.pid_args(&k);
    let (code, out) = c.run(&args, None, None);

    assert_eq!(code, 1, "{out}");
    let verdict = last_line(&out);
    assert!(
        verdict.starts_with("VERDICT: NOT COMPACTED (could not measure 3 table(s): events.log, metrics.cpu, metrics.mem"),
        "{out}"
    );
    assert!(
        out.contains("more than the query file limit allows"),
        "{out}"
    );
    // Only the dry run of the preflight: nothing was prepared or changed.
    assert_eq!(c.calls(), c.expected_calls(1), "{out}");
    assert_eq!(c.pid(), c.first_pid, "{out}");
    assert!(alive(c.first_pid), "the server was stopped\n{out}");
    assert!(!c.data.path().join(".kompactor/runs").exists(), "{out}");
    c.report("limit 1: exit 1, nothing stopped");
}

#[test]
fn failed_verify_restarts_without_compacting() {
    let Some(mut c) = Case::new("influxdb3-3.10/small", Opts::default()) else {
        return;
    };
    let k = c.stand_in(
        "failing-verify-kompactor",
        r#"if [ "$1" = verify ]; then echo "error: stand-in verify fails" >&2; exit 4; fi
exec "$REAL" "$@""#,
    );
    let args = c.pid_args(&k);
    let (code, out) = c.run(&args, None, None);

    assert_eq!(code, 1, "{out}");
    assert!(
        last_line(&out).starts_with("VERDICT: NOT COMPACTED (kompactor verify found problems"),
        "{out}"
    );
    assert!(last_line(&out).contains("the server runs again"), "{out}");
    assert!(out.contains("stand-in verify fails"), "{out}");
    assert_eq!(c.calls(), c.expected_calls(3), "{out}");
    c.assert_restarted(&out);
    c.report("verify fails: exit 1, restarted");
}

#[test]
fn systemd_unit_mode() {
    let Some(mut c) = Case::new("influxdb3-3.10/small", Opts::default()) else {
        return;
    };
    let bin = c.work.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let systemctl_log = c.work.path().join("systemctl-calls.log");
    // A fake systemctl for one unit: the process named by the pid file is the unit.
    write_exe(
        &bin.join("systemctl"),
        &format!(
            r#"#!/bin/sh
printf '%s\n' "$*" >> {log}
running() {{
    p=$(cat {pid} 2>/dev/null) && kill -0 "$p" 2>/dev/null || return 1
    case $(ps -o stat= -p "$p") in Z*) return 1;; esac
}}
case "$1" in
stop) running && kill -TERM "$(cat {pid})"; exit 0 ;;
start) nohup sh -c {start} </dev/null >>{server_log} 2>&1 & echo $! > {pid}; exit 0 ;;
show) if running; then echo active; else echo inactive; fi ;;
*) echo "fake systemctl: unexpected $*" >&2; exit 1 ;;
esac
"#,
            log = sh_quote(&systemctl_log.display().to_string()),
            pid = sh_quote(&c.pid_file.display().to_string()),
            start = sh_quote(&c.start_cmd),
            server_log = sh_quote(&c.work.path().join("unit.log").display().to_string()),
        ),
    );
    let k = c.real_kompactor();
    let args: Vec<String> = [
        "maintain",
        &c.data(),
        "--hosts",
        "node0",
        "--systemd-unit",
        "influxdb3",
        "--url",
        &c.url(),
        "--kompactor",
        &k.display().to_string(),
        "--timeout",
        "180",
    ]
    .map(String::from)
    .to_vec();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (code, out) = c.run(&args, Some(path.clone()), None);

    assert_eq!(code, 0, "{out}");
    assert!(last_line(&out).starts_with("VERDICT: PROVEN"), "{out}");
    assert!(last_line(&out).contains("; run "), "{out}");
    assert_eq!(c.calls(), c.expected_calls(4), "{out}");
    let sc = fs::read_to_string(&systemctl_log).unwrap();
    assert!(sc.contains("stop --no-block -- influxdb3"), "{sc}");
    assert!(sc.contains("start --no-block -- influxdb3"), "{sc}");
    c.assert_restarted(&out);

    // Again: the restarted server does not hold the routine's lock, and a run that finds
    // nothing new to compact does not stop the server.
    let pid = c.pid();
    let (code, out) = c.run(&args, Some(path), None);
    assert_eq!(code, 0, "{out}");
    assert!(
        last_line(&out).starts_with("VERDICT: PROVEN (nothing to compact"),
        "{out}"
    );
    assert_eq!(c.calls().len(), 5, "only the dry run\n{out}");
    assert_eq!(c.pid(), pid, "{out}");
    assert!(alive(pid), "{out}");
    c.report("systemd mode, twice");
}

#[test]
fn a_compaction_that_crashes_after_its_commit_point_is_undone() {
    let Some(mut c) = Case::new("influxdb3-3.10/small", Opts::default()) else {
        return;
    };
    // The compaction (and only it) aborts right after its commit point: a crash of
    // kompactor's own, after the nodes changed.
    let k = c.stand_in(
        "crashing-kompactor",
        r#"case "$1" in prepare | verify | undo) exec "$REAL" "$@" ;; esac
case " $* " in *" --dry-run "*) exec "$REAL" "$@" ;; esac
KOMPACTOR_FAILPOINT=after-commit-point exec "$REAL" "$@""#,
    );
    let args = c.pid_args(&k);
    let (code, out) = c.run(&args, None, None);

    assert_eq!(code, 3, "{out}");
    let verdict = last_line(&out);
    assert!(
        verdict.starts_with(
            "VERDICT: UNDONE (the compaction ended abnormally (killed by a signal); run "
        ),
        "{out}"
    );
    assert!(
        verdict.contains(
            "was undone: the node is as before the maintenance and every table answers as before"
        ),
        "{out}"
    );
    assert!(
        c.record_file("compact.log")
            .contains("failpoint after-commit-point"),
        "{out}"
    );
    c.assert_restarted_as_before(&out);
    c.report("the compaction crashed after its commit point: undone, exit 3");
}

#[test]
fn a_server_that_will_not_start_is_named_and_the_run_undone() {
    let Some(mut c) = Case::new("influxdb3-3.10/small", Opts::default()) else {
        return;
    };
    let k = c.real_kompactor();
    let mut args = c.pid_args(&k);
    let i = args.iter().position(|a| a == "--start-cmd").unwrap();
    args[i + 1] = "echo 'stand-in: address already in use' >&2; exit 1".into();
    let (code, out) = c.run(&args, None, None);

    assert_eq!(code, 4, "{out}");
    let verdict = last_line(&out);
    assert!(
        verdict.starts_with("VERDICT: ATTENTION (the server did not start after the compaction: the start command exited"),
        "{out}"
    );
    assert!(
        verdict.contains("was undone: the node is as before the maintenance"),
        "{out}"
    );
    assert!(verdict.contains("the server did NOT start"), "{out}");
    assert!(out.contains("stand-in: address already in use"), "{out}");
    assert!(!alive(c.first_pid), "{out}");
    assert!(!healthy(c.port, None), "{out}");
    // What the verdict says of the node: served again, it answers as before the maintenance.
    let mut argv: Vec<String> = cmdline_of_start(&c.start_cmd);
    let child = Command::new(argv.remove(0))
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    c._guard.children.push(child);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !healthy(c.port, None) {
        assert!(
            Instant::now() < deadline && alive(pid),
            "the server did not start again"
        );
        sleep(Duration::from_millis(200));
    }
    assert_same_figures(&c.measured("measure"), &c.measure_now(), &out);
    c.report("a server that will not start: exit 4, run undone, node as before");
}

/// A server that comes up after the compaction but never answers `/health`, and ignores
/// SIGTERM (as InfluxDB 3.0.x, now and then, spins at start listing its WAL): the routine ends
/// it with SIGKILL and starts it once more, and that start answers: proven.
#[test]
fn a_start_that_hangs_is_ended_and_tried_once_more() {
    let Some(mut c) = Case::new("influxdb3-3.10/small", Opts::default()) else {
        return;
    };
    let k = c.real_kompactor();
    let mut args = c.pid_args(&k);
    let marker = sh_quote(&c.work.path().join("hung-once").display().to_string());
    let i = args.iter().position(|a| a == "--start-cmd").unwrap();
    args[i + 1] = format!(
        "if [ ! -e {marker} ]; then : > {marker}; trap '' TERM; exec sleep 600; fi; {}",
        c.start_cmd
    );
    // The hang costs the whole wait for /health: shorter than the cases' 180 s.
    let i = args.iter().position(|a| a == "--timeout").unwrap();
    args[i + 1] = "60".into();
    let (code, out) = c.run(&args, None, None);

    assert_eq!(code, 0, "{out}");
    assert!(last_line(&out).starts_with("VERDICT: PROVEN"), "{out}");
    assert!(
        out.contains("/health did not answer 200 within 60s"),
        "{out}"
    );
    assert!(
        out.contains("it ran without answering: pid ")
            && out.contains(" is still running 10s after SIGTERM; killed (SIGKILL): pid "),
        "{out}"
    );
    let report: Value = serde_json::from_str(&c.record_file("report.json")).unwrap();
    let starts: Vec<bool> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "start")
        .map(|s| s["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(starts, [false, true], "{out}");
    c.assert_restarted_as_before(&out);
    c.report("a start that hangs: ended (SIGKILL), started once more, proven");
}

/// The server's argv from the case's start command (`exec 'a' 'b' ...`).
fn cmdline_of_start(cmd: &str) -> Vec<String> {
    let rest = cmd.strip_prefix("exec ").unwrap();
    rest.split("' '")
        .map(|a| a.trim_matches('\'').replace(r"'\''", "'"))
        .collect()
}

#[test]
fn bad_command_lines_exit_2() {
    let _ran = common::prereq::RanToEnd::here();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    fs::create_dir_all(tmp.path().join("node0")).unwrap();
    for args in [
        vec!["--hosts", "node0", "--systemd-unit", "x"],
        vec![
            "--data-dir",
            &dir,
            "--hosts",
            "node0",
            "--systemd-unit",
            "x",
            "--url",
            "ftp://x",
        ],
        vec![
            "--data-dir",
            &dir,
            "--hosts",
            "node0",
            "--systemd-unit",
            "x",
            "--",
            "--dry-run",
        ],
        vec![
            "--data-dir",
            &dir,
            "--hosts",
            "node0",
            "--systemd-unit",
            "x",
            "--ca-file",
            "/etc/hostname",
        ],
        vec![
            "--data-dir",
            &dir,
            "--hosts",
            "node0",
            "--systemd-unit",
            "x",
            "--pid-file",
            "p",
            "--start-cmd",
            "c",
        ],
        vec!["--data-dir", &dir, "--hosts", "node0"],
        vec![
            "--data-dir",
            &dir,
            "--hosts",
            "node0",
            "--pid-file",
            "/nonexistent",
        ],
        vec![
            "--data-dir",
            &dir,
            "--hosts",
            "node1",
            "--systemd-unit",
            "x",
        ],
        vec![
            "--data-dir",
            &dir,
            "--hosts",
            "node0",
            "--systemd-unit",
            "x",
            "--timeout",
            "0",
        ],
        vec![
            "--data-dir",
            &dir,
            "--hosts",
            "node0",
            "--systemd-unit",
            "x",
            "--kompactor",
            "/nonexistent",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kompactor"))
            .arg("maintain")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let help = Command::new(env!("CARGO_BIN_EXE_kompactor"))
        .args(["maintain", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit status"));
    // The example wrapper for cron and systemd timers runs the command.
    let wrapper = Command::new(repo().join("scripts/maintenance.sh"))
        .arg("--help")
        .env("KOMPACTOR", env!("CARGO_BIN_EXE_kompactor"))
        .output()
        .unwrap();
    assert!(
        wrapper.status.success(),
        "{}",
        String::from_utf8_lossy(&wrapper.stderr)
    );
    assert!(String::from_utf8_lossy(&wrapper.stdout).contains("kompactor maintain"));
}

#[test]
fn a_sigterm_while_the_server_is_stopped_ends_only_once_it_runs_again() {
    let Some(mut c) = Case::new("influxdb3-3.10/small", Opts::default()) else {
        return;
    };
    // The routine itself gets SIGTERM as its compaction starts (the server is stopped); the
    // compaction does not.
    let k = c.stand_in(
        "interrupting-kompactor",
        r#"case "$1" in prepare | verify | undo) exec "$REAL" "$@" ;; esac
case " $* " in *" --dry-run "*) exec "$REAL" "$@" ;; esac
kill -TERM "$PPID"
exec "$REAL" "$@""#,
    );
    let args = c.pid_args(&k);
    let (code, out) = c.run(&args, None, None);

    assert_eq!(code, 0, "{out}");
    let verdict = last_line(&out);
    assert!(verdict.starts_with("VERDICT: PROVEN"), "{out}");
    assert!(
        verdict.contains("(SIGTERM received meanwhile: the routine ended once the server ran)"),
        "{out}"
    );
    assert!(out.contains("kompactor maintain: interrupted;"), "{out}");
    assert_eq!(c.calls(), c.expected_calls(4), "{out}");
    c.assert_restarted(&out);
    assert_same_figures(&c.measured("measure"), &c.measure_now(), &out);
    c.report("SIGTERM with the server stopped: the window finished, exit 0");
}

#[test]
fn a_sigterm_before_the_stop_stops_nothing() {
    let Some(mut c) = Case::new("influxdb3-3.10/small", Opts::default()) else {
        return;
    };
    let k = c.stand_in(
        "interrupted-prepare-kompactor",
        r#"if [ "$1" = prepare ]; then kill -TERM "$PPID"; fi
exec "$REAL" "$@""#,
    );
    let args = c.pid_args(&k);
    let (code, out) = c.run(&args, None, None);

    assert_eq!(code, 1, "{out}");
    assert_eq!(
        last_line(&out),
        "VERDICT: NOT COMPACTED (interrupted (SIGTERM) before the server was stopped; nothing changed)",
        "{out}"
    );
    assert_eq!(c.calls(), c.expected_calls(2), "{out}");
    assert_eq!(c.pid(), c.first_pid, "{out}");
    assert!(alive(c.first_pid), "the server was stopped\n{out}");
    assert!(!c.data.path().join(".kompactor/runs").exists(), "{out}");
    c.report("SIGTERM before the stop: nothing stopped, exit 1");
}
