//! `learning_curve`: train on growing subsets of `train`, and read the curve of training and
//! held-out error: underfitting, overfitting, and whether more data still helps.

use anyhow::Result;
use serde_json::json;

use crate::diagnose::checks::{Ctx, finding, result, spread};
use crate::diagnose::probe::{self, Data};
use crate::diagnose::{Cause, CheckResult, Finding};

/// The check's name, as `--check` takes it.
pub const NAME: &str = "learning_curve";

/// One point of a learning curve.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CurvePoint {
    pub fraction: f64,
    pub rows: usize,
    pub train_error: f64,
    pub val_error: f64,
}

/// Reads a learning curve: labels without signal (the smallest subset memorized, held-out
/// error at chance at every size), underfitting (training error near chance), overfitting (a
/// large gap at full size), and whether more data still helps (held-out error falling).
pub fn read_curve(points: &[CurvePoint], chance: f64) -> Vec<(Cause, String)> {
    let mut out = Vec::new();
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return out;
    };
    if !(last.train_error.is_finite() && last.val_error.is_finite()) {
        return out;
    }
    // Small subsets are memorized, yet what is learnt never carries to held-out rows: the
    // labels are not a function of the images (shuffled, from a wrong source).
    let memorized = first.train_error <= 0.25 * chance;
    if memorized && points.iter().all(|p| p.val_error >= 0.9 * chance) {
        out.push((
            Cause::LabelsWithoutSignal,
            format!(
                "the model fits {} training rows (training error {:.3}), yet held-out error stays at chance \
                 ({chance:.3}) at every training-set size: {}",
                first.rows,
                first.train_error,
                points
                    .iter()
                    .map(|p| format!("{:.3} at {:.0}%", p.val_error, 100.0 * p.fraction))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        return out;
    }
    if last.train_error > 0.8 * chance {
        out.push((
            Cause::Underfitting,
            format!(
                "training error {:.3} on all of train is near chance ({chance:.3}): the model does not even fit \
                 what it sees",
                last.train_error
            ),
        ));
        return out;
    }
    let gap = last.val_error - last.train_error;
    if gap > 0.15 {
        out.push((
            Cause::Overfitting,
            format!(
                "held-out error {:.3} vs training error {:.3} at full size: a gap of {gap:.3}",
                last.val_error, last.train_error
            ),
        ));
    }
    let mid = points.get(1).unwrap_or(first);
    if mid.val_error - last.val_error > 0.03 {
        out.push((
            Cause::MoreDataHelps,
            format!(
                "held-out error still falls with more data: {:.3} at {:.0}% of train, {:.3} at 100%",
                mid.val_error,
                100.0 * mid.fraction,
                last.val_error
            ),
        ));
    }
    out
}

/// Train on growing subsets: train and held-out error per size.
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let steps = (ctx.recipe.train.epochs as usize * ctx.steps_per_epoch()).clamp(20, 100);
    let mut rows = ctx.data.train.clone();
    // A seeded shuffle, so each subset is a random sample and contains the smaller ones.
    let mut state = ctx.recipe.seed ^ 0x5eed;
    for i in (1..rows.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rows.swap(i, ((state >> 33) % (i as u64 + 1)) as usize);
    }
    let held = ctx.held_out();
    let mut points = Vec::new();
    let mut diverged_at = Vec::new();
    for fraction in [0.1, 0.33, 0.55, 0.78, 1.0] {
        let n =
            ((rows.len() as f64 * fraction).round() as usize).clamp(ctx.data.classes.len().min(rows.len()), rows.len());
        let subset = &rows[..n];
        let (model, _) = ctx.fit(subset, steps, false)?;
        let t = probe::score(ctx.data, &model, &Data::sample(subset, 512), false)?;
        let v = probe::score(ctx.data, &model, &held, false)?;
        diverged_at.push(t.non_finite > 0 || v.non_finite > 0);
        points.push(CurvePoint {
            fraction,
            rows: n,
            train_error: 1.0 - t.accuracy,
            val_error: 1.0 - v.accuracy,
        });
    }
    let mut counts = vec![0usize; ctx.data.classes.len()];
    for &i in &ctx.data.train {
        counts[ctx.data.labels[i] as usize] += 1;
    }
    let chance = 1.0 - *counts.iter().max().unwrap_or(&0) as f64 / ctx.data.train.len().max(1) as f64;
    let diverged: Vec<String> = points
        .iter()
        .zip(&diverged_at)
        .filter(|(_, d)| **d)
        .map(|(p, _)| format!("{:.0}%", 100.0 * p.fraction))
        .collect();
    let mut readings = if diverged.is_empty() {
        read_curve(&points, chance)
    } else {
        Vec::new()
    };
    // The curve's runs are short and see no augmentation: when the trained run's own history
    // shows no overfitting, that is the stronger evidence.
    let before = readings.len();
    if spread::trained_overfits(ctx) == Some(false) {
        readings.retain(|(cause, _)| *cause != Cause::Overfitting);
    }
    let discounted = readings.len() < before;
    let mut findings: Vec<Finding> = readings
        .into_iter()
        .map(|(cause, evidence)| {
            let change = match cause {
                Cause::Underfitting if ctx.recipe.train.l2 > 0.0 => {
                    format!(
                        "{} (or more epochs, a larger model)",
                        ctx.set("l2", ctx.recipe.train.l2 / 10.0)
                    )
                }
                Cause::Underfitting => "train longer or use a larger model".to_string(),
                Cause::Overfitting => ctx.regularize().join(", or "),
                // The cause's own change (where the labels come from).
                Cause::LabelsWithoutSignal => String::new(),
                _ => "collect more labelled images".to_string(),
            };
            finding(cause, NAME, evidence, change)
        })
        .collect();
    if !diverged.is_empty() {
        findings.push(finding(
            Cause::LearningRateTooHigh,
            NAME,
            format!(
                "training diverged at {} of train: no curve to read",
                diverged.join(", ")
            ),
            String::new(),
        ));
    }
    let mut summary = format!(
        "{steps} steps per size; held-out error {} ; train error {} (10%..100% of train)",
        points
            .iter()
            .map(|p| format!("{:.2}", p.val_error))
            .collect::<Vec<_>>()
            .join(" "),
        points
            .iter()
            .map(|p| format!("{:.2}", p.train_error))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if discounted {
        summary
            .push_str("; the gap at full size is the short runs' (no augmentation): the trained run does not overfit");
    }
    Ok(result(
        NAME,
        summary,
        findings,
        &[Cause::LabelsWithoutSignal, Cause::Underfitting, Cause::Overfitting],
        json!({"steps": steps, "chance_error": chance, "points": points}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(train: [f64; 5], val: [f64; 5]) -> Vec<CurvePoint> {
        [0.1, 0.33, 0.55, 0.78, 1.0]
            .iter()
            .enumerate()
            .map(|(i, &f)| CurvePoint {
                fraction: f,
                rows: (1000.0 * f) as usize,
                train_error: train[i],
                val_error: val[i],
            })
            .collect()
    }

    #[test]
    fn learning_curves_are_read() {
        let causes = |c: Vec<(Cause, String)>| c.into_iter().map(|(c, _)| c).collect::<Vec<_>>();
        // Near chance everywhere: underfitting, and nothing else is claimed.
        let under = read_curve(&curve([0.48; 5], [0.5; 5]), 0.5);
        assert_eq!(causes(under), vec![Cause::Underfitting]);
        // Memorizes, generalizes badly, but improves with data.
        let over = read_curve(
            &curve([0.0, 0.0, 0.02, 0.03, 0.05], [0.45, 0.42, 0.38, 0.36, 0.33]),
            0.5,
        );
        assert_eq!(causes(over), vec![Cause::Overfitting, Cause::MoreDataHelps]);
        // Healthy and saturated.
        assert!(read_curve(&curve([0.2; 5], [0.25; 5]), 0.5).is_empty());
        // Small sets memorized, held-out error at chance at every size: the labels.
        let noise = read_curve(&curve([0.0, 0.2, 0.3, 0.35, 0.4], [0.5, 0.49, 0.51, 0.48, 0.5]), 0.5);
        assert_eq!(causes(noise), vec![Cause::LabelsWithoutSignal]);
        // The same held-out errors without memorizing anything: underfitting, not the labels.
        let under = read_curve(&curve([0.3, 0.4, 0.45, 0.45, 0.45], [0.5, 0.49, 0.51, 0.48, 0.5]), 0.5);
        assert_eq!(causes(under), vec![Cause::Underfitting]);
    }
}
