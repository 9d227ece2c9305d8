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
use crate::pipeline::executor::{Resolved, resolve_built, resolve_closure};
use crate::pipeline::plan::Plan;
use crate::stage::params::Params;
use crate::stage::resize::Resize;

/// The preprocessing of a pixel stage, frozen: `resize`'s decode-and-resize, then each
/// element-wise stage's per-image step with the fitted parameters its artifact recorded.
/// What `predict`, `serve` and the Python package turn new images into, by the code that
/// made the training data; nothing is re-fitted.
pub struct Frozen {
    resize: Resize,
    steps: Vec<Step>,
    limits: DecodeLimits,
}

impl Frozen {
    /// The preprocessing of the pixel stages from ingest to `last` (the stages are resolved in
    /// `done`), with the fitted parameters of `lineage`: the entries that made the data. A
    /// stage without its entry there changed since; `changed` says what to do about it.
    fn from_lineage(
        plan: &Plan,
        done: &[Option<Resolved>],
        last: usize,
        lineage: &[LineageEntry],
        changed: &dyn Fn(&str) -> String,
    ) -> Result<Frozen> {
        let mut chain = Vec::new();
        let mut i = last;
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
            let s = plan.stage(i);
            if let Params::Ingest(p) = &s.params {
                limits = p.limits;
            }
            let fp = &done[i].as_ref().context("stage not resolved")?.fingerprint;
            let entry = lineage
                .iter()
                .find(|e| &e.fingerprint == fp)
                .with_context(|| changed(&s.name))?;
            if let Params::Resize(r) = &s.params {
                resize = Some(r.clone());
            }
            steps.extend(crate::data::lineage::pixel_step(entry)?);
        }
        Ok(Frozen {
            resize: resize
                .with_context(|| format!("stage `{}` has no resize stage upstream", plan.stage(last).name))?,
            steps,
            limits,
        })
    }

    /// The preprocessing of pixel stage `stage`, from its artifact, which must be built for
    /// the pipeline as it is now.
    pub fn of_stage(plan: &Plan, stage: usize) -> Result<Frozen> {
        let cache = plan.open_cache()?;
        let (done, fp) = resolve_built(plan, &cache, stage)?;
        let (meta, _) = crate::data::dataset::reader::open(&cache.data_path(&fp), &cache.integrity())?;
        Frozen::from_lineage(plan, &done, stage, &meta.lineage, &|name| {
            format!("stage `{name}` is not in the lineage of its own artifact; run `pipeline cache verify`")
        })
    }

    /// `[height, width, channels]` of one image's values.
    pub fn shape(&self) -> [usize; 3] {
        let [h, w] = self.resize.size;
        [h as usize, w as usize, 3]
    }

    /// One encoded image (JPEG or PNG bytes) as the stage's values (HWC, RGB); the error says
    /// why the bytes are not a usable image.
    pub fn encoded(&self, bytes: &[u8]) -> Result<Vec<f32>, String> {
        Ok(self.finish(&self.resize.image_to_pixels(bytes, &self.limits)?))
    }

    /// One decoded image (`u8` RGB, HWC, `width` x `height`) as the stage's values: resized
    /// and stepped as an encoded one is after decoding, under the same limits.
    pub fn decoded(&self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<f32>, String> {
        crate::data::decode::check_limits(width, height, &self.limits).map_err(|e| e.to_string())?;
        Ok(self.finish(&self.resize.pixels_to_pixels(rgb, width, height)?))
    }

    /// Resized pixels through the element-wise steps.
    fn finish(&self, pixels: &[u8]) -> Vec<f32> {
        let mut row: Vec<f32> = pixels.iter().map(|&v| f32::from(v)).collect();
        for step in &self.steps {
            step(&mut row);
        }
        row
    }
}

/// A trained model with its frozen preprocessing: what `predict` and `serve` classify with
/// (one code path, so both give the same probabilities for the same bytes).
pub struct Predictor {
    model: Model,
    /// Flip test-time augmentation, as the model's `tta` says.
    hflip_too: bool,
    pub classes: Vec<String>,
    pub frozen: Frozen,
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
        let frozen = Frozen::from_lineage(plan, &done, plan.data_source(train), &lineage, &|name| {
            format!("stage `{name}` changed since the model was trained; run `pipeline run` to retrain")
        })?;
        Ok(Predictor {
            model,
            hflip_too: crate::stage::train::tta_hflip(&record.summary["hyperparameters"]),
            classes,
            frozen,
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
        self.classify_values(&self.frozen.encoded(bytes)?)
    }

    /// Classifies one image already preprocessed by [`Predictor::frozen`].
    pub fn classify_values(&self, row: &[f32]) -> Result<Prediction, String> {
        let probabilities = crate::stage::train::forward_tta(&self.model, row, 1, self.frozen.shape(), self.hflip_too)
            .map_err(|e| e.to_string())?;
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
