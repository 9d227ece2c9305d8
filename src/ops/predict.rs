//! `pipeline predict FILE IMAGE...`: classify new images with a trained model.
//!
//! The images go through the very stage code that made the training data — `resize`'s
//! decode-and-resize, then each element-wise stage's per-image transform — with the fitted
//! parameters frozen from the model's training lineage. Nothing is re-fitted, and there is no
//! second implementation of preprocessing to drift from the first.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::cache::store::{Format, Lookup};
use crate::data::decode::DecodeLimits;
use crate::data::lineage::{LineageEntry, Step};
use crate::model::net::Model;
use crate::pipeline::executor::resolve_closure;
use crate::pipeline::plan::Plan;
use crate::stage::params::Params;
use crate::stage::resize::Resize;

/// A trained model with its frozen preprocessing: what `predict` and `serve` classify with
/// (one code path, so both give the same probabilities for the same bytes).
pub struct Predictor {
    model: Model,
    pub classes: Vec<String>,
    resize: Resize,
    steps: Vec<Step>,
    limits: DecodeLimits,
    /// The model artifact's fingerprint.
    pub fingerprint: String,
    /// The train stage's name.
    pub stage: String,
    /// The fingerprints of the stages that made its training data, in order.
    pub lineage: Vec<(String, String)>,
}

/// One image's classification.
pub struct Prediction {
    pub label: usize,
    pub class: String,
    pub probabilities: Vec<f32>,
}

impl Predictor {
    /// The model of train stage `stage` (the only one when `None`), which must be built for
    /// the pipeline as it is now.
    pub fn load(plan: &Plan, stage: Option<&str>) -> Result<Predictor> {
        let train = plan.train_stage(stage)?;
        let cache = plan.open_cache()?;
        let done = resolve_closure(plan, &cache, &[train])?;
        let fp = &done[train].as_ref().context("train stage not resolved")?.fingerprint;
        let record = match cache.lookup(fp) {
            Lookup::Present(r) => *r,
            _ => bail!(
                "the model of stage `{}` is not built for the current pipeline; run `pipeline run {}` first",
                plan.stage(train).name,
                plan.file.display()
            ),
        };
        let (model, _) = crate::model::io::from_bytes(&cache.read_checked(fp, Format::Model)?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let lineage: Vec<LineageEntry> = serde_json::from_value(record.summary["data_lineage"].clone())
            .context("the model lacks its data lineage")?;
        let classes: Vec<String> = serde_json::from_value(record.summary["classes"].clone()).unwrap_or_default();
        // The preprocessing chain: every pixel stage between ingest and the model, in order.
        let mut chain = Vec::new();
        let mut i = plan.data_source(train);
        loop {
            chain.push(i);
            match plan.inputs[i].first() {
                Some(&j) => i = j,
                None => break,
            }
        }
        chain.reverse();
        let mut resize = None;
        let mut steps = Vec::new();
        // The ingest stage's decode limits: an image training could not have used is refused.
        let mut limits = DecodeLimits::default();
        for &i in &chain {
            if let Params::Ingest(p) = &plan.stage(i).params {
                limits = p.limits;
            }
            let s = plan.stage(i);
            let fp = &done[i].as_ref().context("stage not resolved")?.fingerprint;
            let entry = lineage.iter().find(|e| &e.fingerprint == fp).with_context(|| {
                format!(
                    "stage `{}` changed since the model was trained; run `pipeline run` to retrain",
                    s.name
                )
            })?;
            if let Params::Resize(r) = &s.params {
                resize = Some(r.clone());
            }
            steps.extend(crate::data::lineage::pixel_step(entry)?);
        }
        Ok(Predictor {
            model,
            classes,
            resize: resize.context("the model's data has no resize stage")?,
            steps,
            limits,
            fingerprint: fp.clone(),
            stage: plan.stage(train).name.clone(),
            lineage: lineage
                .iter()
                .map(|e| (e.stage.clone(), e.fingerprint.clone()))
                .collect(),
        })
    }

    /// Classifies one encoded image (JPEG or PNG bytes); the error says why the bytes are
    /// not a usable image.
    pub fn classify(&self, bytes: &[u8]) -> Result<Prediction, String> {
        let pixels = self.resize.image_to_pixels(bytes, &self.limits)?;
        let mut row: Vec<f32> = pixels.iter().map(|&v| f32::from(v)).collect();
        for step in &self.steps {
            step(&mut row);
        }
        let probabilities = self.model.forward(&row, 1).map_err(|e| e.to_string())?;
        let label = crate::check::metrics::argmax(&probabilities);
        Ok(Prediction {
            label,
            class: self.class_name(label),
            probabilities,
        })
    }

    /// The name of class `k` (its index when the model does not name it).
    pub fn class_name(&self, k: usize) -> String {
        self.classes.get(k).cloned().unwrap_or_else(|| k.to_string())
    }
}

/// Classifies `images` with the model of train stage `stage` (the only one when `None`).
pub fn predict(plan: &Plan, stage: Option<&str>, images: &[PathBuf], json_out: bool) -> Result<String> {
    let predictor = Predictor::load(plan, stage)?;
    let mut text = String::new();
    let mut rows = Vec::new();
    for path in images {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let p = predictor
            .classify(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let all: Vec<String> = p
            .probabilities
            .iter()
            .enumerate()
            .map(|(k, v)| format!("{} {v:.4}", predictor.classes.get(k).map_or("?", String::as_str)))
            .collect();
        let _ = writeln!(
            text,
            "{}  {}  {:.4}  ({})",
            path.display(),
            p.class,
            p.probabilities.get(p.label).copied().unwrap_or(f32::NAN),
            all.join(", ")
        );
        rows.push(serde_json::json!({
            "image": path.display().to_string(), "class": p.class, "label": p.label, "probabilities": p.probabilities,
        }));
    }
    if json_out {
        return Ok(serde_json::to_string_pretty(&serde_json::json!({
            "model": predictor.fingerprint, "classes": predictor.classes, "predictions": rows,
        }))? + "\n");
    }
    Ok(text)
}
