//! `spread`: the trained model's predictions per epoch, from the `train` stage's history.

use anyhow::Result;
use serde_json::json;

use crate::check::metrics::{COLLAPSE_MAJORITY, COLLAPSE_SPREAD};
use crate::diagnose::checks::{Ctx, finding, result};
use crate::diagnose::probe;
use crate::diagnose::{Cause, CheckResult, Finding, Status};
use crate::stage::train::Epoch;

/// The check's name, as `--check` takes it.
pub const NAME: &str = "spread";

/// The trained model's predictions per epoch, from the `train` stage's history.
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let Some(summary) = &ctx.trained else {
        return Ok(CheckResult {
            name: NAME,
            status: Status::Skipped,
            summary: format!(
                "`{}` has not been trained with these settings; run `pipeline run {}`",
                ctx.train_name,
                ctx.plan.file.display()
            ),
            findings: Vec::new(),
            ruled_out: Vec::new(),
            data: serde_json::Value::Null,
            seconds: 0.0,
        });
    };
    let history: Vec<Epoch> = serde_json::from_value(summary["history"].clone()).unwrap_or_default();
    let chosen = summary["best_epoch"].as_u64().unwrap_or(history.len() as u64) as usize;
    let Some(e) = history.get(chosen.saturating_sub(1)) else {
        anyhow::bail!("the training history is empty");
    };
    let k = ctx.data.classes.len() as f64;
    let center = 1.0 / k;
    let narrow = e.val_probability_min >= center - COLLAPSE_SPREAD / 2.0
        && e.val_probability_max <= center + COLLAPSE_SPREAD / 2.0;
    let diverged = summary["diverged"].as_bool().unwrap_or(false) || !e.val_probability_min.is_finite();
    let summary_line = if diverged {
        format!(
            "trained model (epoch {chosen} of {}): its predictions are NaN, the training loss diverged",
            history.len()
        )
    } else {
        format!(
            "trained model (epoch {chosen} of {}): {:.1}% of val predicted as one class, probabilities {:.2}..{:.2}",
            history.len(),
            100.0 * e.val_majority_fraction,
            e.val_probability_min,
            e.val_probability_max
        )
    };
    let mut findings = Vec::new();
    if diverged || e.val_majority_fraction >= COLLAPSE_MAJORITY || narrow {
        findings.push(finding(Cause::Collapsed, NAME, summary_line.clone(), String::new()));
    } else if let Some(f) = stopped_short(ctx, history.len(), e)? {
        findings.push(f);
    } else if chosen == history.len() && history.len() >= 3 {
        let tail = &history[history.len() - 3..];
        if tail.windows(2).all(|w| w[1].val_loss < w[0].val_loss) {
            findings.push(finding(
                Cause::TooFewEpochs,
                NAME,
                format!(
                    "the val loss was still falling at the last epoch ({})",
                    tail.iter()
                        .map(|t| format!("{:.3}", t.val_loss))
                        .collect::<Vec<_>>()
                        .join(" -> ")
                ),
                ctx.set("epochs", 2 * history.len()),
            ));
        }
    }
    let per_epoch: Vec<_> = history
        .iter()
        .map(|h| {
            json!({"epoch": h.epoch, "majority": h.val_majority_fraction, "p_min": h.val_probability_min,
                   "p_max": h.val_probability_max, "train_loss": h.train_loss, "val_loss": h.val_loss,
                   "train_accuracy": h.train_accuracy, "val_accuracy": h.val_accuracy})
        })
        .collect();
    Ok(result(
        NAME,
        summary_line,
        findings,
        &[Cause::Collapsed, Cause::TooFewEpochs],
        json!({"chosen_epoch": chosen, "epochs": per_epoch}),
    ))
}

/// Training that ran fewer steps than the `baseline` check's short run and ended worse than
/// it on held-out rows: it stopped before it learned (blocking when its val loss is still
/// near chance's).
fn stopped_short(ctx: &Ctx<'_>, epochs: usize, e: &Epoch) -> Result<Option<Finding>> {
    let Some((model, taken)) = &ctx.baseline_model else {
        return Ok(None);
    };
    let per_epoch = ctx.steps_per_epoch().max(1);
    let steps = epochs * per_epoch;
    if steps >= *taken {
        return Ok(None);
    }
    let probe = probe::score(ctx.data, model, &ctx.held_out(), false)?;
    // NaN on either side is no evidence.
    let better = probe.loss < e.val_loss - 0.02;
    if !better {
        return Ok(None);
    }
    let chance = (ctx.data.classes.len().max(2) as f64).ln();
    let wanted = (2 * epochs).max((10 * taken).div_ceil(per_epoch));
    Ok(Some(Finding {
        cause: Cause::TooFewEpochs,
        check: NAME,
        evidence: format!(
            "training ran {steps} steps ({epochs} epoch(s) of {per_epoch}) and ended at val loss {:.3} (chance \
             {chance:.3}); the baseline check's {taken} steps of the same settings reach {:.3}",
            e.val_loss, probe.loss
        ),
        change: ctx.set("epochs", wanted),
        blocking: e.val_loss >= 0.95 * chance,
    }))
}
