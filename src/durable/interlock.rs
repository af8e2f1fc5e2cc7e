//! Interlocks: one kompactor at a time per data dir, and none while a server uses it.

use crate::durable::fsutil::create_dir_all;
use crate::durable::journal::RunDirs;
use crate::error::{Error, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// Holds `<data-dir>/.kompactor/lock` (an advisory lock) for the life of the value.
pub struct Lock {
    file: fs::File,
}

/// Takes the data dir's lock, or says who holds it.
pub fn lock(data_dir: &Path) -> Result<Lock> {
    let state = RunDirs::state_dir(data_dir);
    create_dir_all(&state)?;
    let path = state.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, "open the lock file", e))?;
    match file.try_lock() {
        Ok(()) => Ok(Lock { file }),
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = if holder.trim().is_empty() {
                "a process that has not recorded itself".into()
            } else {
                holder.trim().to_string()
            };
            Err(Error::at(
                &path,
                format!("another kompactor is working on this data dir ({holder})"),
            )
            .hint("wait for it to finish; two runs at once could corrupt the metadata"))
        }
        Err(fs::TryLockError::Error(e)) => Err(Error::io(&path, "lock", e)),
    }
}

impl Lock {
    /// Records who holds the lock, for a second run's message. Done only by a run that is
    /// about to change something, so that a run with nothing to do leaves every file as it was.
    pub fn record_holder(&self) {
        use std::io::Write;
        let mut f = &self.file;
        let _ = f.set_len(0);
        let _ = writeln!(
            f,
            "pid {}, started {}",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
}

/// A process that appears to use the data dir.
#[derive(Debug, Clone)]
pub struct User {
    pub pid: u32,
    pub command: String,
    pub why: String,
}

fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn is_under(p: &Path, dir: &Path) -> bool {
    p == dir || p.starts_with(dir)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// kompactor's own process family: its ancestors, and the other children of its parent (the
/// script or test that runs it, and what that script runs beside it). Their open files are
/// not a server's; an `influxdb3` among them is still found by its arguments.
fn family() -> Vec<u32> {
    let me = std::process::id();
    let mut out = vec![me];
    let mut p = parent_of(me);
    let parent = p;
    while let Some(pid) = p.filter(|pid| *pid > 1) {
        out.push(pid);
        p = parent_of(pid);
    }
    if let (Some(parent), Ok(procs)) = (parent, fs::read_dir("/proc")) {
        for e in procs.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if parent > 1 && parent_of(pid) == Some(parent) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// Finds processes using the data dir: an `influxdb3` process whose arguments or environment
/// name it, or any other process (but kompactor and its own process family) with a file open
/// under it. Linux only; on systems without `/proc` it finds nothing.
pub fn users_of(data_dir: &Path) -> Vec<User> {
    let dir = canonical(data_dir);
    let me = std::process::id();
    let family = family();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = p.path();
        let args: Vec<String> = fs::read(base.join("cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(argv0) = args.first() else { continue };
        let exe = Path::new(argv0)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let command = args.join(" ");
        if exe.starts_with("kompactor") {
            continue;
        }
        if exe.starts_with("influxdb3") {
            let mut named = args.iter().enumerate().any(|(i, a)| {
                let v = if a == "--data-dir" {
                    args.get(i + 1).cloned()
                } else {
                    a.strip_prefix("--data-dir=").map(str::to_string)
                };
                v.is_some_and(|v| canonical(Path::new(&v)) == dir)
            });
            if !named {
                let env = fs::read(base.join("environ")).unwrap_or_default();
                named = env.split(|b| *b == 0).any(|kv| {
                    String::from_utf8_lossy(kv)
                        .strip_prefix("INFLUXDB3_DB_DIR=")
                        .is_some_and(|v| canonical(Path::new(v)) == dir)
                });
            }
            if named {
                out.push(User {
                    pid,
                    command,
                    why: "an influxdb3 process serving this data dir".into(),
                });
                continue;
            }
        }
        if family.contains(&pid) {
            continue;
        }
        if let Ok(fds) = fs::read_dir(base.join("fd")) {
            if let Some(open) = fds
                .flatten()
                .filter_map(|fd| fs::read_link(fd.path()).ok())
                .find(|t| is_under(t, &dir))
            {
                out.push(User {
                    pid,
                    command,
                    why: format!("has {} open", open.display()),
                });
            }
        }
    }
    out
}

/// Refuses to go on while a server (or anything else) uses the data dir, unless overridden.
pub fn refuse_if_in_use(data_dir: &Path, allow: bool) -> Result<()> {
    let users = users_of(data_dir);
    if users.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = users
        .iter()
        .map(|u| format!("pid {} ({}): {}", u.pid, u.command, u.why))
        .collect();
    if allow {
        for l in &list {
            log::warn!("going on although a process uses the data dir: {l}");
        }
        return Ok(());
    }
    Err(Error::at(data_dir, format!("the data dir is in use: {}", list.join("; ")))
        .hint("stop the InfluxDB 3 server first; --allow-running-server overrides this check if it is wrong"))
}

/// For a command that changes the data dir: refuses while something uses it, then takes the
/// lock. A dry run does neither (it must not create a file) and gets `None`.
pub fn for_change(
    data_dir: &Path,
    dry_run: bool,
    allow_running_server: bool,
) -> Result<Option<Lock>> {
    crate::format::layout::check_data_dir(data_dir)?;
    if dry_run {
        return Ok(None);
    }
    refuse_if_in_use(data_dir, allow_running_server)?;
    Ok(Some(lock(data_dir)?))
}
