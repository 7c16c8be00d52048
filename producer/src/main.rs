//! `mcpq`: the producer command line. Parse -> run -> exit code.

mod attach;
mod cli;
mod commands;
mod exit;
mod mailbox;
mod output;

use std::process::ExitCode;

use clap::Parser;
use mcpq_core::cli_error::{json_requested, CliError, CliErrorKind};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; real usage errors exit 2.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::from(exit::OK);
            }
            // Clap failed before `--json` could be read: look for it ourselves.
            if json_requested(std::env::args_os().skip(1)) {
                let message = e.render().to_string();
                let err = CliError::new(CliErrorKind::Usage, message.trim_end());
                output::error(true, &err, "");
            } else {
                let _ = e.print();
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    let json = cli.json;
    // Two threads: `batch submit` parses the next chunk while the last is in Redis.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let err = CliError::new(
                CliErrorKind::Internal,
                format!("cannot start the async runtime: {e}"),
            );
            output::error(json, &err, output::PREFIX);
            return ExitCode::from(err.exit_code());
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // The whole chain, as text mode always printed it; the kind (and line) of the
            // CliError inside, if there is one.
            let mut report = CliError::new(exit::kind_of(&err), format!("{err:#}"));
            report.line = err.downcast_ref::<CliError>().and_then(|e| e.line);
            output::error(json, &report, output::PREFIX);
            ExitCode::from(report.exit_code())
        }
    }
}
