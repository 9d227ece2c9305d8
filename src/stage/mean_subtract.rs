//! `mean_subtract`: subtract a per-channel mean from every pixel; output `f32`.
//!
//! `mean: [a, b, c]` gives constants in the order named by `channel_order` (`rgb`, the
//! default, or `bgr`, so an OpenCV recipe's `103.939, 116.779, 123.68` can be written as is;
//! pixels are always RGB and the constants are reordered). `mean: fit` computes the mean of
//! each channel over the `train` rows only and records it in the lineage as a fitted param.

use anyhow::Result;

use super::{Kind, Output, RunCtx, fit_train_stats, view_pixels_f32};
use crate::data::lineage::{self, Mean};
use crate::source::diag::Diagnostic;
use crate::source::fields::{Fields, get_choice, get_f64_list};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Clone, Debug)]
pub struct MeanSubtract {
    pub mean: Mean,
}

impl Kind for MeanSubtract {
    const KIND: &'static str = lineage::MEAN_SUBTRACT;
    /// 2: a view of the stored pixels (no `f32` copy of its own).
    const VERSION: u32 = 2;
    const PARAMS: &'static [&'static str] = &["mean", "channel_order"];

    fn parse(f: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Self> {
        let channel_order = match f.get("channel_order") {
            Some(n) => get_choice(
                n,
                "channel_order",
                &[("rgb", ChannelOrder::Rgb), ("bgr", ChannelOrder::Bgr)],
                diags,
            )?,
            None => ChannelOrder::Rgb,
        };
        let node = f.require(
            "mean",
            "add `mean: [123.68, 116.779, 103.939]` (RGB) or `mean: fit`",
            diags,
        )?;
        let mean = if node.as_str() == Some("fit") {
            Mean::Fit
        } else {
            let mut v = get_f64_list::<3>(node, "mean", (-1e6, 1e6), diags)?;
            if channel_order == ChannelOrder::Bgr {
                v.reverse();
            }
            Mean::Constant(v)
        };
        Some(MeanSubtract { mean })
    }

    fn to_json(&self) -> serde_json::Value {
        self.mean.to_json()
    }

    fn fits_statistics(&self) -> bool {
        self.mean == Mean::Fit
    }
}

impl MeanSubtract {
    pub fn run(&self, ctx: &RunCtx<'_>) -> Result<Output> {
        let fitted = match self.mean {
            Mean::Constant(_) => serde_json::Value::Null,
            Mean::Fit => {
                let stats = fit_train_stats(ctx)?;
                let m = stats.mean();
                serde_json::json!({ "mean_rgb": [m[0], m[1], m[2]], "fitted_on": "train", "pixels": stats.count })
            }
        };
        let step = self.mean.step(&fitted)?;
        view_pixels_f32(ctx, fitted, step)
    }
}
