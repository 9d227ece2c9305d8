//! `init_loss`: the loss of the untrained model against −ln(1/K), the loss of guessing uniformly.

use anyhow::Result;
use serde_json::json;

use crate::diagnose::checks::{Ctx, finding, result};
use crate::diagnose::probe::{self, Data};
use crate::diagnose::{Cause, CheckResult};

/// The check's name, as `--check` takes it.
pub const NAME: &str = "init_loss";

/// The loss of the untrained model against −ln(1/K), the loss of guessing uniformly.
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let model = ctx.recipe.model()?;
    let rows = Data::sample(&ctx.data.train, 256);
    let s = probe::score(ctx.data, &model, &rows, false)?;
    let k = ctx.data.classes.len();
    let expected = (k as f64).ln();
    let summary = format!("loss at init {:.3} vs -ln(1/{k}) = {expected:.3}", s.loss);
    let mut findings = Vec::new();
    if !s.loss.is_finite() || s.loss > 3.0 * expected {
        let (cause, change) = if ctx.scale_off {
            (Cause::InputScale, String::new())
        } else {
            (Cause::Initialization, ctx.set("init", ctx.good_init()))
        };
        findings.push(finding(
            cause,
            NAME,
            format!(
                "the untrained model's loss is {:.2}, {:.0}x that of uniform guessing: its first outputs are \
                 confidently wrong",
                s.loss,
                s.loss / expected
            ),
            change,
        ));
    }
    Ok(result(
        NAME,
        summary,
        findings,
        &[Cause::Initialization],
        json!({"loss": s.loss, "expected": expected}),
    ))
}
