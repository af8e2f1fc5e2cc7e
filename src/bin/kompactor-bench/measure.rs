//! Runs one command as a measured child: wall time from the clock, user and system CPU time
//! and peak RSS from the kernel's accounting of that child alone (`wait4`), so that nothing
//! outside the tool (GNU time, a shell) is needed or counted.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// What one run of a command took.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// The exit status; 128 + the signal's number when a signal ended it, as shells say.
    pub exit: i32,
    /// Seconds.
    pub wall: f64,
    pub user: f64,
    pub sys: f64,
    /// Peak resident set size, KiB.
    pub rss_kib: u64,
}

impl Measured {
    /// Whether the command succeeded.
    pub fn ok(&self) -> bool {
        self.exit == 0
    }

    /// User + system CPU seconds.
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }

    /// Peak RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// Runs `argv` (the program first) with its stdout and stderr both written to `log`, and
/// measures it.
pub fn run(argv: &[OsString], log: &Path) -> Result<Measured, String> {
    let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let program = Path::new(&argv[0]);
    let started = Instant::now();
    let child = Command::new(program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let (status, usage) = reap(child.id() as libc::pid_t)
        .map_err(|e| format!("waiting for {}: {e}", program.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        exit,
        wall,
        user: secs(usage.ru_utime),
        sys: secs(usage.ru_stime),
        // Linux counts it in KiB.
        rss_kib: usage.ru_maxrss.max(0) as u64,
    })
}

/// Waits for the child `pid` to end: its wait status and its resource usage.
fn reap(pid: libc::pid_t) -> std::io::Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals; `pid` is our own child, not yet reaped
        // (std's `Child` is dropped without waiting, and it never waits on its own).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What a failed run's log says: its first lines about an error, a warning or a skipped
/// window, else its last lines; each cut to 240 characters.
pub fn excerpt(log: &Path) -> Vec<String> {
    let lines: Vec<String> = File::open(log)
        .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
        .unwrap_or_default();
    let telling: Vec<&String> = lines
        .iter()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("error") || l.contains("warn") || l.contains("skipped")
        })
        .take(3)
        .collect();
    let chosen = if telling.is_empty() {
        lines.iter().skip(lines.len().saturating_sub(4)).collect()
    } else {
        telling
    };
    chosen
        .into_iter()
        .map(|l| l.chars().take(240).collect())
        .collect()
}

/// Makes an argument list from anything path- or string-like.
#[macro_export]
macro_rules! argv {
    ($($a:expr),* $(,)?) => {
        vec![$(::std::ffi::OsString::from($a)),*]
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_child_and_keeps_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let argv = argv![
            "/bin/sh",
            "-c",
            "echo out; echo error: no such table >&2; exit 3"
        ];
        let m = run(&argv, &log).unwrap();
        assert_eq!(m.exit, 3);
        assert!(m.wall > 0.0 && m.rss_kib > 0);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "out\nerror: no such table\n"
        );
        assert_eq!(excerpt(&log), vec!["error: no such table".to_string()]);
    }
}
