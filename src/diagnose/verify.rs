//! `pipeline diagnose FILE --verify`: the closed loop. The verdict's top change (the first
//! ranked cause with a `--set` change) is tried for real: the pipeline's own `train` stage is
//! run, as `pipeline run` runs it (its full budget, into the cache), without the change and
//! with it, each at the recipe's seed and the next one, so the seed-to-seed spread of the
//! symptom is measured beside the change's effect. Then the same checks run again on the
//! changed pipeline, to see whether the cause is still found.
//!
//! A run without the change at the recipe's seed is usually the cached model `diagnose`
//! already read; the runs with the change stay cached, so adopting it costs nothing more.

use std::fmt::Write as _;
use std::io::Write;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cache::store::Lookup;
use crate::diagnose::Cause;
use crate::diagnose::checks::spread;
use crate::diagnose::diagnosis::{self, Diagnosis};
use crate::pipeline::executor::{self, RunOptions, resolve_closure};
use crate::pipeline::plan::Plan;
use crate::stage::params::Params;

/// One training run of the loop: what its kept epoch shows on `val`.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub seed: u64,
    pub changed: bool,
    /// The val loss of the epoch the run kept (NaN when it diverged).
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// The range of the val probabilities of the last class.
    pub probability_min: f64,
    pub probability_max: f64,
    /// The symptom its predictions show (one class, or hovering near chance), if any.
    pub symptom: Option<Cause>,
    pub train_seconds: f64,
}

/// What trying the change showed.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// The cause whose change was tried, and its rank in the verdict (1: the top).
    pub cause: Cause,
    pub rank: usize,
    /// The `--set` arguments of the change.
    pub sets: Vec<String>,
    pub runs: Vec<Run>,
    /// Mean val loss over the seeds, without and with the change.
    pub val_loss_before: f64,
    pub val_loss_after: f64,
    /// `val_loss_before − val_loss_after`.
    pub gain: f64,
    /// The largest difference in val loss between the two seeds of the same settings.
    pub seed_spread: f64,
    /// The gain is larger than the seed spread.
    pub beyond_noise: bool,
    /// The blocking causes the same checks find on the changed pipeline.
    pub blocking_after: Vec<Cause>,
    /// The tried cause is no longer found (blocking or not).
    pub cause_gone: bool,
}

/// The `--set` arguments of a change (`--set train.l2=0.01 --set train.epochs=8`), if any;
/// of its first alternative when it offers several (`--set a.b=1, or --set a.c=2`).
fn sets_of(change: &str) -> Vec<String> {
    let first = change
        .split(" or ")
        .find(|alternative| alternative.contains("--set "))
        .unwrap_or("");
    let mut words = first.split_whitespace();
    let mut sets = Vec::new();
    while let Some(w) = words.next() {
        if w == "--set"
            && let Some(kv) = words.next()
        {
            sets.push(kv.trim_end_matches([',', ';', ')']).to_string());
        }
    }
    sets
}

/// Tries the top `--set` change of `d` (see the module docs). `plan_with(sets)` loads the
/// user's pipeline with more `--set`s after theirs; `stage` and `only` are the diagnosis's.
/// `None` when no cause of the verdict has a `--set` change.
pub fn verify(
    d: &Diagnosis,
    plan_with: &dyn Fn(&[String]) -> Result<Plan>,
    stage: Option<&str>,
    only: &[String],
    progress: &mut dyn Write,
) -> Result<Option<Verification>> {
    let Some((rank, ranked, sets)) = d.verdict.iter().enumerate().find_map(|(k, r)| {
        let sets = r.changes.iter().map(|c| sets_of(c)).find(|s| !s.is_empty())?;
        Some((k + 1, r, sets))
    }) else {
        return Ok(None);
    };
    let plan = plan_with(&[])?;
    let train_i = plan.train_stage(stage)?;
    let Params::Train(train) = &plan.stage(train_i).params else {
        unreachable!("train_stage returns a train stage");
    };
    let seed = train.seed.unwrap_or(plan.spec.seed);
    let name = plan.stage(train_i).name.clone();
    let mut runs = Vec::new();
    for s in [seed, seed.wrapping_add(1)] {
        for changed in [false, true] {
            let mut extra = vec![format!("{name}.seed={s}")];
            if changed {
                extra.extend(sets.iter().cloned());
            }
            let plan = plan_with(&extra).with_context(|| format!("the change `--set {}`", sets.join(" --set ")))?;
            let _ = writeln!(
                progress,
                "verify: training `{name}` at seed {s} {}",
                if changed {
                    "with the change"
                } else {
                    "without the change"
                }
            );
            runs.push(train_run(&plan, stage, s, changed, progress)?);
        }
    }
    let after = diagnosis::diagnose(&plan_with(&sets)?, stage, only, progress)?;
    // The val losses of the two seeds without and with the change (a diverged run's: +inf).
    let [without, with]: [[f64; 2]; 2] = [false, true].map(|changed| {
        let mut l = runs
            .iter()
            .filter(|r| r.changed == changed)
            .map(|r| if r.val_loss.is_nan() { f64::INFINITY } else { r.val_loss });
        [l.next().unwrap_or(f64::NAN), l.next().unwrap_or(f64::NAN)]
    });
    let (before, after_loss) = ((without[0] + without[1]) / 2.0, (with[0] + with[1]) / 2.0);
    let spread = [without, with]
        .iter()
        .map(|l| (l[0] - l[1]).abs())
        .filter(|d| d.is_finite())
        .fold(0.0, f64::max);
    let gain = before - after_loss;
    Ok(Some(Verification {
        cause: ranked.cause,
        rank,
        sets,
        runs,
        val_loss_before: before,
        val_loss_after: after_loss,
        gain,
        seed_spread: spread,
        beyond_noise: gain > spread,
        blocking_after: after.verdict.iter().filter(|r| r.blocking).map(|r| r.cause).collect(),
        cause_gone: !after.verdict.iter().any(|r| r.cause == ranked.cause),
    }))
}

/// Runs the train stage of `plan` (cached when it is) and reads its kept epoch.
fn train_run(plan: &Plan, stage: Option<&str>, seed: u64, changed: bool, progress: &mut dyn Write) -> Result<Run> {
    let train_i = plan.train_stage(stage)?;
    let opts = RunOptions {
        targets: vec![plan.stage(train_i).name.clone()],
        ..RunOptions::default()
    };
    executor::run(plan, &opts, progress)?;
    let cache = plan.open_cache()?;
    let done = resolve_closure(plan, &cache, &[train_i])?;
    let fp = done[train_i]
        .as_ref()
        .map(|r| r.fingerprint.clone())
        .unwrap_or_default();
    let Lookup::Present(record) = cache.lookup(&fp) else {
        bail!(
            "the trained model of `{}` is not in the cache",
            plan.stage(train_i).name
        );
    };
    let summary = record.summary;
    let t = spread::Trained::read(&summary).context("the model's record holds no readable history")?;
    let (e, diverged) = (&t.history[t.chosen - 1], t.diverged);
    let classes = summary["classes"].as_array().map_or(2, Vec::len) as f64;
    Ok(Run {
        seed,
        changed,
        val_loss: if diverged { f64::NAN } else { e.val_loss },
        val_accuracy: e.val_accuracy,
        probability_min: e.val_probability_min,
        probability_max: e.val_probability_max,
        symptom: if diverged {
            Some(Cause::Collapsed)
        } else {
            spread::symptom(
                e.val_majority_fraction,
                e.val_probability_min,
                e.val_probability_max,
                classes,
            )
        },
        train_seconds: summary["train_seconds"].as_f64().unwrap_or(f64::NAN),
    })
}

impl Verification {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let change = self
            .sets
            .iter()
            .map(|kv| format!("--set {kv}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            s,
            "verify: `{change}` ({}, ranked {}), trained as `pipeline run` trains, without and with it:",
            self.cause.title(),
            self.rank
        );
        for r in &self.runs {
            let symptom = r.symptom.map_or(String::new(), |c| format!("; {}", c.title()));
            let _ = writeln!(
                s,
                "  seed {:<6} {:<8} val loss {:.3}, val accuracy {:.1}%, probabilities {:.2}..{:.2} ({:.0} s){symptom}",
                r.seed,
                if r.changed { "with" } else { "without" },
                r.val_loss,
                100.0 * r.val_accuracy,
                r.probability_min,
                r.probability_max,
                r.train_seconds
            );
        }
        let judged = if self.beyond_noise {
            "beyond the seed-to-seed spread"
        } else {
            "NOT beyond the seed-to-seed spread"
        };
        let _ = writeln!(
            s,
            "  mean val loss {:.3} -> {:.3} ({:+.3}); the two seeds of the same settings differ by up to {:.3}: {judged}",
            self.val_loss_before, self.val_loss_after, -self.gain, self.seed_spread
        );
        let left = if self.blocking_after.is_empty() {
            "nothing blocking".to_string()
        } else {
            let titles: Vec<&str> = self.blocking_after.iter().map(|c| c.title()).collect();
            format!("blocking: {}", titles.join("; "))
        };
        let _ = writeln!(
            s,
            "  the same checks with the change: {}; {left}",
            if self.cause_gone {
                "the cause is no longer found"
            } else {
                "the cause is still found"
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_gives_its_set_arguments() {
        assert_eq!(sets_of("--set train.l2=0.01"), ["train.l2=0.01"]);
        assert_eq!(
            sets_of("--set train.lr=0.02 --set train.epochs=8"),
            ["train.lr=0.02", "train.epochs=8"]
        );
        assert!(sets_of("fix the causes ranked above").is_empty());
        assert!(sets_of("a dangling --set").is_empty());
        assert_eq!(
            sets_of("--set train.augment=[hflip,crop_pad], or --set train.l2=0.001"),
            ["train.augment=[hflip,crop_pad]"]
        );
        assert_eq!(
            sets_of("--set train.activation=leaky_relu or a lower learning rate"),
            ["train.activation=leaky_relu"]
        );
    }
}
