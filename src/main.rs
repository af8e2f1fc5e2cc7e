//! The `kompactor` binary: parse the command line, run it, map errors to exit status 1.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of the output goes away
    // (`kompactor status ... | head`) instead of panicking on the failed write. Output is
    // printed once a run has committed (and a kill at any moment is recovered anyway).
    #[cfg(unix)]
    // SAFETY: no other thread exists yet; this restores the default action of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = kompactor::commands::Cli::parse();
    kompactor::progress::init_logging(cli.verbose);
    match kompactor::commands::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kompactor: error: {e}");
            ExitCode::from(if e.usage {
                kompactor::commands::EXIT_USAGE
            } else {
                kompactor::commands::EXIT_ERROR
            })
        }
    }
}
