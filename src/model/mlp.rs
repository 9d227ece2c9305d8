//! Multi-layer perceptron: a stack of dense layers with a softmax output.
//! With no hidden layers it is multinomial logistic regression. The dense
//! stack is also the head of the CNN ([`super::cnn`]), which is why the
//! cached forward and the backward pass are exposed to the crate.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::ops::{self, View};
use super::{Grads, LayerStats, Loss, ModelError, Stats, Tensor, check_batch};

/// Non-linearity applied after every hidden dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(0, z)`.
    #[default]
    Relu,
    /// `z` for `z > 0`, else `0.01·z`.
    LeakyRelu,
    /// `tanh(z)`.
    Tanh,
    /// `1 / (1 + e^−z)`.
    Sigmoid,
}

/// Slope of [`Activation::LeakyRelu`] for negative inputs.
pub const LEAKY_SLOPE: f32 = 0.01;

impl Activation {
    /// Applies the activation in place.
    pub(crate) fn apply(self, v: &mut [f32]) {
        match self {
            Activation::Relu => v.iter_mut().for_each(|z| *z = z.max(0.0)),
            Activation::LeakyRelu => v.iter_mut().for_each(|z| {
                if *z <= 0.0 {
                    *z *= LEAKY_SLOPE
                }
            }),
            Activation::Tanh => v.iter_mut().for_each(|z| *z = z.tanh()),
            Activation::Sigmoid => v.iter_mut().for_each(|z| *z = 1.0 / (1.0 + (-*z).exp())),
        }
    }

    /// Multiplies the upstream gradient `da` by f'(z), written in terms of the
    /// activation output `a` so the pre-activations need not be cached.
    pub(crate) fn backprop(self, a: &[f32], da: &mut [f32]) {
        let it = da.iter_mut().zip(a);
        match self {
            Activation::Relu => it.for_each(|(d, a)| {
                if *a <= 0.0 {
                    *d = 0.0
                }
            }),
            Activation::LeakyRelu => it.for_each(|(d, a)| {
                if *a <= 0.0 {
                    *d *= LEAKY_SLOPE
                }
            }),
            Activation::Tanh => it.for_each(|(d, a)| *d *= 1.0 - a * a),
            Activation::Sigmoid => it.for_each(|(d, a)| *d *= a * (1.0 - a)),
        }
    }
}

/// Weight initialization scheme (biases always start at 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Normal with std `sqrt(2 / fan_in)`: keeps ReLU activations' variance.
    #[default]
    He,
    /// Glorot normal, std `sqrt(2 / (fan_in + fan_out))`: for tanh/sigmoid.
    Xavier,
    /// All weights 0. Every hidden unit then computes the same function and
    /// receives the same gradient, so they stay identical forever (symmetry is
    /// never broken). Exists to demonstrate exactly that.
    Zeros,
}

/// Draws a weight tensor for `init` (consumes `rng` only for random inits).
pub(crate) fn init_weight(
    init: Init,
    name: String,
    shape: Vec<usize>,
    fan_in: usize,
    fan_out: usize,
    rng: &mut ChaCha8Rng,
) -> Tensor {
    let mut t = Tensor::zeros(name, shape);
    let std = match init {
        Init::He => (2.0 / fan_in as f64).sqrt(),
        Init::Xavier => (2.0 / (fan_in + fan_out) as f64).sqrt(),
        Init::Zeros => return t,
    };
    t.data.iter_mut().for_each(|w| *w = (ops::normal(rng) * std) as f32);
    t
}

/// The dense stack: all of an [`Mlp`], and the head of a CNN
/// ([`super::cnn::CnnSpec`]). Both specs flatten it into their JSON, so the two
/// write these fields under the same names, in the same order, after their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenseSpec {
    /// Hidden layer widths; empty = one dense layer (for an MLP, logistic regression).
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Number of classes (≥ 2).
    pub classes: usize,
    /// Activation of every hidden layer (a CNN's conv blocks always use ReLU).
    #[serde(default)]
    pub activation: Activation,
    /// Weight init (in a CNN, of the convs too).
    #[serde(default)]
    pub init: Init,
}

/// Architecture of an [`Mlp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlpSpec {
    /// Values per example (`H * W * C`).
    pub input_len: usize,
    /// The layers.
    #[serde(flatten)]
    pub dense: DenseSpec,
}

/// One dense layer: `out = in · weightᵀ + bias`, weight `[out, in]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dense {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Dense {
    fn out_len(&self) -> usize {
        self.bias.data.len()
    }

    fn in_len(&self) -> usize {
        self.weight.shape[1]
    }

    /// `a_in` (batch × in) → `batch × out` pre-activations.
    fn forward(&self, a_in: &[f32], batch: usize) -> Vec<f32> {
        let (n_in, n_out) = (self.in_len(), self.out_len());
        let mut z = vec![0.0; batch * n_out];
        ops::add_bias_rows(&mut z, &self.bias.data);
        let a = View::rows(a_in, n_in);
        let w_t = View::rows_t(&self.weight.data, n_in);
        ops::gemm(batch, n_in, n_out, a, w_t, 1.0, &mut z);
        z
    }
}

/// Dense stack classifier; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    spec: MlpSpec,
    layers: Vec<Dense>,
}

/// Everything the backward pass needs from a forward pass.
pub(crate) struct MlpCache {
    /// Post-activation output of each hidden layer, `batch × width`.
    pub hidden: Vec<Vec<f32>>,
    /// Output-layer logits, `batch × classes`.
    pub logits: Vec<f32>,
}

impl Mlp {
    /// Builds the MLP, drawing weights from a ChaCha8 stream seeded by `seed`.
    pub fn new(spec: &MlpSpec, seed: u64) -> Result<Mlp, ModelError> {
        let mut rng = ops::rng_for(seed, 0, b"init\0\0\0\0");
        Self::with_rng(spec, &mut rng)
    }

    /// Builds from an existing stream (the CNN draws its head after its convs).
    pub(crate) fn with_rng(spec: &MlpSpec, rng: &mut ChaCha8Rng) -> Result<Mlp, ModelError> {
        if spec.input_len == 0 {
            return Err(ModelError::InvalidSpec("input_len must be > 0".into()));
        }
        let dense = &spec.dense;
        if dense.classes < 2 {
            return Err(ModelError::InvalidSpec(format!(
                "classes must be >= 2, got {}",
                dense.classes
            )));
        }
        if dense.hidden.contains(&0) {
            return Err(ModelError::InvalidSpec(format!(
                "hidden layer widths must be > 0, got {:?}",
                dense.hidden
            )));
        }
        let mut widths = vec![spec.input_len];
        widths.extend(&dense.hidden);
        widths.push(dense.classes);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let (n_in, n_out) = (w[0], w[1]);
                Dense {
                    weight: init_weight(
                        dense.init,
                        format!("dense{i}.weight"),
                        vec![n_out, n_in],
                        n_in,
                        n_out,
                        rng,
                    ),
                    bias: Tensor::zeros(format!("dense{i}.bias"), vec![n_out]),
                }
            })
            .collect();
        Ok(Mlp {
            spec: spec.clone(),
            layers,
        })
    }

    /// The architecture.
    pub fn spec(&self) -> &MlpSpec {
        &self.spec
    }

    /// Values per example.
    pub fn input_len(&self) -> usize {
        self.spec.input_len
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.spec.dense.classes
    }

    /// `dense{i}.weight`, `dense{i}.bias`, ... in layer order.
    pub fn params(&self) -> Vec<&Tensor> {
        self.layers.iter().flat_map(|l| [&l.weight, &l.bias]).collect()
    }

    /// Mutable [`Mlp::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        self.layers
            .iter_mut()
            .flat_map(|l| [&mut l.weight, &mut l.bias])
            .collect()
    }

    /// Softmax probabilities, `batch × classes`.
    pub fn forward(&self, x: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        check_batch(x, None, batch, self.input_len(), self.classes())?;
        let mut p = self.run(x, batch).logits;
        ops::softmax_rows(&mut p, self.classes());
        Ok(p)
    }

    /// Loss, gradients (in [`Mlp::params`] order) and diagnostics.
    pub(crate) fn loss_grad(&self, x: &[f32], y: &[u32], batch: usize, loss: Loss) -> (f32, Grads, Stats) {
        let l2 = loss.l2;
        let cache = self.run(x, batch);
        let (loss, xent) = loss.of(&cache.logits, y, self.classes(), self.weight_sq_sum());
        let (tensors, layers, _) = self.backward(x, batch, &cache, xent.dlogits, l2, false);
        let stats = Stats {
            layers,
            correct: xent.correct,
            batch,
            batch_norm: Vec::new(),
        };
        (loss as f32, Grads { tensors }, stats)
    }

    /// Loss only, in f64 (finite-difference checks need the extra precision).
    #[cfg(test)]
    pub(crate) fn loss_f64(&self, x: &[f32], y: &[u32], batch: usize, loss: Loss) -> f64 {
        loss.of(&self.run(x, batch).logits, y, self.classes(), self.weight_sq_sum())
            .0
    }

    /// Sign pattern of the hidden activations (see `Model::kink_pattern`).
    #[cfg(test)]
    pub(crate) fn kink_pattern(&self, x: &[f32], batch: usize) -> Vec<usize> {
        pattern_of(&self.run(x, batch))
    }

    /// Σ w² over weight tensors (not biases), in f64.
    pub(crate) fn weight_sq_sum(&self) -> f64 {
        self.layers.iter().map(|l| ops::sum_sq(&l.weight.data)).sum()
    }

    /// Forward pass keeping the hidden activations. Input shape is trusted.
    pub(crate) fn run(&self, x: &[f32], batch: usize) -> MlpCache {
        let last = self.layers.len() - 1;
        let mut hidden: Vec<Vec<f32>> = Vec::with_capacity(last);
        for layer in &self.layers[..last] {
            let a_in = hidden.last().map_or(x, Vec::as_slice);
            let mut z = layer.forward(a_in, batch);
            self.spec.dense.activation.apply(&mut z);
            hidden.push(z);
        }
        let a_in = hidden.last().map_or(x, Vec::as_slice);
        let logits = self.layers[last].forward(a_in, batch);
        MlpCache { hidden, logits }
    }

    /// Backward pass from `dlogits` (∂loss/∂logits). Returns the gradients in
    /// parameter order (l2·W added to weight grads), per-layer stats, and —
    /// if `need_dx` — ∂loss/∂x (`batch × input_len`) for an upstream network.
    pub(crate) fn backward(
        &self,
        x: &[f32],
        batch: usize,
        cache: &MlpCache,
        dlogits: Vec<f32>,
        l2: f32,
        need_dx: bool,
    ) -> (Vec<Tensor>, Vec<LayerStats>, Option<Vec<f32>>) {
        let n = self.layers.len();
        let mut grads: Vec<Tensor> = Vec::with_capacity(2 * n);
        let mut stats: Vec<LayerStats> = Vec::with_capacity(n);
        let mut dz = dlogits;
        let mut dx = None;
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let (n_in, n_out) = (layer.in_len(), layer.out_len());
            let a_in: &[f32] = if i == 0 { x } else { &cache.hidden[i - 1] };
            // dW = dzᵀ · a_in + l2·W   ([out, batch] · [batch, in])
            let mut dw = layer.weight.data.clone();
            dw.iter_mut().for_each(|w| *w *= l2);
            ops::gemm(
                n_out,
                batch,
                n_in,
                View::rows_t(&dz, n_out),
                View::rows(a_in, n_in),
                1.0,
                &mut dw,
            );
            let dw = layer.weight.like(dw);
            let db = layer.bias.like(ops::col_sums(&dz, n_out));
            let dead_units = if i + 1 < n {
                dead_units(&cache.hidden[i], n_out)
            } else {
                Vec::new()
            };
            stats.push(LayerStats {
                name: format!("dense{i}"),
                dead_fraction: (i + 1 < n).then(|| fraction_of(&dead_units)),
                dead_units,
                weight_grad_norm: dw.l2_norm(),
                bias_grad_norm: db.l2_norm(),
            });
            grads.push(db);
            grads.push(dw);
            if i > 0 || need_dx {
                // da_in = dz · W   ([batch, out] · [out, in])
                let mut da = vec![0.0; batch * n_in];
                ops::gemm(
                    batch,
                    n_out,
                    n_in,
                    View::rows(&dz, n_out),
                    View::rows(&layer.weight.data, n_in),
                    0.0,
                    &mut da,
                );
                if i > 0 {
                    self.spec.dense.activation.backprop(&cache.hidden[i - 1], &mut da);
                    dz = da;
                } else {
                    dx = Some(da);
                }
            }
        }
        grads.reverse();
        stats.reverse();
        (grads, stats, dx)
    }
}

/// Sign pattern (1 where > 0) of cached hidden activations.
#[cfg(test)]
pub(crate) fn pattern_of(cache: &MlpCache) -> Vec<usize> {
    cache.hidden.iter().flatten().map(|v| usize::from(*v > 0.0)).collect()
}

/// Which of the `units` columns of `a` (rows × units) are exactly 0 in every row.
pub(crate) fn dead_units(a: &[f32], units: usize) -> Vec<bool> {
    let mut alive = vec![false; units];
    for rows in a.chunks(64 * units) {
        for row in rows.chunks_exact(units) {
            alive.iter_mut().zip(row).for_each(|(al, v)| *al |= *v != 0.0);
        }
        if alive.iter().all(|a| *a) {
            break;
        }
    }
    alive.iter().map(|a| !a).collect()
}

/// The fraction of `dead` that is true (0 when empty).
pub(crate) fn fraction_of(dead: &[bool]) -> f32 {
    dead.iter().filter(|d| **d).count() as f32 / dead.len().max(1) as f32
}
