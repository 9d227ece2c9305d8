//! `regularization`: how much of the training loss is the L2 penalty. When the penalty
//! outweighs the data's own loss, training minimizes the weights instead of the error: the
//! weights and logits are pinned near zero and every probability hovers near 1/K.

use anyhow::Result;
use serde_json::json;

use crate::diagnose::checks::{Ctx, result, round_lr};
use crate::diagnose::probe::{self, Data};
use crate::diagnose::{Cause, CheckResult, Finding};

/// The check's name, as `--check` takes it.
pub const NAME: &str = "regularization";

/// The penalty's share of the loss from which it is a finding.
const DOMINANT: f64 = 0.5;
/// The share the suggested `l2` aims at (with the weights as they are now).
const AIM: f64 = 0.05;
/// Held-out probabilities within this distance of 1/K count as hovering there.
const HOVER: f64 = 0.15;

/// Measures the L2 penalty's share of the loss on the trained model (or, untrained, on a
/// short training run with the configured settings).
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let l2 = ctx.l2();
    if l2 <= 0.0 {
        return Ok(result(
            NAME,
            "no L2 penalty (`l2: 0`)".into(),
            Vec::new(),
            &[Cause::L2TooStrong],
            json!({"l2": 0.0}),
        ));
    }
    let run;
    let (model, which) = match &ctx.trained_model {
        Some(m) => (m, "the trained model".to_string()),
        None => {
            run = ctx.short_run()?;
            (&run.0, format!("after {} steps", run.1))
        }
    };
    let rows = Data::sample(&ctx.data.train, 512);
    let (total, _) = probe::probe(ctx.data, model, &rows, l2)?;
    let (data_loss, _) = probe::probe(ctx.data, model, &rows, 0.0)?;
    let (total, data_loss) = (f64::from(total), f64::from(data_loss));
    let penalty = (total - data_loss).max(0.0);
    let share = if total > 0.0 { penalty / total } else { 0.0 };
    let held = probe::score(ctx.data, model, &ctx.held_out(), false)?;
    let k = ctx.data.classes.len().max(2) as f64;
    let chance = k.ln();
    let hovering = (held.p_min - 1.0 / k).abs() <= HOVER && (held.p_max - 1.0 / k).abs() <= HOVER;
    let summary = format!(
        "{which}: L2 penalty {penalty:.3} of the training loss {total:.3} ({:.0}%; l2 {l2}); held-out \
         probabilities {:.2}..{:.2}",
        100.0 * share,
        held.p_min,
        held.p_max
    );
    let mut findings = Vec::new();
    // A penalty that is most of the loss matters when the data's loss is left unfitted (or
    // the predictions hover near 1/K); on data the model fits anyway it is only large.
    let unfitted = data_loss >= 0.5 * chance || hovering;
    if total.is_finite() && share >= DOMINANT && unfitted {
        // With the weights as they are, this l2 makes the penalty AIM of the loss; smaller
        // weights grow back once the penalty eases, so it is an upper bound.
        let suggested = f64::from(l2) * AIM * data_loss / penalty.max(f64::MIN_POSITIVE);
        let near_chance = data_loss >= 0.9 * chance;
        findings.push(Finding {
            cause: Cause::L2TooStrong,
            check: NAME,
            evidence: format!(
                "{which}: the L2 term is {:.0}% of the training loss ({penalty:.3} of {total:.3}); the data's own loss \
                 is {data_loss:.3} (chance {chance:.3}) and held-out probabilities stay {:.2}..{:.2}: training \
                 shrinks the weights instead of fitting the images",
                100.0 * share,
                held.p_min,
                held.p_max
            ),
            change: ctx.set("l2", round_lr(suggested)),
            blocking: near_chance || hovering,
        });
    }
    Ok(result(
        NAME,
        summary,
        findings,
        &[Cause::L2TooStrong],
        json!({"l2": l2, "penalty": penalty, "loss": total, "data_loss": data_loss, "share": share,
               "held_out": held, "model": which}),
    ))
}
