//! `lr_range`: Leslie Smith's range test with the configured optimizer: where is the valley?

use anyhow::Result;

use crate::diagnose::checks::{Ctx, finding, result, round_lr, spread};
use crate::diagnose::lr_range::{self, Smoother, Sweep};
use crate::diagnose::probe::{self, RunSpec};
use crate::diagnose::{Cause, CheckResult};
use crate::model::optim::Schedule;

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
    // A schedule that warms up reaches its configured rate, its peak, once the network has
    // settled: Smith's one-cycle puts that peak at the valley's bottom, not a tenth of it.
    let train = &ctx.recipe.train;
    let peak = train.schedule == Schedule::OneCycle || train.warmup_epochs > 0;
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |l| format!("{l:.0e}"));
    let summary = format!(
        "loss fell fastest at lr {}, bottomed at {}, back at its start from {}, {}; suggested {}, configured {configured}{}",
        fmt(sweep.steepest_lr),
        fmt(sweep.min_lr),
        fmt(sweep.ceiling_lr),
        match sweep.blew_up_at {
            Some(b) => format!("blew up at {b:.0e}"),
            None => "never blew up".into(),
        },
        sweep.suggested.map_or("-".into(), round_lr),
        if peak { " (the peak of a warm-up schedule)" } else { "" },
    );
    let mut findings = Vec::new();
    if let (Some(too_high), Some(suggested), Some(min_lr)) = (sweep.judge(configured), sweep.suggested, sweep.min_lr) {
        let (cause, evidence) = if too_high {
            let beyond = match (sweep.blew_up_at, sweep.ceiling_lr) {
                (Some(b), _) => format!("; the loss blew up from {b:.0e}"),
                (None, Some(c)) => format!("; the loss was back at its start from {c:.0e}"),
                (None, None) => String::new(),
            };
            (
                Cause::LearningRateTooHigh,
                format!(
                    "the configured {}lr {configured} is past the bottom of the loss valley ({min_lr:.0e}){beyond}",
                    if peak { "peak " } else { "" }
                ),
            )
        } else {
            (
                Cause::LearningRateTooLow,
                format!("the configured lr {configured} is over 1000x below the valley ({min_lr:.0e}): nothing moves"),
            )
        };
        // A warm-up schedule's peak goes to the valley's bottom (Smith's one-cycle maximum).
        let lr = if peak && too_high { min_lr } else { suggested };
        let mut f = finding(cause, NAME, evidence, ctx.set("lr", round_lr(lr)));
        // The range test is a short probe from a fresh network; the trained run at this rate
        // is the stronger evidence.
        if let Some(e) = spread::learned(ctx).filter(|_| too_high) {
            f.blocking = false;
            f.evidence.push_str(&format!(
                "; yet the trained run at this rate learned (val accuracy {:.3} at epoch {}, {:.0}% of val \
                 predicted as its most common class): not what breaks training, though a lower rate may \
                 train better",
                e.val_accuracy,
                e.epoch,
                100.0 * e.val_majority_fraction
            ));
        }
        findings.push(f);
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
