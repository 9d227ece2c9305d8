//! `evaluate`: score a trained model on the `val` and `test` rows, separately.
//!
//! Inputs: the `train` stage, and optionally a dataset stage to evaluate on (default: the
//! data the model was trained on). A model is only applied to data of its own lineage: the
//! data's chain of stage fingerprints must equal the one recorded at training, else the
//! evaluation is refused, naming the first stage that differs. The report (JSON) holds the
//! metrics of each partition and every row's predicted probabilities; when ≥ 95% of the
//! predictions fall in one class, or every probability sits within 0.1 around chance, a
//! loud collapse warning names the likely causes and the command to run.

use anyhow::{Context, Result, bail};

use super::{Kind, Output, RunCtx};
use crate::check::metrics::{self, Metrics};
use crate::data::dataset::mapped::Mapped;
use crate::data::lineage::LineageEntry;
use crate::source::diag::Diagnostic;
use crate::source::fields::{Fields, get_choice};

#[derive(Clone, Debug)]
pub struct Evaluate {
    pub partitions: Vec<&'static str>,
}

const PARTS: &[(&str, &str)] = &[("val", "val"), ("test", "test"), ("train", "train")];

impl Kind for Evaluate {
    const KIND: &'static str = "evaluate";
    // 2: predictions that are not numbers are counted and flagged (`non_finite`).
    // 3: predictions made in chunks of 64 rows on every core.
    const VERSION: u32 = 3;
    const PARAMS: &'static [&'static str] = &["partitions"];

    fn parse(f: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Self> {
        let partitions = match f.get("partitions") {
            Some(n) => match n.as_seq() {
                Some(items) if !items.is_empty() => items
                    .iter()
                    .map(|i| get_choice(i, "partitions", PARTS, diags))
                    .collect::<Option<Vec<_>>>()?,
                _ => {
                    diags.push(Diagnostic::new(
                        n.span,
                        "`partitions` must be a list such as [val, test]",
                    ));
                    return None;
                }
            },
            None => vec!["val", "test"],
        };
        Some(Evaluate { partitions })
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "partitions": self.partitions })
    }
}

/// The first place two lineages differ, if any: `(stage name, why)`.
pub fn lineage_mismatch(trained_on: &[LineageEntry], data: &[LineageEntry]) -> Option<(String, String)> {
    for (i, t) in trained_on.iter().enumerate() {
        match data.get(i) {
            None => return Some((t.stage.clone(), "the data lacks this stage".into())),
            Some(d) if d.fingerprint != t.fingerprint => {
                let why = if d.kind != t.kind {
                    format!("the data went through `{}` ({}) instead", d.stage, d.kind)
                } else if d.params != t.params {
                    format!("its params differ: model {} vs data {}", t.params, d.params)
                } else {
                    "its inputs or fitted statistics differ".to_string()
                };
                return Some((t.stage.clone(), why));
            }
            Some(_) => {}
        }
    }
    data.get(trained_on.len()).map(|d| {
        (
            d.stage.clone(),
            "the data went through more stages than the model's".into(),
        )
    })
}

impl Evaluate {
    pub fn run(&self, ctx: &RunCtx<'_>) -> Result<Output> {
        let record = ctx
            .model_record
            .as_ref()
            .context("evaluate ran without the model's record")?;
        let cache = ctx.cache.context("evaluate ran without the cache")?;
        let bytes = cache.read_checked(&record.fingerprint, crate::cache::store::Format::Model)?;
        let (model, _) = crate::model::io::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let data = Mapped::open(ctx.input_path()?, &ctx.integrity)?;
        let trained_on: Vec<LineageEntry> =
            serde_json::from_value(record.summary.get("data_lineage").cloned().unwrap_or_default())
                .context("the model's record lacks its data lineage")?;
        if let Some((stage, why)) = lineage_mismatch(&trained_on, &data.meta.lineage) {
            bail!(
                "refusing to evaluate: the data was not preprocessed like the model's training data; first difference at \
                 stage `{stage}`: {why}"
            );
        }
        let hflip_too = super::train::tta_hflip(&record.summary["hyperparameters"]);
        let rows = data.rows()?;
        let parts = rows.partition.as_ref().context("the data has no partition column")?;
        let labels: Vec<u32> = rows.label.iter().map(|&l| l.max(0) as u32).collect();
        let classes = data.meta.classes.len();
        let mut report = serde_json::Map::new();
        let mut predictions = Vec::new();
        let mut collapsed = Vec::new();
        for part in &self.partitions {
            let idx: Vec<usize> = (0..rows.len()).filter(|&i| parts[i] == *part).collect();
            if idx.is_empty() {
                continue;
            }
            let (probs, y) = super::train::predict_rows(&model, &data, &idx, &labels, hflip_too)?;
            let m: Metrics = metrics::compute(&probs, &y, classes);
            if m.collapse.collapsed {
                collapsed.push(part.to_string());
            }
            for (k, &i) in idx.iter().enumerate() {
                predictions.push(serde_json::json!({
                    "id": rows.id[i], "path": rows.path[i], "partition": part, "label": labels[i],
                    "probabilities": &probs[k * classes..(k + 1) * classes],
                }));
            }
            report.insert(part.to_string(), serde_json::to_value(&m)?);
            ctx.progress.inc(idx.len() as u64);
        }
        let doc = serde_json::json!({
            "classes": data.meta.classes,
            "metrics": report,
            "collapsed": collapsed,
            "model": record.fingerprint,
            "hyperparameters": record.summary.get("hyperparameters"),
            "history": record.summary.get("history"),
            "predictions": predictions,
        });
        Ok(Output {
            written: ctx.write_file(&serde_json::to_vec(&doc)?, predictions.len() as u64)?,
            fitted: serde_json::Value::Null,
            summary: serde_json::json!({ "collapsed": collapsed }),
        })
    }
}

/// The metrics table and, for a collapsed partition, the loud warning.
pub fn render(report: &serde_json::Value, file: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let classes: Vec<String> = serde_json::from_value(report["classes"].clone()).unwrap_or_default();
    let _ = writeln!(
        s,
        "   {:<6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}  confusion (rows: true {})",
        "part",
        "rows",
        "accuracy",
        "macro F1",
        "ROC-AUC",
        "log-loss",
        "majority",
        "p range",
        classes.join("/")
    );
    let Some(metrics) = report["metrics"].as_object() else {
        return s;
    };
    for (part, m) in metrics {
        let Ok(m) = serde_json::from_value::<Metrics>(m.clone()) else {
            continue;
        };
        let _ = writeln!(
            s,
            "   {:<6} {:>5} {:>9.4} {:>9.4} {:>9} {:>9.4} {:>7.1}% {:>4.2}-{:<4.2}  {:?}",
            part,
            m.rows,
            m.accuracy,
            m.macro_f1,
            m.roc_auc.map_or("-".into(), |a| format!("{a:.4}")),
            m.log_loss,
            100.0 * m.collapse.majority_fraction,
            m.collapse.probability_min,
            m.collapse.probability_max,
            m.confusion
        );
    }
    for (part, m) in metrics {
        let Ok(m) = serde_json::from_value::<Metrics>(m.clone()) else {
            continue;
        };
        if !m.collapse.collapsed {
            continue;
        }
        let _ = writeln!(s, "   !!! COLLAPSE on `{part}`: {}.", m.collapse.observed);
        let _ = writeln!(
            s,
            "   !!! The model is not using its inputs. Likely causes, most likely first:\n\
             \x20      1. learning rate too high (it overshoots, ReLUs die) or too low (nothing moves): try `--set train.lr=0.001`\n\
             \x20      2. too few epochs: check the history for a still-falling loss\n\
             \x20      3. inputs not normalized or of the wrong dtype: run `pipeline audit {file}`\n\
             \x20      4. dead ReLUs: see the dead-unit fraction per layer in the training history\n\
             \x20      5. symmetric weights (`init: zeros`): use `init: he`\n\
             \x20      6. too much L2 (`l2`): lower it\n\
             \x20  !!! Run `pipeline diagnose {file}` to check each cause on this pipeline."
        );
    }
    s
}
