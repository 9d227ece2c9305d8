//! The integration tests: one binary (one link) that runs `pipeline` on temporary projects like
//! a user, with a module per area and the shared builder and assertions in [`support`].

#[macro_use]
mod support;

mod bad_images;
mod cache;
mod cli;
mod compare;
mod compat;
mod completions;
mod concurrent;
mod cpus;
mod crash;
mod diagnose;
mod events;
mod fidelity;
mod gc;
mod hostile;
mod init;
mod interop;
mod python;
mod report;
mod serve;
mod shards;
mod shared;
mod slurm;
mod train;
mod validate;
