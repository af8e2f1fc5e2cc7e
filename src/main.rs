use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = kompactor::cli::Cli::parse();
    kompactor::progress::init_logging(cli.verbose);
    match kompactor::run::main(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kompactor: error: {e}");
            ExitCode::from(kompactor::run::EXIT_ERROR)
        }
    }
}
