//! Progress bars on a terminal, and log lines that do not break them.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::OnceLock;

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(|| {
        let shown = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
        let target = if shown {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        MultiProgress::with_draw_target(target)
    })
}

/// Hides every bar (for `--quiet` and `--json`).
pub fn hide() {
    multi().set_draw_target(ProgressDrawTarget::hidden());
}

/// A bar counting `len` items with a message, e.g. snapshots read or groups merged.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let b = multi().add(ProgressBar::new(len));
    b.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}

/// A logger that suspends the bars while it writes a line.
struct Logger(env_logger::Logger);

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        self.0.enabled(m)
    }
    fn log(&self, r: &log::Record) {
        if self.0.matches(r) {
            multi().suspend(|| self.0.log(r));
        }
    }
    fn flush(&self) {
        self.0.flush()
    }
}

/// Sets up logging: `RUST_LOG` if set, else `info` with `--verbose`, else `warn`.
pub fn init_logging(verbose: bool) {
    let level = if verbose { "info" } else { "warn" };
    let logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|buf, record| {
            use std::io::Write;
            let level = record.level().to_string().to_lowercase();
            writeln!(buf, "kompactor: {level}: {}", record.args())
        })
        .build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Logger(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// Logs, at debug level, how long each step of a long task took and the memory then held:
/// where a deep history's time and memory go.
pub struct StepClock<'a> {
    /// What the steps belong to (a node), the start of each line.
    subject: &'a str,
    last: std::time::Instant,
    /// The process's CPU time (every thread) at `last`.
    last_cpu: Option<std::time::Duration>,
}

impl<'a> StepClock<'a> {
    pub fn new(subject: &'a str) -> StepClock<'a> {
        StepClock {
            subject,
            last: std::time::Instant::now(),
            last_cpu: process_cpu(),
        }
    }

    /// Logs that `what` is done, with its time since the last step (or the start) and the
    /// CPU time all threads spent meanwhile: on a few cores, whether a step kept them busy.
    pub fn done(&mut self, what: &str) {
        let now = std::time::Instant::now();
        let cpu = process_cpu();
        let spent = match (cpu, self.last_cpu) {
            (Some(c), Some(l)) => format!(" (CPU {:.2}s)", c.saturating_sub(l).as_secs_f64()),
            _ => String::new(),
        };
        log::debug!(
            "node {}: {what} took {:.2}s{spent}{}",
            self.subject,
            (now - self.last).as_secs_f64(),
            resident()
        );
        self.last = now;
        self.last_cpu = cpu;
    }
}

/// The CPU time the process's threads have used, user and system, where the system says.
fn process_cpu() -> Option<std::time::Duration> {
    #[cfg(unix)]
    {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a whole rusage into the buffer it is given.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: the call succeeded, so it filled the struct.
        let ru = unsafe { ru.assume_init() };
        let tv =
            |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        Some(tv(ru.ru_utime) + tv(ru.ru_stime))
    }
    #[cfg(not(unix))]
    None
}

/// The process's resident and peak memory, where the system says (Linux).
fn resident() -> String {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return String::new();
    };
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().strip_suffix(" kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    format!(
        ", {} MiB resident (peak {} MiB)",
        field("VmRSS:"),
        field("VmHWM:")
    )
}
