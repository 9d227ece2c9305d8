//! `pipeline audit FILE --compare PATH`: is a features file made outside the pipeline
//! preprocessed like the pipeline's own features — and if not, how does it differ?
//!
//! The external file (Arrow IPC with a list-of-numbers column, or NumPy `.npy` of shape
//! `[N, H*W*C]` or `[N, H, W, C]`) is read in a streaming pass that keeps a sample of rows
//! and a statistical signature. Rows are matched to the pipeline's by an `id` or `path`
//! column when there is one; otherwise only signatures are compared.
//!
//! Hypotheses are built by replaying the pipeline's own preprocessing from its cached
//! `resize` output, as configured and with one thing changed each: channel order, mean
//! subtraction missing or in the other channel order, per-channel instead of per-image
//! normalization (or the reverse), no normalization, raw or 1/255-scaled pixels, and — from
//! the source images — other resize sizes and filters. The hypothesis that reproduces the
//! external features names the mismatch and the stage params that would reproduce them.
//!
//! [`external`] reads the file into a sample and a [`signature::Signature`]; [`hypothesis`]
//! names the ways it might have been made and replays each; [`resize`] adds other sizes and
//! filters from the source images; [`run::compare`] scores them all and writes the verdict.

pub mod external;
pub mod hypothesis;
pub mod resize;
pub mod run;
pub mod signature;

use std::path::Path;

use crate::cache::store::Cache;

/// Rows compared directly (matched mode) or used for our signatures (statistics mode).
const SAMPLE: usize = 2000;
/// Source images re-decoded to test other resize sizes and filters.
const SOURCE_SAMPLE: usize = 48;
/// Relative RMS error under which a hypothesis reproduces matched rows.
const MATCH_TOLERANCE: f64 = 0.02;
/// Signature distance under which a hypothesis reproduces the external statistics.
const STATS_TOLERANCE: f64 = 0.15;

/// The outcome of one comparison.
pub struct Comparison {
    pub text: String,
    pub consistent: bool,
    pub json: serde_json::Value,
}

/// What the comparison needs from the pipeline.
pub struct Ours<'a> {
    pub cache: &'a Cache,
    /// The final dataset artifact and the stage name.
    pub stage: &'a str,
    pub data: &'a Path,
    /// The folder the source images are in.
    pub images_root: Option<&'a Path>,
}

/// One hypothesis with its score: lower is closer.
#[derive(Clone, Debug)]
pub struct Scored {
    pub score: f64,
    pub name: String,
    /// What differs, in words.
    pub means: String,
    /// What to change to make both agree.
    pub fix: String,
}
