//! The commands that read a built pipeline: `audit` ([`audit`]), `export` ([`export`]),
//! `predict` ([`predict`]), `serve` ([`serve`], predict behind HTTP) and `cache ls|du|verify`
//! ([`cache_cmd`]); and the one that writes a
//! new pipeline file from a folder of images, `init` ([`init`]).

pub mod audit;
pub mod cache_cmd;
pub mod export;
pub mod init;
pub mod predict;
pub mod serve;
