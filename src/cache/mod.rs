//! The cache: artifacts named by fingerprint with their records ([`store`], the only code
//! that touches cache paths) and the remembered file hashes that let a warm run skip reading
//! its images ([`stat_cache`]), with a shared cache on object storage behind the directory
//! ([`remote`]), and what `cache gc` may take out of that one ([`sweep`]).

pub mod remote;
pub mod stat_cache;
pub mod store;
pub mod sweep;
