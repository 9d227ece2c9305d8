//! `overfit`: one example per class, then 2, 8, 32: a working model memorizes them.

use anyhow::Result;
use serde_json::json;

use crate::diagnose::checks::{Ctx, finding, result};
use crate::diagnose::probe::{self, RunSpec};
use crate::diagnose::{Cause, CheckResult};

/// The check's name, as `--check` takes it.
pub const NAME: &str = "overfit";

/// One example per class, then 2, 8, 32: a working model memorizes them.
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    const MAX_STEPS: usize = 200;
    const FIT_LOSS: f32 = 0.05;
    let mut tried = Vec::new();
    let mut findings = Vec::new();
    for n in [1, 2, 8, 32] {
        let rows = ctx.data.per_class(n);
        let mut model = ctx.recipe.model()?;
        let mut opt = ctx.recipe.train.optimizer_with_lr(ctx.lr());
        let spec = RunSpec {
            rows: &rows,
            steps: MAX_STEPS,
            batch: rows.len(),
            l2: 0.0,
            zero: false,
            lrs: None,
            seed: ctx.recipe.seed,
        };
        let mut fitted_at = None;
        let mut last_loss = f32::NAN;
        probe::run(ctx.data, &mut model, &mut opt, &spec, |s| {
            last_loss = s.loss;
            if s.loss < FIT_LOSS && s.stats.correct == s.stats.batch {
                fitted_at = Some(s.index);
                return false;
            }
            true
        })?;
        tried.push(json!({"per_class": n, "rows": rows.len(), "fitted_at_step": fitted_at, "loss": last_loss}));
        if fitted_at.is_none() {
            let score = probe::score(ctx.data, &model, &rows, false)?;
            let (cause, why, change) = if !last_loss.is_finite() || !score.loss.is_finite() {
                (Cause::LearningRateTooHigh, "the loss diverged", String::new())
            } else if ctx.scale_off {
                (Cause::InputScale, "", String::new())
            } else {
                (
                    Cause::CannotFit,
                    "",
                    "a model that cannot memorize a few images has a broken path: check the other findings".into(),
                )
            };
            findings.push(finding(
                cause,
                NAME,
                format!(
                    "{} example(s) per class ({} rows) not fitted in {MAX_STEPS} full-batch steps: loss {:.3}, \
                     accuracy {:.2}{}{why}",
                    n,
                    rows.len(),
                    score.loss,
                    score.accuracy,
                    if why.is_empty() { "" } else { "; " }
                ),
                change,
            ));
            break;
        }
    }
    let summary = tried
        .iter()
        .map(|t| match t["fitted_at_step"].as_u64() {
            Some(s) => format!("{}/class in {} steps", t["per_class"], s + 1),
            None => format!("{}/class NOT fitted", t["per_class"]),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok(result(
        NAME,
        format!("memorize tiny sets: {summary}"),
        findings,
        &[Cause::CannotFit],
        json!({"max_steps": MAX_STEPS, "fit_loss": FIT_LOSS, "sets": tried}),
    ))
}
