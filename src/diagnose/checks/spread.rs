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
    let Some(Trained {
        history,
        chosen,
        diverged,
    }) = Trained::read(summary)
    else {
        anyhow::bail!("the training history is empty or unreadable");
    };
    let e = &history[chosen - 1];
    let k = ctx.data.classes.len() as f64;
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
        findings.extend(overfitting(ctx, &history));
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
        &[
            Cause::Collapsed,
            Cause::Hovering,
            Cause::TooFewEpochs,
            Cause::Overfitting,
        ],
        json!({"chosen_epoch": chosen, "epochs": per_epoch}),
    ))
}

/// A trained run, from its record's summary: its history, the epoch it kept (from 1, an
/// epoch of the history) and whether it diverged (its loss, or the kept epoch's predictions,
/// not numbers).
pub struct Trained {
    pub history: Vec<Epoch>,
    pub chosen: usize,
    pub diverged: bool,
}

impl Trained {
    /// `None` when the summary holds no readable, non-empty history.
    pub fn read(summary: &serde_json::Value) -> Option<Trained> {
        let history: Vec<Epoch> = serde_json::from_value(summary["history"].clone()).ok()?;
        if history.is_empty() {
            return None;
        }
        let chosen = (summary["best_epoch"].as_u64().unwrap_or(history.len() as u64) as usize).clamp(1, history.len());
        let e = history.get(chosen - 1)?;
        let diverged = summary["diverged"].as_bool().unwrap_or(false) || !e.val_probability_min.is_finite();
        Some(Trained {
            history,
            chosen,
            diverged,
        })
    }
}

/// The trained run's chosen epoch when its val predictions are healthy (it did not diverge,
/// and they are neither collapsed nor hovering): evidence that the configured training
/// works, whatever a short probe suggests. `None` untrained or unhealthy.
pub fn learned(ctx: &Ctx<'_>) -> Option<Epoch> {
    let t = Trained::read(ctx.trained.as_ref()?)?;
    let (e, diverged) = (&t.history[t.chosen - 1], t.diverged);
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

/// Overfitting, read from the history: by the last epoch the training accuracy has pulled
/// away from val's (ahead by more than [`OVERFIT_GAP`], and by [`GAP_GROWTH`] more than at the
/// epoch of the lowest val loss), while the val loss climbed from that lowest point by a
/// tenth or more: the model learns its training images, not the classes.
fn overfitting(ctx: &Ctx<'_>, history: &[Epoch]) -> Option<Finding> {
    let (last, low) = (history.last()?, &history[overfits_after(history)?]);
    let gap = |e: &Epoch| e.train_accuracy - e.val_accuracy;
    Some(finding(
        Cause::Overfitting,
        NAME,
        format!(
            "by epoch {} the training accuracy is {:.1}% against val's {:.1}% (a gap of {:.1} points, {:.1} at \
             epoch {}), and the val loss climbed from {:.3} at epoch {} to {:.3}: the model learns its training \
             images rather than the classes",
            last.epoch,
            100.0 * last.train_accuracy,
            100.0 * last.val_accuracy,
            100.0 * gap(last),
            100.0 * gap(low),
            low.epoch,
            low.val_loss,
            low.epoch,
            last.val_loss
        ),
        ctx.regularize().join(", or "),
    ))
}

/// Whether the trained run overfits (see [`overfitting`]); `None` untrained.
pub fn trained_overfits(ctx: &Ctx<'_>) -> Option<bool> {
    Some(overfits_after(&Trained::read(ctx.trained.as_ref()?)?.history).is_some())
}

/// The epoch (an index) of the lowest val loss, when the history overfits after it (see
/// [`overfitting`]).
fn overfits_after(history: &[Epoch]) -> Option<usize> {
    let last = history.last()?;
    let (at, low) = history
        .iter()
        .enumerate()
        .filter(|(_, e)| e.val_loss.is_finite())
        .min_by(|a, b| a.1.val_loss.total_cmp(&b.1.val_loss))?;
    let gap = |e: &Epoch| e.train_accuracy - e.val_accuracy;
    let grew = gap(last) > OVERFIT_GAP && gap(last) - gap(low) > GAP_GROWTH;
    (at + 1 < history.len() && grew && last.val_loss >= 1.1 * low.val_loss).then_some(at)
}

/// The gap between train and val accuracy (a fraction) past which a run overfits.
const OVERFIT_GAP: f64 = 0.15;
/// How much more that gap must be at the end than at the lowest val loss.
const GAP_GROWTH: f64 = 0.05;

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

    fn epoch(epoch: u64, train_accuracy: f64, val_accuracy: f64, val_loss: f64) -> Epoch {
        Epoch {
            epoch,
            lr: 0.001,
            train_loss: 0.5,
            train_accuracy,
            val_loss,
            val_accuracy,
            val_probability_min: 0.0,
            val_probability_max: 1.0,
            val_majority_fraction: 0.5,
            dead_fraction: Vec::new(),
            grad_norm: Vec::new(),
        }
    }

    #[test]
    fn a_growing_gap_with_a_climbing_val_loss_overfits() {
        // The val loss lowest at epoch 2, then climbing while train accuracy runs away.
        let over = [
            epoch(1, 0.60, 0.58, 0.66),
            epoch(2, 0.70, 0.66, 0.60),
            epoch(3, 0.85, 0.68, 0.64),
            epoch(4, 0.97, 0.67, 0.80),
        ];
        assert_eq!(overfits_after(&over), Some(1));
        // A gap that was already there (the augmented train accuracy below val's is no gap).
        let steady = [epoch(1, 0.80, 0.60, 0.60), epoch(2, 0.82, 0.61, 0.70)];
        assert_eq!(overfits_after(&steady), None);
        // The val loss still at its lowest at the end, or barely above it: not (yet).
        let mut falling = over.clone();
        falling[3].val_loss = 0.59;
        assert_eq!(overfits_after(&falling), None);
        let mut flat = over.clone();
        flat[3].val_loss = 0.63;
        assert_eq!(overfits_after(&flat), None);
    }

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
