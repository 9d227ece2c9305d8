//! `data`: `validate`'s errors, and whether the inputs are standardized.

use anyhow::Result;
use serde_json::json;

use crate::data::dataset::Dtype;
use crate::data::lineage::Method;
use crate::diagnose::checks::{Ctx, finding, result};
use crate::diagnose::probe::Data;
use crate::diagnose::{Cause, CheckResult};
use crate::stage::params::Params;

/// The check's name, as `--check` takes it.
pub const NAME: &str = "data";

/// `validate`'s errors, and whether the inputs are standardized.
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let mut findings = Vec::new();
    let mut parts = Vec::new();
    let mut ruled_out = vec![Cause::InputScale];
    if let Some(v) = &ctx.validate {
        ruled_out.push(Cause::DataErrors);
        let (errors, warnings) = (v["errors"].as_u64().unwrap_or(0), v["warnings"].as_u64().unwrap_or(0));
        parts.push(format!("validate: {errors} error(s), {warnings} warning(s)"));
        for f in v["findings"].as_array().into_iter().flatten() {
            if f["severity"] == "error" {
                findings.push(finding(
                    Cause::DataErrors,
                    NAME,
                    f["message"].as_str().unwrap_or("?").to_string(),
                    f["cause"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    } else {
        parts.push("no validate report".into());
    }
    let rows = Data::sample(&ctx.data.train, 64);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    ctx.data.gather(&rows, false, &mut x, &mut y)?;
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    parts.push(format!(
        "train inputs {}: mean {mean:.3}, std {std:.3}, range {lo:.2}..{hi:.2}",
        ctx.data.dtype.name()
    ));
    if std > 5.0 || mean.abs() > 3.0 || ctx.data.dtype != Dtype::Float32 {
        ctx.scale_off = true;
        findings.push(finding(
            Cause::InputScale,
            NAME,
            format!(
                "the network sees {} values with mean {mean:.1} and std {std:.1} (range {lo:.0}..{hi:.0}), not \
                 standardized inputs: units saturate, and each step moves the first layer about {:.0}x as far as \
                 it would with standardized inputs",
                ctx.data.dtype.name(),
                mean * mean + std * std
            ),
            standardize(ctx),
        ));
    }
    ruled_out.retain(|c| !findings.iter().any(|f| f.cause == *c));
    let mut r = result(
        NAME,
        parts.join("; "),
        findings,
        &[],
        json!({"mean": mean, "std": std, "min": lo, "max": hi, "dtype": ctx.data.dtype.name()}),
    );
    r.ruled_out = ruled_out;
    Ok(r)
}

/// The change that standardizes the inputs: the `normalize` stage upstream of the train stage
/// set to `per_image` by `--set`, else a stage to add.
fn standardize(ctx: &Ctx<'_>) -> String {
    let plan = ctx.plan;
    let mut at = plan.train_stage(Some(ctx.train_name)).ok();
    while let Some(i) = at {
        let stage = plan.stage(i);
        if let Params::Normalize(n) = &stage.params {
            let param = match n.method {
                Method::PerImage => break,
                Method::PerChannel(_) => "std",
                Method::Scale(_) => "factor",
            };
            // Each image standardized on its own (`null` removes the old method's param).
            let name = &stage.name;
            return format!("--set {name}.method=per_image --set {name}.{param}=null");
        }
        at = plan.inputs[i].first().copied();
    }
    "standardize the inputs: add a stage `normalize: {kind: normalize, input: <your last pixel stage>, method: \
     per_image}` and point `validate` at it"
        .into()
}
