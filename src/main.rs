use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = kompactor::cli::Args::parse();
    let level = if args.quiet {
        "warn"
    } else if args.verbose {
        "info"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|buf, record| {
            use std::io::Write;
            let level = record.level().to_string().to_lowercase();
            writeln!(buf, "kompactor: {level}: {}", record.args())
        })
        .init();
    match kompactor::run::execute(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kompactor: error: {e}");
            ExitCode::from(kompactor::run::EXIT_ERROR)
        }
    }
}
