//! First-order optimizers with their per-parameter state: SGD with classic
//! (heavy-ball) momentum and Adam. The L2 penalty is part of the loss and its
//! gradient (see [`crate::model::net::Model::loss_grad`]), so optimizers never add decay
//! themselves.

use crate::model::net::Model;
use crate::model::{Grads, ModelError};

/// An optimizer and its state. State is allocated on the first
/// [`Optimizer::step`] and tied to that model's parameter shapes; stepping a
/// different architecture with the same optimizer is an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// `v ← momentum·v + g;  w ← w − lr·v` (PyTorch's formulation; equal to
    /// `v ← μv − lr·g; w ← w + v` for a constant lr). `momentum = 0` is plain SGD.
    Sgd {
        lr: f32,
        momentum: f32,
        /// One velocity buffer per parameter tensor.
        velocity: Vec<Vec<f32>>,
    },
    /// Adam (Kingma & Ba) with bias-corrected moment estimates:
    /// `w ← w − lr · m̂ / (√v̂ + eps)`.
    Adam {
        lr: f32,
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
            velocity: Vec::new(),
        }
    }

    /// Adam with the usual defaults: β1 = 0.9, β2 = 0.999, ε = 1e-8.
    pub fn adam(lr: f32) -> Self {
        Optimizer::Adam {
            lr,
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
        match self {
            Optimizer::Sgd { lr, momentum, velocity } => {
                ensure_state(velocity, &lens)?;
                for ((p, g), v) in params.iter_mut().zip(&grads.tensors).zip(velocity) {
                    for ((w, g), v) in p.data.iter_mut().zip(&g.data).zip(v) {
                        *v = *momentum * *v + g;
                        *w -= *lr * *v;
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
