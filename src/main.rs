//! `pipeline`: declarative, content-hashed, cached image-classifier pipelines.
//!
//! `main` only answers a shell's completion request, parses the command line, runs it, and
//! maps a failure to an exit code.

use clap::Parser;
use pipeline::cli::args::Cli;
use pipeline::cli::{commands, complete};
use pipeline::error::{self, Failure};

fn main() {
    complete::complete_if_asked();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    if let Err(err) = commands::run(cli) {
        if error::is_broken_pipe(&err) {
            // Quietly, with the status of a program killed by SIGPIPE (as `cat` would end).
            std::process::exit(141);
        }
        let failure = Failure::from(err);
        eprintln!("{failure}");
        std::process::exit(failure.exit_code());
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => "pipeline=debug",
        _ => "pipeline=trace",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .init();
}
