//! Interruptions of the routine (SIGINT, SIGTERM, SIGHUP): noted, and obeyed only where the
//! server is running.
//!
//! Ended at once between the stop and the start, the routine would leave the server
//! stopped. So a signal is only noted: before the stop, the routine ends there without
//! stopping anything; once the server is stopped, it goes on until the server runs again and
//! its answers are compared (undoing the run if they differ), then ends. SIGKILL cannot be
//! caught: a routine killed so leaves the node as its last step did (`kompactor status`
//! says what to run).
//!
//! Child steps start with the default actions (a caught signal's handler does not survive
//! `exec`): a Ctrl-C at the terminal also reaches the step running then, which the routine
//! handles like any step that ended abnormally.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Catches SIGINT, SIGTERM and SIGHUP from now on, for the rest of the process.
pub fn defer() {
    #[cfg(unix)]
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `note` only stores to an atomic and calls write(2), both
        // async-signal-safe; the sigaction struct is zeroed and then filled in.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = note as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The signal that asked the routine to end, if one did.
pub fn received() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Some(Signal(n)),
    }
}

/// A signal number, named as operators know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub i32);

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            #[cfg(unix)]
            libc::SIGINT => f.write_str("SIGINT"),
            #[cfg(unix)]
            libc::SIGTERM => f.write_str("SIGTERM"),
            #[cfg(unix)]
            libc::SIGHUP => f.write_str("SIGHUP"),
            n => write!(f, "signal {n}"),
        }
    }
}

#[cfg(unix)]
extern "C" fn note(sig: libc::c_int) {
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    const MSG: &[u8] = b"\nkompactor maintain: interrupted; ending at the next point where the server runs (not before it runs again)\n";
    // SAFETY: write(2) on stderr with a static buffer is async-signal-safe.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_signal_is_noted_not_obeyed() {
        defer();
        assert_eq!(received(), None);
        // SAFETY: raise(3) sends the signal to this thread; the handler above catches it.
        unsafe {
            libc::raise(libc::SIGHUP);
        }
        assert_eq!(received(), Some(Signal(libc::SIGHUP)));
        assert_eq!(received().unwrap().to_string(), "SIGHUP");
    }
}
