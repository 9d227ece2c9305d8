//! The checks of `pipeline diagnose`, each a short seeded experiment on the cached data with
//! the `train` stage's own model and hyperparameters.

use anyhow::Result;
use serde_json::json;

use super::lr_range::{self, Smoother, Sweep};
use super::probe::{self, Data, Recipe, RunSpec};
use super::{Cause, CheckResult, Finding, Status};
use crate::check::metrics::{COLLAPSE_MAJORITY, COLLAPSE_SPREAD};
use crate::data::dataset::Dtype;
use crate::model::mlp::Activation;
use crate::model::net::Model;
use crate::pipeline::plan::Plan;
use crate::stage::train::Epoch;

/// What the checks share.
pub struct Ctx<'a> {
    pub plan: &'a Plan,
    pub train_name: &'a str,
    pub data: &'a Data,
    pub recipe: &'a Recipe<'a>,
    /// The `validate` stage's report, when the train stage reads one.
    pub validate: Option<serde_json::Value>,
    /// The cached `train` record's summary (history, chosen epoch), when trained.
    pub trained: Option<serde_json::Value>,
    /// Set by `data` when the inputs are far from standardized.
    pub scale_off: bool,
    /// The model `baseline` trained on real inputs and its steps, reused by `activations`.
    pub baseline_model: Option<(Model, usize)>,
}

impl Ctx<'_> {
    fn lr(&self) -> f64 {
        self.recipe.train.lr
    }

    fn l2(&self) -> f32 {
        self.recipe.train.l2 as f32
    }

    /// Mini-batches in one pass over the `train` rows.
    fn steps_per_epoch(&self) -> usize {
        self.data.train.len().div_ceil(self.recipe.batch_size().max(1))
    }

    /// The budget of the baseline and activation runs: three passes, within 30..150 steps.
    fn short_steps(&self) -> usize {
        (3 * self.steps_per_epoch()).clamp(30, 150)
    }

    /// Rows to score on: `val`, or `train` when there is no `val`.
    fn held_out(&self) -> Vec<usize> {
        let rows = if self.data.val.is_empty() {
            &self.data.train
        } else {
            &self.data.val
        };
        Data::sample(rows, 512)
    }

    /// Trains a fresh model on `rows` for `steps` with the configured hyperparameters.
    fn fit(&self, rows: &[usize], steps: usize, zero: bool) -> Result<(Model, usize)> {
        let mut model = self.recipe.model()?;
        let mut opt = self.recipe.train.optimizer_with_lr(self.lr());
        let spec = RunSpec {
            rows,
            steps,
            batch: self.recipe.batch_size(),
            l2: self.l2(),
            zero,
            lrs: None,
            seed: self.recipe.seed,
        };
        let taken = probe::run(self.data, &mut model, &mut opt, &spec, |_| true)?;
        Ok((model, taken))
    }

    /// The init that suits the configured activation.
    fn good_init(&self) -> &'static str {
        match self.recipe.train.activation {
            Activation::Tanh | Activation::Sigmoid => "xavier",
            _ => "he",
        }
    }

    fn set(&self, param: &str, value: impl std::fmt::Display) -> String {
        format!("--set {}.{param}={value}", self.train_name)
    }
}

pub fn run(name: &str, ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    match name {
        "data" => data(ctx),
        "init_loss" => init_loss(ctx),
        "baseline" => baseline(ctx),
        "overfit" => overfit(ctx),
        "lr_range" => lr_range(ctx),
        "learning_curve" => learning_curve(ctx),
        "activations" => activations(ctx),
        "spread" => spread(ctx),
        other => anyhow::bail!("unknown check `{other}`"),
    }
}

fn result(
    name: &'static str,
    summary: String,
    findings: Vec<Finding>,
    ruled_out: &[Cause],
    data: serde_json::Value,
) -> CheckResult {
    CheckResult {
        name,
        status: if findings.is_empty() {
            Status::Ok
        } else {
            Status::Finding
        },
        summary,
        // A check whose experiment failed (even when it blames another cause) rules nothing out.
        ruled_out: if findings.iter().any(|f| f.blocking) {
            Vec::new()
        } else {
            ruled_out
                .iter()
                .copied()
                .filter(|c| findings.iter().all(|f| f.cause != *c))
                .collect()
        },
        findings,
        data,
        seconds: 0.0,
    }
}

fn finding(cause: Cause, check: &'static str, evidence: String, change: String) -> Finding {
    Finding {
        blocking: cause.blocking(),
        cause,
        check,
        evidence,
        change,
    }
}

/// A learning rate rounded to one significant digit, as a user would type it (`0.0001`).
fn round_lr(lr: f64) -> String {
    if !(lr.is_finite() && lr > 0.0) {
        return format!("{lr}");
    }
    let mut e = lr.log10().floor() as i32;
    let mut m = (lr / 10f64.powi(e)).round();
    if m >= 10.0 {
        m = 1.0;
        e += 1;
    }
    format!("{:.*}", (-e).max(0) as usize, m * 10f64.powi(e))
}

/// `validate`'s errors, and whether the inputs are standardized.
fn data(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let mut findings = Vec::new();
    let mut parts = Vec::new();
    let mut ruled_out = vec![Cause::InputScale];
    if let Some(v) = &ctx.validate {
        ruled_out.push(Cause::DataErrors);
        let (errors, warnings) = (v["errors"].as_u64().unwrap_or(0), v["warnings"].as_u64().unwrap_or(0));
        parts.push(format!("validate: {errors} error(s), {warnings} warning(s)"));
        for f in v["findings"].as_array().into_iter().flatten() {
            if f["severity"] == "error" {
                findings.push(finding(
                    Cause::DataErrors,
                    "data",
                    f["message"].as_str().unwrap_or("?").to_string(),
                    f["cause"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    } else {
        parts.push("no validate report".into());
    }
    let rows = Data::sample(&ctx.data.train, 64);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    ctx.data.gather(&rows, false, &mut x, &mut y)?;
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    parts.push(format!(
        "train inputs {}: mean {mean:.3}, std {std:.3}, range {lo:.2}..{hi:.2}",
        ctx.data.dtype.name()
    ));
    if std > 5.0 || mean.abs() > 3.0 || ctx.data.dtype != Dtype::Float32 {
        ctx.scale_off = true;
        findings.push(finding(
            Cause::InputScale,
            "data",
            format!(
                "the network sees {} values with mean {mean:.1} and std {std:.1} (range {lo:.0}..{hi:.0}), not \
                 standardized inputs: units saturate, and each step moves the first layer about {:.0}x as far as \
                 it would with standardized inputs",
                ctx.data.dtype.name(),
                mean * mean + std * std
            ),
            "standardize the inputs: add a stage `normalize: {kind: normalize, input: <your last pixel stage>, \
             method: per_image}` and point `validate` at it"
                .to_string(),
        ));
    }
    ruled_out.retain(|c| !findings.iter().any(|f| f.cause == *c));
    let mut r = result(
        "data",
        parts.join("; "),
        findings,
        &[],
        json!({"mean": mean, "std": std, "min": lo, "max": hi, "dtype": ctx.data.dtype.name()}),
    );
    r.ruled_out = ruled_out;
    Ok(r)
}

/// The loss of the untrained model against −ln(1/K), the loss of guessing uniformly.
fn init_loss(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let model = ctx.recipe.model()?;
    let rows = Data::sample(&ctx.data.train, 256);
    let s = probe::score(ctx.data, &model, &rows, false)?;
    let k = ctx.data.classes.len();
    let expected = (k as f64).ln();
    let summary = format!("loss at init {:.3} vs -ln(1/{k}) = {expected:.3}", s.loss);
    let mut findings = Vec::new();
    if !s.loss.is_finite() || s.loss > 3.0 * expected {
        let (cause, change) = if ctx.scale_off {
            (Cause::InputScale, String::new())
        } else {
            (Cause::Initialization, ctx.set("init", ctx.good_init()))
        };
        findings.push(finding(
            cause,
            "init_loss",
            format!(
                "the untrained model's loss is {:.2}, {:.0}x that of uniform guessing: its first outputs are \
                 confidently wrong",
                s.loss,
                s.loss / expected
            ),
            change,
        ));
    }
    Ok(result(
        "init_loss",
        summary,
        findings,
        &[Cause::Initialization],
        json!({"loss": s.loss, "expected": expected}),
    ))
}

/// The same training on all-zero inputs: without a gap, the model ignores its inputs.
fn baseline(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let steps = ctx.short_steps();
    let (real, taken) = ctx.fit(&ctx.data.train, steps, false)?;
    let (zero, _) = ctx.fit(&ctx.data.train, steps, true)?;
    let rows = ctx.held_out();
    let r = probe::score(ctx.data, &real, &rows, false)?;
    let z = probe::score(ctx.data, &zero, &rows, true)?;
    let summary = format!(
        "after {taken} steps: held-out accuracy {:.3} with inputs vs {:.3} with zeroed inputs (loss {:.3} vs {:.3})",
        r.accuracy, z.accuracy, r.loss, z.loss
    );
    let mut findings = Vec::new();
    let uses = r.loss.is_finite() && (r.accuracy >= z.accuracy + 0.02 || r.loss < z.loss - 0.02);
    if r.non_finite > 0 {
        findings.push(finding(
            Cause::LearningRateTooHigh,
            "baseline",
            format!("training on the real images diverged within {taken} steps: its predictions are NaN"),
            String::new(),
        ));
    } else if !uses {
        findings.push(finding(
            Cause::NotUsingInputs,
            "baseline",
            format!(
                "trained on the real images it does no better than on blank ones (accuracy {:.3} vs {:.3}, loss \
                 {:.3} vs {:.3})",
                r.accuracy, z.accuracy, r.loss, z.loss
            ),
            String::new(),
        ));
    }
    ctx.baseline_model = Some((real, taken));
    Ok(result(
        "baseline",
        summary,
        findings,
        &[Cause::NotUsingInputs],
        json!({"steps": taken, "real": r, "zeroed": z}),
    ))
}

/// One example per class, then 2, 8, 32: a working model memorizes them.
fn overfit(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
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
                "overfit",
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
        "overfit",
        format!("memorize tiny sets: {summary}"),
        findings,
        &[Cause::CannotFit],
        json!({"max_steps": MAX_STEPS, "fit_loss": FIT_LOSS, "sets": tried}),
    ))
}

/// Leslie Smith's range test with the configured optimizer: where is the valley?
fn lr_range(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
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
        findings.push(finding(cause, "lr_range", evidence, ctx.set("lr", round_lr(suggested))));
    }
    let data = serde_json::to_value(&sweep)?;
    Ok(result(
        "lr_range",
        summary,
        findings,
        &[Cause::LearningRateTooHigh, Cause::LearningRateTooLow],
        data,
    ))
}

/// One point of a learning curve.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CurvePoint {
    pub fraction: f64,
    pub rows: usize,
    pub train_error: f64,
    pub val_error: f64,
}

/// Reads a learning curve: underfitting (training error near chance), overfitting (a large
/// gap at full size), and whether more data still helps (held-out error falling).
pub fn read_curve(points: &[CurvePoint], chance: f64) -> Vec<(Cause, String)> {
    let mut out = Vec::new();
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return out;
    };
    if !(last.train_error.is_finite() && last.val_error.is_finite()) {
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
fn learning_curve(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
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
    let readings = if diverged.is_empty() {
        read_curve(&points, chance)
    } else {
        Vec::new()
    };
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
                Cause::Overfitting => format!(
                    "regularize: {}, or `augment: [hflip, crop_pad]`",
                    ctx.set(
                        "l2",
                        if ctx.recipe.train.l2 > 0.0 {
                            ctx.recipe.train.l2 * 10.0
                        } else {
                            0.001
                        }
                    )
                ),
                _ => "collect more labelled images".to_string(),
            };
            finding(cause, "learning_curve", evidence, change)
        })
        .collect();
    if !diverged.is_empty() {
        findings.push(finding(
            Cause::LearningRateTooHigh,
            "learning_curve",
            format!(
                "training diverged at {} of train: no curve to read",
                diverged.join(", ")
            ),
            String::new(),
        ));
    }
    let summary = format!(
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
    Ok(result(
        "learning_curve",
        summary,
        findings,
        &[Cause::Underfitting, Cause::Overfitting],
        json!({"steps": steps, "chance_error": chance, "points": points}),
    ))
}

/// Dead units and gradient norms per layer, at init and after training; identical units.
fn activations(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let rows = Data::sample(&ctx.data.train, 128);
    let init = ctx.recipe.model()?;
    let (_, at_init) = probe::probe(ctx.data, &init, &rows, ctx.l2())?;
    let (trained, steps) = match ctx.baseline_model.take() {
        Some(m) => m,
        None => ctx.fit(&ctx.data.train, ctx.short_steps(), false)?,
    };
    let (_, after) = probe::probe(ctx.data, &trained, &rows, ctx.l2())?;
    let identical = probe::identical_units(&trained);
    let mut findings = Vec::new();
    for (layer, dup, units) in &identical {
        if *units >= 2 && *dup * 2 >= *units {
            findings.push(finding(
                Cause::SymmetricWeights,
                "activations",
                format!(
                    "after {steps} steps, {dup} of the {units} units of `{layer}` are identical to another unit: \
                     units that start equal get equal gradients and stay equal (init: {})",
                    format!("{:?}", ctx.recipe.train.init).to_lowercase()
                ),
                ctx.set("init", ctx.good_init()),
            ));
        }
    }
    let relu = matches!(ctx.recipe.train.activation, Activation::Relu);
    for (a, b) in at_init.layers.iter().zip(&after.layers) {
        if let (Some(d0), Some(d1)) = (a.dead_fraction, b.dead_fraction)
            && relu
            && d1 >= 0.5
        {
            // Many dead units waste capacity; nearly all of them break training.
            let mut f = finding(
                Cause::DeadUnits,
                "activations",
                format!(
                    "{:.0}% of the units of `{}` output 0 for every image of a batch after {steps} steps ({:.0}% at \
                     init): they get no gradient and never recover",
                    100.0 * d1,
                    b.name,
                    100.0 * d0
                ),
                format!("{} or a lower learning rate", ctx.set("activation", "leaky_relu")),
            );
            f.blocking = d1 >= 0.9;
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
            "activations",
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
    let summary = format!("init: {}; after {steps} steps: {}", layers(&at_init), layers(&after));
    Ok(result(
        "activations",
        summary,
        findings,
        &[Cause::SymmetricWeights, Cause::DeadUnits],
        json!({"steps": steps, "init": at_init, "trained": after,
               "identical_units": identical.iter().map(|(l, d, u)| json!({"layer": l, "identical": d, "units": u})).collect::<Vec<_>>()}),
    ))
}

/// The trained model's predictions per epoch, from the `train` stage's history.
fn spread(ctx: &mut Ctx<'_>) -> Result<CheckResult> {
    let Some(summary) = &ctx.trained else {
        return Ok(CheckResult {
            name: "spread",
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
        findings.push(finding(Cause::Collapsed, "spread", summary_line.clone(), String::new()));
    } else if chosen == history.len() && history.len() >= 3 {
        let tail = &history[history.len() - 3..];
        if tail.windows(2).all(|w| w[1].val_loss < w[0].val_loss) {
            findings.push(finding(
                Cause::TooFewEpochs,
                "spread",
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
        "spread",
        summary_line,
        findings,
        &[Cause::Collapsed, Cause::TooFewEpochs],
        json!({"chosen_epoch": chosen, "epochs": per_epoch}),
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
    }

    #[test]
    fn learning_rates_are_rounded_for_typing() {
        assert_eq!(round_lr(0.000_123), "0.0001");
        assert_eq!(round_lr(0.0047), "0.005");
        assert_eq!(round_lr(0.1), "0.1");
    }
}
