//! What is in a dataset artifact, per partition, and what is wrong with it.
//!
//! [`analyze`] streams an artifact twice (bounded memory): the first pass gathers per-partition
//! row and class counts, per-channel statistics, non-finite values, label problems, content ids
//! and a perceptual hash of every image; the second builds per-channel histograms on a common
//! range so partitions can be compared. [`Analysis::findings`] turns the numbers into
//! [`Finding`]s — errors that must stop a pipeline before training, and warnings — each naming
//! the rows involved and the likely cause. The `validate` stage and `pipeline audit` share it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cache::store::Cache;
use crate::data::dataset::columns::{self, Rows};
use crate::data::dataset::reader;
use crate::data::dataset::{Dtype, Meta};
use crate::data::lineage::LineageEntry;
use crate::kernel::pixel::ChannelStats;

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

/// Everything [`analyze`] measured.
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

const CHANNEL_NAMES: [&str; 3] = ["R", "G", "B"];

/// Side of the grayscale thumbnail compared to find near-duplicates.
const THUMB: usize = 8;

/// A perceptual fingerprint of one image: its grayscale thumbnail (THUMB x THUMB box
/// averages), centred and scaled to unit length, so the dot product of two is their
/// correlation. It survives re-encoding, value scaling and offsets (every normalization
/// stage), unlike a hash of the bytes. On the shipped photos, JPEG re-encodes (quality 50-90)
/// keep a correlation of at least 0.991 with their originals, while the closest two distinct
/// photos reach 0.969 (a shifted crop of the same cat); the default threshold is 0.985.
/// `None` for a flat image, which correlates with nothing.
fn thumbprint(row: &[f32], shape: [usize; 3]) -> Option<Vec<f32>> {
    let [h, w, c] = shape;
    let (gh, gw) = (THUMB.min(h).max(1), THUMB.min(w).max(1));
    let mut cells = vec![0f64; gh * gw];
    let mut counts = vec![0u32; gh * gw];
    for y in 0..h {
        for x in 0..w {
            let cell = (y * gh / h) * gw + x * gw / w;
            cells[cell] += row[(y * w + x) * c..][..c].iter().map(|&v| f64::from(v)).sum::<f64>();
            counts[cell] += 1;
        }
    }
    for (v, n) in cells.iter_mut().zip(&counts) {
        *v /= f64::from((*n).max(1));
    }
    let mean = cells.iter().sum::<f64>() / cells.len() as f64;
    let norm = cells.iter().map(|v| (v - mean).powi(2)).sum::<f64>().sqrt();
    (norm > 1e-9 * cells.len() as f64).then(|| cells.iter().map(|v| ((v - mean) / norm) as f32).collect())
}

fn correlation(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Per-partition accumulators of the first pass.
struct Acc {
    stats: ChannelStats,
    min: Vec<f64>,
    max: Vec<f64>,
    classes: BTreeMap<String, u64>,
    rows: u64,
}

/// Analyzes the dataset artifact at `path`.
pub fn analyze(path: &Path, t: &Thresholds) -> Result<Analysis> {
    let (meta, reader) = reader::open(path)?;
    let Meta {
        classes,
        has_partition,
        pixels,
        lineage,
        ..
    } = meta.clone();
    let channels = pixels.map_or(0, |(s, _)| s[2]);
    let row_len = pixels.map_or(0, |(s, _)| s.iter().product());
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let mut nonfinite = Vec::new();
    let mut nonfinite_rows = 0u64;
    let mut bad_labels = Vec::new();
    let mut by_id: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut prints: Vec<Print> = Vec::new();
    let mut total = 0u64;
    for batch in reader {
        let batch = batch?;
        let rows = Rows::from_batch(&batch)?;
        let values = match pixels {
            Some((_, d)) => Some(columns::pixels_as_f32(&batch, d)?),
            None => None,
        };
        for i in 0..rows.len() {
            total += 1;
            let part = rows.partition.as_ref().map_or("all", |p| p[i].as_str()).to_string();
            let label = rows.label[i];
            if label < 0 || label as usize >= classes.len() || classes[label as usize] != rows.class[i] {
                bad_labels.push(format!("{} (label {label}, class `{}`)", rows.path[i], rows.class[i]));
            }
            by_id
                .entry(rows.id[i].clone())
                .or_default()
                .push((rows.path[i].clone(), part.clone()));
            let a = acc.entry(part.clone()).or_insert_with(|| Acc {
                stats: ChannelStats::new(channels.max(1)),
                min: vec![f64::INFINITY; channels],
                max: vec![f64::NEG_INFINITY; channels],
                classes: BTreeMap::new(),
                rows: 0,
            });
            a.rows += 1;
            *a.classes.entry(rows.class[i].clone()).or_default() += 1;
            let (Some(values), Some((shape, _))) = (&values, pixels) else {
                continue;
            };
            let row = &values[i * row_len..][..row_len];
            let bad = row.iter().filter(|v| !v.is_finite()).count() as u64;
            if bad > 0 {
                nonfinite_rows += 1;
                if nonfinite.len() < MAX_NAMED {
                    nonfinite.push((rows.path[i].clone(), bad));
                }
                continue;
            }
            a.stats.add(row);
            for px in row.chunks_exact(channels) {
                for (ch, &v) in px.iter().enumerate() {
                    a.min[ch] = a.min[ch].min(f64::from(v));
                    a.max[ch] = a.max[ch].max(f64::from(v));
                }
            }
            if let Some(thumb) = thumbprint(row, shape) {
                prints.push(Print {
                    thumb,
                    path: rows.path[i].clone(),
                    partition: part,
                    id: rows.id[i].clone(),
                });
            }
        }
    }
    // Second pass: histograms on one range per channel, shared by all partitions.
    let lo: Vec<f64> = (0..channels)
        .map(|c| acc.values().map(|a| a.min[c]).fold(f64::INFINITY, f64::min))
        .collect();
    let hi: Vec<f64> = (0..channels)
        .map(|c| acc.values().map(|a| a.max[c]).fold(f64::NEG_INFINITY, f64::max))
        .collect();
    let mut hist: BTreeMap<String, Vec<Vec<u64>>> = BTreeMap::new();
    if let Some((_, dtype)) = pixels {
        let (_, reader) = reader::open(path)?;
        for batch in reader {
            let batch = batch?;
            let rows = Rows::from_batch(&batch)?;
            let values = columns::pixels_as_f32(&batch, dtype)?;
            for i in 0..rows.len() {
                let row = &values[i * row_len..][..row_len];
                if row.iter().any(|v| !v.is_finite()) {
                    continue;
                }
                let part = rows.partition.as_ref().map_or("all", |p| p[i].as_str());
                let hs = hist
                    .entry(part.to_string())
                    .or_insert_with(|| vec![vec![0; t.bins]; channels]);
                for px in row.chunks_exact(channels) {
                    for (ch, &v) in px.iter().enumerate() {
                        let span = (hi[ch] - lo[ch]).max(f64::MIN_POSITIVE);
                        let b = (((f64::from(v) - lo[ch]) / span) * t.bins as f64) as usize;
                        hs[ch][b.min(t.bins - 1)] += 1;
                    }
                }
            }
        }
    }
    let mut drift = Vec::new();
    if let Some(train) = hist.get("train") {
        for (part, h) in hist.iter().filter(|(p, _)| p.as_str() != "train") {
            for ch in 0..channels {
                let (linf, js) = compare_hist(&train[ch], &h[ch]);
                drift.push(Drift {
                    partition: part.clone(),
                    channel: CHANNEL_NAMES.get(ch).map_or_else(|| ch.to_string(), |s| s.to_string()),
                    linf,
                    js,
                });
            }
        }
    }
    let duplicates = cross_partition_duplicates(&by_id);
    let (near_duplicates, closest_pair) = near_duplicate_pairs(&prints, t.near_duplicate as f32);
    let partitions = acc
        .into_iter()
        .map(|(name, a)| {
            let mean = a.stats.mean();
            let std = a.stats.std();
            let per_channel = (0..channels)
                .map(|c| ChannelSummary {
                    mean: mean[c],
                    std: std[c],
                    min: a.min[c],
                    max: a.max[c],
                })
                .collect();
            let n = (a.stats.count as f64 * channels as f64).max(1.0);
            let m = a.stats.sum.iter().sum::<f64>() / n;
            let sq = a.stats.sum_sq.iter().sum::<f64>() / n;
            let overall = ChannelSummary {
                mean: m,
                std: (sq - m * m).max(0.0).sqrt(),
                min: a.min.iter().copied().fold(f64::INFINITY, f64::min),
                max: a.max.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            };
            (
                name,
                PartitionSummary {
                    rows: a.rows,
                    classes: a.classes,
                    channels: per_channel,
                    overall,
                },
            )
        })
        .collect();
    Ok(Analysis {
        rows: total,
        dtype: pixels.map(|(_, d)| d),
        shape: pixels.map(|(s, _)| s),
        classes,
        partitioned: has_partition,
        partitions,
        drift,
        nonfinite,
        nonfinite_rows,
        bad_labels,
        duplicates,
        near_duplicates,
        closest_pair,
        histograms: Histograms { lo, hi, counts: hist },
        lineage,
    })
}

/// L-infinity distance and Jensen-Shannon divergence (base 2) of two histograms.
pub fn compare_hist(a: &[u64], b: &[u64]) -> (f64, f64) {
    let sa = a.iter().sum::<u64>().max(1) as f64;
    let sb = b.iter().sum::<u64>().max(1) as f64;
    let mut linf = 0f64;
    let mut js = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        let (p, q) = (x as f64 / sa, y as f64 / sb);
        linf = linf.max((p - q).abs());
        let m = (p + q) / 2.0;
        if p > 0.0 {
            js += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            js += 0.5 * q * (q / m).log2();
        }
    }
    (linf, js.max(0.0))
}

fn cross_partition_duplicates(by_id: &HashMap<String, Vec<(String, String)>>) -> Vec<Pair> {
    let mut out: Vec<Pair> = by_id
        .values()
        .filter_map(|members| {
            let first = &members[0];
            let other = members.iter().find(|(_, p)| *p != first.1)?;
            Some(Pair {
                a: first.0.clone(),
                a_partition: first.1.clone(),
                b: other.0.clone(),
                b_partition: other.1.clone(),
                similarity: 1.0,
            })
        })
        .collect();
    out.sort_by(|x, y| x.a.cmp(&y.a));
    out
}

/// The perceptual fingerprint of one image with what names it.
struct Print {
    thumb: Vec<f32>,
    path: String,
    partition: String,
    id: String,
}

/// Pairs of images in different partitions whose thumbnails correlate at least `limit`
/// (identical content ids are reported as duplicates instead), most similar first, and the
/// most similar cross-partition pair overall. Compares every cross-partition pair in
/// parallel: 64 multiply-adds per pair.
fn near_duplicate_pairs(prints: &[Print], limit: f32) -> (Vec<Pair>, Option<Pair>) {
    use rayon::prelude::*;
    let pair = |a: &Print, b: &Print, similarity| Pair {
        a: a.path.clone(),
        a_partition: a.partition.clone(),
        b: b.path.clone(),
        b_partition: b.partition.clone(),
        similarity,
    };
    /// Per row: its near-duplicates and its most similar partner (similarity, i, j).
    type RowResult = (Vec<Pair>, Option<(f32, usize, usize)>);
    let per_row: Vec<RowResult> = (0..prints.len())
        .into_par_iter()
        .map(|i| {
            let a = &prints[i];
            let mut found = Vec::new();
            let mut best: Option<(f32, usize, usize)> = None;
            for (j, b) in prints.iter().enumerate().skip(i + 1) {
                if a.partition == b.partition || a.id == b.id {
                    continue;
                }
                let s = correlation(&a.thumb, &b.thumb);
                if best.is_none_or(|(bs, _, _)| s > bs) {
                    best = Some((s, i, j));
                }
                if s >= limit {
                    found.push(pair(a, b, s));
                }
            }
            (found, best)
        })
        .collect();
    let mut out: Vec<Pair> = per_row.iter().flat_map(|(f, _)| f.iter().cloned()).collect();
    out.sort_by(|x, y| y.similarity.total_cmp(&x.similarity));
    let closest = per_row
        .iter()
        .filter_map(|(_, b)| *b)
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(s, i, j)| pair(&prints[i], &prints[j], s));
    (out, closest)
}

/// What the lineage promises about the final values, for the normalization check.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Promise {
    /// Every image has mean 0 and std 1 over all its values.
    PerImage,
    /// Each channel has mean 0 (and std 1 when `unit_std`) over `train`.
    PerChannel {
        unit_std: bool,
    },
    None,
}

fn promise(lineage: &[LineageEntry]) -> Promise {
    let mut p = Promise::None;
    for e in lineage {
        let param = |k: &str| e.params.get(k).and_then(|v| v.as_str()).unwrap_or("");
        p = match (e.kind.as_str(), p) {
            ("resize", _) => Promise::None,
            ("mean_subtract", _) if param("mean") == "fit" => Promise::PerChannel { unit_std: false },
            ("mean_subtract", _) => Promise::None,
            ("normalize", _) if param("method") == "per_image" => Promise::PerImage,
            ("normalize", Promise::PerChannel { .. }) if param("method") == "per_channel" && param("std") == "fit" => {
                Promise::PerChannel { unit_std: true }
            }
            ("normalize", _) => Promise::None,
            (_, p) => p,
        };
    }
    p
}

impl Analysis {
    /// Every finding, errors first.
    pub fn findings(&self, t: &Thresholds, cache: Option<&Cache>) -> Vec<Finding> {
        use Severity::{Error, Warning};
        let mut f = Vec::new();
        match self.dtype {
            None => f.push(Finding::new(
                Error,
                "dtype",
                "the artifact holds no pixels".into(),
                "validation needs pixel data: put it after `resize` (and the normalization stages)",
            )),
            Some(d) if d != t.dtype => f.push(Finding::new(
                Error,
                "dtype",
                format!("pixels are {}, training expects {}", d.name(), t.dtype.name()),
                if d == Dtype::Uint8 {
                    "integer pixels (0..255) reach the model unscaled: add `mean_subtract` and/or `normalize` after \
                     `resize`, or set `dtype: uint8` on this stage if the model scales them itself"
                } else {
                    "the dtype the stage `dtype` param names differs from the data"
                },
            )),
            _ => {}
        }
        if self.nonfinite_rows > 0 {
            f.push(
                Finding::new(
                    Error,
                    "finite",
                    format!("{} image(s) hold NaN or infinite values", self.nonfinite_rows),
                    "a division by a zero std or a corrupt artifact; such values poison every gradient",
                )
                .rows(
                    self.nonfinite
                        .iter()
                        .map(|(p, n)| format!("{p} ({n} non-finite values)"))
                        .collect(),
                ),
            );
        }
        if !self.bad_labels.is_empty() {
            f.push(
                Finding::new(
                    Error,
                    "labels",
                    format!(
                        "{} row(s) have a label outside the declared classes or disagreeing with their class name",
                        self.bad_labels.len()
                    ),
                    "the artifact was assembled by hand or its `pipeline.classes` metadata was edited",
                )
                .rows(self.bad_labels.iter().take(MAX_NAMED).cloned().collect()),
            );
        }
        if !self.partitioned {
            f.push(Finding::new(
                Error,
                "partitions",
                "the data has no partition column".into(),
                "add a `split` stage upstream so train, val and test are known",
            ));
        }
        for (name, p) in &self.partitions {
            let missing: Vec<&str> = self
                .classes
                .iter()
                .filter(|c| p.classes.get(*c).copied().unwrap_or(0) == 0)
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                f.push(Finding::new(
                    Error,
                    "classes",
                    format!("partition `{name}` has no images of class {}", quote(&missing)),
                    "too few images of that class for the split fractions; a model evaluated there cannot be scored \
                     on every class (add images or change the fractions)",
                ));
            } else if let (Some(max), Some(min)) = (p.classes.values().max(), p.classes.values().min()) {
                let ratio = *max as f64 / (*min).max(1) as f64;
                if ratio > t.max_class_ratio {
                    f.push(Finding::new(
                        Warning,
                        "balance",
                        format!(
                            "partition `{name}` is imbalanced: {} (largest/smallest {ratio:.2} > {})",
                            p.classes
                                .iter()
                                .map(|(c, n)| format!("{c} {n}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                            t.max_class_ratio
                        ),
                        "a model can score well by predicting the majority class; weigh classes or rebalance",
                    ));
                }
            }
        }
        if !self.duplicates.is_empty() {
            f.push(
                Finding::new(
                    Error,
                    "leakage",
                    format!(
                        "{} image(s) appear in two partitions (same content)",
                        self.duplicates.len()
                    ),
                    "the same file is in the data twice and the partitions were assigned by folder or by hand; \
                     the model is tested on images it was trained on. Remove the copies",
                )
                .rows(self.duplicates.iter().take(MAX_NAMED).map(pair_text).collect()),
            );
        }
        if !self.near_duplicates.is_empty() {
            f.push(
                Finding::new(
                    Warning,
                    "near_duplicates",
                    format!(
                        "{} pair(s) of near-identical images across partitions (thumbnail correlation >= {})",
                        self.near_duplicates.len(),
                        t.near_duplicate
                    ),
                    "the same photo re-encoded, resized or slightly edited: test scores will be optimistic",
                )
                .rows(self.near_duplicates.iter().take(MAX_NAMED).map(pair_text).collect()),
            );
        }
        if let Some(train) = self.partitions.get("train").filter(|_| self.dtype.is_some()) {
            match promise(&self.lineage) {
                Promise::PerImage => {
                    let o = &train.overall;
                    if o.mean.abs() > t.mean_tolerance || (o.std - 1.0).abs() > t.std_tolerance {
                        f.push(Finding::new(
                            Error,
                            "normalization",
                            format!(
                                "after per-image normalization `train` has mean {:.4} and std {:.4}, not 0 and 1",
                                o.mean, o.std
                            ),
                            "the artifact does not hold what its lineage says (edited or assembled by hand)",
                        ));
                    }
                }
                Promise::PerChannel { unit_std } => {
                    for (c, s) in train.channels.iter().enumerate() {
                        let bad_std = unit_std && (s.std - 1.0).abs() > t.std_tolerance;
                        if s.mean.abs() > t.mean_tolerance || bad_std {
                            f.push(Finding::new(
                                Error,
                                "normalization",
                                format!(
                                    "channel {} of `train` has mean {:.4} and std {:.4} after fitted normalization",
                                    CHANNEL_NAMES.get(c).unwrap_or(&"?"),
                                    s.mean,
                                    s.std
                                ),
                                "fitted statistics that do not come from these `train` rows",
                            ));
                        }
                    }
                }
                Promise::None => {}
            }
        }
        for d in &self.drift {
            if d.linf > t.drift_linf || d.js > t.drift_js {
                f.push(Finding::new(
                    Warning,
                    "drift",
                    format!(
                        "`{}` differs from `train` on channel {}: L-inf {:.4} (limit {}), JS {:.4} (limit {})",
                        d.partition, d.channel, d.linf, t.drift_linf, d.js, t.drift_js
                    ),
                    "the partitions come from different sources or were assigned by a property that correlates \
                     with the pixels",
                ));
            }
        }
        f.extend(self.lineage_findings(cache));
        f.sort_by_key(|x| x.severity);
        f
    }

    /// Checks the recorded lineage against the cache: every stage's record exists and took
    /// the previous stage's output as input, and every fitted statistic was computed on
    /// `train` rows only (recomputed from the fitting stage's cached input).
    fn lineage_findings(&self, cache: Option<&Cache>) -> Vec<Finding> {
        use Severity::{Error, Warning};
        let mut f = Vec::new();
        for (i, e) in self.lineage.iter().enumerate() {
            if !e.fitted.is_null() && e.fitted.get("fitted_on").and_then(|v| v.as_str()) != Some("train") {
                f.push(Finding::new(
                    Error,
                    "fitted_on_train",
                    format!(
                        "stage `{}` records fitted statistics that were not computed on `train` rows",
                        e.stage
                    ),
                    "statistics over val/test rows leak them into the training data's preprocessing",
                ));
            }
            let Some(cache) = cache else { continue };
            let Some(record) = cache.record(&e.fingerprint) else {
                f.push(Finding::new(
                    Warning,
                    "lineage",
                    format!(
                        "stage `{}` ({}) is no longer in the cache; its lineage cannot be verified",
                        e.stage,
                        short(&e.fingerprint)
                    ),
                    "the cache was cleaned; rerun the pipeline to rebuild it",
                ));
                continue;
            };
            if i > 0 {
                let prev = &self.lineage[i - 1].fingerprint;
                if !record.inputs.iter().any(|(_, fp)| fp == prev) {
                    f.push(Finding::new(
                        Error,
                        "lineage",
                        format!(
                            "stage `{}` was not computed from the stage before it in the lineage",
                            e.stage
                        ),
                        "the artifact was assembled from pieces of different runs",
                    ));
                }
            }
            if let Some(finding) = refit_check(cache, e, i.checked_sub(1).map(|j| &self.lineage[j])) {
                f.push(finding);
            }
        }
        f
    }
}

/// Recomputes a stage's fitted mean/std from its cached input on `train` rows and on all
/// rows; the recorded value must match the former.
fn refit_check(cache: &Cache, e: &LineageEntry, input: Option<&LineageEntry>) -> Option<Finding> {
    let key = ["mean_rgb", "std_rgb"]
        .into_iter()
        .find(|k| e.fitted.get(*k).is_some())?;
    let recorded: Vec<f64> = e
        .fitted
        .get(key)?
        .as_array()?
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let input = input?;
    let path = cache.data_path(&input.fingerprint);
    let (mut train, mut all) = (ChannelStats::new(recorded.len()), ChannelStats::new(recorded.len()));
    let meta = reader::for_each_batch(&path, |batch| {
        let rows = Rows::from_batch(batch)?;
        let Some((shape, dtype)) = Meta::from_schema(&batch.schema())?.pixels else {
            return Ok(());
        };
        let values = columns::pixels_as_f32(batch, dtype)?;
        let len: usize = shape.iter().product();
        for (i, row) in values.chunks_exact(len).enumerate() {
            all.add(row);
            if rows.partition.as_ref().is_some_and(|p| p[i] == "train") {
                train.add(row);
            }
        }
        Ok(())
    });
    if meta.is_err() {
        return Some(Finding::new(
            Severity::Warning,
            "fitted_on_train",
            format!(
                "cannot re-check the statistics stage `{}` fitted: its input is not in the cache",
                e.stage
            ),
            "the cache was cleaned; rerun the pipeline to rebuild it",
        ));
    }
    let (tr, al) = if key == "mean_rgb" {
        (train.mean(), all.mean())
    } else {
        (train.std(), all.std())
    };
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-3 * y.abs().max(1.0));
    if close(&recorded, &tr) {
        return None;
    }
    let over_all = close(&recorded, &al);
    Some(Finding::new(
        Severity::Error,
        "fitted_on_train",
        format!(
            "stage `{}` recorded {key} {} but `train` rows give {}{}",
            e.stage,
            fmt_vec(&recorded),
            fmt_vec(&tr),
            if over_all {
                " (the recorded values are the statistics of ALL rows)"
            } else {
                ""
            }
        ),
        if over_all {
            "the statistics were fitted on train, val and test together: test rows leaked into the preprocessing"
        } else {
            "the recorded statistics do not come from this data"
        },
    ))
}

fn fmt_vec(v: &[f64]) -> String {
    format!(
        "[{}]",
        v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ")
    )
}

fn quote(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

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

pub fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_distances() {
        let (linf, js) = compare_hist(&[10, 0], &[10, 0]);
        assert_eq!((linf, js), (0.0, 0.0));
        let (linf, js) = compare_hist(&[10, 0], &[0, 10]);
        assert_eq!(linf, 1.0);
        assert!((js - 1.0).abs() < 1e-12, "disjoint distributions have JS 1 (base 2)");
    }

    #[test]
    fn thumbprints_survive_value_scaling_and_tell_images_apart() {
        let shape = [32, 32, 3];
        let img: Vec<f32> = (0..32 * 32 * 3)
            .map(|i| ((i / 3 % 32 + i / 96) * 4 % 255) as f32)
            .collect();
        let scaled: Vec<f32> = img.iter().map(|v| v / 64.0 - 2.0).collect();
        let other: Vec<f32> = (0..32 * 32 * 3).map(|i| ((i * 104729 + 13) % 251) as f32).collect();
        let a = thumbprint(&img, shape).unwrap();
        let b = thumbprint(&scaled, shape).unwrap();
        let c = thumbprint(&other, shape).unwrap();
        assert!(correlation(&a, &b) > 0.9999);
        assert!(correlation(&a, &c) < 0.5);
        assert!(
            thumbprint(&[7.0; 32 * 32 * 3], shape).is_none(),
            "a flat image has no thumbprint"
        );
    }

    #[test]
    fn lineage_promises() {
        let e = |kind: &str, params: serde_json::Value| LineageEntry {
            stage: kind.into(),
            kind: kind.into(),
            version: 1,
            params,
            fingerprint: String::new(),
            fitted: serde_json::Value::Null,
        };
        let resize = e("resize", serde_json::json!({}));
        let per_image = e("normalize", serde_json::json!({"method": "per_image"}));
        let fit = e("mean_subtract", serde_json::json!({"mean": "fit"}));
        let std_fit = e("normalize", serde_json::json!({"method": "per_channel", "std": "fit"}));
        assert_eq!(promise(&[resize.clone(), per_image]), Promise::PerImage);
        assert_eq!(
            promise(&[resize.clone(), fit.clone(), std_fit]),
            Promise::PerChannel { unit_std: true }
        );
        assert_eq!(promise(&[resize.clone(), fit]), Promise::PerChannel { unit_std: false });
        assert_eq!(promise(&[resize]), Promise::None);
    }

    use crate::cache::store::{Format, Record};
    use crate::data::dataset::columns::PixelValues;
    use crate::data::dataset::writer::ArtifactWriter;

    fn entry(stage: &str, kind: &str, fp: &str, fitted: serde_json::Value) -> LineageEntry {
        LineageEntry {
            stage: stage.into(),
            kind: kind.into(),
            version: 1,
            params: serde_json::json!({}),
            fingerprint: fp.into(),
            fitted,
        }
    }

    /// Writes a float32 [2, 2, 3] artifact into the cache under `fp` and returns its path.
    fn artifact(
        cache: &Cache,
        fp: &str,
        input: Option<&str>,
        lineage: Vec<LineageEntry>,
        rows: &[(&str, &str, i32)],
        pixels: Vec<f32>,
    ) -> std::path::PathBuf {
        let meta = Meta {
            classes: vec!["cat".into(), "dog".into()],
            has_partition: true,
            pixels: Some(([2, 2, 3], Dtype::Float32)),
            lineage,
            pixels_from: None,
            segments: Vec::new(),
        };
        let temp = cache.temp_path(fp);
        let mut w = ArtifactWriter::create(&temp, meta).unwrap();
        let r = Rows {
            id: rows
                .iter()
                .map(|(p, _, _)| crate::data::hash::sha256_hex(p.as_bytes()))
                .collect(),
            path: rows.iter().map(|(p, _, _)| p.to_string()).collect(),
            label: rows.iter().map(|(_, _, l)| *l).collect(),
            class: rows
                .iter()
                .map(|(_, _, l)| ["cat", "dog"][*l as usize].to_string())
                .collect(),
            partition: Some(rows.iter().map(|(_, p, _)| p.to_string()).collect()),
        };
        w.write(&r, Some(PixelValues::F32(pixels))).unwrap();
        let written = w.finish().unwrap();
        let record = Record {
            fingerprint: fp.into(),
            format: Format::Arrow,
            kind: "test".into(),
            version: 1,
            pipeline: "t".into(),
            stage: fp.into(),
            params: serde_json::json!({}),
            inputs: input
                .map(|i| vec![("in".to_string(), i.to_string())])
                .unwrap_or_default(),
            content: None,
            rows: written.rows,
            bytes: written.bytes,
            blake3: written.blake3,
            fitted: serde_json::Value::Null,
            summary: serde_json::Value::Null,
            seconds: 0.0,
            created_unix: 0,
        };
        cache.commit(&temp, &record).unwrap();
        cache.data_path(fp)
    }

    const ROWS: [(&str, &str, i32); 4] = [
        ("a.png", "train", 0),
        ("b.png", "train", 1),
        ("c.png", "test", 0),
        ("d.png", "test", 1),
    ];

    fn pixels(values: [f32; 4]) -> Vec<f32> {
        values.iter().flat_map(|v| (0..12).map(move |i| v + i as f32)).collect()
    }

    #[test]
    fn a_nan_pixel_is_an_error_naming_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut px = pixels([0.0, 1.0, 2.0, 3.0]);
        px[12 * 2 + 5] = f32::NAN;
        let path = artifact(
            &cache,
            "x",
            None,
            vec![entry("x", "resize", "x", serde_json::Value::Null)],
            &ROWS,
            px,
        );
        let t = Thresholds::default();
        let a = analyze(&path, &t).unwrap();
        let f = a.findings(&t, Some(&cache));
        let nan = f.iter().find(|f| f.check == "finite").expect("NaN must be found");
        assert_eq!(nan.severity, Severity::Error);
        assert_eq!(nan.message, "1 image(s) hold NaN or infinite values");
        assert_eq!(nan.rows, vec!["c.png (1 non-finite values)"]);
    }

    /// The findings for a `mean_subtract` stage that recorded `mean_rgb` as fitted on train,
    /// over an input whose train rows average `0.5 + i` and all rows `1.5 + i` per value i.
    fn fitted_mean_findings(mean_rgb: [f64; 3], out_pixels: [f32; 4]) -> Vec<Finding> {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let input_lineage = vec![entry("resize", "resize", "in", serde_json::Value::Null)];
        artifact(
            &cache,
            "in",
            None,
            input_lineage.clone(),
            &ROWS,
            pixels([0.0, 1.0, 2.0, 3.0]),
        );
        let mut lineage = input_lineage;
        lineage.push(entry(
            "mean_subtract",
            "mean_subtract",
            "out",
            serde_json::json!({ "mean_rgb": mean_rgb, "fitted_on": "train" }),
        ));
        let path = artifact(&cache, "out", Some("in"), lineage, &ROWS, pixels(out_pixels));
        let t = Thresholds::default();
        analyze(&path, &t).unwrap().findings(&t, Some(&cache))
    }

    #[test]
    fn statistics_fitted_over_all_rows_are_caught_as_leakage() {
        let all_rows_mean = [1.5 + 0.0 + 4.5, 1.5 + 1.0 + 4.5, 1.5 + 2.0 + 4.5];
        let f = fitted_mean_findings(all_rows_mean, [-1.5, -0.5, 0.5, 1.5]);
        let leak = f.iter().find(|f| f.check == "fitted_on_train").expect("must be caught");
        assert_eq!(leak.severity, Severity::Error);
        assert!(
            leak.message
                .contains("the recorded values are the statistics of ALL rows"),
            "{}",
            leak.message
        );
        assert!(leak.cause.contains("test rows leaked"), "{}", leak.cause);
    }

    #[test]
    fn statistics_fitted_on_train_pass() {
        let train_mean = [0.5 + 4.5, 0.5 + 5.5, 0.5 + 6.5];
        let f = fitted_mean_findings(train_mean, [-0.5, 0.5, 1.5, 2.5]);
        assert!(
            f.iter().all(|f| f.check != "fitted_on_train" && f.check != "lineage"),
            "{f:?}"
        );
    }
}
