//! The command line: clap's definitions of every subcommand ([`args`]) apart from the
//! handlers that run them ([`commands`]).

pub mod args;
pub mod commands;
