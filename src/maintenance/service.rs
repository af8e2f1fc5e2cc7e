//! Stopping and starting the server: through systemd, or by a pid file and a start command.

use crate::maintenance::children::tail;
use crate::server::http::Client;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a process may take to go after SIGKILL (it may be in uninterruptible I/O).
const KILL_WAIT: Duration = Duration::from_secs(30);

/// How the server is stopped and started.
pub enum Service {
    /// A systemd unit, through `systemctl`.
    Systemd { unit: String },
    /// A process named by a pid file, stopped with SIGTERM and started by a shell command.
    Process {
        pid_file: PathBuf,
        start_cmd: String,
        /// The started command's output is appended here.
        log: PathBuf,
        /// The pid the pid file named when the server was found running.
        pid: Option<u32>,
        /// The last start command this routine launched, until it is reaped.
        launched: Option<Child>,
    },
}

/// Whether a process runs; a zombie (exited, not yet reaped) does not.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            !matches!(stat.rsplit_once(')'), Some((_, rest)) if rest.trim_start().starts_with(['Z', 'X']))
        }
        Err(_) => false,
    }
}

fn systemctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run systemctl: {e}"))?;
    if out.status.success() || args.first() == Some(&"show") {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "systemctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Service {
    /// How the operator stops the server by hand.
    pub fn stop_command(&self) -> String {
        match self {
            Service::Systemd { unit } => format!("systemctl stop {unit}"),
            Service::Process { pid_file, .. } => {
                format!("kill -TERM $(cat {})", pid_file.display())
            }
        }
    }

    /// How the operator starts the server by hand.
    pub fn start_command(&self) -> String {
        match self {
            Service::Systemd { unit } => format!("systemctl start {unit}"),
            Service::Process { start_cmd, .. } => start_cmd.clone(),
        }
    }

    /// What it is, in a few words.
    pub fn describe(&self) -> String {
        match self {
            Service::Systemd { unit } => format!("systemd unit {unit}"),
            Service::Process { pid_file, .. } => format!("the process in {}", pid_file.display()),
        }
    }

    fn unit_state(unit: &str) -> String {
        systemctl(&["show", "--property=ActiveState", "--value", "--", unit])
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    }

    fn read_pid(pid_file: &PathBuf) -> Result<u32, String> {
        let text = fs::read_to_string(pid_file)
            .map_err(|e| format!("cannot read the pid file {}: {e}", pid_file.display()))?;
        text.trim().parse().map_err(|_| {
            format!(
                "{} does not hold a pid: {:?}",
                pid_file.display(),
                text.trim()
            )
        })
    }

    /// Ok if the server runs; else why not.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self {
            Service::Systemd { unit } => match Self::unit_state(unit).as_str() {
                "active" => Ok(()),
                s => Err(format!("systemd unit {unit} is {s}, not active")),
            },
            Service::Process { pid_file, pid, .. } => {
                let p = Self::read_pid(pid_file)?;
                if !pid_alive(p) {
                    return Err(format!(
                        "the pid in {}, {p}, is not running",
                        pid_file.display()
                    ));
                }
                *pid = Some(p);
                Ok(())
            }
        }
    }

    /// Whether the server this routine started is still up (answering or not); if so, it is
    /// the one `stop` stops next.
    pub fn adopt_started(&mut self) -> bool {
        match self {
            Service::Systemd { unit } => {
                matches!(Self::unit_state(unit).as_str(), "active" | "activating")
            }
            Service::Process { pid, launched, .. } => {
                let Some(c) = launched.as_mut() else {
                    return false;
                };
                if c.try_wait().ok().flatten().is_some() {
                    return false;
                }
                *pid = Some(c.id());
                true
            }
        }
    }

    /// Stops the server and waits until it has exited (at most `timeout`).
    pub fn stop(&mut self, timeout: Duration) -> Result<String, String> {
        let how = match self {
            Service::Systemd { unit } => {
                systemctl(&["stop", "--no-block", "--", unit])?;
                "systemctl stop"
            }
            Service::Process { pid_file, pid, .. } => {
                let p = match *pid {
                    Some(p) => p,
                    None => Self::read_pid(pid_file)?,
                };
                *pid = Some(p);
                // SAFETY: kill(2) with a pid read from the operator's pid file.
                if unsafe { libc::kill(p as i32, libc::SIGTERM) } != 0 {
                    return Err(format!(
                        "could not signal pid {p}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                "SIGTERM"
            }
        };
        self.wait_gone(timeout, how)
    }

    /// Ends a server this routine started that is up but never answered: SIGTERM, and after
    /// `grace` SIGKILL (to the start command's whole process group, or through systemd).
    /// Killing it loses nothing: a server that has not answered `/health` has not opened its
    /// HTTP port, so it holds no client's writes.
    pub fn kill_started(&mut self, grace: Duration) -> Result<String, String> {
        let term = match self.stop(grace) {
            Ok(detail) => return Ok(detail),
            Err(e) => e,
        };
        match self {
            Service::Systemd { unit } => {
                systemctl(&["kill", "--signal=SIGKILL", "--", unit])?;
            }
            Service::Process { pid, launched, .. } => {
                let Some(p) = *pid else {
                    return Err(term);
                };
                // Under setsid the start command leads its own group: a shell that did not
                // `exec` the server goes with it.
                let target = match launched.as_ref() {
                    Some(c) if c.id() == p => -(p as i32),
                    _ => p as i32,
                };
                // SAFETY: kill(2) of the process (group) this routine started.
                if unsafe { libc::kill(target, libc::SIGKILL) } != 0 {
                    return Err(format!(
                        "{term}; SIGKILL failed: {}",
                        std::io::Error::last_os_error()
                    ));
                }
            }
        }
        let gone = self
            .wait_gone(KILL_WAIT, "SIGKILL")
            .map_err(|e| format!("{term}; {e}"))?;
        Ok(format!("{term}; killed (SIGKILL): {gone}"))
    }

    /// Waits until the unit is inactive or the process has exited, at most `timeout` after
    /// `signal` was sent.
    fn wait_gone(&mut self, timeout: Duration, signal: &str) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let still = match self {
                Service::Systemd { unit } => match Self::unit_state(unit).as_str() {
                    s @ ("inactive" | "failed") => return Ok(format!("unit {unit} is {s}")),
                    s => format!("unit {unit} is still {s}"),
                },
                Service::Process { pid, launched, .. } => {
                    let Some(p) = *pid else {
                        return Ok("no process to wait for".into());
                    };
                    if let Some(c) = launched.as_mut().filter(|c| c.id() == p) {
                        let _ = c.try_wait();
                    }
                    if !pid_alive(p) {
                        *pid = None;
                        return Ok(format!("pid {p} has exited"));
                    }
                    format!("pid {p} is still running")
                }
            };
            if Instant::now() > deadline {
                return Err(format!("{still} {}s after {signal}", timeout.as_secs()));
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Starts the server and waits until `client` finds it healthy (at most `timeout`).
    pub fn start(&mut self, client: &Client, timeout: Duration) -> Result<String, String> {
        self.launch()?;
        self.wait_healthy(client, timeout)?;
        self.note_started()
    }

    /// Asks systemd to start the unit, or runs the start command in a session of its own.
    fn launch(&mut self) -> Result<(), String> {
        match self {
            Service::Systemd { unit } => {
                systemctl(&["start", "--no-block", "--", unit])?;
            }
            Service::Process {
                start_cmd,
                log,
                launched,
                ..
            } => {
                let mut out = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&*log)
                    .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
                let _ = writeln!(
                    out,
                    "\n==== {} kompactor maintain: {start_cmd}",
                    chrono::Utc::now().to_rfc3339()
                );
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(&*start_cmd)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().map_err(|e| e.to_string())?)
                    .stderr(out);
                // Its own session: the server outlives this routine and a Ctrl-C at its terminal.
                // SAFETY: setsid(2) is async-signal-safe.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::setsid();
                        Ok(())
                    });
                }
                *launched = Some(
                    cmd.spawn()
                        .map_err(|e| format!("could not run the start command: {e}"))?,
                );
            }
        }
        Ok(())
    }

    /// Waits until `client` finds the server healthy; an error if the start failed, or
    /// `timeout` passed first.
    fn wait_healthy(&mut self, client: &Client, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if client.healthy() {
                return Ok(());
            }
            match self {
                Service::Systemd { unit } => {
                    if Self::unit_state(unit) == "failed" {
                        return Err(format!(
                            "unit {unit} failed to start (journalctl -u {unit} -n 50)"
                        ));
                    }
                }
                Service::Process { launched, log, .. } => {
                    if let Some(status) =
                        launched.as_mut().and_then(|c| c.try_wait().ok().flatten())
                    {
                        *launched = None;
                        if !status.success() {
                            return Err(format!(
                                "the start command exited ({status}); its output is in {}\n{}",
                                log.display(),
                                tail(log.as_path(), 15)
                            ));
                        }
                        // Status 0: it may have daemonized; keep waiting for /health.
                    }
                }
            }
            if Instant::now() > deadline {
                let mut why = format!(
                    "{}/health did not answer 200 within {}s of the start",
                    client.url(),
                    timeout.as_secs()
                );
                if let Service::Process { log, .. } = self {
                    why.push_str(&format!(
                        "; its output is in {}\n{}",
                        log.display(),
                        tail(log.as_path(), 15)
                    ));
                }
                return Err(why);
            }
            sleep(Duration::from_millis(500));
        }
    }

    /// Which process serves now that the server answers: under a start command, its pid is
    /// noted (and written to the pid file when the server did not write it).
    fn note_started(&mut self) -> Result<String, String> {
        match self {
            Service::Systemd { unit } => Ok(format!("unit {unit} answers")),
            Service::Process {
                pid_file,
                pid,
                launched,
                ..
            } => {
                let named = Self::read_pid(pid_file)
                    .ok()
                    .filter(|p| pid_alive(*p) && Some(*p) != *pid);
                if let Some(p) = named.filter(|p| launched.as_ref().is_none_or(|c| c.id() != *p)) {
                    *pid = Some(p);
                    return Ok(format!("server pid {p} (from {})", pid_file.display()));
                }
                match launched.as_ref().map(Child::id).filter(|p| pid_alive(*p)) {
                    Some(p) => {
                        fs::write(&*pid_file, format!("{p}\n"))
                            .map_err(|e| format!("the server runs as pid {p}, but {} could not be written: {e}", pid_file.display()))?;
                        *pid = Some(p);
                        Ok(format!("server pid {p} (written to {})", pid_file.display()))
                    }
                    None => Ok(format!("the server answers, but {} does not name its process; fix it before the next maintenance", pid_file.display())),
                }
            }
        }
    }
}
