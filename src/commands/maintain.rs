//! `kompactor maintain`: the whole maintenance window, proven by the server's own answers.

use crate::commands::args::{DataDir, Hosts};
use crate::error::{Error, Result};
use crate::format::layout::check_hosts;
use crate::maintenance::service::Service;
use crate::maintenance::{self, Options};
use crate::server::http::{load_token, Client, Endpoint};
use clap::{ArgGroup, Args};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `kompactor maintain` arguments.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("service").required(true).args(["systemd_unit", "pid_file"])))]
pub struct MaintainArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub hosts: Hosts,
    /// The server's HTTP address: http://HOST:PORT, or https:// (verified against the
    /// system's certificate authorities, or --ca-file).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8181")]
    pub url: String,
    /// A file holding the API token: the token alone, or the JSON `influxdb3 create token
    /// --output-file` writes (default: $INFLUXDB3_AUTH_TOKEN; never on the command line).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A PEM file of the certificate authorities to trust for an https URL.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Stop and start the server with `systemctl stop|start UNIT`.
    #[arg(long, value_name = "UNIT", conflicts_with_all = ["pid_file", "start_cmd"])]
    pub systemd_unit: Option<String>,
    /// Stop the server with SIGTERM to the pid in FILE (with --start-cmd).
    #[arg(long, value_name = "FILE", requires = "start_cmd")]
    pub pid_file: Option<PathBuf>,
    /// Start the server with this shell command (its output is appended to
    /// DATA_DIR/.kompactor/server.log); the pid file is written if the command does not.
    #[arg(long, value_name = "CMD", requires = "pid_file")]
    pub start_cmd: Option<String>,
    /// Seconds to wait for the server to stop, to answer /health after a start, and for each
    /// HTTP request.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Merge with the server stopped instead of before stopping it (a longer downtime).
    #[arg(long)]
    pub no_prepare: bool,
    /// The kompactor executable that runs each step (default: this one), e.g. a wrapper that
    /// runs it under nice.
    #[arg(long, value_name = "PATH")]
    pub kompactor: Option<PathBuf>,
    /// Print the report as one JSON document on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Options for the compaction (and prepare), after `--`: e.g. -- --min-age 1h --threads 1.
    #[arg(last = true, value_name = "COMPACTION-OPTIONS")]
    pub compaction: Vec<String>,
}

/// Runs the maintenance; the exit status is the verdict's.
pub fn run(a: &MaintainArgs) -> Result<ExitCode> {
    let data_dir = a.data_dir.path().to_path_buf();
    // The same check as every other command's, but a wrong data dir or node is a bad command
    // line here (exit 2): the routine has not touched the server yet.
    check_hosts(&data_dir, &a.hosts.hosts).map_err(|e| Error { usage: true, ..e })?;
    let url = checked_url(a)?;
    check_compaction_args(&a.compaction)?;
    let kompactor = match &a.kompactor {
        Some(p) if p.is_file() => p.clone(),
        Some(p) => {
            return Err(Error::usage(format!(
                "--kompactor {} is not a file",
                p.display()
            )))
        }
        None => std::env::current_exe()
            .map_err(|e| Error::new(format!("cannot find this executable: {e}")))?,
    };
    let token = load_token(a.token_file.as_deref())?;
    let timeout = Duration::from_secs(a.timeout);
    let client = Client::new(Endpoint {
        url,
        token,
        ca_file: a.ca_file.clone(),
        timeout,
    })?;
    let service = service(a, &data_dir)?;
    let _lock = maintenance::lock(&data_dir).map_err(Error::new)?;
    let report = maintenance::run(
        Options {
            data_dir,
            hosts: a.hosts.hosts.clone(),
            service,
            timeout,
            prepare: !a.no_prepare,
            kompactor,
            compaction_args: a.compaction.clone(),
            json: a.json,
        },
        &client,
    );
    if a.json {
        crate::json::print(&report);
    } else {
        println!("\nrecord: {}", report.record_dir);
        if let Some(d) = report.downtime_seconds {
            println!(
                "downtime: {d:.1} s (from the stop to /health answering); total {:.1} s",
                report.seconds
            );
        }
        println!("{}", report.verdict_line());
    }
    Ok(ExitCode::from(report.verdict.exit_code()))
}

/// `--url` without a trailing slash, checked to be `http(s)://HOST:PORT` (and https with
/// `--ca-file`).
fn checked_url(a: &MaintainArgs) -> Result<String> {
    let url = a.url.trim_end_matches('/').to_string();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
        return Err(Error::usage(format!(
            "--url must look like http://HOST:PORT, not {:?}",
            a.url
        )));
    }
    if a.ca_file.is_some() && !url.starts_with("https://") {
        return Err(Error::usage("--ca-file is for an https:// URL"));
    }
    Ok(url)
}

/// Refuses the compaction options that the routine sets itself.
fn check_compaction_args(args: &[String]) -> Result<()> {
    for arg in args {
        if matches!(
            arg.as_str(),
            "--dry-run" | "--json" | "--hosts" | "--data-dir"
        ) || arg.starts_with("--hosts=")
        {
            return Err(Error::usage(format!(
                "{arg} is not a compaction option maintain can pass on"
            )));
        }
    }
    Ok(())
}

/// How the server is stopped and started: a systemd unit, or a pid file and a command.
fn service(a: &MaintainArgs, data_dir: &Path) -> Result<Service> {
    match (&a.systemd_unit, &a.pid_file, &a.start_cmd) {
        (Some(unit), _, _) => Ok(Service::Systemd { unit: unit.clone() }),
        (None, Some(pid_file), Some(cmd)) => Ok(Service::Process {
            pid_file: pid_file.clone(),
            start_cmd: cmd.clone(),
            log: crate::durable::journal::RunDirs::state_dir(data_dir).join("server.log"),
            pid: None,
            launched: None,
        }),
        _ => Err(Error::usage(
            "give --systemd-unit UNIT, or --pid-file FILE with --start-cmd CMD",
        )),
    }
}
