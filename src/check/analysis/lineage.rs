//! The lineage checks: every stage an artifact's lineage names is in the cache and took the
//! stage before it as input, and every fitted statistic was computed on `train` rows only —
//! recorded so, and recomputed from the fitting stage's cached input.

use crate::cache::store::Cache;
use crate::check::analysis::Severity::{Error, Warning};
use crate::check::analysis::{Finding, short};
use crate::data::dataset::Meta;
use crate::data::dataset::columns::{self, Rows};
use crate::data::dataset::reader;
use crate::data::lineage::LineageEntry;
use crate::kernel::pixel::ChannelStats;

/// Checks the recorded lineage against the cache: every stage's record exists and took
/// the previous stage's output as input, and every fitted statistic was computed on
/// `train` rows only (recomputed from the fitting stage's cached input).
pub fn findings(lineage: &[LineageEntry], cache: Option<&Cache>) -> Vec<Finding> {
    let mut f = Vec::new();
    for (i, e) in lineage.iter().enumerate() {
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
            let prev = &lineage[i - 1].fingerprint;
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
        if let Some(finding) = refit_check(cache, e, i.checked_sub(1).map(|j| &lineage[j])) {
            f.push(finding);
        }
    }
    f
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
    let meta = reader::for_each_batch(&path, &cache.integrity(), |batch| {
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
            Warning,
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
        Error,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::analysis::scan::analyze;
    use crate::check::analysis::testutil::{ROWS, artifact, entry, pixels};
    use crate::check::analysis::{Severity, Thresholds};

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
        analyze(&path, &cache.integrity(), &t)
            .unwrap()
            .findings(&t, Some(&cache))
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
