//! Named crash points for the fault-injection tests (`KOMPACTOR_FAILPOINT`).

use crate::error::{Error, Result};

/// Named places where tests make the process fail as a crash (or a fault) would.
///
/// Built only with the `failpoints` feature; `KOMPACTOR_FAILPOINT=<name>` aborts the
/// process there, `KOMPACTOR_FAILPOINT=<name>=error` returns an error instead.
pub fn failpoint(name: &str) -> Result<()> {
    if fault_injected(name) {
        eprintln!("kompactor: failpoint {name}: aborting");
        std::process::abort();
    }
    if fault_injected(&format!("{name}=error")) {
        return Err(Error::new(format!("injected fault at failpoint {name}")));
    }
    Ok(())
}

/// Whether the tests asked for the named fault (`KOMPACTOR_FAILPOINT=<name>`); also for
/// faults that change data instead of stopping the process. Always false without the
/// `failpoints` feature.
pub fn fault_injected(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    if std::env::var("KOMPACTOR_FAILPOINT").is_ok_and(|v| v == name) {
        return true;
    }
    let _ = name;
    false
}
