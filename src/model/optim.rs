//! First-order optimizers with their per-parameter state: SGD with classic
//! (heavy-ball) or Nesterov momentum and Adam, each with optional decoupled weight decay
//! (SGDW, AdamW); and the learning-rate schedules a training run steps through. The L2
//! penalty is part of the loss and its gradient (see
//! [`crate::model::net::Model::loss_grad`]); decoupled weight decay is not: it shrinks the
//! weights (not the biases) by `lr·weight_decay` of themselves at each step, outside the
//! gradient, as PyTorch's `AdamW` does.

use crate::model::net::Model;
use crate::model::{Grads, ModelError, Tensor};

/// An optimizer and its state. State is allocated on the first
/// [`Optimizer::step`] and tied to that model's parameter shapes; stepping a
/// different architecture with the same optimizer is an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// `v ← momentum·v + g;  w ← w − lr·v` (PyTorch's formulation; equal to
    /// `v ← μv − lr·g; w ← w + v` for a constant lr). `momentum = 0` is plain SGD. With
    /// `nesterov`, `w ← w − lr·(g + momentum·v)` (PyTorch's Nesterov).
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
        /// One velocity buffer per parameter tensor.
        velocity: Vec<Vec<f32>>,
    },
    /// Adam (Kingma & Ba) with bias-corrected moment estimates:
    /// `w ← w − lr · m̂ / (√v̂ + eps)`.
    Adam {
        lr: f32,
        weight_decay: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        /// Steps taken so far.
        t: u64,
        /// First-moment estimate per parameter tensor.
        m: Vec<Vec<f32>>,
        /// Second-moment estimate per parameter tensor.
        v: Vec<Vec<f32>>,
    },
}

impl Optimizer {
    /// SGD with classic momentum (0 for none).
    pub fn sgd(lr: f32, momentum: f32) -> Self {
        Optimizer::Sgd {
            lr,
            momentum,
            nesterov: false,
            weight_decay: 0.0,
            velocity: Vec::new(),
        }
    }

    /// SGD with Nesterov momentum.
    pub fn nesterov(lr: f32, momentum: f32) -> Self {
        match Optimizer::sgd(lr, momentum) {
            Optimizer::Sgd { velocity, .. } => Optimizer::Sgd {
                lr,
                momentum,
                nesterov: true,
                weight_decay: 0.0,
                velocity,
            },
            other => other,
        }
    }

    /// This optimizer with decoupled weight decay `wd` (0 for none).
    pub fn with_weight_decay(mut self, wd: f32) -> Self {
        match &mut self {
            Optimizer::Sgd { weight_decay, .. } | Optimizer::Adam { weight_decay, .. } => *weight_decay = wd,
        }
        self
    }

    /// Adam with the usual defaults: β1 = 0.9, β2 = 0.999, ε = 1e-8.
    pub fn adam(lr: f32) -> Self {
        Optimizer::Adam {
            lr,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// Learning rate.
    pub fn lr(&self) -> f32 {
        match self {
            Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } => *lr,
        }
    }

    /// Changes the learning rate (schedules), keeping the state.
    pub fn set_lr(&mut self, new: f32) {
        match self {
            Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } => *lr = new,
        }
    }

    /// Checks hyper-parameters are in range.
    fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: &str, v: f32| Err(ModelError::Hyper(format!("{what} out of range: {v}")));
        let (Optimizer::Sgd { weight_decay, .. } | Optimizer::Adam { weight_decay, .. }) = *self;
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad("weight_decay", weight_decay);
        }
        match *self {
            Optimizer::Sgd { lr, momentum, .. } => {
                if !(lr.is_finite() && lr >= 0.0) {
                    return bad("lr", lr);
                }
                if !(0.0..1.0).contains(&momentum) {
                    return bad("momentum (need 0 <= m < 1)", momentum);
                }
            }
            Optimizer::Adam {
                lr, beta1, beta2, eps, ..
            } => {
                if !(lr.is_finite() && lr >= 0.0) {
                    return bad("lr", lr);
                }
                if !(0.0..1.0).contains(&beta1) {
                    return bad("beta1", beta1);
                }
                if !(0.0..1.0).contains(&beta2) {
                    return bad("beta2", beta2);
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return bad("eps", eps);
                }
            }
        }
        Ok(())
    }

    /// Applies one update to `model` from `grads` (as returned by
    /// [`Model::loss_grad`] for this model).
    pub fn step(&mut self, model: &mut Model, grads: &Grads) -> Result<(), ModelError> {
        self.validate()?;
        let mut params = model.params_mut();
        if params.len() != grads.tensors.len() {
            return Err(ModelError::GradMismatch(format!(
                "model has {} parameter tensors, gradients have {}",
                params.len(),
                grads.tensors.len()
            )));
        }
        for (p, g) in params.iter().zip(&grads.tensors) {
            if p.name != g.name || p.shape != g.shape || p.data.len() != g.data.len() {
                return Err(ModelError::GradMismatch(format!(
                    "parameter {} {:?} vs gradient {} {:?}",
                    p.name, p.shape, g.name, g.shape
                )));
            }
        }
        let lens: Vec<usize> = params.iter().map(|p| p.data.len()).collect();
        let (Optimizer::Sgd { lr, weight_decay, .. } | Optimizer::Adam { lr, weight_decay, .. }) = *self;
        if weight_decay > 0.0 {
            let keep = 1.0 - lr * weight_decay;
            for p in params.iter_mut().filter(|p| p.is_weight()) {
                p.data.iter_mut().for_each(|w| *w *= keep);
            }
        }
        match self {
            Optimizer::Sgd {
                lr,
                momentum,
                nesterov,
                velocity,
                ..
            } => {
                ensure_state(velocity, &lens)?;
                for ((p, g), v) in params.iter_mut().zip(&grads.tensors).zip(velocity) {
                    for ((w, g), v) in p.data.iter_mut().zip(&g.data).zip(v) {
                        *v = *momentum * *v + g;
                        *w -= *lr * if *nesterov { g + *momentum * *v } else { *v };
                    }
                }
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                t,
                m,
                v,
                ..
            } => {
                ensure_state(m, &lens)?;
                ensure_state(v, &lens)?;
                *t += 1;
                let ti = i32::try_from(*t).unwrap_or(i32::MAX);
                let c1 = 1.0 / (1.0 - f64::from(*beta1).powi(ti));
                let c2 = 1.0 / (1.0 - f64::from(*beta2).powi(ti));
                let (b1, b2) = (*beta1, *beta2);
                for (((p, g), m), v) in params.iter_mut().zip(&grads.tensors).zip(m).zip(v) {
                    for (((w, g), m), v) in p.data.iter_mut().zip(&g.data).zip(m).zip(v) {
                        *m = b1 * *m + (1.0 - b1) * g;
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        let m_hat = f64::from(*m) * c1;
                        let v_hat = f64::from(*v) * c2;
                        *w -= (f64::from(*lr) * m_hat / (v_hat.sqrt() + f64::from(*eps))) as f32;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Optimizer {
    /// The optimizer's state as tensors (`velocity.{i}`, or Adam's `m.{i}` and `v.{i}`, `i`
    /// the parameter's index; none before the first step) and Adam's step count: what a
    /// checkpoint keeps to go on exactly where it stopped.
    pub fn state(&self) -> (Vec<Tensor>, u64) {
        let named = |prefix: &str, bufs: &[Vec<f32>]| -> Vec<Tensor> {
            bufs.iter()
                .enumerate()
                .map(|(i, b)| Tensor {
                    name: format!("{prefix}.{i}"),
                    shape: vec![b.len()],
                    data: b.clone(),
                })
                .collect()
        };
        match self {
            Optimizer::Sgd { velocity, .. } => (named("velocity", velocity), 0),
            Optimizer::Adam { t, m, v, .. } => {
                let mut all = named("m", m);
                all.extend(named("v", v));
                (all, *t)
            }
        }
    }

    /// Takes back a [`Optimizer::state`] (the hyper-parameters stay this optimizer's).
    pub fn restore(&mut self, tensors: &[Tensor], steps: u64) -> Result<(), ModelError> {
        let take = |prefix: &str| -> Vec<Vec<f32>> {
            let mut bufs: Vec<(usize, Vec<f32>)> = tensors
                .iter()
                .filter_map(|t| {
                    let i = t.name.strip_prefix(prefix)?.strip_prefix('.')?.parse().ok()?;
                    Some((i, t.data.clone()))
                })
                .collect();
            bufs.sort_by_key(|(i, _)| *i);
            bufs.into_iter().map(|(_, b)| b).collect()
        };
        let expected = match self {
            Optimizer::Sgd { velocity, .. } => {
                *velocity = take("velocity");
                velocity.len()
            }
            Optimizer::Adam { t, m, v, .. } => {
                (*m, *v, *t) = (take("m"), take("v"), steps);
                m.len() + v.len()
            }
        };
        if expected != tensors.len() {
            return Err(ModelError::GradMismatch(format!(
                "{} optimizer state tensors, {expected} of them this optimizer's",
                tensors.len()
            )));
        }
        Ok(())
    }
}

/// How the learning rate moves over a run's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// The configured rate throughout (after the warm-up).
    Constant,
    /// From the configured rate down to 0 along a half cosine (after the warm-up).
    Cosine,
    /// PyTorch's `OneCycleLR` (cosine annealing, its defaults): up from `lr/25` to `lr`
    /// over the first 30% of the steps, then down to `lr/25/10⁴`. The momentum does not
    /// cycle. Its rise is its warm-up.
    OneCycle,
}

impl Schedule {
    /// The learning rate at step `step` (from 0) of `total`, with peak `lr`, after a linear
    /// warm-up from 0 over the first `warmup` steps (not for `OneCycle`).
    pub fn lr_at(self, lr: f64, step: u64, total: u64, warmup: u64) -> f64 {
        let total = total.max(1);
        let step = step.min(total - 1);
        let cos = |from: f64, to: f64, t: f64| to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        if self == Schedule::OneCycle {
            let (initial, min) = (lr / 25.0, lr / 25.0 / 1e4);
            // As PyTorch counts: the peak at step 0.3·total − 1, the floor at the last step.
            let up = (0.3 * total as f64 - 1.0).max(1.0);
            let s = step as f64;
            return if s <= up {
                cos(initial, lr, s / up)
            } else {
                cos(lr, min, (s - up) / ((total - 1) as f64 - up).max(1.0))
            };
        }
        if step < warmup {
            return lr * (step + 1) as f64 / warmup as f64;
        }
        match self {
            Schedule::Cosine => {
                let span = (total - warmup).max(1) as f64;
                cos(lr, 0.0, (step - warmup) as f64 / span)
            }
            _ => lr,
        }
    }
}

/// Allocates zeroed state on first use; afterwards checks it still fits.
fn ensure_state(state: &mut Vec<Vec<f32>>, lens: &[usize]) -> Result<(), ModelError> {
    if state.is_empty() {
        *state = lens.iter().map(|n| vec![0.0; *n]).collect();
        return Ok(());
    }
    let have: Vec<usize> = state.iter().map(Vec::len).collect();
    if have != lens {
        return Err(ModelError::GradMismatch(
            "optimizer state belongs to a different architecture".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Grads;
    use crate::model::mlp::MlpSpec;
    use crate::model::net::{Model, ModelSpec};
    use crate::model::testutil::dense_spec;

    /// Logistic regression of `input_len` inputs and 2 classes.
    fn logreg(input_len: usize) -> Model {
        let spec = MlpSpec {
            input_len,
            dense: dense_spec(vec![], 2),
        };
        Model::new(&ModelSpec::Mlp(spec), 0).expect("valid spec")
    }

    fn tiny() -> Model {
        logreg(2)
    }

    fn ones_like(m: &Model) -> Grads {
        Grads {
            tensors: m
                .params()
                .into_iter()
                .map(|p| {
                    let mut t = p.clone();
                    t.data.iter_mut().for_each(|v| *v = 1.0);
                    t
                })
                .collect(),
        }
    }

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let mut m = tiny();
        let w0 = m.params()[0].data[0];
        let g = ones_like(&m);
        let mut opt = Optimizer::sgd(0.1, 0.9);
        opt.step(&mut m, &g).expect("matching grads");
        opt.step(&mut m, &g).expect("matching grads");
        // v1 = 1, v2 = 1.9 → w = w0 − 0.1·(1 + 1.9)
        assert!((m.params()[0].data[0] - (w0 - 0.29)).abs() < 1e-6);
    }

    #[test]
    fn nesterov_matches_hand_computation() {
        let mut m = tiny();
        let w0 = m.params()[0].data[0];
        let g = ones_like(&m);
        let mut opt = Optimizer::nesterov(0.1, 0.9);
        opt.step(&mut m, &g).expect("matching grads");
        opt.step(&mut m, &g).expect("matching grads");
        // v1 = 1: w1 = w0 − 0.1·(1 + 0.9); v2 = 1.9: w2 = w1 − 0.1·(1 + 1.71)
        assert!((m.params()[0].data[0] - (w0 - 0.19 - 0.271)).abs() < 1e-6);
    }

    #[test]
    fn weight_decay_shrinks_weights_not_biases_outside_the_gradient() {
        for opt in [Optimizer::sgd(0.1, 0.9), Optimizer::adam(0.1)] {
            let mut m = tiny();
            m.params_mut()[1].data.iter_mut().for_each(|b| *b = 0.5);
            let before: Vec<Vec<f32>> = m.params().iter().map(|p| p.data.clone()).collect();
            let zero = Grads {
                tensors: m.params().iter().map(|p| p.like(vec![0.0; p.data.len()])).collect(),
            };
            let mut opt = opt.with_weight_decay(0.5);
            opt.step(&mut m, &zero).expect("matching grads");
            let (w, b) = (&m.params()[0].data, &m.params()[1].data);
            for (after, was) in w.iter().zip(&before[0]) {
                assert!((after - was * 0.95).abs() < 1e-6, "{after} vs {was}·(1 − 0.1·0.5)");
            }
            assert_eq!(b, &before[1], "biases are not decayed");
        }
        let mut bad = Optimizer::adam(0.1).with_weight_decay(-1.0);
        let mut m = tiny();
        let g = ones_like(&m);
        assert!(matches!(bad.step(&mut m, &g), Err(ModelError::Hyper(_))));
    }

    #[test]
    fn schedules_follow_their_curves() {
        let lr = 0.1;
        let at = |s: Schedule, step, warmup| s.lr_at(lr, step, 100, warmup);
        assert_eq!(at(Schedule::Constant, 50, 0), lr);
        assert!((at(Schedule::Constant, 0, 10) - lr / 10.0).abs() < 1e-12);
        assert!((at(Schedule::Constant, 9, 10) - lr).abs() < 1e-12);
        assert!((at(Schedule::Cosine, 0, 0) - lr).abs() < 1e-12);
        assert!((at(Schedule::Cosine, 50, 0) - lr / 2.0).abs() < 1e-12);
        assert!(at(Schedule::Cosine, 99, 0) < lr * 1e-3);
        assert!(
            (at(Schedule::Cosine, 10, 10) - lr).abs() < 1e-12,
            "the cosine starts after the warm-up"
        );
        // OneCycleLR(max_lr=0.1, total_steps=100): 0.004 at step 0, 0.1 at step 29, 4e-7 at 99.
        assert!((at(Schedule::OneCycle, 0, 0) - 0.004).abs() < 1e-12);
        assert!((at(Schedule::OneCycle, 29, 0) - lr).abs() < 1e-12);
        assert!((at(Schedule::OneCycle, 99, 0) - 4e-7).abs() < 1e-15);
        let curve: Vec<f64> = (0..100).map(|s| at(Schedule::OneCycle, s, 0)).collect();
        assert!(curve[..30].windows(2).all(|w| w[0] < w[1]) && curve[29..].windows(2).all(|w| w[0] > w[1]));
        assert_eq!(Schedule::Cosine.lr_at(lr, 5, 0, 0), lr, "no steps: the peak");
    }

    #[test]
    fn adam_first_step_is_lr_times_sign() {
        let mut m = tiny();
        let w0 = m.params()[0].data[0];
        let mut opt = Optimizer::adam(0.01);
        let g = ones_like(&m);
        opt.step(&mut m, &g).expect("matching grads");
        assert!((m.params()[0].data[0] - (w0 - 0.01)).abs() < 1e-6);
    }

    #[test]
    fn mismatched_grads_and_state_are_errors() {
        let mut m = tiny();
        let mut g = ones_like(&m);
        g.tensors.pop();
        let mut opt = Optimizer::adam(0.01);
        assert!(matches!(opt.step(&mut m, &g), Err(ModelError::GradMismatch(_))));
        let g1 = ones_like(&m);
        opt.step(&mut m, &g1).expect("matching grads");
        let mut other = logreg(3);
        let g2 = ones_like(&other);
        assert!(matches!(opt.step(&mut other, &g2), Err(ModelError::GradMismatch(_))));
        let mut bad = Optimizer::sgd(-1.0, 0.0);
        assert!(matches!(bad.step(&mut m, &g1), Err(ModelError::Hyper(_))));
    }
}
