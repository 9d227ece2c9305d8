//! [`Analysis::findings`]: the checks that turn an analysis into findings, one function per
//! check name, run in the order of [`CHECKS`] (errors are then sorted first, the order within
//! a severity kept), followed by the lineage checks of [`crate::check::analysis::lineage`].

use crate::cache::store::Cache;
use crate::check::analysis::Severity::{Error, Warning};
use crate::check::analysis::{Analysis, CHANNEL_NAMES, Finding, MAX_NAMED, Thresholds, lineage, pair_text};
use crate::data::dataset::Dtype;
use crate::data::lineage::LineageEntry;

/// One check over the numbers of an analysis.
type Check = fn(&Analysis, &Thresholds) -> Vec<Finding>;

/// The checks, in the order their findings are reported.
const CHECKS: [Check; 9] = [
    dtype,
    finite,
    labels,
    partitions,
    classes,
    leakage,
    near_duplicates,
    normalization,
    drift,
];

impl Analysis {
    /// Every finding, errors first.
    pub fn findings(&self, t: &Thresholds, cache: Option<&Cache>) -> Vec<Finding> {
        let mut f: Vec<Finding> = CHECKS.iter().flat_map(|check| check(self, t)).collect();
        f.extend(lineage::findings(&self.lineage, cache));
        f.sort_by_key(|x| x.severity);
        f
    }
}

/// The pixels are there and of the dtype training expects.
fn dtype(a: &Analysis, t: &Thresholds) -> Vec<Finding> {
    match a.dtype {
        None => vec![Finding::new(
            Error,
            "dtype",
            "the artifact holds no pixels".into(),
            "validation needs pixel data: put it after `resize` (and the normalization stages)",
        )],
        Some(d) if d != t.dtype => vec![Finding::new(
            Error,
            "dtype",
            format!("pixels are {}, training expects {}", d.name(), t.dtype.name()),
            if d == Dtype::Uint8 {
                "integer pixels (0..255) reach the model unscaled: add `mean_subtract` and/or `normalize` after \
                 `resize`, or set `dtype: uint8` on this stage if the model scales them itself"
            } else {
                "the dtype the stage `dtype` param names differs from the data"
            },
        )],
        _ => Vec::new(),
    }
}

/// No NaN or infinite values.
fn finite(a: &Analysis, _: &Thresholds) -> Vec<Finding> {
    if a.nonfinite_rows == 0 {
        return Vec::new();
    }
    vec![
        Finding::new(
            Error,
            "finite",
            format!("{} image(s) hold NaN or infinite values", a.nonfinite_rows),
            "a division by a zero std or a corrupt artifact; such values poison every gradient",
        )
        .rows(
            a.nonfinite
                .iter()
                .map(|(p, n)| format!("{p} ({n} non-finite values)"))
                .collect(),
        ),
    ]
}

/// Every label is in range and agrees with its class name.
fn labels(a: &Analysis, _: &Thresholds) -> Vec<Finding> {
    if a.bad_labels.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(
            Error,
            "labels",
            format!(
                "{} row(s) have a label outside the declared classes or disagreeing with their class name",
                a.bad_labels.len()
            ),
            "the artifact was assembled by hand or its `pipeline.classes` metadata was edited",
        )
        .rows(a.bad_labels.iter().take(MAX_NAMED).cloned().collect()),
    ]
}

/// The data says which rows are train, val and test.
fn partitions(a: &Analysis, _: &Thresholds) -> Vec<Finding> {
    if a.partitioned {
        return Vec::new();
    }
    vec![Finding::new(
        Error,
        "partitions",
        "the data has no partition column".into(),
        "add a `split` stage upstream so train, val and test are known",
    )]
}

/// Every partition has every class (an error), in proportions within the limit (a warning).
fn classes(a: &Analysis, t: &Thresholds) -> Vec<Finding> {
    let mut f = Vec::new();
    for (name, p) in &a.partitions {
        let missing: Vec<&str> = a
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
    f
}

/// No content is in two partitions.
fn leakage(a: &Analysis, _: &Thresholds) -> Vec<Finding> {
    if a.duplicates.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(
            Error,
            "leakage",
            format!(
                "{} image(s) appear in two partitions (same content)",
                a.duplicates.len()
            ),
            "the same file is in the data twice and the partitions were assigned by folder or by hand; \
             the model is tested on images it was trained on. Remove the copies",
        )
        .rows(a.duplicates.iter().take(MAX_NAMED).map(pair_text).collect()),
    ]
}

/// No two images in different partitions look the same.
fn near_duplicates(a: &Analysis, t: &Thresholds) -> Vec<Finding> {
    if a.near_duplicates.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(
            Warning,
            "near_duplicates",
            format!(
                "{} pair(s) of near-identical images across partitions (thumbnail correlation >= {})",
                a.near_duplicates.len(),
                t.near_duplicate
            ),
            "the same photo re-encoded, resized or slightly edited: test scores will be optimistic",
        )
        .rows(a.near_duplicates.iter().take(MAX_NAMED).map(pair_text).collect()),
    ]
}

/// `train` holds the mean and std the lineage's normalization promises.
fn normalization(a: &Analysis, t: &Thresholds) -> Vec<Finding> {
    let Some(train) = a.partitions.get("train").filter(|_| a.dtype.is_some()) else {
        return Vec::new();
    };
    let mut f = Vec::new();
    match promise(&a.lineage) {
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
    f
}

/// Every other partition is distributed like `train`, channel by channel.
fn drift(a: &Analysis, t: &Thresholds) -> Vec<Finding> {
    a.drift
        .iter()
        .filter(|d| d.linf > t.drift_linf || d.js > t.drift_js)
        .map(|d| {
            Finding::new(
                Warning,
                "drift",
                format!(
                    "`{}` differs from `train` on channel {}: L-inf {:.4} (limit {}), JS {:.4} (limit {})",
                    d.partition, d.channel, d.linf, t.drift_linf, d.js, t.drift_js
                ),
                "the partitions come from different sources or were assigned by a property that correlates \
                 with the pixels",
            )
        })
        .collect()
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

/// Folds the lineage into the promise its last normalizing stage makes.
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

fn quote(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
