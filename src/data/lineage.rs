//! Lineage: the stages an artifact went through, as its schema metadata records them, and the
//! per-image steps of the element-wise kinds rebuilt from those records.
//!
//! `mean_subtract` and `normalize` store no pixels of their own: their artifacts are views
//! whose readers apply each recorded step to the stored pixels. The step is rebuilt here, in
//! the data layer, from the lineage entry alone (kind, params, fitted params), so reading a
//! view, running the stage and `predict` all use this one code path and never call up into
//! the stages.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kernel::pixel;

/// One step of an artifact's history, as stored in `pipeline.lineage`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineageEntry {
    pub stage: String,
    pub kind: String,
    pub version: u32,
    pub params: Value,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub fitted: Value,
}

/// A per-image transform of `f32` pixel values, in place.
pub type Step = Box<dyn Fn(&mut [f32]) + Send + Sync>;

/// The kind name of the per-channel mean subtraction.
pub const MEAN_SUBTRACT: &str = "mean_subtract";
/// The kind name of the normalization.
pub const NORMALIZE: &str = "normalize";

/// `mean_subtract`'s mean, as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mean {
    /// Constants in RGB order (already reordered from the file's `channel_order`).
    Constant([f64; 3]),
    /// Fitted on the `train` rows; the value is in the entry's fitted params (`mean_rgb`).
    Fit,
}

impl Mean {
    /// The params as they enter the fingerprint and the lineage. Constants are in RGB order:
    /// `[r, g, b]` with `rgb` and `[b, g, r]` with `bgr` are the same stage.
    pub fn to_json(self) -> Value {
        match self {
            Mean::Constant(rgb) => json!({ "mean_rgb": rgb }),
            Mean::Fit => json!({ "mean": "fit" }),
        }
    }

    /// The params back from [`Mean::to_json`]'s form.
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(match (v.get("mean").and_then(|m| m.as_str()), v.get("mean_rgb")) {
            (Some("fit"), _) => Mean::Fit,
            (_, Some(rgb)) => Mean::Constant(serde_json::from_value(rgb.clone()).ok()?),
            _ => return None,
        })
    }

    /// The per-image transform, given the fitted params (from this run or, for prediction,
    /// from the training lineage).
    pub fn step(self, fitted: &Value) -> Result<Step> {
        let mean = match self {
            Mean::Constant(m) => m,
            Mean::Fit => fitted3(fitted, "mean_rgb")?,
        }
        .map(|v| v as f32);
        Ok(Box::new(move |row: &mut [f32]| pixel::subtract_mean(row, &mean)))
    }
}

/// `normalize`'s method, as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    PerImage,
    PerChannel(Std),
    Scale(f64),
}

/// The per-channel divisor of `method: per_channel`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Std {
    Constant([f64; 3]),
    /// Fitted on the `train` rows; the value is in the entry's fitted params (`std_rgb`).
    Fit,
}

impl Method {
    /// The params as they enter the fingerprint and the lineage.
    pub fn to_json(self) -> Value {
        match self {
            Method::PerImage => json!({ "method": "per_image" }),
            Method::PerChannel(Std::Fit) => json!({ "method": "per_channel", "std": "fit" }),
            Method::PerChannel(Std::Constant(s)) => json!({ "method": "per_channel", "std": s }),
            Method::Scale(f) => json!({ "method": "scale", "factor": f }),
        }
    }

    /// The params back from [`Method::to_json`]'s form.
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(match v.get("method")?.as_str()? {
            "per_image" => Method::PerImage,
            "scale" => Method::Scale(v.get("factor")?.as_f64()?),
            "per_channel" => match v.get("std")? {
                s if s.as_str() == Some("fit") => Method::PerChannel(Std::Fit),
                s => Method::PerChannel(Std::Constant(serde_json::from_value(s.clone()).ok()?)),
            },
            _ => return None,
        })
    }

    /// The per-image transform, given the fitted params.
    pub fn step(self, fitted: &Value) -> Result<Step> {
        let std = match self {
            Method::PerChannel(Std::Constant(s)) => s,
            Method::PerChannel(Std::Fit) => fitted3(fitted, "std_rgb")?,
            _ => [1.0; 3],
        }
        .map(|v| v as f32);
        Ok(Box::new(move |row: &mut [f32]| match self {
            Method::PerImage => {
                pixel::standardize(row);
            }
            Method::Scale(factor) => pixel::scale(row, factor as f32),
            Method::PerChannel(_) => pixel::divide_channels(row, &std),
        }))
    }
}

/// The per-image transform a lineage entry records, for the element-wise kinds
/// (`mean_subtract`, `normalize`); `None` for kinds that leave pixels as they are. The one
/// place a view's steps, a stage run's and `predict`'s are rebuilt from.
pub fn pixel_step(entry: &LineageEntry) -> Result<Option<Step>> {
    let bad = || {
        format!(
            "stage `{}`: unreadable {} params {}",
            entry.stage, entry.kind, entry.params
        )
    };
    Ok(match entry.kind.as_str() {
        MEAN_SUBTRACT => Some(Mean::from_json(&entry.params).with_context(bad)?.step(&entry.fitted)?),
        NORMALIZE => Some(
            Method::from_json(&entry.params)
                .with_context(bad)?
                .step(&entry.fitted)?,
        ),
        _ => None,
    })
}

/// A fitted per-channel triple (e.g. `mean_rgb`) from a stage's fitted params.
fn fitted3(fitted: &serde_json::Value, key: &str) -> Result<[f64; 3]> {
    let v: Vec<f64> = fitted
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    match v.as_slice() {
        [a, b, c] => Ok([*a, *b, *c]),
        _ => anyhow::bail!("the fitted params lack `{key}`: {fitted}"),
    }
}
