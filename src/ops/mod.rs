//! The commands that read a built pipeline: `audit` ([`audit`]), `export` ([`export`]),
//! `predict` ([`predict`]) and `cache ls|du|verify` ([`cache_cmd`]).

pub mod audit;
pub mod cache_cmd;
pub mod export;
pub mod predict;
