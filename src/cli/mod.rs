//! The command line: clap's definitions of every subcommand ([`args`]) apart from the
//! handlers that run them ([`commands`]); shell completions and the man page ([`complete`],
//! with the values of flags computed at each TAB in [`values`]).

pub mod args;
pub mod commands;
pub mod complete;
pub mod values;
