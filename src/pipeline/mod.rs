//! The model of a pipeline: the typed file ([`spec`]), the validated plan the executor trusts
//! ([`plan`]), its graph ([`dag`]), the fingerprints that name artifacts ([`fingerprint`]),
//! why a stage is stale ([`dirty`]), the executor that runs stale stages and reuses the
//! rest ([`executor`]), and sharded runs with their merge ([`shard`]). It drives the stages and stands below the commands.

pub mod dag;
pub mod dirty;
pub mod events;
pub mod executor;
pub mod fingerprint;
pub mod plan;
pub mod shard;
pub mod spec;
