use std::{io::Write, process::ExitCode};

use clap::Parser;
use profiler::cli::{self, Cli, Command};

/// Single-threaded: `run` forks, which is only safe while no other thread runs.
fn runtime() -> profiler::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| profiler::Error::io("starting the async runtime", e))
}

fn main() -> ExitCode {
    profiler::collect::phases::mark("main");
    profiler::contain::install_hook();
    // Without it a file shrinking under the profiler kills it; nothing else depends on it.
    let _ = profiler::sigbus::install();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(args) => runtime().and_then(|rt| rt.block_on(cli::record(args))),
        Command::Run(args) => match runtime().and_then(|rt| rt.block_on(cli::run(args))) {
            // The command's own exit code, so `profiler run` drops into scripts unchanged.
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Agent(args) => runtime().and_then(|rt| rt.block_on(cli::agent(args))),
        Command::Top(args) => runtime().and_then(|rt| rt.block_on(cli::top(args))),
        Command::Report(args) => cli::report(args),
        Command::Ps(args) => cli::ps(args),
        Command::Diff(args) => cli::diff(args),
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(profiler::server::serve(args))),
    };
    // Not eprintln!: after an SSH drop stderr fails, and a panic would replace the exit status.
    let say = |line: std::fmt::Arguments| {
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Distinct from failures, so CI can tell "the profile says no" from "it broke".
        Err(e @ profiler::Error::RulesViolated(_)) => {
            say(format_args!("profiler: {e}"));
            ExitCode::from(3)
        }
        Err(e @ profiler::Error::Interrupted { code, .. }) => {
            say(format_args!("profiler: {e}"));
            ExitCode::from(code)
        }
        Err(e) => {
            say(format_args!("profiler: error: {e}"));
            ExitCode::FAILURE
        }
    }
}
