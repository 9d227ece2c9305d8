//! [`analyze`]: the numbers of an [`Analysis`], read from an artifact in two streaming passes
//! (bounded memory). [`FirstPass`] counts rows and classes, accumulates per-channel statistics,
//! names non-finite values and label problems, and collects content ids and thumbprints; the
//! second pass ([`histograms`]) bins every finite value on one range per channel shared by all
//! partitions, which [`drift`] then compares with `train`'s.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow_array::RecordBatch;

use crate::check::analysis::similarity::{self, Print};
use crate::check::analysis::{
    Analysis, CHANNEL_NAMES, ChannelSummary, Drift, Histograms, MAX_NAMED, PartitionSummary, Thresholds,
};
use crate::data::dataset::columns::{self, Rows};
use crate::data::dataset::reader;
use crate::data::dataset::{Dtype, Meta};
use crate::data::integrity::Integrity;
use crate::kernel::pixel::ChannelStats;

/// Analyzes the dataset artifact at `path`.
pub fn analyze(path: &Path, integrity: &Arc<dyn Integrity>, t: &Thresholds) -> Result<Analysis> {
    let (meta, batches) = reader::open(path, integrity)?;
    let Meta {
        classes,
        has_partition,
        pixels,
        lineage,
        ..
    } = meta;
    let channels = pixels.map_or(0, |(s, _)| s[2]);
    let mut first = FirstPass::new(&classes, pixels);
    for batch in batches {
        first.add_batch(&batch?)?;
    }
    let histograms = histograms(path, integrity, pixels, &first.acc, t.bins)?;
    let (near_duplicates, closest_pair) = similarity::near_duplicate_pairs(&first.prints, t.near_duplicate as f32);
    Ok(Analysis {
        rows: first.total,
        dtype: pixels.map(|(_, d)| d),
        shape: pixels.map(|(s, _)| s),
        classes: classes.clone(),
        partitioned: has_partition,
        drift: drift(&histograms.counts, channels),
        nonfinite: first.nonfinite,
        nonfinite_rows: first.nonfinite_rows,
        bad_labels: first.bad_labels,
        duplicates: similarity::cross_partition_duplicates(&first.by_id),
        near_duplicates,
        closest_pair,
        partitions: first
            .acc
            .into_iter()
            .map(|(name, a)| (name, a.summary(channels)))
            .collect(),
        histograms,
        lineage,
    })
}

/// Per-partition accumulators of the first pass.
struct Acc {
    stats: ChannelStats,
    min: Vec<f64>,
    max: Vec<f64>,
    classes: BTreeMap<String, u64>,
    rows: u64,
}

impl Acc {
    fn new(channels: usize) -> Self {
        Acc {
            stats: ChannelStats::new(channels.max(1)),
            min: vec![f64::INFINITY; channels],
            max: vec![f64::NEG_INFINITY; channels],
            classes: BTreeMap::new(),
            rows: 0,
        }
    }

    /// Adds one image of finite values.
    fn add_pixels(&mut self, row: &[f32], channels: usize) {
        self.stats.add(row);
        for px in row.chunks_exact(channels) {
            for (ch, &v) in px.iter().enumerate() {
                self.min[ch] = self.min[ch].min(f64::from(v));
                self.max[ch] = self.max[ch].max(f64::from(v));
            }
        }
    }

    /// Per-channel and overall mean, std, min and max.
    fn summary(self, channels: usize) -> PartitionSummary {
        let mean = self.stats.mean();
        let std = self.stats.std();
        let per_channel = (0..channels)
            .map(|c| ChannelSummary {
                mean: mean[c],
                std: std[c],
                min: self.min[c],
                max: self.max[c],
            })
            .collect();
        let n = (self.stats.count as f64 * channels as f64).max(1.0);
        let m = self.stats.sum.iter().sum::<f64>() / n;
        let sq = self.stats.sum_sq.iter().sum::<f64>() / n;
        let overall = ChannelSummary {
            mean: m,
            std: (sq - m * m).max(0.0).sqrt(),
            min: self.min.iter().copied().fold(f64::INFINITY, f64::min),
            max: self.max.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        };
        PartitionSummary {
            rows: self.rows,
            classes: self.classes,
            channels: per_channel,
            overall,
        }
    }
}

/// What the first pass gathers.
struct FirstPass<'a> {
    classes: &'a [String],
    pixels: Option<([usize; 3], Dtype)>,
    acc: BTreeMap<String, Acc>,
    nonfinite: Vec<(String, u64)>,
    nonfinite_rows: u64,
    bad_labels: Vec<String>,
    /// Content id -> (path, partition) of every row holding it.
    by_id: HashMap<String, Vec<(String, String)>>,
    prints: Vec<Print>,
    total: u64,
}

impl<'a> FirstPass<'a> {
    fn new(classes: &'a [String], pixels: Option<([usize; 3], Dtype)>) -> Self {
        FirstPass {
            classes,
            pixels,
            acc: BTreeMap::new(),
            nonfinite: Vec::new(),
            nonfinite_rows: 0,
            bad_labels: Vec::new(),
            by_id: HashMap::new(),
            prints: Vec::new(),
            total: 0,
        }
    }

    fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = Rows::from_batch(batch)?;
        let values = match self.pixels {
            Some((_, d)) => Some(columns::pixels_as_f32(batch, d)?),
            None => None,
        };
        for i in 0..rows.len() {
            self.add_row(&rows, i, values.as_deref());
        }
        Ok(())
    }

    /// Row `i` of `rows`, with the batch's pixel values when the artifact has pixels.
    fn add_row(&mut self, rows: &Rows, i: usize, values: Option<&[f32]>) {
        self.total += 1;
        let part = partition_of(rows, i).to_string();
        let (label, class) = (rows.label[i], &rows.class[i]);
        if label < 0 || label as usize >= self.classes.len() || self.classes[label as usize] != *class {
            self.bad_labels
                .push(format!("{} (label {label}, class `{class}`)", rows.path[i]));
        }
        self.by_id
            .entry(rows.id[i].clone())
            .or_default()
            .push((rows.path[i].clone(), part.clone()));
        let channels = self.pixels.map_or(0, |(s, _)| s[2]);
        let a = self.acc.entry(part.clone()).or_insert_with(|| Acc::new(channels));
        a.rows += 1;
        *a.classes.entry(class.clone()).or_default() += 1;
        let (Some(values), Some((shape, _))) = (values, self.pixels) else {
            return;
        };
        let row_len: usize = shape.iter().product();
        let row = &values[i * row_len..][..row_len];
        let bad = row.iter().filter(|v| !v.is_finite()).count() as u64;
        if bad > 0 {
            self.nonfinite_rows += 1;
            if self.nonfinite.len() < MAX_NAMED {
                self.nonfinite.push((rows.path[i].clone(), bad));
            }
            return;
        }
        a.add_pixels(row, channels);
        if let Some(thumb) = similarity::thumbprint(row, shape) {
            self.prints.push(Print {
                thumb,
                path: rows.path[i].clone(),
                partition: part,
                id: rows.id[i].clone(),
            });
        }
    }
}

/// The partition of row `i` (`all` when the artifact has no partition column).
fn partition_of(rows: &Rows, i: usize) -> &str {
    rows.partition.as_ref().map_or("all", |p| p[i].as_str())
}

/// The second pass: per-partition histograms of every finite image on one range per channel,
/// the extremes the first pass found over all partitions.
fn histograms(
    path: &Path,
    integrity: &Arc<dyn Integrity>,
    pixels: Option<([usize; 3], Dtype)>,
    acc: &BTreeMap<String, Acc>,
    bins: usize,
) -> Result<Histograms> {
    let channels = pixels.map_or(0, |(s, _)| s[2]);
    let lo: Vec<f64> = (0..channels)
        .map(|c| acc.values().map(|a| a.min[c]).fold(f64::INFINITY, f64::min))
        .collect();
    let hi: Vec<f64> = (0..channels)
        .map(|c| acc.values().map(|a| a.max[c]).fold(f64::NEG_INFINITY, f64::max))
        .collect();
    let mut counts: BTreeMap<String, Vec<Vec<u64>>> = BTreeMap::new();
    if let Some((shape, dtype)) = pixels {
        let row_len: usize = shape.iter().product();
        let (_, batches) = reader::open(path, integrity)?;
        for batch in batches {
            let batch = batch?;
            let rows = Rows::from_batch(&batch)?;
            let values = columns::pixels_as_f32(&batch, dtype)?;
            for (i, row) in values.chunks_exact(row_len).enumerate().take(rows.len()) {
                if row.iter().any(|v| !v.is_finite()) {
                    continue;
                }
                let hs = counts
                    .entry(partition_of(&rows, i).to_string())
                    .or_insert_with(|| vec![vec![0; bins]; channels]);
                for px in row.chunks_exact(channels) {
                    for (ch, &v) in px.iter().enumerate() {
                        let span = (hi[ch] - lo[ch]).max(f64::MIN_POSITIVE);
                        let b = (((f64::from(v) - lo[ch]) / span) * bins as f64) as usize;
                        hs[ch][b.min(bins - 1)] += 1;
                    }
                }
            }
        }
    }
    Ok(Histograms { lo, hi, counts })
}

/// How far each partition's per-channel histogram is from `train`'s (none without `train`).
fn drift(counts: &BTreeMap<String, Vec<Vec<u64>>>, channels: usize) -> Vec<Drift> {
    let Some(train) = counts.get("train") else {
        return Vec::new();
    };
    let mut drift = Vec::new();
    for (part, h) in counts.iter().filter(|(p, _)| p.as_str() != "train") {
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
    drift
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::Cache;
    use crate::check::analysis::Severity;
    use crate::check::analysis::testutil::{ROWS, artifact, entry, pixels};

    #[test]
    fn histogram_distances() {
        let (linf, js) = compare_hist(&[10, 0], &[10, 0]);
        assert_eq!((linf, js), (0.0, 0.0));
        let (linf, js) = compare_hist(&[10, 0], &[0, 10]);
        assert_eq!(linf, 1.0);
        assert!((js - 1.0).abs() < 1e-12, "disjoint distributions have JS 1 (base 2)");
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
        let a = analyze(&path, &cache.integrity(), &t).unwrap();
        let f = a.findings(&t, Some(&cache));
        let nan = f.iter().find(|f| f.check == "finite").expect("NaN must be found");
        assert_eq!(nan.severity, Severity::Error);
        assert_eq!(nan.message, "1 image(s) hold NaN or infinite values");
        assert_eq!(nan.rows, vec!["c.png (1 non-finite values)"]);
    }
}
