//! `mcpq`: the producer command line. Parse -> run -> exit code.

mod attach;
mod cli;
mod commands;
mod exit;
mod mailbox;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; real usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    // Two threads: `batch submit` parses the next chunk while the last is in Redis.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpq: cannot start the async runtime: {e}");
            return ExitCode::from(exit::JOB_FAILED);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = err
                .downcast_ref::<exit::Exit>()
                .map(|e| e.code)
                .unwrap_or(exit::JOB_FAILED);
            output::eline(&format!("mcpq: {err:#}"));
            ExitCode::from(code)
        }
    }
}
