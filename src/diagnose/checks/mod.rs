//! The checks of `pipeline diagnose`, each a short seeded experiment on the cached data with
//! the `train` stage's own model and hyperparameters: one file per check, and here what they
//! share (the [`Ctx`] they run in, and how a result and a finding are made). The table of
//! checks, in the order they run, is in [`crate::diagnose::diagnosis`].

pub mod activations;
pub mod baseline;
pub mod data;
pub mod init_loss;
pub mod learning_curve;
pub mod lr_range;
pub mod overfit;
pub mod regularization;
pub mod spread;

use std::borrow::Cow;

use anyhow::Result;

use crate::diagnose::probe::{self, Data, Recipe, RunSpec};
use crate::diagnose::{Cause, CheckResult, Finding, Status};
use crate::model::mlp::Activation;
use crate::model::net::Model;
use crate::pipeline::plan::Plan;

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
    /// The trained model itself, when trained.
    pub trained_model: Option<Model>,
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

    /// The `baseline` check's short run of the configured training (its model and steps), or
    /// a new one like it when `baseline` did not run.
    fn short_run(&self) -> Result<Cow<'_, (Model, usize)>> {
        Ok(match &self.baseline_model {
            Some(run) => Cow::Borrowed(run),
            None => Cow::Owned(self.fit(&self.data.train, self.short_steps(), false)?),
        })
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

    /// The changes against overfitting, the first the one to try: augmentation when the
    /// recipe has none (flips and shifts), then a stronger L2 (tenfold, or 0.001 from none).
    fn regularize(&self) -> Vec<String> {
        let train = self.recipe.train;
        let l2 = self.set("l2", if train.l2 > 0.0 { train.l2 * 10.0 } else { 0.001 });
        if train.augment.is_empty() {
            vec![self.set("augment", "[hflip,crop_pad]"), l2]
        } else {
            vec![l2]
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rates_are_rounded_for_typing() {
        assert_eq!(round_lr(0.000_123), "0.0001");
        assert_eq!(round_lr(0.0047), "0.005");
        assert_eq!(round_lr(0.1), "0.1");
    }
}
