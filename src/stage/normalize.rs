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
use crate::diag::Diagnostic;
use crate::kernel::pixel;
use crate::spec::{Fields, get_choice, get_f64, get_f64_list};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    PerImage,
    PerChannel(Std),
    Scale(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Std {
    Constant([f64; 3]),
    Fit,
}

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
    const KIND: &'static str = "normalize";
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
        let misplaced = |n: Option<&crate::yaml::Node>, param: &str, diags: &mut Vec<Diagnostic>| {
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
        match self.method {
            Method::PerImage => serde_json::json!({ "method": "per_image" }),
            Method::PerChannel(Std::Fit) => serde_json::json!({ "method": "per_channel", "std": "fit" }),
            Method::PerChannel(Std::Constant(s)) => serde_json::json!({ "method": "per_channel", "std": s }),
            Method::Scale(f) => serde_json::json!({ "method": "scale", "factor": f }),
        }
    }

    fn fits_statistics(&self) -> bool {
        self.method == Method::PerChannel(Std::Fit)
    }
}

impl Normalize {
    /// The params back from [`Kind::to_json`]'s form (a lineage entry's `params`).
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let method = match v.get("method")?.as_str()? {
            "per_image" => Method::PerImage,
            "scale" => Method::Scale(v.get("factor")?.as_f64()?),
            "per_channel" => match v.get("std")? {
                s if s.as_str() == Some("fit") => Method::PerChannel(Std::Fit),
                s => Method::PerChannel(Std::Constant(serde_json::from_value(s.clone()).ok()?)),
            },
            _ => return None,
        };
        Some(Normalize { method })
    }

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
        let f = self.row_fn(&fitted)?;
        view_pixels_f32(ctx, fitted, f)
    }

    /// The per-image transform, given the fitted params (from this run or, for prediction,
    /// from the training lineage): the one code path for both.
    pub fn row_fn(&self, fitted: &serde_json::Value) -> Result<impl Fn(&mut [f32]) + Sync + use<>> {
        let method = self.method;
        let std = match method {
            Method::PerChannel(Std::Constant(s)) => s,
            Method::PerChannel(Std::Fit) => super::fitted3(fitted, "std_rgb")?,
            _ => [1.0; 3],
        }
        .map(|v| v as f32);
        Ok(move |row: &mut [f32]| match method {
            Method::PerImage => {
                pixel::standardize(row);
            }
            Method::Scale(factor) => pixel::scale(row, factor as f32),
            Method::PerChannel(_) => pixel::divide_channels(row, &std),
        })
    }
}
