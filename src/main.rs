//! `pipeline`: declarative, content-hashed, cached image-classifier pipelines.
//!
//! `main` only parses the command line, runs it, and maps a failure to an exit code.

mod analysis;
mod audit;
mod cache;
mod cache_cmd;
mod cli;
mod compare;
mod dataset;
mod decode;
mod diag;
mod diagnose;
mod dirty;
mod error;
mod executor;
mod fault;
mod fingerprint;
mod kernel;
mod metrics;
// Parts of the model API (whole-epoch training on in-memory data) serve its tests and
// the diagnose work to come.
#[allow(dead_code)]
mod model;
// The .npy writer is exercised against NumPy in its tests; the binary only reads .npy so far.
#[allow(dead_code)]
mod npy;
mod plan;
mod plots;
mod predict;
mod report;
mod spec;
mod stage;
mod suggest;
mod yaml;

use clap::Parser;

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
