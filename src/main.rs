//! `pipeline`: declarative, content-hashed, cached image-classifier pipelines.
//!
//! `main` only parses the command line, runs it, and maps a failure to an exit code.

use clap::Parser;
use pipeline::{cli, error};

fn main() {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    if let Err(err) = cli::run(cli) {
        let code = match err.downcast_ref::<error::Failure>() {
            Some(f) => {
                eprintln!("{f}");
                f.exit_code()
            }
            None => {
                eprintln!("error: {err:#}");
                1
            }
        };
        std::process::exit(code);
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
