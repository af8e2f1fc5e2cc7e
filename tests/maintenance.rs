//! `scripts/maintenance.sh` end to end, against a fake server (`tests/fake_influxdb3.py`) and a
//! fake kompactor (a shell script that logs its arguments), all on 127.0.0.1:
//!
//! - the whole routine: counts (one table over the query file limit before), stop, verify,
//!   compaction with extra arguments, restart (new pid), recount, `VERDICT: OK`;
//! - the counts differ after the restart: `VERDICT: FAILED`, exit 3, how to undo the run;
//! - `kompactor verify` fails: no compaction, the server is started again, exit 1;
//! - the same routine with `--systemd-unit`, through a fake `systemctl` on PATH.
//!
//! Every process a case starts is ended when the case ends, passed or failed (`Procs`).
//! Linux only: processes are found and checked through /proc.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const RUN_ID: &str = "20260101T000000Z-4242";
/// The state the server starts with: `events.log` is over the query file limit (432).
const BEFORE: &str =
    r#"{"metrics": {"cpu": 100, "mem": 20}, "events": {"log": {"count": 6061, "files": 448}}}"#;
/// After a good compaction: the same rows, in few files.
const AFTER_OK: &str =
    r#"{"metrics": {"cpu": 100, "mem": 20}, "events": {"log": {"count": 6061, "files": 3}}}"#;
/// After a bad one: rows of metrics.cpu lost.
const AFTER_LOST: &str =
    r#"{"metrics": {"cpu": 90, "mem": 20}, "events": {"log": {"count": 6061, "files": 3}}}"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Single-quoted for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Running and not a zombie (an exited child not yet reaped).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            !matches!(stat.rsplit_once(')'), Some((_, rest)) if rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// The processes a case started: the fake servers (found by their command line, which holds
/// the case's temporary directory) and the children spawned here. All are ended on drop.
struct Procs {
    marker: String,
    children: Vec<Child>,
}

impl Procs {
    fn fake_servers(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid == std::process::id() {
                continue;
            }
            if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd);
                if cmd.contains("fake_influxdb3.py") && cmd.contains(&self.marker) {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let pids = self.fake_servers();
        for &p in &pids {
            signal(p, "-TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        for &p in pids.iter().filter(|&&p| alive(p)) {
            signal(p, "-KILL");
        }
    }
}

/// `GET /health` answered 200.
fn healthy(port: u16, token: Option<&str>) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n");
    let mut answer = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

fn wait_healthy(port: u16, token: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(port, token) {
        assert!(
            Instant::now() < deadline,
            "the fake server on port {port} never answered /health"
        );
        sleep(Duration::from_millis(100));
    }
}

fn write_exe(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// One case: a data dir with node0, a fake server running on a free port, a fake kompactor.
struct Case {
    procs: Procs, // dropped first: processes end before their directory goes
    port: u16,
    token: Option<&'static str>,
    data: PathBuf,
    pid_file: PathBuf,
    calls: PathBuf,
    kompactor: PathBuf,
    start_cmd: String,
    first_pid: u32,
    tmp: tempfile::TempDir,
}

impl Case {
    /// `verify_rc`: what the fake `kompactor verify` exits with; `after`: the server state the
    /// fake compaction leaves (None: unchanged).
    fn new(token: Option<&'static str>, verify_rc: i32, after: Option<&str>) -> Case {
        let tmp = tempfile::Builder::new()
            .prefix("kompactor-maintenance-test")
            .tempdir()
            .unwrap();
        let t = tmp.path();
        let data = t.join("data");
        fs::create_dir_all(data.join("node0")).unwrap();
        let state = t.join("state.json");
        fs::write(&state, BEFORE).unwrap();
        let pid_file = t.join("influxdb3.pid");
        let calls = t.join("kompactor-calls.log");
        let port = free_port();

        let mut server = vec![
            "python3".to_string(),
            repo().join("tests/fake_influxdb3.py").display().to_string(),
            "--port".into(),
            port.to_string(),
            "--state".into(),
            state.display().to_string(),
            "--pid-file".into(),
            pid_file.display().to_string(),
        ];
        if let Some(tok) = token {
            server.extend(["--token".into(), tok.to_string()]);
        }
        // The restarted server takes a moment to listen, as a real one loading its catalog.
        let start_cmd = server
            .iter()
            .chain(["--start-delay".to_string(), "0.5".to_string()].iter())
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ");

        let after_cmd = match after {
            Some(json) => {
                let next = t.join("state-after.json");
                fs::write(&next, json).unwrap();
                format!(
                    "cp {} {}",
                    sh_quote(&next.display().to_string()),
                    sh_quote(&state.display().to_string())
                )
            }
            None => ":".into(),
        };
        let kompactor = t.join("fake-kompactor");
        write_exe(
            &kompactor,
            &format!(
                r#"#!/bin/sh
# fake kompactor: logs its arguments; "verify" exits {verify_rc}; a compaction records run
# {RUN_ID} and leaves the state the restarted fake server will serve.
printf '%s\n' "$*" >> {calls}
if [ "$1" = verify ]; then
    if [ {verify_rc} -ne 0 ]; then echo "error: fake verify fails" >&2; fi
    exit {verify_rc}
fi
mkdir -p "$1/.kompactor/runs/{RUN_ID}"
{after_cmd}
echo "kompactor run {RUN_ID} on $1"
"#,
                calls = sh_quote(&calls.display().to_string()),
            ),
        );

        let mut procs = Procs {
            marker: t.display().to_string(),
            children: Vec::new(),
        };
        let log = fs::File::create(t.join("first-server.log")).unwrap();
        let child = Command::new(&server[0])
            .args(&server[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let first_pid = child.id();
        procs.children.push(child);
        wait_healthy(port, token);
        Case {
            procs,
            port,
            token,
            data,
            pid_file,
            calls,
            kompactor,
            start_cmd,
            first_pid,
            tmp,
        }
    }

    fn data(&self) -> String {
        self.data.display().to_string()
    }

    /// The pid-file form of the command line (without the kompactor's extra arguments).
    fn pid_args(&self) -> Vec<String> {
        let mut a = vec![
            "--data-dir".to_string(),
            self.data(),
            "--hosts".into(),
            "node0".into(),
            "--pid-file".into(),
            self.pid_file.display().to_string(),
            "--start-cmd".into(),
            self.start_cmd.clone(),
            "--url".into(),
            format!("http://127.0.0.1:{}", self.port),
            "--kompactor".into(),
            self.kompactor.display().to_string(),
            "--timeout".into(),
            "20".into(),
        ];
        if let Some(t) = self.token {
            a.extend(["--token".into(), t.to_string()]);
        }
        a
    }

    /// Runs scripts/maintenance.sh (at most 120 s): its exit code and its output (stdout and
    /// stderr together).
    fn run(&mut self, args: &[String], path: Option<String>) -> (i32, String) {
        let out_path = self.tmp.path().join("maintenance-output.txt");
        let out = fs::File::create(&out_path).unwrap();
        let mut cmd = Command::new(repo().join("scripts/maintenance.sh"));
        cmd.args(args)
            .env_remove("INFLUXDB3_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        self.procs.children.push(cmd.spawn().unwrap());
        let child = self.procs.children.last_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "maintenance.sh still running after 120 s:\n{}",
                    fs::read_to_string(&out_path).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(100));
        };
        let text = fs::read_to_string(&out_path).unwrap();
        println!("{text}");
        (status.code().unwrap_or(-1), text)
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The server runs again, as a new process named by the pid file.
    fn assert_restarted(&self, out: &str) {
        let pid: u32 = fs::read_to_string(&self.pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
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
            healthy(self.port, self.token),
            "the restarted server does not answer\n{out}"
        );
    }
}

fn last_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

#[test]
fn routine_compacts_restarts_and_compares() {
    let mut c = Case::new(Some("apiv3_test-token"), 0, Some(AFTER_OK));
    let mut args = c.pid_args();
    args.extend(["--", "--window", "1d", "--min-age", "1h"].map(String::from));
    let (code, out) = c.run(&args, None);

    assert_eq!(code, 0, "{out}");
    assert!(last_line(&out).starts_with("VERDICT: OK"), "{out}");
    assert_eq!(
        c.calls(),
        [
            format!("verify {} --hosts node0", c.data()),
            format!("{} --hosts node0 --window 1d --min-age 1h", c.data()),
        ],
        "{out}"
    );
    c.assert_restarted(&out);
    // The table over the file limit before is counted after, and reported.
    let log = out
        .lines()
        .find(|l| l.contains("events.log") && l.contains("accepted"));
    assert!(
        log.is_some_and(|l| l.contains("over-limit") && l.contains("6061")),
        "{out}"
    );
    assert!(out.contains(RUN_ID), "{out}");
    let names = fs::read_to_string(c.data.join(".kompactor/names.json")).unwrap();
    for n in ["\"metrics\"", "\"cpu\"", "\"mem\"", "\"events\"", "\"log\""] {
        assert!(names.contains(n), "{n} not in names.json: {names}");
    }
    assert!(!names.contains("_internal"), "{names}");
    // The start command's output went to the log in .kompactor/.
    let log = fs::read_to_string(c.data.join(".kompactor/server.log")).unwrap();
    assert!(log.contains("fake influxdb3 listening"), "{log}");
}

#[test]
fn differing_counts_fail_and_say_how_to_undo() {
    let mut c = Case::new(None, 0, Some(AFTER_LOST));
    let args = c.pid_args();
    let (code, out) = c.run(&args, None);

    assert_eq!(code, 3, "{out}");
    assert!(last_line(&out).starts_with("VERDICT: FAILED"), "{out}");
    assert!(last_line(&out).contains("metrics.cpu"), "{out}");
    assert!(out.contains("DIFFERS (-10)"), "{out}");
    let undo = format!("undo {} --run {RUN_ID}", c.data());
    assert!(out.contains("kompactor") && out.contains(&undo), "{out}");
    assert_eq!(c.calls().len(), 2, "{out}");
    c.assert_restarted(&out);
    // Everything is left in place.
    assert!(c.data.join(".kompactor/runs").join(RUN_ID).is_dir());
}

#[test]
fn failed_verify_restarts_without_compacting() {
    let mut c = Case::new(None, 1, Some(AFTER_OK));
    let args = c.pid_args();
    let (code, out) = c.run(&args, None);

    assert_eq!(code, 1, "{out}");
    assert!(
        last_line(&out).starts_with("VERDICT: FAILED (not compacted"),
        "{out}"
    );
    assert!(out.contains("not compacted"), "{out}");
    assert!(out.contains("fake verify fails"), "{out}");
    assert_eq!(
        c.calls(),
        [format!("verify {} --hosts node0", c.data())],
        "{out}"
    );
    c.assert_restarted(&out);
}

#[test]
fn systemd_unit_mode() {
    let mut c = Case::new(None, 0, Some(AFTER_OK));
    let bin = c.tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let systemctl_log = c.tmp.path().join("systemctl-calls.log");
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
start) nohup sh -c {start} </dev/null >>{server_log} 2>&1 & exit 0 ;;
show) if running; then echo active; else echo inactive; fi ;;
*) echo "fake systemctl: unexpected $*" >&2; exit 1 ;;
esac
"#,
            log = sh_quote(&systemctl_log.display().to_string()),
            pid = sh_quote(&c.pid_file.display().to_string()),
            start = sh_quote(&c.start_cmd),
            server_log = sh_quote(&c.tmp.path().join("unit.log").display().to_string()),
        ),
    );
    let args: Vec<String> = [
        "--data-dir",
        &c.data(),
        "--hosts",
        "node0",
        "--systemd-unit",
        "influxdb3",
        "--url",
        &format!("http://127.0.0.1:{}", c.port),
        "--kompactor",
        &c.kompactor.display().to_string(),
        "--timeout",
        "20",
    ]
    .map(String::from)
    .to_vec();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (code, out) = c.run(&args, Some(path.clone()));

    assert_eq!(code, 0, "{out}");
    assert!(last_line(&out).starts_with("VERDICT: OK"), "{out}");
    assert_eq!(c.calls().len(), 2, "{out}");
    let sc = fs::read_to_string(&systemctl_log).unwrap();
    assert!(sc.contains("stop --no-block -- influxdb3"), "{sc}");
    assert!(sc.contains("start --no-block -- influxdb3"), "{sc}");
    c.assert_restarted(&out);

    // Again: the restarted server does not hold the script's lock, and a run that finds
    // nothing new to compact is OK too.
    let (code, out) = c.run(&args, Some(path));
    assert_eq!(code, 0, "{out}");
    assert!(last_line(&out).starts_with("VERDICT: OK"), "{out}");
    assert!(last_line(&out).contains("nothing to compact"), "{out}");
    assert_eq!(c.calls().len(), 4, "{out}");
}

#[test]
fn bad_command_lines_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    fs::create_dir_all(tmp.path().join("node0")).unwrap();
    for args in [
        vec!["--hosts", "node0", "--systemd-unit", "x"],
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
        let out = Command::new(repo().join("scripts/maintenance.sh"))
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
    let help = Command::new(repo().join("scripts/maintenance.sh"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Example"));
}
