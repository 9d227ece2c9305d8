//! Small residual network with batch normalization, in the style of the fast CIFAR-10
//! ResNets: a stem of conv → BN → ReLU, then one stage per further width of conv → BN →
//! ReLU → 2×2 max-pool, some stages followed by a residual block (`x + f(x)`, `f` two conv →
//! BN → ReLU units at the stage's width), then a global max or average pool over the last
//! map and a dense layer to the classes.
//!
//! Every conv is 3×3, stride 1, zero pad 1, without a bias (the batch norm's shift is one),
//! computed as in [`super::cnn`]: one sgemm over an im2col matrix, activations NHWC.
//!
//! Batch normalization: in training ([`Resnet::loss_grad`]) each unit normalizes its conv
//! output per channel with the batch's mean and (biased) variance, `ε = 1e-5`; the batch's
//! statistics (variance unbiased) come back in [`Stats::batch_norm`] and
//! [`Resnet::track_running`] folds them into the running statistics with momentum 0.1, as
//! PyTorch's `BatchNorm2d` does. Prediction ([`Resnet::forward`]) normalizes with the running
//! statistics. A training step computed in shards normalizes each shard with its own
//! statistics ("ghost" batch norm): the same for any number of threads.
//!
//! Parameters, in order, for the `i`-th conv unit in forward order: `conv{i}.weight`
//! `[out, in, 3, 3]`, `bn{i}.weight` (γ) and `bn{i}.bias` (β) `[out]`; then the head's
//! `dense0.weight` `[classes, width]` and `dense0.bias`. Buffers (saved with the weights, not
//! trained): `bn{i}.running_mean`, `bn{i}.running_var`. The names and layouts are PyTorch's
//! (`nn.Conv2d(bias=False)`, `nn.BatchNorm2d`, `nn.Linear`).

use serde::{Deserialize, Serialize};

use super::cnn::{max_pool, taps};
use super::mlp::{Activation, DenseSpec, Init, Mlp, MlpCache, MlpSpec, dead_units, fraction_of, init_weight};
use super::ops::{self, View};
use super::{Grads, LayerStats, Loss, ModelError, Stats, Tensor, check_batch};

/// Added to the variance before its square root.
pub const BN_EPS: f32 = 1e-5;
/// Weight of a batch's statistics in the running statistics.
pub const BN_MOMENTUM: f32 = 0.1;

/// How the last feature map becomes one vector per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalPool {
    /// Each channel's largest value. Its features are larger than the mean's, and so are the
    /// dense layer's first logits: it needs a lower learning rate (on the shipped photos,
    /// SGD at 0.01 diverged in the first epochs where the mean trained).
    Max,
    /// Each channel's mean.
    #[default]
    Avg,
}

/// Architecture of a [`Resnet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResnetSpec {
    /// Input image shape `[height, width, channels]` (HWC).
    pub input: [usize; 3],
    /// The stem's width, then each stage's (each stage halves the map).
    pub widths: Vec<usize>,
    /// Indices into `widths` of the stages (0: the stem) followed by a residual block.
    #[serde(default)]
    pub residual: Vec<usize>,
    /// The global pooling before the dense layer.
    #[serde(default)]
    pub pool: GlobalPool,
    /// Number of classes (≥ 2).
    pub classes: usize,
    /// Init of the convs and the dense layer (γ starts at 1, β at 0).
    #[serde(default)]
    pub init: Init,
}

impl ResnetSpec {
    /// `(h, w, c_in, c_out)` of every conv unit in forward order, and the `[h, w, c]` of the
    /// last map; `None` when a stage's map would be smaller than 2×2 before its pool.
    fn geometry(&self) -> Option<(Vec<[usize; 4]>, [usize; 3])> {
        let [mut h, mut w, mut c] = self.input;
        let mut units = Vec::new();
        for (s, &width) in self.widths.iter().enumerate() {
            if s > 0 && (h < 2 || w < 2) {
                return None;
            }
            units.push([h, w, c, width]);
            if s > 0 {
                (h, w) = (h / 2, w / 2);
            }
            c = width;
            if self.residual.contains(&s) {
                units.push([h, w, c, c]);
                units.push([h, w, c, c]);
            }
        }
        Some((units, [h, w, c]))
    }

    /// Parameters and buffers, or `None` if that overflows or the input is too small.
    pub fn tensor_count(&self) -> Option<usize> {
        let (units, [_, _, c]) = self.geometry()?;
        let mut total = c.checked_mul(self.classes)?.checked_add(self.classes)?;
        for [_, _, c_in, c_out] in units {
            let conv = c_in.checked_mul(9)?.checked_mul(c_out)?;
            total = total.checked_add(conv)?.checked_add(c_out.checked_mul(4)?)?;
        }
        Some(total)
    }
}

/// One conv → BN → ReLU unit and the geometry of its input.
#[derive(Debug, Clone, PartialEq)]
struct Unit {
    /// `conv{i}.weight`, `[c_out, c_in, 3, 3]`.
    weight: Tensor,
    /// `bn{i}.weight` (γ).
    gamma: Tensor,
    /// `bn{i}.bias` (β).
    beta: Tensor,
    /// `bn{i}.running_mean`.
    mean: Tensor,
    /// `bn{i}.running_var`.
    var: Tensor,
    h: usize,
    w: usize,
    c_in: usize,
    c_out: usize,
}

/// What a unit's backward pass needs from its forward pass (training only).
#[derive(Default)]
struct UnitCache {
    /// im2col of the input, `(batch·h·w) × (9·c_in)`.
    cols: Vec<f32>,
    /// Normalized conv output, `rows × c_out`.
    xhat: Vec<f32>,
    /// `1 / √(var + ε)` per channel.
    inv_std: Vec<f32>,
    /// The batch's mean and unbiased variance per channel.
    batch_mean: Vec<f32>,
    batch_var: Vec<f32>,
    /// The conv weight in the patches' column order ([`tap_major`]), as the forward used it.
    weight_taps: Vec<f32>,
}

impl Unit {
    fn new(i: usize, [h, w, c_in, c_out]: [usize; 4], init: Init, rng: &mut rand_chacha::ChaCha8Rng) -> Unit {
        let ones = |name: String| Tensor {
            data: vec![1.0; c_out],
            ..Tensor::zeros(name, vec![c_out])
        };
        Unit {
            weight: init_weight(
                init,
                format!("conv{i}.weight"),
                vec![c_out, c_in, 3, 3],
                c_in * 9,
                c_out * 9,
                rng,
            ),
            gamma: ones(format!("bn{i}.weight")),
            beta: Tensor::zeros(format!("bn{i}.bias"), vec![c_out]),
            mean: Tensor::zeros(format!("bn{i}.running_mean"), vec![c_out]),
            var: ones(format!("bn{i}.running_var")),
            h,
            w,
            c_in,
            c_out,
        }
    }

    fn k(&self) -> usize {
        self.c_in * 9
    }

    /// Conv → BN → ReLU of `x` (`batch × h × w × c_in`). In training the batch's statistics
    /// normalize and the cache is filled; otherwise the running statistics do.
    fn forward(&self, x: &[f32], batch: usize, train: bool) -> (Vec<f32>, UnitCache) {
        let rows = batch * self.h * self.w;
        let c = self.c_out;
        let cols = patches(x, batch, self.h, self.w, self.c_in);
        let wt = tap_major(&self.weight.data, self.c_in);
        let mut z = vec![0.0f32; rows * c];
        ops::gemm(
            rows,
            self.k(),
            c,
            View::rows(&cols, self.k()),
            View::rows_t(&wt, self.k()),
            0.0,
            &mut z,
        );
        let mut cache = UnitCache::default();
        let (mean, var) = if train {
            let (mean, var) = channel_moments(&z, c);
            let unbiased = rows as f32 / (rows.max(2) - 1) as f32;
            cache.batch_var = var.iter().map(|v| v * unbiased).collect();
            cache.batch_mean = mean.clone();
            (mean, var)
        } else {
            (self.mean.data.clone(), self.var.data.clone())
        };
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
        for row in z.chunks_exact_mut(c) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (*v - mean[j]) * inv_std[j];
            }
        }
        // Training keeps x̂ for the backward pass; prediction scales it in place.
        let mut out = if train { z.clone() } else { std::mem::take(&mut z) };
        for row in out.chunks_exact_mut(c) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (*v * self.gamma.data[j] + self.beta.data[j]).max(0.0);
            }
        }
        if train {
            cache.cols = cols;
            cache.xhat = z;
            cache.inv_std = inv_std;
            cache.weight_taps = wt;
        }
        (out, cache)
    }

    /// Backward from `dout` (∂loss/∂ this unit's output `out`): the gradients of the conv
    /// weight and γ (each with its `l2` term), β, and ∂loss/∂input when `need_dx`.
    fn backward(
        &self,
        cache: &UnitCache,
        out: &[f32],
        mut dout: Vec<f32>,
        l2: f32,
        need_dx: bool,
    ) -> ([Tensor; 3], Option<Vec<f32>>) {
        let c = self.c_out;
        let rows = out.len() / c;
        dout.iter_mut().zip(out).for_each(|(d, a)| {
            if *a <= 0.0 {
                *d = 0.0
            }
        });
        // dγ = Σ dy·x̂, dβ = Σ dy per channel.
        let (mut sum_dy, mut sum_dy_xhat) = (vec![0.0f64; c], vec![0.0f64; c]);
        for (drow, xrow) in dout.chunks_exact(c).zip(cache.xhat.chunks_exact(c)) {
            for j in 0..c {
                sum_dy[j] += f64::from(drow[j]);
                sum_dy_xhat[j] += f64::from(drow[j]) * f64::from(xrow[j]);
            }
        }
        let dgamma = (sum_dy_xhat.iter().zip(&self.gamma.data))
            .map(|(v, g)| *v as f32 + l2 * g)
            .collect();
        let dgamma = self.gamma.like(dgamma);
        let dbeta = self.beta.like(sum_dy.iter().map(|v| *v as f32).collect());
        // dz = γ·inv_std/M · (M·dy − Σdy − x̂·Σ(dy·x̂)), in place of dy.
        let m = rows as f32;
        let scale: Vec<f32> = (0..c).map(|j| self.gamma.data[j] * cache.inv_std[j] / m).collect();
        let mean_dy: Vec<f32> = sum_dy.iter().map(|v| *v as f32).collect();
        let mean_dyx: Vec<f32> = sum_dy_xhat.iter().map(|v| *v as f32).collect();
        for (drow, xrow) in dout.chunks_exact_mut(c).zip(cache.xhat.chunks_exact(c)) {
            for j in 0..c {
                drow[j] = scale[j] * (m * drow[j] - mean_dy[j] - xrow[j] * mean_dyx[j]);
            }
        }
        let dz = dout;
        // In the patches' (tap, channel) column order, then back to the weight's.
        let mut dwt = vec![0.0f32; self.weight.data.len()];
        ops::gemm(
            c,
            rows,
            self.k(),
            View::rows_t(&dz, c),
            View::rows(&cache.cols, self.k()),
            0.0,
            &mut dwt,
        );
        let mut dw = channel_major(&dwt, self.c_in);
        dw.iter_mut().zip(&self.weight.data).for_each(|(d, w)| *d += l2 * w);
        let dx = need_dx.then(|| {
            let mut dcols = vec![0.0f32; rows * self.k()];
            ops::gemm(
                rows,
                c,
                self.k(),
                View::rows(&dz, c),
                View::rows(&cache.weight_taps, self.k()),
                0.0,
                &mut dcols,
            );
            unpatch(&dcols, rows / (self.h * self.w), self.h, self.w, self.c_in)
        });
        ([self.weight.like(dw), dgamma, dbeta], dx)
    }
}

/// NHWC `batch × h × w × c` → `(batch·h·w) × (9·c)` patches, column `(ky·3 + kx)·c + ci`
/// holding `x[n, y+ky−1, x+kx−1, ci]` (0 outside): each tap is one contiguous copy of a
/// pixel's channels.
fn patches(x: &[f32], batch: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut cols = vec![0.0f32; batch * h * w * 9 * c];
    for (r, row) in cols.chunks_exact_mut(9 * c).enumerate() {
        for (t, p) in taps(r, h, w) {
            row[t * c..(t + 1) * c].copy_from_slice(&x[p * c..(p + 1) * c]);
        }
    }
    cols
}

/// Adjoint of [`patches`]: scatter-adds patch gradients back to NHWC.
fn unpatch(cols: &[f32], batch: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; batch * h * w * c];
    for (r, row) in cols.chunks_exact(9 * c).enumerate() {
        for (t, p) in taps(r, h, w) {
            x[p * c..(p + 1) * c]
                .iter_mut()
                .zip(&row[t * c..(t + 1) * c])
                .for_each(|(v, g)| *v += g);
        }
    }
    x
}

/// A conv weight `[out, c, 3, 3]` with each output's values reordered `(tap, channel)`,
/// the column order of [`patches`].
fn tap_major(weight: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; weight.len()];
    for (src, dst) in weight.chunks_exact(9 * c).zip(out.chunks_exact_mut(9 * c)) {
        for ci in 0..c {
            for t in 0..9 {
                dst[t * c + ci] = src[ci * 9 + t];
            }
        }
    }
    out
}

/// Inverse of [`tap_major`].
fn channel_major(weight: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; weight.len()];
    for (src, dst) in weight.chunks_exact(9 * c).zip(out.chunks_exact_mut(9 * c)) {
        for ci in 0..c {
            for t in 0..9 {
                dst[ci * 9 + t] = src[t * c + ci];
            }
        }
    }
    out
}

/// Per-column mean and biased variance of a row-major matrix (two passes, in f64).
fn channel_moments(z: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = (z.len() / c).max(1) as f64;
    let mut sum = vec![0.0f64; c];
    for row in z.chunks_exact(c) {
        sum.iter_mut().zip(row).for_each(|(s, v)| *s += f64::from(*v));
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / rows).collect();
    let mut sq = vec![0.0f64; c];
    for row in z.chunks_exact(c) {
        for j in 0..c {
            let d = f64::from(row[j]) - mean[j];
            sq[j] += d * d;
        }
    }
    (
        mean.iter().map(|v| *v as f32).collect(),
        sq.iter().map(|v| (*v / rows) as f32).collect(),
    )
}

/// A stage: its conv unit, whether a 2×2 max-pool follows, and the indices (into the
/// units) of its residual block's two units.
#[derive(Debug, Clone, PartialEq)]
struct Stage {
    conv: usize,
    pool: bool,
    residual: Option<[usize; 2]>,
}

/// Residual network; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Resnet {
    spec: ResnetSpec,
    units: Vec<Unit>,
    stages: Vec<Stage>,
    /// `[h, w, c]` of the last map.
    last: [usize; 3],
    head: Mlp,
}

/// Forward intermediates of one stage (training).
struct StageCache {
    conv: UnitCache,
    /// The conv unit's output (before the pool).
    conv_out: Vec<f32>,
    /// Per pooled value, the index in `conv_out` it came from (empty without a pool).
    argmax: Vec<usize>,
    /// The residual block's units' caches and outputs.
    residual: Option<([UnitCache; 2], [Vec<f32>; 2])>,
}

/// A forward pass's intermediates.
struct Run {
    stages: Vec<StageCache>,
    /// The last map (`batch × h × w × c`).
    map: Vec<f32>,
    /// The pooled features (`batch × c`) and, for a max pool, the index in `map` of each.
    feats: Vec<f32>,
    feat_arg: Vec<usize>,
    head: MlpCache,
}

impl Resnet {
    /// Builds the network with weights from a ChaCha8 stream seeded by `seed` (the units
    /// in forward order, then the dense layer).
    pub fn new(spec: &ResnetSpec, seed: u64) -> Result<Resnet, ModelError> {
        if spec.input.contains(&0) {
            return Err(ModelError::InvalidSpec(format!(
                "input shape must be positive, got {:?}",
                spec.input
            )));
        }
        if spec.widths.is_empty() || spec.widths.contains(&0) {
            return Err(ModelError::InvalidSpec(format!(
                "widths must be a non-empty list of positive channel counts, got {:?}",
                spec.widths
            )));
        }
        if let Some(r) = spec.residual.iter().find(|r| **r >= spec.widths.len()) {
            return Err(ModelError::InvalidSpec(format!(
                "residual stage {r} does not exist: there are {} stages (0 is the stem)",
                spec.widths.len()
            )));
        }
        if spec.classes < 2 {
            return Err(ModelError::InvalidSpec(format!(
                "classes must be >= 2, got {}",
                spec.classes
            )));
        }
        let Some((geometry, last)) = spec.geometry() else {
            return Err(ModelError::InvalidSpec(format!(
                "a {}x{} input is too small for {} pooling stages; use fewer widths or larger images",
                spec.input[0],
                spec.input[1],
                spec.widths.len() - 1
            )));
        };
        let mut rng = ops::rng_for(seed, 0, b"init\0\0\0\0");
        let units: Vec<Unit> = geometry
            .into_iter()
            .enumerate()
            .map(|(i, g)| Unit::new(i, g, spec.init, &mut rng))
            .collect();
        let mut stages = Vec::with_capacity(spec.widths.len());
        let mut next = 0;
        for s in 0..spec.widths.len() {
            let residual = spec.residual.contains(&s).then_some([next + 1, next + 2]);
            stages.push(Stage {
                conv: next,
                pool: s > 0,
                residual,
            });
            next += if residual.is_some() { 3 } else { 1 };
        }
        let head = Mlp::with_rng(
            &MlpSpec {
                input_len: last[2],
                dense: DenseSpec {
                    hidden: Vec::new(),
                    classes: spec.classes,
                    activation: Activation::Relu,
                    init: spec.init,
                },
            },
            &mut rng,
        )?;
        Ok(Resnet {
            spec: spec.clone(),
            units,
            stages,
            last,
            head,
        })
    }

    /// The architecture.
    pub fn spec(&self) -> &ResnetSpec {
        &self.spec
    }

    /// Values per example, `H·W·C`.
    pub fn input_len(&self) -> usize {
        self.spec.input.iter().product()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.spec.classes
    }

    /// `conv{i}.weight`, `bn{i}.weight`, `bn{i}.bias` per unit, then `dense0.*`.
    pub fn params(&self) -> Vec<&Tensor> {
        let units = self.units.iter().flat_map(|u| [&u.weight, &u.gamma, &u.beta]);
        units.chain(self.head.params()).collect()
    }

    /// Mutable [`Resnet::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        let units = self
            .units
            .iter_mut()
            .flat_map(|u| [&mut u.weight, &mut u.gamma, &mut u.beta]);
        units.chain(self.head.params_mut()).collect()
    }

    /// The running statistics: `bn{i}.running_mean`, `bn{i}.running_var` per unit.
    pub fn buffers(&self) -> Vec<&Tensor> {
        self.units.iter().flat_map(|u| [&u.mean, &u.var]).collect()
    }

    /// Mutable [`Resnet::buffers`].
    pub fn buffers_mut(&mut self) -> Vec<&mut Tensor> {
        self.units.iter_mut().flat_map(|u| [&mut u.mean, &mut u.var]).collect()
    }

    /// [`Resnet::params`], then [`Resnet::buffers`], mutable at once.
    pub fn stored_mut(&mut self) -> Vec<&mut Tensor> {
        let mut params = Vec::with_capacity(3 * self.units.len() + 2);
        let mut buffers = Vec::with_capacity(2 * self.units.len());
        for u in &mut self.units {
            params.extend([&mut u.weight, &mut u.gamma, &mut u.beta]);
            buffers.extend([&mut u.mean, &mut u.var]);
        }
        params.extend(self.head.params_mut());
        params.extend(buffers);
        params
    }

    /// Folds a training batch's statistics ([`Stats::batch_norm`], in [`Resnet::buffers`]
    /// order) into the running statistics: `running ← (1 − 0.1)·running + 0.1·batch`.
    pub fn track_running(&mut self, batch: &[Tensor]) -> Result<(), ModelError> {
        let buffers = self.buffers_mut();
        if buffers.len() != batch.len() {
            return Err(ModelError::GradMismatch(format!(
                "{} batch statistics for {} running statistics",
                batch.len(),
                buffers.len()
            )));
        }
        for (run, b) in buffers.into_iter().zip(batch) {
            if run.name != b.name || run.data.len() != b.data.len() {
                return Err(ModelError::GradMismatch(format!(
                    "batch statistic {:?} does not match running statistic {:?}",
                    b.name, run.name
                )));
            }
            run.data
                .iter_mut()
                .zip(&b.data)
                .for_each(|(r, v)| *r = (1.0 - BN_MOMENTUM) * *r + BN_MOMENTUM * v);
        }
        Ok(())
    }

    /// Softmax probabilities with the running statistics, `batch × classes`. Rows are taken
    /// 16 at a time (each row's result is independent of the others'), so the patch matrices
    /// stay in cache: 60 ms for 64 rows of 32x32 against 100 at once (`bench_forward_backward`).
    pub fn forward(&self, x: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        const ROWS: usize = 16;
        let d = self.input_len();
        check_batch(x, None, batch, d, self.classes())?;
        let mut p = Vec::with_capacity(batch * self.classes());
        for chunk in x.chunks(ROWS * d) {
            p.extend(self.run(chunk, chunk.len() / d, false).head.logits);
        }
        ops::softmax_rows(&mut p, self.classes());
        Ok(p)
    }

    /// Loss with the batch's statistics, gradients (in [`Resnet::params`] order) and
    /// diagnostics, whose [`Stats::batch_norm`] holds the batch's statistics.
    pub(crate) fn loss_grad(&self, x: &[f32], y: &[u32], batch: usize, loss: Loss) -> (f32, Grads, Stats) {
        let l2 = loss.l2;
        let run = self.run(x, batch, true);
        let (loss, xent) = loss.of(&run.head.logits, y, self.classes(), self.weight_sq_sum());
        let (head_grads, head_stats, dfeat) = self.head.backward(&run.feats, batch, &run.head, xent.dlogits, l2, true);
        let dfeat = dfeat.unwrap_or_default();
        // Global pool backward.
        let [h, w, c] = self.last;
        let mut dout = vec![0.0f32; run.map.len()];
        match self.spec.pool {
            GlobalPool::Max => {
                for (&src, g) in run.feat_arg.iter().zip(&dfeat) {
                    dout[src] += g;
                }
            }
            GlobalPool::Avg => {
                let inv = 1.0 / (h * w) as f32;
                for (n, img) in dout.chunks_exact_mut(h * w * c).enumerate() {
                    for px in img.chunks_exact_mut(c) {
                        px.iter_mut()
                            .zip(&dfeat[n * c..(n + 1) * c])
                            .for_each(|(d, g)| *d = g * inv);
                    }
                }
            }
        }
        let mut unit_grads: Vec<Option<[Tensor; 3]>> = vec![None; self.units.len()];
        let mut unit_stats: Vec<Option<LayerStats>> = vec![None; self.units.len()];
        let mut record = |i: usize, g: [Tensor; 3], out: &[f32]| {
            let dead = dead_units(out, self.units[i].c_out);
            unit_stats[i] = Some(LayerStats {
                name: format!("conv{i}"),
                dead_fraction: Some(fraction_of(&dead)),
                dead_units: dead,
                weight_grad_norm: g[0].l2_norm(),
                bias_grad_norm: g[2].l2_norm(),
            });
            unit_grads[i] = Some(g);
        };
        for (s, (stage, cache)) in self.stages.iter().zip(&run.stages).enumerate().rev() {
            if let (Some([a, b]), Some((caches, outs))) = (stage.residual, &cache.residual) {
                let (gb, db) = self.units[b].backward(&caches[1], &outs[1], dout.clone(), l2, true);
                record(b, gb, &outs[1]);
                let (ga, da) = self.units[a].backward(&caches[0], &outs[0], db.unwrap_or_default(), l2, true);
                record(a, ga, &outs[0]);
                dout.iter_mut().zip(da.unwrap_or_default()).for_each(|(d, v)| *d += v);
            }
            let dconv = if stage.pool {
                let mut d = vec![0.0f32; cache.conv_out.len()];
                for (&src, g) in cache.argmax.iter().zip(&dout) {
                    d[src] += g;
                }
                d
            } else {
                dout
            };
            let (g, dx) = self.units[stage.conv].backward(&cache.conv, &cache.conv_out, dconv, l2, s > 0);
            record(stage.conv, g, &cache.conv_out);
            dout = dx.unwrap_or_default();
        }
        let mut grads: Vec<Tensor> = unit_grads.into_iter().flatten().flatten().collect();
        grads.extend(head_grads);
        let mut layers: Vec<LayerStats> = unit_stats.into_iter().flatten().collect();
        layers.extend(head_stats);
        let mut batch_norm = Vec::with_capacity(2 * self.units.len());
        let mut stat = |i: usize, c: &UnitCache| {
            let u = &self.units[i];
            batch_norm.push((i, u.mean.like(c.batch_mean.clone())));
            batch_norm.push((i, u.var.like(c.batch_var.clone())));
        };
        for (stage, cache) in self.stages.iter().zip(&run.stages) {
            stat(stage.conv, &cache.conv);
            if let (Some([a, b]), Some((caches, _))) = (stage.residual, &cache.residual) {
                stat(a, &caches[0]);
                stat(b, &caches[1]);
            }
        }
        batch_norm.sort_by_key(|(i, _)| *i);
        let stats = Stats {
            layers,
            correct: xent.correct,
            batch,
            batch_norm: batch_norm.into_iter().map(|(_, t)| t).collect(),
        };
        (loss as f32, Grads { tensors: grads }, stats)
    }

    /// Loss only, in f64, with the batch's statistics (finite-difference checks).
    #[cfg(test)]
    pub(crate) fn loss_f64(&self, x: &[f32], y: &[u32], batch: usize, loss: Loss) -> f64 {
        let run = self.run(x, batch, true);
        loss.of(&run.head.logits, y, self.classes(), self.weight_sq_sum()).0
    }

    /// ReLU signs and pool winners of every stage, then the global pool's.
    #[cfg(test)]
    pub(crate) fn kink_pattern(&self, x: &[f32], batch: usize) -> Vec<usize> {
        let run = self.run(x, batch, true);
        let mut p = Vec::new();
        for s in &run.stages {
            p.extend(s.conv_out.iter().map(|v| usize::from(*v > 0.0)));
            p.extend(&s.argmax);
            if let Some((_, outs)) = &s.residual {
                p.extend(outs.iter().flatten().map(|v| usize::from(*v > 0.0)));
            }
        }
        p.extend(&run.feat_arg);
        p
    }

    /// Σ w² over the weight tensors (convs, γ, the dense layer), in f64.
    fn weight_sq_sum(&self) -> f64 {
        let units: f64 = self
            .units
            .iter()
            .map(|u| ops::sum_sq(&u.weight.data) + ops::sum_sq(&u.gamma.data))
            .sum();
        units + self.head.weight_sq_sum()
    }

    /// The forward pass; with `train`, batch statistics and every intermediate the
    /// backward pass needs (otherwise the caches stay empty).
    fn run(&self, x: &[f32], batch: usize, train: bool) -> Run {
        let mut stages = Vec::with_capacity(self.stages.len());
        let mut map: Vec<f32> = Vec::new();
        for (s, stage) in self.stages.iter().enumerate() {
            let unit = &self.units[stage.conv];
            let input = if s == 0 { x } else { &map };
            let (conv_out, conv) = unit.forward(input, batch, train);
            let (mut out, argmax) = if stage.pool {
                max_pool(&conv_out, batch, unit.h, unit.w, unit.c_out)
            } else {
                (conv_out.clone(), Vec::new())
            };
            let residual = stage.residual.map(|[a, b]| {
                let (out_a, cache_a) = self.units[a].forward(&out, batch, train);
                let (out_b, cache_b) = self.units[b].forward(&out_a, batch, train);
                out.iter_mut().zip(&out_b).for_each(|(s, f)| *s += f);
                ([cache_a, cache_b], [out_a, out_b])
            });
            map = out;
            if train {
                stages.push(StageCache {
                    conv,
                    conv_out,
                    argmax,
                    residual,
                });
            }
        }
        let [h, w, c] = self.last;
        let mut feats = Vec::with_capacity(batch * c);
        let mut feat_arg = Vec::new();
        for (n, img) in map.chunks_exact(h * w * c).enumerate() {
            match self.spec.pool {
                GlobalPool::Max => {
                    for j in 0..c {
                        let mut best = j;
                        for p in (j..img.len()).step_by(c) {
                            if img[p] > img[best] {
                                best = p;
                            }
                        }
                        feats.push(img[best]);
                        feat_arg.push(n * h * w * c + best);
                    }
                }
                GlobalPool::Avg => {
                    let mut sum = vec![0.0f64; c];
                    for px in img.chunks_exact(c) {
                        sum.iter_mut().zip(px).for_each(|(s, v)| *s += f64::from(*v));
                    }
                    feats.extend(sum.iter().map(|s| (s / (h * w) as f64) as f32));
                }
            }
        }
        let head = self.head.run(&feats, batch);
        Run {
            stages,
            map,
            feats,
            feat_arg,
            head,
        }
    }
}
