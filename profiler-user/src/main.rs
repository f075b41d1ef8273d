use std::process::ExitCode;

use clap::Parser;
use profiler::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| profiler::Error::io("starting the async runtime", e))
            .and_then(|rt| rt.block_on(cli::record(args))),
        Command::Report(args) => cli::report(args),
        Command::Ps(args) => cli::ps(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Distinct from failures, so CI can tell "the profile says no" from "it broke".
        Err(e @ profiler::Error::RulesViolated(_)) => {
            eprintln!("profiler: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("profiler: error: {e}");
            ExitCode::FAILURE
        }
    }
}
