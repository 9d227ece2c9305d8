//! Numerical core of `pipeline`'s small image classifiers: an MLP (including
//! plain logistic regression) and a small CNN, trained with explicit backprop,
//! SGD/Adam, and saved as safetensors.
//!
//! # Data conventions
//! * Inputs are f32 images flattened **HWC** (height, width, channels),
//!   batch-major: `x.len() == batch * input_len`, row `i` is
//!   `x[i * input_len .. (i + 1) * input_len]`.
//! * Labels are class indices `y: &[u32]`, one per row, `< classes`.
//! * Outputs are softmax probabilities, batch-major `batch × classes`.
//! * Loss = mean cross-entropy (labels optionally smoothed: [`Loss`]) + `l2 / 2 · Σ w²`
//!   over weight tensors (biases are not decayed).
//!
//! # Parameter layout (PyTorch conventions)
//! Parameters are named tensors ([`Tensor`]) in a fixed order:
//! `conv{i}.weight` `[out_ch, in_ch, 3, 3]`, `conv{i}.bias` `[out_ch]` (CNN
//! only, first), then `dense{i}.weight` `[out, in]`, `dense{i}.bias` `[out]`.
//! These load directly into `nn.Conv2d(in_ch, out_ch, 3, padding=1)` and
//! `nn.Linear(in, out)`. Because our activations are HWC, a PyTorch
//! re-implementation must:
//! * MLP: feed the HWC-flattened vector unchanged (`x.reshape(n, -1)` of an
//!   `[n, H, W, C]` array).
//! * CNN: convert images to NCHW for the convs (`x.permute(0, 3, 1, 2)`), and
//!   flatten the last feature map in HWC order before the dense head
//!   (`f.permute(0, 2, 3, 1).flatten(1)`), since `dense0.weight`'s input axis is
//!   ordered (h, w, c).
//!
//! # Determinism
//! Init and shuffling use ChaCha8 streams derived from the seed
//! (`ops::rng_for`); every matmul is a single-threaded sgemm and every
//! reduction runs in a fixed order. A training step runs its shards of a
//! fixed number of rows on every core and merges them in shard order
//! (`train::loss_grad_sharded`), so the same seed and data give bit-identical
//! weights on the same machine whatever the number of threads. (sgemm picks
//! its SIMD kernel at run time, so a CPU with different vector features may
//! differ in the last bits.)

pub mod cnn;
pub mod ema;
pub mod io;
pub mod mlp;
pub mod net;
mod ops;
pub mod optim;
pub mod resnet;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
pub mod train;

use serde::Serialize;

/// A named parameter (or gradient) tensor, row-major `data` of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Name such as `dense0.weight`; the safetensors key.
    pub name: String,
    /// Shape in PyTorch convention (see module docs).
    pub shape: Vec<usize>,
    /// Row-major values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl Tensor {
    /// All-zero tensor.
    pub fn zeros(name: impl Into<String>, shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor {
            name: name.into(),
            shape,
            data: vec![0.0; n],
        }
    }

    /// A tensor of this one's name and shape holding `data`: a gradient of this parameter.
    pub(crate) fn like(&self, data: Vec<f32>) -> Tensor {
        Tensor {
            name: self.name.clone(),
            shape: self.shape.clone(),
            data,
        }
    }

    /// Euclidean norm, accumulated in f64.
    pub fn l2_norm(&self) -> f32 {
        ops::sum_sq(&self.data).sqrt() as f32
    }

    /// Whether L2 decay applies (weights yes, biases no).
    pub fn is_weight(&self) -> bool {
        self.name.ends_with(".weight")
    }
}

/// Gradients of the loss, one tensor per parameter with the same name, shape
/// and order as [`crate::model::net::Model::params`].
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    /// In parameter order.
    pub tensors: Vec<Tensor>,
}

/// Diagnostics of one layer for one batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStats {
    /// Layer name, `conv{i}` or `dense{i}`.
    pub name: String,
    /// For hidden layers and conv blocks: fraction of units (channels for
    /// conv blocks) whose post-activation output is exactly 0 for every row of
    /// the batch (every position too, for conv). Meaningful for ReLU ("dead
    /// ReLUs"); LeakyReLU/Tanh/Sigmoid are practically never 0 everywhere.
    /// `None` for the output layer.
    pub dead_fraction: Option<f32>,
    /// Which units `dead_fraction` counts (empty for the output layer): what a batch
    /// computed in shards merges.
    #[serde(skip)]
    pub dead_units: Vec<bool>,
    /// L2 norm of the weight gradient (including the l2 term).
    pub weight_grad_norm: f32,
    /// L2 norm of the bias gradient.
    pub bias_grad_norm: f32,
}

/// Per-batch diagnostics returned by `loss_grad`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Conv blocks first, then dense layers, in forward order.
    pub layers: Vec<LayerStats>,
    /// Rows whose argmax prediction (before this step's update) equals the label.
    pub correct: usize,
    /// Rows in the batch.
    pub batch: usize,
    /// For a network with batch normalization, the batch's mean and unbiased variance per
    /// channel of every normalization, named and ordered like the model's buffers (what
    /// [`crate::model::net::Model::track_running`] folds into the running statistics);
    /// empty for other models.
    #[serde(skip)]
    pub batch_norm: Vec<Tensor>,
}

/// Errors from building, running, training or (de)serializing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The architecture cannot be built (zero sizes, image too small, ...).
    #[error("invalid model spec: {0}")]
    InvalidSpec(String),
    /// `x` does not hold `batch * input_len` values, or `batch == 0`.
    #[error("input has {got} values, expected batch {batch} x {per_example} per example")]
    InputShape {
        got: usize,
        batch: usize,
        per_example: usize,
    },
    /// Label count differs from the batch size.
    #[error("got {got} labels for a batch of {batch}")]
    LabelCount { got: usize, batch: usize },
    /// A label is not a valid class index.
    #[error("label {label} at row {row} is out of range for {classes} classes")]
    LabelRange { label: u32, row: usize, classes: usize },
    /// A hyper-parameter is out of range (negative lr, l2, ...).
    #[error("invalid hyper-parameter: {0}")]
    Hyper(String),
    /// Gradients or optimizer state do not match the model's parameters.
    #[error("gradients do not match the model: {0}")]
    GradMismatch(String),
    /// A weights file is well-formed safetensors but not a model we can load.
    #[error("model file: {0}")]
    Format(String),
    /// The safetensors container itself is malformed.
    #[error("safetensors: {0}")]
    SafeTensors(#[from] safetensors::SafeTensorError),
    /// Architecture JSON could not be (de)serialized.
    #[error("architecture JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading or writing a weights file failed.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Validates the shapes of a batch: `batch > 0`, `x.len() == batch *
/// per_example`, and (when given) one in-range label per row.
pub(crate) fn check_batch(
    x: &[f32],
    y: Option<&[u32]>,
    batch: usize,
    per_example: usize,
    classes: usize,
) -> Result<(), ModelError> {
    if batch == 0 || batch.checked_mul(per_example) != Some(x.len()) {
        return Err(ModelError::InputShape {
            got: x.len(),
            batch,
            per_example,
        });
    }
    if let Some(y) = y {
        if y.len() != batch {
            return Err(ModelError::LabelCount { got: y.len(), batch });
        }
        if let Some((row, &label)) = y.iter().enumerate().find(|(_, l)| **l as usize >= classes) {
            return Err(ModelError::LabelRange { label, row, classes });
        }
    }
    Ok(())
}

/// What a training step minimizes: the mean cross-entropy against labels smoothed by
/// `smoothing` (each row's target is `1 − smoothing + smoothing/K` for its label and
/// `smoothing/K` for every other class, as PyTorch's `CrossEntropyLoss(label_smoothing)`),
/// plus `l2/2 · Σ w²` over the weight tensors. An `f32` is an L2 coefficient without
/// smoothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Loss {
    /// The L2 coefficient (≥ 0).
    pub l2: f32,
    /// The label smoothing, in `[0, 1)`.
    pub smoothing: f32,
}

impl From<f32> for Loss {
    fn from(l2: f32) -> Loss {
        Loss { l2, smoothing: 0.0 }
    }
}

impl Loss {
    /// Validates the coefficients.
    pub(crate) fn check(self) -> Result<(), ModelError> {
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(ModelError::Hyper(format!(
                "l2 must be finite and >= 0, got {}",
                self.l2
            )));
        }
        if !(0.0..1.0).contains(&self.smoothing) {
            return Err(ModelError::Hyper(format!(
                "label smoothing must be in [0, 1), got {}",
                self.smoothing
            )));
        }
        Ok(())
    }

    /// The loss of a batch's `logits` for labels `y` (the mean smoothed cross-entropy plus
    /// the L2 term of weights whose squares sum to `weight_sq_sum`), in f64, and the
    /// cross-entropy's pieces.
    pub(crate) fn of(self, logits: &[f32], y: &[u32], classes: usize, weight_sq_sum: f64) -> (f64, ops::Xent) {
        let xent = ops::softmax_xent(logits, y, classes, self.smoothing);
        let value = xent.nll_sum / y.len().max(1) as f64 + 0.5 * f64::from(self.l2) * weight_sq_sum;
        (value, xent)
    }
}
