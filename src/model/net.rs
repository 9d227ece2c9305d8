//! [`Model`]: any supported classifier (an MLP or a CNN) behind one interface, and
//! [`ModelSpec`], the architecture it is built from.

use crate::model::cnn::{Cnn, CnnSpec};
use crate::model::mlp::{Mlp, MlpSpec};
use crate::model::resnet::{Resnet, ResnetSpec};
use crate::model::{Grads, Loss, ModelError, Stats, Tensor, check_batch, ops};
use serde::{Deserialize, Serialize};

/// Architecture of any supported model; serialized (tagged by `kind`) into
/// the weights file's metadata so [`crate::model::io::load`] can rebuild the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// Dense stack (logistic regression when `hidden` is empty).
    Mlp(MlpSpec),
    /// Conv blocks followed by a dense head.
    Cnn(CnnSpec),
    /// Residual network with batch normalization.
    Resnet(ResnetSpec),
}

impl ModelSpec {
    /// Total number of values this architecture stores (parameters and buffers), or `None`
    /// if that overflows `usize` (or an image is too small for its blocks).
    pub fn param_count(&self) -> Option<usize> {
        fn dense(input: usize, hidden: &[usize], classes: usize) -> Option<usize> {
            let mut total = 0usize;
            let mut n_in = input;
            for &n_out in hidden.iter().chain([&classes]) {
                total = total.checked_add(n_in.checked_mul(n_out)?.checked_add(n_out)?)?;
                n_in = n_out;
            }
            Some(total)
        }
        match self {
            ModelSpec::Mlp(s) => dense(s.input_len, &s.dense.hidden, s.dense.classes),
            ModelSpec::Cnn(s) => {
                let [mut h, mut w, mut c] = s.input;
                let mut total = 0usize;
                for &c_out in &s.blocks {
                    if h < 2 || w < 2 {
                        return None;
                    }
                    let conv = c.checked_mul(9)?.checked_mul(c_out)?.checked_add(c_out)?;
                    total = total.checked_add(conv)?;
                    (h, w, c) = (h / 2, w / 2, c_out);
                }
                let feats = h.checked_mul(w)?.checked_mul(c)?;
                total.checked_add(dense(feats, &s.dense.hidden, s.dense.classes)?)
            }
            ModelSpec::Resnet(s) => s.tensor_count(),
        }
    }
}

/// Any supported classifier; the uniform interface optimizers, training and
/// IO work with.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// See [`Mlp`].
    Mlp(Mlp),
    /// See [`Cnn`].
    Cnn(Cnn),
    /// See [`Resnet`].
    Resnet(Resnet),
}

impl Model {
    /// Builds the architecture with weights drawn from `seed`.
    pub fn new(spec: &ModelSpec, seed: u64) -> Result<Model, ModelError> {
        Ok(match spec {
            ModelSpec::Mlp(s) => Model::Mlp(Mlp::new(s, seed)?),
            ModelSpec::Cnn(s) => Model::Cnn(Cnn::new(s, seed)?),
            ModelSpec::Resnet(s) => Model::Resnet(Resnet::new(s, seed)?),
        })
    }

    /// The architecture this model was built from.
    pub fn spec(&self) -> ModelSpec {
        match self {
            Model::Mlp(m) => ModelSpec::Mlp(m.spec().clone()),
            Model::Cnn(m) => ModelSpec::Cnn(m.spec().clone()),
            Model::Resnet(m) => ModelSpec::Resnet(m.spec().clone()),
        }
    }

    /// Values per example (`H * W * C`).
    pub fn input_len(&self) -> usize {
        match self {
            Model::Mlp(m) => m.input_len(),
            Model::Cnn(m) => m.input_len(),
            Model::Resnet(m) => m.input_len(),
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        match self {
            Model::Mlp(m) => m.classes(),
            Model::Cnn(m) => m.classes(),
            Model::Resnet(m) => m.classes(),
        }
    }

    /// Softmax probabilities, `batch × classes`.
    pub fn forward(&self, x: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        match self {
            Model::Mlp(m) => m.forward(x, batch),
            Model::Cnn(m) => m.forward(x, batch),
            Model::Resnet(m) => m.forward(x, batch),
        }
    }

    /// Argmax class per row.
    pub fn predict(&self, x: &[f32], batch: usize) -> Result<Vec<u32>, ModelError> {
        let p = self.forward(x, batch)?;
        let c = self.classes();
        Ok(p.chunks_exact(c).map(|r| ops::argmax(r) as u32).collect())
    }

    /// `loss`, once the batch's shapes and labels and the loss's coefficients are checked:
    /// what every architecture's loss then trusts.
    fn checked(&self, x: &[f32], y: &[u32], batch: usize, loss: impl Into<Loss>) -> Result<Loss, ModelError> {
        let loss = loss.into();
        check_batch(x, Some(y), batch, self.input_len(), self.classes())?;
        loss.check()?;
        Ok(loss)
    }

    /// The [`Loss`] (an `f32`: its L2 coefficient without label smoothing), its gradients and
    /// diagnostics.
    pub fn loss_grad(
        &self,
        x: &[f32],
        y: &[u32],
        batch: usize,
        loss: impl Into<Loss>,
    ) -> Result<(f32, Grads, Stats), ModelError> {
        let loss = self.checked(x, y, batch, loss)?;
        Ok(match self {
            Model::Mlp(m) => m.loss_grad(x, y, batch, loss),
            Model::Cnn(m) => m.loss_grad(x, y, batch, loss),
            Model::Resnet(m) => m.loss_grad(x, y, batch, loss),
        })
    }

    /// Loss only, kept in f64 (for finite-difference gradient checks).
    #[cfg(test)]
    pub(crate) fn loss_f64(
        &self,
        x: &[f32],
        y: &[u32],
        batch: usize,
        loss: impl Into<Loss>,
    ) -> Result<f64, ModelError> {
        let loss = self.checked(x, y, batch, loss)?;
        Ok(match self {
            Model::Mlp(m) => m.loss_f64(x, y, batch, loss),
            Model::Cnn(m) => m.loss_f64(x, y, batch, loss),
            Model::Resnet(m) => m.loss_f64(x, y, batch, loss),
        })
    }

    /// Which side of every kink (ReLU sign, max-pool winner) the forward pass
    /// is on; finite differences are only valid when it does not change.
    #[cfg(test)]
    pub(crate) fn kink_pattern(&self, x: &[f32], batch: usize) -> Vec<usize> {
        match self {
            Model::Mlp(m) => m.kink_pattern(x, batch),
            Model::Cnn(m) => m.kink_pattern(x, batch),
            Model::Resnet(m) => m.kink_pattern(x, batch),
        }
    }

    /// Parameters in canonical order (see module docs).
    pub fn params(&self) -> Vec<&Tensor> {
        match self {
            Model::Mlp(m) => m.params(),
            Model::Cnn(m) => m.params(),
            Model::Resnet(m) => m.params(),
        }
    }

    /// Mutable parameters in canonical order; shapes must not be changed.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        match self {
            Model::Mlp(m) => m.params_mut(),
            Model::Cnn(m) => m.params_mut(),
            Model::Resnet(m) => m.params_mut(),
        }
    }

    /// Values that are part of the model but not trained by the optimizer (a batch norm's
    /// running statistics), saved with the parameters.
    pub fn buffers(&self) -> Vec<&Tensor> {
        match self {
            Model::Resnet(m) => m.buffers(),
            Model::Mlp(_) | Model::Cnn(_) => Vec::new(),
        }
    }

    /// Mutable [`Model::buffers`].
    pub fn buffers_mut(&mut self) -> Vec<&mut Tensor> {
        match self {
            Model::Resnet(m) => m.buffers_mut(),
            Model::Mlp(_) | Model::Cnn(_) => Vec::new(),
        }
    }

    /// Everything a weights file holds: [`Model::params`], then [`Model::buffers`].
    pub fn stored(&self) -> Vec<&Tensor> {
        let mut all = self.params();
        all.extend(self.buffers());
        all
    }

    /// Mutable [`Model::stored`].
    pub fn stored_mut(&mut self) -> Vec<&mut Tensor> {
        match self {
            Model::Resnet(m) => m.stored_mut(),
            Model::Mlp(_) | Model::Cnn(_) => self.params_mut(),
        }
    }

    /// Folds a training step's batch statistics ([`Stats::batch_norm`]) into the running
    /// statistics (nothing for a model without batch normalization).
    pub fn track_running(&mut self, batch_norm: &[Tensor]) -> Result<(), ModelError> {
        match self {
            Model::Resnet(m) => m.track_running(batch_norm),
            Model::Mlp(_) | Model::Cnn(_) => Ok(()),
        }
    }
}

impl From<Mlp> for Model {
    fn from(m: Mlp) -> Self {
        Model::Mlp(m)
    }
}

impl From<Cnn> for Model {
    fn from(m: Cnn) -> Self {
        Model::Cnn(m)
    }
}
