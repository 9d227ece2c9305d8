//! `activations`: dead units and gradient norms per layer, at init and after training, and
//! units identical to another (symmetric weights).

use anyhow::Result;
use serde_json::json;

use crate::diagnose::checks::{Ctx, finding, result};
use crate::diagnose::probe::{self, Data};
use crate::diagnose::{Cause, CheckResult};
use crate::model::mlp::Activation;

/// The check's name, as `--check` takes it.
pub const NAME: &str = "activations";

/// Dead share of a layer's units from which it is a finding to improve. The healthy example
/// trains with 61% of its dense layer's 64 ReLUs dead (over 512 images, in the trained
/// model), and `leaky_relu` does not measurably beat it there (val accuracy 0.728 vs 0.735,
/// log-loss 0.540 vs 0.550): half dead is not yet a loss of capacity that matters.
const DEAD_TO_IMPROVE: f32 = 0.75;
/// Dead share from which training is broken.
const DEAD_BLOCKING: f32 = 0.9;

/// Dead units and gradient norms per layer, at init and after training; identical units.
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let rows = Data::sample(&ctx.data.train, 128);
    let init = ctx.recipe.model()?;
    let (_, at_init) = probe::probe(ctx.data, &init, &rows, ctx.l2())?;
    let run = ctx.short_run()?;
    let (trained, steps) = (&run.0, run.1);
    let (_, after) = probe::probe(ctx.data, trained, &rows, ctx.l2())?;
    let identical = probe::identical_units(trained);
    let mut findings = Vec::new();
    for (layer, dup, units) in &identical {
        if *units >= 2 && *dup * 2 >= *units {
            findings.push(finding(
                Cause::SymmetricWeights,
                NAME,
                format!(
                    "after {steps} steps, {dup} of the {units} units of `{layer}` are identical to another unit: \
                     units that start equal get equal gradients and stay equal (init: {})",
                    format!("{:?}", ctx.recipe.train.init).to_lowercase()
                ),
                ctx.set("init", ctx.good_init()),
            ));
        }
    }
    // Dead units are counted on the model that was trained, when there is one, over more
    // images: a unit silent for a batch of 128 after a short run may fire later, or for
    // other images; the trained model is what predicts.
    let many = Data::sample(&ctx.data.train, 512);
    let trained_stats = match &ctx.trained_model {
        Some(m) => Some(probe::probe(ctx.data, m, &many, ctx.l2())?.1),
        None => None,
    };
    let (dead_stats, dead_when, seen) = match &trained_stats {
        Some(s) => (s, "in the trained model".to_string(), many.len()),
        None => (&after, format!("after {steps} steps"), rows.len()),
    };
    let relu = matches!(ctx.recipe.train.activation, Activation::Relu);
    for (a, b) in at_init.layers.iter().zip(&dead_stats.layers) {
        if let (Some(d0), Some(d1)) = (a.dead_fraction, b.dead_fraction)
            && relu
            && d1 >= DEAD_TO_IMPROVE
        {
            // Most units dead waste capacity; nearly all of them break training.
            let mut f = finding(
                Cause::DeadUnits,
                NAME,
                format!(
                    "{:.0}% of the units of `{}` output 0 for every one of {} images {dead_when} ({:.0}% at init): \
                     they get no gradient and never recover",
                    100.0 * d1,
                    b.name,
                    seen,
                    100.0 * d0
                ),
                format!("{} or a lower learning rate", ctx.set("activation", "leaky_relu")),
            );
            f.blocking = d1 >= DEAD_BLOCKING;
            findings.push(f);
        }
    }
    // Gradients that grow by orders of magnitude (or stop being numbers) mean steps too large.
    let exploded: Vec<String> = at_init
        .layers
        .iter()
        .zip(&after.layers)
        .filter(|(a, b)| !b.weight_grad_norm.is_finite() || b.weight_grad_norm > 1000.0 * a.weight_grad_norm.max(1e-12))
        .map(|(a, b)| format!("`{}` {:.1e} -> {:.1e}", b.name, a.weight_grad_norm, b.weight_grad_norm))
        .collect();
    if !exploded.is_empty() {
        findings.push(finding(
            Cause::LearningRateTooHigh,
            NAME,
            format!("gradient norms exploded within {steps} steps: {}", exploded.join(", ")),
            String::new(),
        ));
    }
    let layers = |s: &crate::model::Stats| {
        s.layers
            .iter()
            .map(|l| {
                let dead = l
                    .dead_fraction
                    .map_or(String::new(), |d| format!(" dead {:.0}%", 100.0 * d));
                format!("{}{dead} grad {:.2e}", l.name, l.weight_grad_norm)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut summary = format!("init: {}; after {steps} steps: {}", layers(&at_init), layers(&after));
    if let Some(t) = &trained_stats {
        summary.push_str(&format!("; trained model: {}", layers(t)));
    }
    Ok(result(
        NAME,
        summary,
        findings,
        &[Cause::SymmetricWeights, Cause::DeadUnits],
        json!({"steps": steps, "init": at_init, "trained": after, "trained_model": trained_stats,
               "identical_units": identical.iter().map(|(l, d, u)| json!({"layer": l, "identical": d, "units": u})).collect::<Vec<_>>()}),
    ))
}
