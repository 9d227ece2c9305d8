//! `normalize`: bring pixel values to a common scale; output `f32`.
//!
//! - `method: per_image` (the reference recipe): each image minus its own mean, divided by
//!   its own std over all its values, with the std floored at `1/sqrt(N)` (N values per
//!   image), so a constant image becomes all zeros, never NaN or infinity.
//! - `method: per_channel`: divide each channel by `std: [r, g, b]`, or by `std: fit`, the
//!   per-channel std of the `train` rows (recorded in the lineage); a fitted std below 1e-12
//!   (a channel constant over all training images) is replaced by 1 so values stay finite.
//!   Pair it with `mean_subtract` for a full per-channel z-score.
//! - `method: scale` with `factor` (e.g. `0.00392156862745098` = 1/255).

use anyhow::Result;

use super::{Kind, Output, RunCtx, fit_train_stats, view_pixels_f32};
use crate::data::lineage::{self, Method, Std};
use crate::source::diag::Diagnostic;
use crate::source::fields::{Fields, get_choice, get_f64, get_f64_list};

#[derive(Clone, Debug)]
pub struct Normalize {
    pub method: Method,
}

#[derive(Clone, Copy, PartialEq)]
enum MethodName {
    PerImage,
    PerChannel,
    Scale,
}

impl Kind for Normalize {
    const KIND: &'static str = lineage::NORMALIZE;
    /// 2: a view of the stored pixels (no `f32` copy of its own).
    const VERSION: u32 = 2;
    const PARAMS: &'static [&'static str] = &["method", "std", "factor"];

    fn parse(f: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Self> {
        let node = f.require("method", "add `method: per_image`, `per_channel` or `scale`", diags)?;
        let name = get_choice(
            node,
            "method",
            &[
                ("per_image", MethodName::PerImage),
                ("per_channel", MethodName::PerChannel),
                ("scale", MethodName::Scale),
            ],
            diags,
        )?;
        let std = f.get("std");
        let factor = f.get("factor");
        let misplaced = |n: Option<&crate::source::yaml::Node>, param: &str, diags: &mut Vec<Diagnostic>| {
            if let Some(n) = n {
                diags.push(Diagnostic::new(
                    n.span,
                    format!(
                        "`{param}` has no meaning with `method: {}`",
                        node.as_str().unwrap_or("?")
                    ),
                ));
            }
        };
        let method = match name {
            MethodName::PerImage => {
                misplaced(std, "std", diags);
                misplaced(factor, "factor", diags);
                Method::PerImage
            }
            MethodName::PerChannel => {
                misplaced(factor, "factor", diags);
                let n = f.require("std", "add `std: fit` or `std: [r, g, b]`", diags)?;
                if n.as_str() == Some("fit") {
                    Method::PerChannel(Std::Fit)
                } else {
                    let v = get_f64_list::<3>(n, "std", (1e-12, 1e6), diags)?;
                    Method::PerChannel(Std::Constant(v))
                }
            }
            MethodName::Scale => {
                misplaced(std, "std", diags);
                let n = f.require("factor", "add e.g. `factor: 0.00392156862745098` (1/255)", diags)?;
                let v = get_f64(n, "factor", (-1e6, 1e6), diags)?;
                if v == 0.0 {
                    diags.push(Diagnostic::new(n.span, "`factor: 0` would erase every image"));
                    return None;
                }
                Method::Scale(v)
            }
        };
        Some(Normalize { method })
    }

    fn to_json(&self) -> serde_json::Value {
        self.method.to_json()
    }

    fn fits_statistics(&self) -> bool {
        self.method == Method::PerChannel(Std::Fit)
    }
}

impl Normalize {
    pub fn run(&self, ctx: &RunCtx<'_>) -> Result<Output> {
        let fitted = match self.method {
            Method::PerChannel(Std::Fit) => {
                let stats = fit_train_stats(ctx)?;
                let s = stats.std();
                let s = [s[0], s[1], s[2]].map(|v| if v < 1e-12 { 1.0 } else { v });
                serde_json::json!({ "std_rgb": s, "fitted_on": "train", "pixels": stats.count })
            }
            _ => serde_json::Value::Null,
        };
        let step = self.method.step(&fitted)?;
        view_pixels_f32(ctx, fitted, step)
    }
}
