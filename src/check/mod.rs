//! Checks on data and models that several commands share: `validate`'s and `audit`'s
//! per-partition analysis and findings ([`analysis`], printed by [`render`]), the comparison
//! of outside features with the pipeline's own (`audit --compare`, [`compare`]), and the
//! classification metrics of `evaluate` ([`metrics`]).

pub mod analysis;
pub mod compare;
pub mod metrics;
pub mod render;
