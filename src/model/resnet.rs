//! Small residual network with batch normalization, in the style of the fast CIFAR-10
//! ResNets: a stem of conv → BN → ReLU, then one stage per further width of conv → BN →
//! ReLU → 2×2 max-pool, some stages followed by a residual block (`x + f(x)`, `f` two conv →
//! BN → ReLU units at the stage's width), then a global max or average pool over the last
//! map and a dense layer to the classes.
//!
//! Every conv is 3×3, stride 1, zero pad 1, without a bias (the batch norm's shift is one),
//! computed as in [`super::cnn`] (an sgemm over an im2col matrix, activations NHWC) but a few
//! images at a time, so that each tile's patch matrix stays in the core's cache
//! ([`Unit::tiles`]); the backward pass rebuilds the patches rather than keep them.
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

use super::cnn::max_pool;
use super::mlp::{Activation, DenseSpec, Init, Mlp, MlpCache, MlpSpec, dead_units, fraction_of, init_weight};
use super::ops::{self, View};
use super::{Grads, LayerStats, Loss, ModelError, Stats, Tensor, check_batch};

/// The size of a tile's patch matrix that [`Unit::tiles`] aims at: 256 KiB of f32.
const TILE_FLOATS: usize = 1 << 16;

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
    /// The unit's input, `batch × h × w × c_in`.
    input: Vec<f32>,
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

    /// `x` (`batch × h × w × c_in`) in tiles of whole images whose patches take about
    /// [`TILE_FLOATS`] values, each with its range of image indices: a tile's patches are
    /// built, multiplied and dropped while they are in the core's cache.
    fn tiles<'a>(&self, x: &'a [f32]) -> impl Iterator<Item = (std::ops::Range<usize>, &'a [f32])> {
        let image = self.h * self.w * self.c_in;
        let per_tile = (TILE_FLOATS / (image * 9)).max(1);
        x.chunks(per_tile * image)
            .enumerate()
            .map(move |(i, x)| (i * per_tile..i * per_tile + x.len() / image, x))
    }

    /// Conv → BN → ReLU of `x` (`batch × h × w × c_in`). In training the batch's statistics
    /// normalize and the cache is filled; otherwise the running statistics do.
    fn forward(&self, x: &[f32], batch: usize, train: bool) -> (Vec<f32>, UnitCache) {
        let rows = batch * self.h * self.w;
        let c = self.c_out;
        let wt = tap_major(&self.weight.data, self.c_in);
        let mut z = self.conv(x, &wt);
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
        let (gamma, beta) = (&self.gamma.data[..c], &self.beta.data[..c]);
        let (mean, inv) = (&mean[..c], &inv_std[..c]);
        // Training keeps x̂ for the backward pass; prediction scales it in place.
        let out = if train {
            let mut out = vec![0.0f32; z.len()];
            for (zrow, orow) in z.chunks_exact_mut(c).zip(out.chunks_exact_mut(c)) {
                for j in 0..c {
                    let xhat = (zrow[j] - mean[j]) * inv[j];
                    zrow[j] = xhat;
                    orow[j] = (xhat * gamma[j] + beta[j]).max(0.0);
                }
            }
            out
        } else {
            for row in z.chunks_exact_mut(c) {
                for j in 0..c {
                    row[j] = ((row[j] - mean[j]) * inv[j] * gamma[j] + beta[j]).max(0.0);
                }
            }
            std::mem::take(&mut z)
        };
        if train {
            cache.input = x.to_vec();
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
        // Through the ReLU; then dγ = Σ dy·x̂, dβ = Σ dy per channel.
        let (sum_dy, sum_dy_xhat) = relu_backward_sums(&mut dout, out, &cache.xhat, c);
        let dgamma = (sum_dy_xhat.iter().zip(&self.gamma.data))
            .map(|(v, g)| *v as f32 + l2 * g)
            .collect();
        let dgamma = self.gamma.like(dgamma);
        let dbeta = self.beta.like(sum_dy.iter().map(|v| *v as f32).collect());
        // dz = γ·inv_std/M · (M·dy − Σdy − x̂·Σ(dy·x̂)), in place of dy.
        let m = rows as f32;
        let scale: Vec<f32> = (0..c).map(|j| self.gamma.data[j] * cache.inv_std[j] / m).collect();
        let mean_dyx: Vec<f32> = sum_dy_xhat.iter().map(|v| *v as f32).collect();
        let (scale, mean_dy, mean_dyx) = (&scale[..c], &dbeta.data[..c], &mean_dyx[..c]);
        for (drow, xrow) in dout.chunks_exact_mut(c).zip(cache.xhat.chunks_exact(c)) {
            for j in 0..c {
                drow[j] = scale[j] * (m * drow[j] - mean_dy[j] - xrow[j] * mean_dyx[j]);
            }
        }
        let (dwt, dx) = self.conv_backward(&cache.input, &dout, &cache.weight_taps, need_dx);
        let mut dw = channel_major(&dwt, self.c_in);
        dw.iter_mut().zip(&self.weight.data).for_each(|(d, w)| *d += l2 * w);
        ([self.weight.like(dw), dgamma, dbeta], dx)
    }

    /// The 3×3 convolution of `x` (`batch × h × w × c_in`) with the tap-ordered weight `wt`
    /// ([`tap_major`]): `(batch·h·w) × c_out`, one sgemm per tile of patches.
    fn conv(&self, x: &[f32], wt: &[f32]) -> Vec<f32> {
        let (per_image, c) = (self.h * self.w, self.c_out);
        let mut z = vec![0.0f32; x.len() / self.c_in * c];
        let mut cols = Vec::new();
        for (tile, x) in self.tiles(x) {
            let rows = tile.len() * per_image;
            patches(x, tile.len(), self.h, self.w, self.c_in, &mut cols);
            let out = &mut z[tile.start * per_image * c..][..rows * c];
            ops::gemm(
                rows,
                self.k(),
                c,
                View::rows(&cols, self.k()),
                View::rows_t(wt, self.k()),
                0.0,
                out,
            );
        }
        z
    }

    /// The adjoint of [`Unit::conv`] at input `x` for output gradient `dz`: the weight's
    /// gradient in tap order, and the input's when `need_dx`. Each tile's patches are rebuilt
    /// while they are in cache instead of kept from the forward pass.
    fn conv_backward(&self, x: &[f32], dz: &[f32], wt: &[f32], need_dx: bool) -> (Vec<f32>, Option<Vec<f32>>) {
        let (per_image, c, k) = (self.h * self.w, self.c_out, self.k());
        let mut dwt = vec![0.0f32; c * k];
        let mut dx = vec![0.0f32; if need_dx { x.len() } else { 0 }];
        let (mut cols, mut dcols) = (Vec::new(), Vec::new());
        for (tile, x) in self.tiles(x) {
            let rows = tile.len() * per_image;
            let dz = &dz[tile.start * per_image * c..][..rows * c];
            patches(x, tile.len(), self.h, self.w, self.c_in, &mut cols);
            let beta = if tile.start == 0 { 0.0 } else { 1.0 };
            ops::gemm(c, rows, k, View::rows_t(dz, c), View::rows(&cols, k), beta, &mut dwt);
            if need_dx {
                dcols.resize(rows * k, 0.0);
                ops::gemm(rows, c, k, View::rows(dz, c), View::rows(wt, k), 0.0, &mut dcols);
                let dx = &mut dx[tile.start * per_image * self.c_in..][..rows * self.c_in];
                unpatch(&dcols, tile.len(), self.h, self.w, self.c_in, dx);
            }
        }
        (dwt, need_dx.then_some(dx))
    }
}

/// NHWC `batch × h × w × c` → `(batch·h·w) × (9·c)` patches, column `(ky·3 + kx)·c + ci`
/// holding `x[n, y+ky−1, x+kx−1, ci]` (0 outside). A kernel row's three taps are adjacent
/// pixels in `x` and adjacent columns here, so each is one copy, and every value is written
/// once.
fn patches(x: &[f32], batch: usize, h: usize, w: usize, c: usize, cols: &mut Vec<f32>) {
    cols.clear();
    cols.reserve(batch * h * w * 9 * c);
    for n in 0..batch {
        for y in 0..h {
            for xx in 0..w {
                let (x0, x1) = (xx.saturating_sub(1), (xx + 2).min(w));
                for ky in 0..3 {
                    let Some(iy) = (y + ky).checked_sub(1).filter(|v| *v < h) else {
                        cols.resize(cols.len() + 3 * c, 0.0);
                        continue;
                    };
                    if xx == 0 {
                        cols.resize(cols.len() + c, 0.0);
                    }
                    let base = (n * h + iy) * w;
                    cols.extend_from_slice(&x[(base + x0) * c..(base + x1) * c]);
                    if xx + 1 == w {
                        cols.resize(cols.len() + c, 0.0);
                    }
                }
            }
        }
    }
}

/// Adjoint of [`patches`]: adds patch gradients into the NHWC `x`, a kernel row's taps at
/// once.
fn unpatch(cols: &[f32], batch: usize, h: usize, w: usize, c: usize, x: &mut [f32]) {
    debug_assert_eq!(x.len(), batch * h * w * c);
    for (r, row) in cols.chunks_exact(9 * c).enumerate() {
        let (n, y, xx) = (r / (h * w), (r / w) % h, r % w);
        let (x0, x1) = (xx.saturating_sub(1), (xx + 2).min(w));
        let skip = if xx == 0 { c } else { 0 };
        for ky in 0..3 {
            let Some(iy) = (y + ky).checked_sub(1).filter(|v| *v < h) else {
                continue;
            };
            let base = (n * h + iy) * w;
            let src = &row[ky * 3 * c + skip..][..(x1 - x0) * c];
            x[(base + x0) * c..(base + x1) * c]
                .iter_mut()
                .zip(src)
                .for_each(|(v, g)| *v += g);
        }
    }
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

/// Rows summed in f32 before their sum joins an f64 total: exact enough, and vectorized.
const BLOCK_ROWS: usize = 64;

/// `N` per-column sums over a row-major matrix's rows, each in f32 per block of
/// [`BLOCK_ROWS`] rows (`block` adds a range of rows into the accumulators) and in f64
/// across blocks.
fn column_sums<const N: usize>(
    rows: usize,
    c: usize,
    mut block: impl FnMut(std::ops::Range<usize>, &mut [Vec<f32>; N]),
) -> [Vec<f64>; N] {
    let mut total: [Vec<f64>; N] = std::array::from_fn(|_| vec![0.0f64; c]);
    let mut acc: [Vec<f32>; N] = std::array::from_fn(|_| vec![0.0f32; c]);
    for start in (0..rows).step_by(BLOCK_ROWS) {
        acc.iter_mut().for_each(|a| a.fill(0.0));
        block(start..(start + BLOCK_ROWS).min(rows), &mut acc);
        for (total, acc) in total.iter_mut().zip(&acc) {
            total.iter_mut().zip(acc).for_each(|(t, a)| *t += f64::from(*a));
        }
    }
    total
}

/// Per-column mean and biased variance of a row-major matrix (two passes).
fn channel_moments(z: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = z.len() / c;
    let n = rows.max(1) as f64;
    let [sum] = column_sums(rows, c, |range, [acc]| {
        for row in z[range.start * c..range.end * c].chunks_exact(c) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
        }
    });
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let [sq] = column_sums(rows, c, |range, [acc]| {
        for row in z[range.start * c..range.end * c].chunks_exact(c) {
            for ((a, v), m) in acc.iter_mut().zip(row).zip(&mean) {
                *a += (v - m) * (v - m);
            }
        }
    });
    (mean, sq.iter().map(|v| (*v / n) as f32).collect())
}

/// A ReLU unit's backward through the ReLU, in place: `dy` is zeroed where the output `out`
/// is not positive. Returns Σ dy and Σ dy·x̂ per channel.
fn relu_backward_sums(dy: &mut [f32], out: &[f32], xhat: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = dy.len() / c;
    let [sum, sum_x] = column_sums(rows, c, |range, [acc, acc_x]| {
        let span = range.start * c..range.end * c;
        let rows = dy[span.clone()]
            .chunks_exact_mut(c)
            .zip(out[span.clone()].chunks_exact(c));
        for ((drow, orow), xrow) in rows.zip(xhat[span].chunks_exact(c)) {
            let (acc, acc_x) = (&mut acc[..c], &mut acc_x[..c]);
            for j in 0..c {
                let d = if orow[j] <= 0.0 { 0.0 } else { drow[j] };
                drow[j] = d;
                acc[j] += d;
                acc_x[j] += d * xrow[j];
            }
        }
    });
    (sum, sum_x)
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
            let (mut conv_out, conv) = unit.forward(input, batch, train);
            let (mut out, argmax) = if stage.pool {
                max_pool(&conv_out, batch, unit.h, unit.w, unit.c_out)
            } else if train {
                // The backward pass needs the unit's output apart from the map it becomes.
                (conv_out.clone(), Vec::new())
            } else {
                (std::mem::take(&mut conv_out), Vec::new())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` standard normal values from a seeded stream.
    fn normals(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ops::rng_for(seed, 0, b"tiletest");
        (0..n).map(|_| ops::normal(&mut rng) as f32).collect()
    }

    /// Direct 3×3 zero-padded convolution of NHWC `x` by `[out, in, 3, 3]` `w`, in f64.
    fn direct(x: &[f32], w: &[f32], [n, h, wd, ci]: [usize; 4], co: usize) -> Vec<f64> {
        let mut z = vec![0.0f64; n * h * wd * co];
        for b in 0..n {
            for y in 0..h {
                for xx in 0..wd {
                    for o in 0..co {
                        let mut acc = 0.0f64;
                        for (ky, kx, i) in
                            (0..3).flat_map(|ky| (0..3).flat_map(move |kx| (0..ci).map(move |i| (ky, kx, i))))
                        {
                            let (Some(iy), Some(ix)) = ((y + ky).checked_sub(1), (xx + kx).checked_sub(1)) else {
                                continue;
                            };
                            if iy < h && ix < wd {
                                let v = x[((b * h + iy) * wd + ix) * ci + i];
                                acc += f64::from(v) * f64::from(w[((o * ci + i) * 3 + ky) * 3 + kx]);
                            }
                        }
                        z[((b * h + y) * wd + xx) * co + o] = acc;
                    }
                }
            }
        }
        z
    }

    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-4 * scale,
                "{what}[{i}]: {g} against {w}"
            );
        }
    }

    /// A batch large enough for several tiles (the last one partial) gives the direct
    /// convolution's output and, through `conv`'s adjoint, its weight and input gradients.
    #[test]
    fn tiled_conv_and_its_adjoint_match_the_direct_convolution() {
        let (h, w, ci, co) = (12, 11, 8, 5);
        let per_tile = (TILE_FLOATS / (h * w * ci * 9)).max(1);
        let batch = 2 * per_tile + 1;
        let mut rng = ops::rng_for(7, 0, b"tiletest");
        let unit = Unit::new(0, [h, w, ci, co], Init::He, &mut rng);
        assert!(unit.tiles(&vec![0.0; batch * h * w * ci]).count() == 3, "three tiles");
        let (x, dz) = (normals(batch * h * w * ci, 8), normals(batch * h * w * co, 9));
        let wt = tap_major(&unit.weight.data, ci);
        assert_close(
            "z",
            &unit.conv(&x, &wt),
            &direct(&x, &unit.weight.data, [batch, h, w, ci], co),
        );
        let (dwt, dx) = unit.conv_backward(&x, &dz, &wt, true);
        // ⟨dz, conv(x + e)⟩ is linear in x and in w: each gradient entry is the response
        // to a unit input.
        let mut dw_want = vec![0.0f64; unit.weight.data.len()];
        for (j, d) in dw_want.iter_mut().enumerate() {
            let mut e = vec![0.0f32; unit.weight.data.len()];
            e[j] = 1.0;
            let z = direct(&x, &e, [batch, h, w, ci], co);
            *d = z.iter().zip(&dz).map(|(z, g)| z * f64::from(*g)).sum();
        }
        assert_close("dw", &channel_major(&dwt, ci), &dw_want);
        let dx = dx.expect("asked for");
        for j in (0..x.len()).step_by(37) {
            let mut e = vec![0.0f32; x.len()];
            e[j] = 1.0;
            let z = direct(&e, &unit.weight.data, [batch, h, w, ci], co);
            let want: f64 = z.iter().zip(&dz).map(|(z, g)| z * f64::from(*g)).sum();
            assert_close("dx", &dx[j..j + 1], &[want]);
        }
        assert!(unit.conv_backward(&x, &dz, &wt, false).1.is_none());
    }
}
