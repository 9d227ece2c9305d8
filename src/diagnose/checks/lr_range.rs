//! `lr_range`: Leslie Smith's range test with the configured optimizer: where is the valley?

use anyhow::Result;

use crate::diagnose::checks::{Ctx, finding, result, round_lr};
use crate::diagnose::lr_range::{self, Smoother, Sweep};
use crate::diagnose::probe::{self, RunSpec};
use crate::diagnose::{Cause, CheckResult};

/// The check's name, as `--check` takes it.
pub const NAME: &str = "lr_range";

/// Leslie Smith's range test with the configured optimizer: where is the valley?
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let lrs = lr_range::schedule(100, 1e-6, 1.0);
    let mut model = ctx.recipe.model()?;
    let mut opt = ctx.recipe.train.optimizer_with_lr(lrs[0]);
    let spec = RunSpec {
        rows: &ctx.data.train,
        steps: lrs.len(),
        batch: ctx.recipe.batch_size(),
        l2: ctx.l2(),
        zero: false,
        lrs: Some(&lrs),
        seed: ctx.recipe.seed,
    };
    let mut smoother = Smoother::default();
    let (mut losses, mut smoothed, mut blew) = (Vec::new(), Vec::new(), false);
    probe::run(ctx.data, &mut model, &mut opt, &spec, |s| {
        let (sm, stop) = smoother.push(f64::from(s.loss));
        losses.push(f64::from(s.loss));
        smoothed.push(sm);
        blew |= stop;
        !stop
    })?;
    let taken = smoothed.len();
    let sweep = Sweep::new(lrs[..taken].to_vec(), losses, smoothed, blew);
    let configured = ctx.lr();
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |l| format!("{l:.0e}"));
    let summary = format!(
        "loss fell fastest at lr {}, bottomed at {}, {}; suggested {}, configured {configured}",
        fmt(sweep.steepest_lr),
        fmt(sweep.min_lr),
        match sweep.blew_up_at {
            Some(b) => format!("blew up at {b:.0e}"),
            None => "never blew up".into(),
        },
        sweep.suggested.map_or("-".into(), round_lr),
    );
    let mut findings = Vec::new();
    if let (Some(too_high), Some(suggested), Some(min_lr)) = (sweep.judge(configured), sweep.suggested, sweep.min_lr) {
        let (cause, evidence) = if too_high {
            (
                Cause::LearningRateTooHigh,
                format!(
                    "the configured lr {configured} is past the bottom of the loss valley ({min_lr:.0e}){}",
                    sweep
                        .blew_up_at
                        .map_or(String::new(), |b| format!("; the loss blew up from {b:.0e}"))
                ),
            )
        } else {
            (
                Cause::LearningRateTooLow,
                format!("the configured lr {configured} is over 1000x below the valley ({min_lr:.0e}): nothing moves"),
            )
        };
        findings.push(finding(cause, NAME, evidence, ctx.set("lr", round_lr(suggested))));
    }
    let data = serde_json::to_value(&sweep)?;
    Ok(result(
        NAME,
        summary,
        findings,
        &[Cause::LearningRateTooHigh, Cause::LearningRateTooLow],
        data,
    ))
}
