//! `overfit`: one example per class, then 2, 8, 32: a working model memorizes them.

use anyhow::Result;
use serde_json::json;

use crate::diagnose::checks::{Ctx, finding, result};
use crate::diagnose::probe::{self, RunSpec};
use crate::diagnose::{Cause, CheckResult};
use crate::model::net::Model;
use crate::stage::train::{Arch, Train};

/// The check's name, as `--check` takes it.
pub const NAME: &str = "overfit";

const MAX_STEPS: usize = 200;
const FIT_LOSS: f32 = 0.05;

/// Trains `model` on `rows` full-batch without L2 for up to [`MAX_STEPS`]: the step at which
/// it fitted them (loss under [`FIT_LOSS`], every row right), if it did, and its last loss.
fn memorize(ctx: &Ctx<'_>, model: &mut Model, rows: &[usize]) -> Result<(Option<usize>, f32)> {
    let mut opt = ctx.recipe.train.optimizer_with_lr(ctx.lr());
    let spec = RunSpec {
        rows,
        steps: MAX_STEPS,
        batch: rows.len(),
        l2: 0.0,
        zero: false,
        lrs: None,
        seed: ctx.recipe.seed,
    };
    let mut fitted_at = None;
    let mut last_loss = f32::NAN;
    probe::run(ctx.data, model, &mut opt, &spec, |s| {
        last_loss = s.loss;
        if s.loss < FIT_LOSS && s.stats.correct == s.stats.batch {
            fitted_at = Some(s.index);
            return false;
        }
        true
    })?;
    Ok((fitted_at, last_loss))
}

/// The recipe's model made wider (every layer 4x, at least 32, at most 1024 units or
/// channels; a logistic regression becomes an MLP of 128), and the `--set` change that says so.
fn wider(ctx: &Ctx<'_>) -> (Train, String) {
    let mut train = ctx.recipe.train.clone();
    let widen = |sizes: &mut Vec<usize>| sizes.iter_mut().for_each(|w| *w = (4 * *w).clamp(32, 1024));
    let list = |sizes: &[usize]| format!("[{}]", sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(","));
    let change = match train.arch {
        Arch::Logistic => {
            (train.arch, train.hidden) = (Arch::Mlp, vec![128]);
            format!("{} {}", ctx.set("model", "mlp"), ctx.set("hidden", "[128]"))
        }
        Arch::Mlp => {
            widen(&mut train.hidden);
            ctx.set("hidden", list(&train.hidden))
        }
        Arch::Cnn => {
            widen(&mut train.blocks);
            widen(&mut train.hidden);
            let blocks = ctx.set("blocks", list(&train.blocks));
            if train.hidden.is_empty() {
                blocks
            } else {
                format!("{blocks} {}", ctx.set("hidden", list(&train.hidden)))
            }
        }
        Arch::Resnet => {
            widen(&mut train.widths);
            ctx.set("widths", list(&train.widths))
        }
    };
    (train, change)
}

/// One example per class, then 2, 8, 32: a working model memorizes them. When it does not
/// (and nothing else explains it), the same rows are given to a wider model: if that one
/// memorizes them, the model is too small.
pub fn run(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let mut tried = Vec::new();
    let mut findings = Vec::new();
    for n in [1, 2, 8, 32] {
        let rows = ctx.data.per_class(n);
        let mut model = ctx.recipe.model()?;
        let (fitted_at, last_loss) = memorize(ctx, &mut model, &rows)?;
        tried.push(json!({"per_class": n, "rows": rows.len(), "fitted_at_step": fitted_at, "loss": last_loss}));
        if fitted_at.is_none() {
            let score = probe::score(ctx.data, &model, &rows, false)?;
            let (cause, why, change) = if !last_loss.is_finite() || !score.loss.is_finite() {
                (
                    Cause::LearningRateTooHigh,
                    "the loss diverged".to_string(),
                    String::new(),
                )
            } else if ctx.scale_off {
                (Cause::InputScale, String::new(), String::new())
            } else {
                let (train, change) = wider(ctx);
                let spec = train.spec(ctx.data.shape, ctx.data.classes.len());
                let mut wide = Model::new(&spec, ctx.recipe.seed).map_err(|e| anyhow::anyhow!("{e}"))?;
                let (wide_fitted, _) = memorize(ctx, &mut wide, &rows)?;
                tried.push(json!({"per_class": n, "rows": rows.len(), "wider": change, "fitted_at_step": wide_fitted}));
                match wide_fitted {
                    Some(step) => (
                        Cause::ModelTooSmall,
                        format!("a wider model (`{change}`) fits them in {} steps", step + 1),
                        change,
                    ),
                    None => (
                        Cause::CannotFit,
                        format!("nor does a wider one (`{change}`)"),
                        "a model that cannot memorize a few images has a broken path: check the other findings".into(),
                    ),
                }
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
        .map(|t| match (t["fitted_at_step"].as_u64(), t["wider"].as_str()) {
            (Some(s), None) => format!("{}/class in {} steps", t["per_class"], s + 1),
            (None, None) => format!("{}/class NOT fitted", t["per_class"]),
            (Some(s), Some(_)) => format!("a wider model in {} steps", s + 1),
            (None, Some(_)) => "nor a wider model".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok(result(
        NAME,
        format!("memorize tiny sets: {summary}"),
        findings,
        &[Cause::CannotFit, Cause::ModelTooSmall],
        json!({"max_steps": MAX_STEPS, "fit_loss": FIT_LOSS, "sets": tried}),
    ))
}
