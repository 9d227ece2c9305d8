//! The diagnosis: runs the checks on the user's pipeline and ranks what they found into a
//! verdict, each cause with its evidence and the changes that address it.

use std::fmt::Write as _;
use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cache::store::{Format, Lookup};
use crate::diagnose::checks::{
    Ctx, activations, baseline, data, init_loss, learning_curve, lr_range, overfit, regularization, spread,
};
use crate::diagnose::{Cause, CheckResult, Finding, Status, probe};
use crate::pipeline::executor::{self, RunOptions, resolve_closure};
use crate::pipeline::plan::Plan;
use crate::stage::params::Params;

/// A check: its experiment on the pipeline, and what it found.
type Check = fn(&mut Ctx<'_>) -> Result<CheckResult>;

/// Every check with its name, in the order they run: the one list of them (adding a check is
/// a file in `checks/` and a line here).
const TABLE: [(&str, Check); 9] = [
    (data::NAME, data::run),
    (init_loss::NAME, init_loss::run),
    (baseline::NAME, baseline::run),
    (overfit::NAME, overfit::run),
    (lr_range::NAME, lr_range::run),
    (regularization::NAME, regularization::run),
    (learning_curve::NAME, learning_curve::run),
    (activations::NAME, activations::run),
    (spread::NAME, spread::run),
];

/// Every check's name, in the order they run (what `--check` accepts).
pub const CHECKS: [&str; TABLE.len()] = {
    let mut names = [""; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        names[i] = TABLE[i].0;
        i += 1;
    }
    names
};

/// A cause with all its evidence.
#[derive(Clone, Debug, Serialize)]
pub struct Ranked {
    pub cause: Cause,
    pub title: &'static str,
    pub blocking: bool,
    pub evidence: Vec<String>,
    pub changes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub pipeline: String,
    pub stage: String,
    pub checks: Vec<CheckResult>,
    pub verdict: Vec<Ranked>,
    pub ruled_out: Vec<&'static str>,
    pub blocking: usize,
}

/// Runs the `only` checks (all when empty) for train stage `stage` (the only one when
/// `None`). Stage lines of the data stages it makes sure are cached go to `progress`.
pub fn diagnose(plan: &Plan, stage: Option<&str>, only: &[String], progress: &mut dyn Write) -> Result<Diagnosis> {
    let train_i = plan.train_stage(stage)?;
    let Params::Train(train) = &plan.stage(train_i).params else {
        unreachable!("train_stage returns a train stage");
    };
    // The data the train stage reads, computed now if it is not cached (a failing `validate`
    // gate does not stop a diagnosis: its findings are the first check's evidence).
    let input = plan.inputs[train_i][0];
    let gate = executor::run(
        plan,
        &RunOptions {
            targets: vec![plan.stage(input).name.clone()],
            ..RunOptions::default()
        },
        progress,
    )
    .err();
    let cache = plan.open_cache()?;
    let done = resolve_closure(plan, &cache, &[train_i])?;
    let fp = |i: usize| done[i].as_ref().map(|r| r.fingerprint.clone()).unwrap_or_default();
    let source = plan.data_source(train_i);
    let data_path = cache.data_file(&fp(source), Format::Arrow);
    if !matches!(cache.lookup(&fp(source)), Lookup::Present(_)) {
        return Err(match gate {
            Some(e) => e.context("the training data could not be computed"),
            None => anyhow::anyhow!("the training data of `{}` is not cached", plan.stage(train_i).name),
        });
    }
    let data = probe::Data::open(&data_path, &cache.integrity()).context("reading the training data")?;
    let report = |i: usize| -> Option<serde_json::Value> {
        let f = fp(i);
        matches!(cache.lookup(&f), Lookup::Present(_))
            .then(|| cache.read_checked(&f, Format::Report).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
    };
    let validate = matches!(plan.stage(input).params, Params::Validate(_))
        .then(|| report(input))
        .flatten();
    let (history, trained_model) = match cache.lookup(&fp(train_i)) {
        Lookup::Present(r) => {
            let bytes = cache.read_checked(&fp(train_i), Format::Model)?;
            let (model, _) =
                crate::model::io::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("the cached model: {e}"))?;
            (Some(r.summary), Some(model))
        }
        _ => (None, None),
    };
    let recipe = probe::Recipe {
        train,
        spec: train.spec(data.shape, data.classes.len()),
        seed: train.seed.unwrap_or(plan.spec.seed),
    };
    let mut ctx = Ctx {
        plan,
        train_name: &plan.stage(train_i).name,
        data: &data,
        recipe: &recipe,
        validate,
        trained: history,
        trained_model,
        scale_off: false,
        baseline_model: None,
    };
    let mut results = Vec::new();
    for (name, check) in TABLE {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let started = std::time::Instant::now();
        let mut r = check(&mut ctx).with_context(|| format!("check `{name}`"))?;
        r.seconds = started.elapsed().as_secs_f64();
        results.push(r);
    }
    Ok(Diagnosis::new(plan, &plan.stage(train_i).name, results))
}

impl Diagnosis {
    fn new(plan: &Plan, stage: &str, checks: Vec<CheckResult>) -> Diagnosis {
        let mut verdict: Vec<Ranked> = Vec::new();
        let mut all: Vec<&Finding> = checks.iter().flat_map(|c| &c.findings).collect();
        all.sort_by_key(|f| f.cause);
        for f in all {
            let evidence = format!("{}: {}", f.check, f.evidence);
            match verdict.last_mut() {
                Some(r) if r.cause == f.cause => {
                    r.blocking |= f.blocking;
                    r.evidence.push(evidence);
                    if !f.change.is_empty() && !r.changes.contains(&f.change) {
                        r.changes.push(f.change.clone());
                    }
                }
                _ => verdict.push(Ranked {
                    cause: f.cause,
                    title: f.cause.title(),
                    blocking: f.blocking,
                    evidence: vec![evidence],
                    changes: if f.change.is_empty() {
                        vec![]
                    } else {
                        vec![f.change.clone()]
                    },
                }),
            }
        }
        // What blocks training comes first, each group most fundamental first.
        verdict.sort_by_key(|r| !r.blocking);
        for (k, r) in verdict.iter_mut().enumerate() {
            if r.changes.is_empty() {
                let change = r.cause.default_change(k == 0);
                if !change.is_empty() {
                    r.changes.push(change.to_string());
                }
            }
        }
        let mut ruled_out: Vec<Cause> = checks.iter().flat_map(|c| c.ruled_out.iter().copied()).collect();
        ruled_out.sort();
        ruled_out.dedup();
        ruled_out.retain(|c| !verdict.iter().any(|r| r.cause == *c));
        Diagnosis {
            pipeline: plan.spec.name.clone(),
            stage: stage.to_string(),
            blocking: verdict.iter().filter(|r| r.blocking).count(),
            ruled_out: ruled_out.into_iter().map(Cause::title).collect(),
            checks,
            verdict,
        }
    }

    /// The verdict in one sentence: the most fundamental blocking cause (not the symptom,
    /// a collapse to one class or outputs hovering near chance, when something caused it),
    /// or that training works.
    pub fn headline(&self) -> String {
        let blocking = |r: &&Ranked| r.blocking;
        let cause = self
            .verdict
            .iter()
            .filter(blocking)
            .find(|r| r.cause < Cause::Hovering)
            .or_else(|| self.verdict.iter().find(blocking));
        match cause {
            Some(r) => format!("{}.", capitalize(r.title)),
            None => "no blocking finding; training works.".into(),
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "diagnose `{}` (stage `{}`)", self.pipeline, self.stage);
        for c in &self.checks {
            let status = match c.status {
                Status::Ok => "ok",
                Status::Finding => "finding",
                Status::Skipped => "skipped",
            };
            let _ = writeln!(s, "  {:<15} {:<8} {}  ({:.1}s)", c.name, status, c.summary, c.seconds);
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "verdict: {}", self.headline());
        for (k, r) in self.verdict.iter().enumerate() {
            let tag = if r.blocking { "blocking" } else { "to improve" };
            let _ = writeln!(s, "  {}. {} ({tag})", k + 1, r.title);
            for e in &r.evidence {
                let _ = writeln!(s, "       evidence: {e}");
            }
            for c in &r.changes {
                let _ = writeln!(s, "       change:   {c}");
            }
        }
        if !self.ruled_out.is_empty() {
            let _ = writeln!(s, "  ruled out: {}", self.ruled_out.join("; "));
        }
        s
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
