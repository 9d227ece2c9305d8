//! `baseline`: the same training on all-zero inputs: without a gap, the model ignores its inputs.

use anyhow::Result;
use serde_json::json;

use crate::diagnose::checks::{Ctx, finding, result};
use crate::diagnose::probe;
use crate::diagnose::{Cause, CheckResult};

/// The check's name, as `--check` takes it.
pub const NAME: &str = "baseline";

/// The same training on all-zero inputs: without a gap, the model ignores its inputs.
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let steps = ctx.short_steps();
    let (real, taken) = ctx.fit(&ctx.data.train, steps, false)?;
    let (zero, _) = ctx.fit(&ctx.data.train, steps, true)?;
    let rows = ctx.held_out();
    let r = probe::score(ctx.data, &real, &rows, false)?;
    let z = probe::score(ctx.data, &zero, &rows, true)?;
    let summary = format!(
        "after {taken} steps: held-out accuracy {:.3} with inputs vs {:.3} with zeroed inputs (loss {:.3} vs {:.3})",
        r.accuracy, z.accuracy, r.loss, z.loss
    );
    let mut findings = Vec::new();
    let uses = r.loss.is_finite() && (r.accuracy >= z.accuracy + 0.02 || r.loss < z.loss - 0.02);
    if r.non_finite > 0 {
        findings.push(finding(
            Cause::LearningRateTooHigh,
            NAME,
            format!("training on the real images diverged within {taken} steps: its predictions are NaN"),
            String::new(),
        ));
    } else if !uses {
        findings.push(finding(
            Cause::NotUsingInputs,
            NAME,
            format!(
                "trained on the real images it does no better than on blank ones (accuracy {:.3} vs {:.3}, loss \
                 {:.3} vs {:.3})",
                r.accuracy, z.accuracy, r.loss, z.loss
            ),
            String::new(),
        ));
    }
    ctx.baseline_model = Some((real, taken));
    Ok(result(
        NAME,
        summary,
        findings,
        &[Cause::NotUsingInputs],
        json!({"steps": taken, "real": r, "zeroed": z}),
    ))
}
