//! Classification metrics from predicted probabilities: pure functions, no I/O.
//!
//! Accuracy, per-class precision/recall/F1 (and their macro means), ROC-AUC (binary: of the
//! last class; more classes: one-vs-rest macro mean), log-loss, the confusion matrix, a
//! histogram of predicted probabilities, and the signs of a collapsed classifier.

use serde::{Deserialize, Serialize};

/// Metrics of one partition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub rows: usize,
    pub accuracy: f64,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub f1: Vec<f64>,
    pub macro_f1: f64,
    pub roc_auc: Option<f64>,
    /// NaN when a prediction was not a number (JSON `null`).
    #[serde(deserialize_with = "null_as_nan")]
    pub log_loss: f64,
    /// `confusion[true][predicted]`; rows whose prediction is not a number are not in it.
    pub confusion: Vec<Vec<u64>>,
    /// Histogram of the probability of the last class (binary) or of the predicted class
    /// (more classes), 10 bins over [0, 1].
    pub probability_histogram: Vec<u64>,
    pub collapse: Collapse,
}

/// Signs that a classifier ignores its inputs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Collapse {
    /// Fraction of rows predicted as the most predicted class.
    pub majority_fraction: f64,
    pub majority_class: usize,
    /// Range of the predicted probability of the last class over the rows whose prediction
    /// is a number (NaN, JSON `null`, when none is).
    #[serde(deserialize_with = "null_as_nan")]
    pub probability_min: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub probability_max: f64,
    /// Rows whose predicted probabilities are NaN or infinite: the model diverged.
    #[serde(default)]
    pub non_finite: usize,
    pub collapsed: bool,
    /// What was observed, in words (empty when not collapsed).
    pub observed: String,
}

/// Share of predictions in one class from which a classifier counts as collapsed.
pub const COLLAPSE_MAJORITY: f64 = 0.95;
/// Width of the band of probabilities (around 1/K) inside which every prediction counts as
/// collapsed.
pub const COLLAPSE_SPREAD: f64 = 0.1;

/// Computes the metrics of `probs` (rows x `k`) against `labels`.
pub fn compute(probs: &[f32], labels: &[u32], k: usize) -> Metrics {
    let n = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    let mut log_loss = 0.0;
    let mut hist = vec![0u64; 10];
    let mut predicted_counts = vec![0u64; k];
    let (mut pmin, mut pmax) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut non_finite = 0;
    for (row, &y) in probs.chunks_exact(k).zip(labels) {
        if row.iter().any(|p| !p.is_finite()) {
            // No class can be read from it: it counts as wrong, at the largest loss, and is
            // left out of the confusion matrix and the predicted-class shares.
            non_finite += 1;
            log_loss -= 1e-15f64.ln();
            continue;
        }
        let pred = argmax(row);
        predicted_counts[pred] += 1;
        confusion[y as usize][pred] += 1;
        log_loss -= f64::from(row[y as usize]).max(1e-15).ln();
        let shown = if k == 2 { row[1] } else { row[pred] };
        hist[((f64::from(shown) * 10.0) as usize).min(9)] += 1;
        let last = f64::from(row[k - 1]);
        pmin = pmin.min(last);
        pmax = pmax.max(last);
    }
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let mut precision = Vec::with_capacity(k);
    let mut recall = Vec::with_capacity(k);
    let mut f1 = Vec::with_capacity(k);
    for (c, row) in confusion.iter().enumerate() {
        let tp = row[c] as f64;
        let predicted: u64 = confusion.iter().map(|r| r[c]).sum();
        let actual: u64 = row.iter().sum();
        let p = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
        let r = if actual > 0 { tp / actual as f64 } else { 0.0 };
        precision.push(p);
        recall.push(r);
        f1.push(if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 });
    }
    let roc_auc = if k == 2 {
        auc(probs.chunks_exact(2).map(|r| r[1]), labels.iter().map(|&y| y == 1))
    } else {
        let per: Vec<f64> = (0..k)
            .filter_map(|c| {
                auc(
                    probs.chunks_exact(k).map(|r| r[c]),
                    labels.iter().map(|&y| y as usize == c),
                )
            })
            .collect();
        (!per.is_empty()).then(|| per.iter().sum::<f64>() / per.len() as f64)
    };
    let (majority_class, majority) = predicted_counts
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| **c)
        .map_or((0, 0), |(i, c)| (i, *c));
    let majority_fraction = majority as f64 / n.max(1) as f64;
    let center = 1.0 / k as f64;
    let finite = n - non_finite;
    let narrow = finite > 0 && pmin >= center - COLLAPSE_SPREAD / 2.0 && pmax <= center + COLLAPSE_SPREAD / 2.0;
    let mut observed = Vec::new();
    if non_finite > 0 {
        observed.push(format!(
            "{non_finite} of {n} predictions are not numbers (NaN/inf): the model's weights diverged"
        ));
    }
    if n > 0 && non_finite == 0 && majority_fraction >= COLLAPSE_MAJORITY {
        observed.push(format!(
            "{:.1}% of the predictions are class {majority_class}",
            100.0 * majority_fraction
        ));
    }
    if narrow {
        observed.push(format!(
            "every predicted probability lies within {pmin:.3}..{pmax:.3}, near chance (1/{k})"
        ));
    }
    Metrics {
        rows: n,
        accuracy: correct as f64 / n.max(1) as f64,
        macro_f1: f1.iter().sum::<f64>() / k.max(1) as f64,
        precision,
        recall,
        f1,
        roc_auc,
        log_loss: log_loss / n.max(1) as f64,
        confusion,
        probability_histogram: hist,
        collapse: Collapse {
            majority_fraction,
            majority_class,
            probability_min: if finite > 0 {
                pmin
            } else if n > 0 {
                f64::NAN
            } else {
                0.0
            },
            probability_max: if finite > 0 {
                pmax
            } else if n > 0 {
                f64::NAN
            } else {
                0.0
            },
            non_finite,
            collapsed: !observed.is_empty(),
            observed: observed.join("; "),
        },
    }
}

/// Reads a number that JSON stores as `null` when it was NaN (serde_json writes NaN as `null`).
pub fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// [`null_as_nan`] for a list of `f32`.
pub fn nulls_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    Ok(Vec::<Option<f32>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f32::NAN))
        .collect())
}

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Area under the ROC curve by the rank statistic (ties count half); `None` when one class
/// is absent.
fn auc(scores: impl Iterator<Item = f32>, positive: impl Iterator<Item = bool>) -> Option<f64> {
    let mut pairs: Vec<(f32, bool)> = scores.zip(positive).collect();
    let pos = pairs.iter().filter(|p| p.1).count();
    let neg = pairs.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        // Always advances: NaN scores (a diverged model) equal nothing, not even themselves.
        let mut j = i + 1;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += avg_rank * pairs[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computation() {
        // 4 rows, 2 classes: predictions 1, 0, 1, 1 for labels 1, 0, 0, 1.
        let probs = [0.2, 0.8, 0.7, 0.3, 0.4, 0.6, 0.1, 0.9];
        let m = compute(&probs, &[1, 0, 0, 1], 2);
        assert_eq!(m.confusion, vec![vec![1, 1], vec![0, 2]]);
        assert_eq!(m.accuracy, 0.75);
        assert_eq!(m.precision, vec![1.0, 2.0 / 3.0]);
        assert_eq!(m.recall, vec![0.5, 1.0]);
        assert_eq!(m.roc_auc, Some(1.0));
        let expected_loss = -(0.8f64.ln() + 0.7f64.ln() + 0.4f64.ln() + 0.9f64.ln()) / 4.0;
        assert!((m.log_loss - expected_loss).abs() < 1e-6);
        assert!(!m.collapse.collapsed);
    }

    #[test]
    fn the_reference_collapse_is_detected() {
        // The reference problem: outputs hover near 0.5 and one class is always predicted.
        let probs: Vec<f32> = (0..100)
            .flat_map(|i| [0.4995 - i as f32 * 1e-5, 0.5005 + i as f32 * 1e-5])
            .collect();
        let labels: Vec<u32> = (0..100).map(|i| i % 2).collect();
        let m = compute(&probs, &labels, 2);
        assert!(m.collapse.collapsed);
        assert_eq!(m.collapse.majority_fraction, 1.0);
        assert!(
            m.collapse.observed.contains("100.0% of the predictions are class 1"),
            "{}",
            m.collapse.observed
        );
        assert!(m.collapse.observed.contains("near chance"), "{}", m.collapse.observed);
        assert!((m.accuracy - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auc_with_ties() {
        assert_eq!(auc([0.5f32, 0.5].into_iter(), [true, false].into_iter()), Some(0.5));
        assert_eq!(auc([0.1f32, 0.9].into_iter(), [true, true].into_iter()), None);
    }

    /// Regression: NaN probabilities from a diverged model hung the AUC loop.
    #[test]
    fn nan_probabilities_do_not_hang() {
        let probs = [f32::NAN, f32::NAN, f32::NAN, f32::NAN, 0.3, 0.7];
        let m = compute(&probs, &[0, 1, 1], 2);
        assert_eq!(m.rows, 3);
        // Diverged rows are wrong, loud, and survive a JSON round trip (NaN is stored as null).
        assert_eq!(m.collapse.non_finite, 2);
        assert_eq!(m.accuracy, 1.0 / 3.0);
        assert!(m.collapse.collapsed);
        assert!(
            m.collapse.observed.contains("2 of 3 predictions are not numbers"),
            "{}",
            m.collapse.observed
        );
        let all_nan = compute(&[f32::NAN; 4], &[0, 1], 2);
        let json = serde_json::to_value(&all_nan).unwrap();
        let back: Metrics = serde_json::from_value(json).unwrap();
        assert!(back.collapse.probability_min.is_nan() && back.collapse.collapsed);
    }
}
