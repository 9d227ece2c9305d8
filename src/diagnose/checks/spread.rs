//! `spread`: the trained model's predictions per epoch, from the `train` stage's history.

use anyhow::Result;
use serde_json::json;

use crate::check::metrics::COLLAPSE_MAJORITY;
use crate::diagnose::checks::{Ctx, finding, result};
use crate::diagnose::probe;
use crate::diagnose::{Cause, CheckResult, Finding, Status};
use crate::stage::train::Epoch;

/// The check's name, as `--check` takes it.
pub const NAME: &str = "spread";

/// Outputs hover near chance when every probability lies within this, divided by the number
/// of classes K, of 1/K: 0.35..0.65 for two classes. The seed's outputs (0.50, 0.45) do; the
/// healthy example's (0.04..1.00) are far outside.
const HOVER_BAND: f64 = 0.3;

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
    let symptom = if diverged {
        Some(Cause::Collapsed)
    } else {
        symptom(e.val_majority_fraction, e.val_probability_min, e.val_probability_max, k)
    };
    if symptom == Some(Cause::Collapsed) {
        findings.push(finding(Cause::Collapsed, NAME, summary_line.clone(), String::new()));
    } else {
        if symptom == Some(Cause::Hovering) {
            let band = HOVER_BAND / k;
            let evidence = format!(
                "every val probability of the trained model (epoch {chosen}) lies within {:.2}..{:.2}, no \
                 further than {band:.2} from chance (1/{k}), though it predicts more than one class ({:.1}% as \
                 its most common): it barely tells the classes apart. Training has not moved its outputs; the \
                 usual causes, each with its check: an L2 penalty that outweighs the data (`regularization`), a \
                 learning rate too low (`lr_range`), too few steps (`spread`), inputs the model does not use \
                 (`baseline`); what they found ranks above this",
                e.val_probability_min,
                e.val_probability_max,
                100.0 * e.val_majority_fraction
            );
            findings.push(finding(Cause::Hovering, NAME, evidence, String::new()));
        }
        findings.extend(too_few_epochs(ctx, &history, chosen, e)?);
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
        &[Cause::Collapsed, Cause::Hovering, Cause::TooFewEpochs],
        json!({"chosen_epoch": chosen, "epochs": per_epoch}),
    ))
}

/// The trained run's chosen epoch when its val predictions are healthy (it did not diverge,
/// and they are neither collapsed nor hovering): evidence that the configured training
/// works, whatever a short probe suggests. `None` untrained or unhealthy.
pub fn learned(ctx: &Ctx<'_>) -> Option<Epoch> {
    let summary = ctx.trained.as_ref()?;
    let history: Vec<Epoch> = serde_json::from_value(summary["history"].clone()).ok()?;
    let chosen = summary["best_epoch"].as_u64().unwrap_or(history.len() as u64) as usize;
    let e = history.get(chosen.saturating_sub(1))?;
    let diverged = summary["diverged"].as_bool().unwrap_or(false) || !e.val_probability_min.is_finite();
    let k = ctx.data.classes.len() as f64;
    let healthy = symptom(e.val_majority_fraction, e.val_probability_min, e.val_probability_max, k).is_none();
    (!diverged && healthy).then(|| e.clone())
}

/// The symptom the trained model's val predictions show: one class for nearly all of them
/// ([`Cause::Collapsed`]), or every probability near 1/K though more than one class is
/// predicted ([`Cause::Hovering`], the seed's 0.50 and 0.45); `None` for neither. `k` is the
/// number of classes.
pub fn symptom(majority: f64, p_min: f64, p_max: f64, k: f64) -> Option<Cause> {
    let center = 1.0 / k;
    let band = HOVER_BAND / k;
    if majority >= COLLAPSE_MAJORITY {
        Some(Cause::Collapsed)
    } else if p_min >= center - band && p_max <= center + band {
        Some(Cause::Hovering)
    } else {
        None
    }
}

/// Too few epochs: training stopped short of the baseline's run ([`stopped_short`]), or the
/// val loss still fell over the last three epochs and the last was the one kept.
fn too_few_epochs(ctx: &Ctx<'_>, history: &[Epoch], chosen: usize, e: &Epoch) -> Result<Option<Finding>> {
    if let Some(f) = stopped_short(ctx, history.len(), e)? {
        return Ok(Some(f));
    }
    if chosen != history.len() || history.len() < 3 {
        return Ok(None);
    }
    let tail = &history[history.len() - 3..];
    if !tail.windows(2).all(|w| w[1].val_loss < w[0].val_loss) {
        return Ok(None);
    }
    Ok(Some(finding(
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
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_near_chance_hover_and_one_class_collapses() {
        // The seed's outputs, 0.5004899 and 0.45264441, with both classes predicted.
        assert_eq!(symptom(0.55, 0.45264441, 0.5473551, 2.0), Some(Cause::Hovering));
        // Strong L2 over 10 epochs on the shipped photos: 0.42..0.61.
        assert_eq!(symptom(0.6, 0.42, 0.61, 2.0), Some(Cause::Hovering));
        // Everything one class, however spread.
        assert_eq!(symptom(0.97, 0.45, 0.55, 2.0), Some(Cause::Collapsed));
        assert_eq!(symptom(1.0, 0.01, 0.99, 2.0), Some(Cause::Collapsed));
        // The healthy example: 0.04..1.00; and the 4-epoch L2 case: 0.35..0.73.
        assert_eq!(symptom(0.53, 0.04, 1.0, 2.0), None);
        assert_eq!(symptom(0.65, 0.35, 0.73, 2.0), None);
        // Ten classes: near 0.1 is within 0.07..0.13.
        assert_eq!(symptom(0.2, 0.075, 0.125, 10.0), Some(Cause::Hovering));
        assert_eq!(symptom(0.2, 0.0, 0.4, 10.0), None);
    }
}
