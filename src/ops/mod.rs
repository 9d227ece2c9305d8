//! The commands that read a built pipeline: `audit` ([`audit`]), `export` ([`export`]),
//! `predict` ([`predict`]), `serve` ([`serve`], predict behind HTTP), `cache ls|du|verify`
//! ([`cache_cmd`]) and `cache gc` ([`gc`]); and the one that writes a new pipeline file from
//! a folder of images, `init` ([`init`]). [`embed`] is the same reading as a library, for the
//! Python package.

pub mod audit;
pub mod cache_cmd;
pub mod embed;
pub mod export;
pub mod gc;
pub mod init;
pub mod predict;
pub mod serve;
