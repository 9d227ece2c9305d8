//! What is in a dataset artifact, per partition, and what is wrong with it: the `validate`
//! stage and `pipeline audit` share it.
//!
//! [`scan::analyze`] streams an artifact twice (bounded memory) into an [`Analysis`]: the
//! first pass gathers per-partition row and class counts, per-channel statistics, non-finite
//! values, label problems, content ids and a perceptual hash of every image
//! ([`similarity`]); the second builds per-channel histograms on a common range so partitions
//! can be compared. [`Analysis::findings`] ([`findings`], with the lineage checks in
//! [`lineage`]) turns the numbers into [`Finding`]s — errors that must stop a pipeline before
//! training, and warnings — each naming the rows involved and the likely cause.

pub mod findings;
pub mod lineage;
pub mod scan;
pub mod similarity;
#[cfg(test)]
mod testutil;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::dataset::Dtype;
use crate::data::lineage::LineageEntry;

/// At most this many rows or pairs are named per finding.
const MAX_NAMED: usize = 10;

/// Thresholds of the checks (the `validate` stage's params).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The pixel dtype training expects.
    pub dtype: Dtype,
    /// Warn when a partition's largest class has more than this many times the rows of its
    /// smallest.
    pub max_class_ratio: f64,
    /// Allowed |mean| and |std - 1| on `train` after a normalization that promises 0 and 1.
    pub mean_tolerance: f64,
    pub std_tolerance: f64,
    /// Warn when a partition's per-channel histogram differs from `train`'s by more than this
    /// (L-infinity of normalized histograms; Jensen-Shannon divergence, base 2, in [0, 1]).
    pub drift_linf: f64,
    pub drift_js: f64,
    /// Two images in different partitions whose grayscale thumbnails correlate at least this
    /// much are near-duplicates.
    pub near_duplicate: f64,
    pub bins: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            dtype: Dtype::Float32,
            max_class_ratio: 1.5,
            mean_tolerance: 0.1,
            std_tolerance: 0.1,
            drift_linf: 0.1,
            drift_js: 0.05,
            near_duplicate: 0.985,
            bins: 64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found, with the rows involved and the likely cause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: String,
    pub message: String,
    pub cause: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<String>,
}

impl Finding {
    fn new(severity: Severity, check: &'static str, message: String, cause: impl Into<String>) -> Self {
        Finding {
            severity,
            check: check.to_string(),
            message,
            cause: cause.into(),
            rows: Vec::new(),
        }
    }
    fn rows(mut self, rows: Vec<String>) -> Self {
        self.rows = rows;
        self
    }
}

/// Numbers for one partition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionSummary {
    pub rows: u64,
    /// Rows per class name.
    pub classes: BTreeMap<String, u64>,
    /// Per channel: mean, std, min, max (finite values only).
    pub channels: Vec<ChannelSummary>,
    /// Mean and std over all channels together.
    pub overall: ChannelSummary,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelSummary {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

/// Distance of one partition's per-channel distribution from `train`'s.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Drift {
    pub partition: String,
    pub channel: String,
    pub linf: f64,
    pub js: f64,
}

/// Two images in different partitions that look the same.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pair {
    pub a: String,
    pub a_partition: String,
    pub b: String,
    pub b_partition: String,
    /// Correlation of their thumbnails (1 for identical content).
    pub similarity: f32,
}

/// Everything [`scan::analyze`] measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Analysis {
    pub rows: u64,
    pub dtype: Option<Dtype>,
    pub shape: Option<[usize; 3]>,
    pub classes: Vec<String>,
    pub partitioned: bool,
    pub partitions: BTreeMap<String, PartitionSummary>,
    pub drift: Vec<Drift>,
    /// Rows with NaN or infinite values: (path, count of such values); at most
    /// [`MAX_NAMED`] named, `nonfinite_rows` counts all.
    pub nonfinite: Vec<(String, u64)>,
    pub nonfinite_rows: u64,
    /// Rows whose label is out of range or disagrees with their class name.
    pub bad_labels: Vec<String>,
    /// The same content id in more than one partition.
    pub duplicates: Vec<Pair>,
    pub near_duplicates: Vec<Pair>,
    /// The most similar pair of distinct images in different partitions: how far the data is
    /// from the near-duplicate threshold.
    pub closest_pair: Option<Pair>,
    /// The per-channel histograms the drift numbers compare.
    #[serde(default)]
    pub histograms: Histograms,
    #[serde(skip)]
    pub lineage: Vec<LineageEntry>,
}

/// Per-channel histograms of each partition's values, on one range per channel shared by all
/// partitions: `counts[partition][channel][bin]`, bins evenly spaced over `lo[c]..hi[c]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Histograms {
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
    pub counts: BTreeMap<String, Vec<Vec<u64>>>,
}

/// Names of the channels, in the order the pixels hold them.
const CHANNEL_NAMES: [&str; 3] = ["R", "G", "B"];

/// One line naming a pair of (near-)identical images.
pub fn pair_text(p: &Pair) -> String {
    if p.similarity >= 1.0 {
        format!("{} ({}) = {} ({})", p.a, p.a_partition, p.b, p.b_partition)
    } else {
        format!(
            "{} ({}) ~ {} ({}), correlation {:.3}",
            p.a, p.a_partition, p.b, p.b_partition, p.similarity
        )
    }
}

/// The first 12 hex digits of a fingerprint, as the CLI prints them.
pub fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}
