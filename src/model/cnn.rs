//! Small convolutional classifier: `blocks.len()` blocks of
//! conv 3×3 (stride 1, zero pad 1) → ReLU → max-pool 2×2 (stride 2, odd edges
//! dropped like PyTorch's default floor mode), then the dense head of an
//! [`Mlp`] → softmax.
//!
//! Activations stay NHWC (the input layout) throughout. A conv is one sgemm
//! over an im2col matrix whose columns are ordered `(in_ch, ky, kx)`, which is
//! exactly the row layout of a PyTorch conv weight `[out_ch, in_ch, 3, 3]`, so
//! `conv.weight` needs no reordering. The im2col matrix is kept for the
//! backward pass: that costs `batch·H·W·9·C_in` floats per block (≈ 7 MB for
//! 64 × 32×32×3), which is the main memory cost of training.

use serde::{Deserialize, Serialize};

use super::mlp::{DenseSpec, Mlp, MlpCache, MlpSpec, dead_units, fraction_of, init_weight};
use super::ops::{self, View};
use super::{Grads, LayerStats, Loss, ModelError, Stats, Tensor, check_batch};

/// Architecture of a [`Cnn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnnSpec {
    /// Input image shape `[height, width, channels]` (HWC).
    pub input: [usize; 3],
    /// Output channels of each conv block.
    pub blocks: Vec<usize>,
    /// The dense head; its init is the convs' too.
    #[serde(flatten)]
    pub dense: DenseSpec,
}

/// One conv block's parameters and the input geometry it was built for.
#[derive(Debug, Clone, PartialEq)]
struct Conv {
    /// `[out_ch, in_ch, 3, 3]`.
    weight: Tensor,
    /// `[out_ch]`.
    bias: Tensor,
    h: usize,
    w: usize,
    c_in: usize,
    c_out: usize,
}

impl Conv {
    /// Length of an im2col row.
    fn k(&self) -> usize {
        self.c_in * 9
    }
}

/// Conv blocks + dense head; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Cnn {
    spec: CnnSpec,
    convs: Vec<Conv>,
    head: Mlp,
}

/// Forward-pass intermediates of one block.
struct BlockCache {
    /// im2col of the block input, `(batch·h·w) × (9·c_in)`.
    cols: Vec<f32>,
    /// Post-ReLU conv output, NHWC `batch × h × w × c_out`.
    relu: Vec<f32>,
    /// For each pooled output, the index into `relu` of the max it took.
    argmax: Vec<usize>,
    /// Pooled output, NHWC `batch × h/2 × w/2 × c_out`.
    out: Vec<f32>,
}

impl Cnn {
    /// Builds the CNN with weights from a ChaCha8 stream seeded by `seed`
    /// (convs first, then the head).
    pub fn new(spec: &CnnSpec, seed: u64) -> Result<Cnn, ModelError> {
        let [mut h, mut w, mut c] = spec.input;
        if h == 0 || w == 0 || c == 0 {
            return Err(ModelError::InvalidSpec(format!(
                "input shape must be positive, got {:?}",
                spec.input
            )));
        }
        let mut rng = ops::rng_for(seed, 0, b"init\0\0\0\0");
        let mut convs = Vec::with_capacity(spec.blocks.len());
        for (i, &c_out) in spec.blocks.iter().enumerate() {
            if c_out == 0 {
                return Err(ModelError::InvalidSpec(format!("block {i} has 0 output channels")));
            }
            if h < 2 || w < 2 {
                return Err(ModelError::InvalidSpec(format!(
                    "block {i} input is {h}x{w}: too small for 2x2 pooling; \
                     use fewer blocks or larger images"
                )));
            }
            convs.push(Conv {
                weight: init_weight(
                    spec.dense.init,
                    format!("conv{i}.weight"),
                    vec![c_out, c, 3, 3],
                    c * 9,
                    c_out * 9,
                    &mut rng,
                ),
                bias: Tensor::zeros(format!("conv{i}.bias"), vec![c_out]),
                h,
                w,
                c_in: c,
                c_out,
            });
            (h, w, c) = (h / 2, w / 2, c_out);
        }
        let head_spec = MlpSpec {
            input_len: h * w * c,
            dense: spec.dense.clone(),
        };
        let head = Mlp::with_rng(&head_spec, &mut rng)?;
        Ok(Cnn {
            spec: spec.clone(),
            convs,
            head,
        })
    }

    /// The architecture.
    pub fn spec(&self) -> &CnnSpec {
        &self.spec
    }

    /// Values per example, `H·W·C`.
    pub fn input_len(&self) -> usize {
        self.spec.input.iter().product()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.spec.dense.classes
    }

    /// Shape `[h, w, c]` of the features entering the dense head.
    pub fn feature_shape(&self) -> [usize; 3] {
        match self.convs.last() {
            Some(c) => [c.h / 2, c.w / 2, c.c_out],
            None => self.spec.input,
        }
    }

    /// `conv{i}.weight`, `conv{i}.bias`, ..., then the head's `dense{i}.*`.
    pub fn params(&self) -> Vec<&Tensor> {
        let convs = self.convs.iter().flat_map(|c| [&c.weight, &c.bias]);
        convs.chain(self.head.params()).collect()
    }

    /// Mutable [`Cnn::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        let convs = self.convs.iter_mut().flat_map(|c| [&mut c.weight, &mut c.bias]);
        convs.chain(self.head.params_mut()).collect()
    }

    /// Softmax probabilities, `batch × classes`.
    pub fn forward(&self, x: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        check_batch(x, None, batch, self.input_len(), self.classes())?;
        let (_, mlp) = self.run(x, batch);
        let mut p = mlp.logits;
        ops::softmax_rows(&mut p, self.classes());
        Ok(p)
    }

    /// Loss, gradients (in [`Cnn::params`] order) and diagnostics.
    pub(crate) fn loss_grad(&self, x: &[f32], y: &[u32], batch: usize, loss: Loss) -> (f32, Grads, Stats) {
        let l2 = loss.l2;
        let (blocks, mlp) = self.run(x, batch);
        let (loss, xent) = loss.of(&mlp.logits, y, self.classes(), self.weight_sq_sum());
        let feats = blocks.last().map_or(x, |b| b.out.as_slice());
        let need_dx = !self.convs.is_empty();
        let (head_grads, head_stats, dfeat) = self.head.backward(feats, batch, &mlp, xent.dlogits, l2, need_dx);

        let mut grads = Vec::with_capacity(2 * self.convs.len() + head_grads.len());
        let mut layers = Vec::with_capacity(self.convs.len() + head_stats.len());
        let mut dout = dfeat.unwrap_or_default();
        for (i, (conv, cache)) in self.convs.iter().zip(&blocks).enumerate().rev() {
            let rows = batch * conv.h * conv.w;
            // Un-pool: route each pooled gradient to the position that won the max.
            let mut dz = vec![0.0f32; cache.relu.len()];
            for (&src, &g) in cache.argmax.iter().zip(&dout) {
                dz[src] += g;
            }
            // ReLU mask.
            dz.iter_mut().zip(&cache.relu).for_each(|(d, a)| {
                if *a <= 0.0 {
                    *d = 0.0
                }
            });
            // dW = dzᵀ · cols + l2·W   ([c_out, rows] · [rows, 9·c_in])
            let mut dw = conv.weight.data.clone();
            dw.iter_mut().for_each(|v| *v *= l2);
            ops::gemm(
                conv.c_out,
                rows,
                conv.k(),
                View::rows_t(&dz, conv.c_out),
                View::rows(&cache.cols, conv.k()),
                1.0,
                &mut dw,
            );
            let dw = conv.weight.like(dw);
            let db = conv.bias.like(ops::col_sums(&dz, conv.c_out));
            let dead_units = dead_units(&cache.relu, conv.c_out);
            layers.push(LayerStats {
                name: format!("conv{i}"),
                dead_fraction: Some(fraction_of(&dead_units)),
                dead_units,
                weight_grad_norm: dw.l2_norm(),
                bias_grad_norm: db.l2_norm(),
            });
            grads.push(db);
            grads.push(dw);
            if i > 0 {
                // dcols = dz · W   ([rows, c_out] · [c_out, 9·c_in]), then scatter back.
                let mut dcols = vec![0.0f32; rows * conv.k()];
                ops::gemm(
                    rows,
                    conv.c_out,
                    conv.k(),
                    View::rows(&dz, conv.c_out),
                    View::rows(&conv.weight.data, conv.k()),
                    0.0,
                    &mut dcols,
                );
                dout = col2im(&dcols, batch, conv.h, conv.w, conv.c_in);
            }
        }
        grads.reverse();
        layers.reverse();
        grads.extend(head_grads);
        layers.extend(head_stats);
        let stats = Stats {
            layers,
            correct: xent.correct,
            batch,
            batch_norm: Vec::new(),
        };
        (loss as f32, Grads { tensors: grads }, stats)
    }

    /// Loss only, in f64 (finite-difference checks).
    #[cfg(test)]
    pub(crate) fn loss_f64(&self, x: &[f32], y: &[u32], batch: usize, loss: Loss) -> f64 {
        let (_, mlp) = self.run(x, batch);
        loss.of(&mlp.logits, y, self.classes(), self.weight_sq_sum()).0
    }

    /// ReLU signs and max-pool winners of every block, then the head's
    /// pattern (see `Model::kink_pattern`).
    #[cfg(test)]
    pub(crate) fn kink_pattern(&self, x: &[f32], batch: usize) -> Vec<usize> {
        let (blocks, mlp) = self.run(x, batch);
        let mut p = Vec::new();
        for b in &blocks {
            p.extend(b.relu.iter().map(|v| usize::from(*v > 0.0)));
            p.extend(&b.argmax);
        }
        p.extend(super::mlp::pattern_of(&mlp));
        p
    }

    /// Σ w² over conv and dense weights (not biases).
    fn weight_sq_sum(&self) -> f64 {
        let conv: f64 = self.convs.iter().map(|c| ops::sum_sq(&c.weight.data)).sum();
        conv + self.head.weight_sq_sum()
    }

    /// Forward pass keeping every intermediate needed by the backward pass.
    fn run(&self, x: &[f32], batch: usize) -> (Vec<BlockCache>, MlpCache) {
        let mut blocks: Vec<BlockCache> = Vec::with_capacity(self.convs.len());
        for (i, conv) in self.convs.iter().enumerate() {
            let input = if i == 0 { x } else { &blocks[i - 1].out };
            let rows = batch * conv.h * conv.w;
            let cols = im2col(input, batch, conv.h, conv.w, conv.c_in);
            let mut relu = vec![0.0f32; rows * conv.c_out];
            ops::add_bias_rows(&mut relu, &conv.bias.data);
            ops::gemm(
                rows,
                conv.k(),
                conv.c_out,
                View::rows(&cols, conv.k()),
                View::rows_t(&conv.weight.data, conv.k()),
                1.0,
                &mut relu,
            );
            relu.iter_mut().for_each(|v| *v = v.max(0.0));
            let (out, argmax) = max_pool(&relu, batch, conv.h, conv.w, conv.c_out);
            blocks.push(BlockCache {
                cols,
                relu,
                argmax,
                out,
            });
        }
        let feats = blocks.last().map_or(x, |b| b.out.as_slice());
        let mlp = self.head.run(feats, batch);
        (blocks, mlp)
    }
}

/// The 3x3 taps of patch row `r` (pixel `(n, y, x)` of an `h × w` image) that fall inside
/// the image: `(ky·3 + kx, index of pixel (n, y+ky−1, x+kx−1))`, in `ky`, `kx` order.
pub(super) fn taps(r: usize, h: usize, w: usize) -> impl Iterator<Item = (usize, usize)> {
    let (n, y, xx) = (r / (h * w), (r / w) % h, r % w);
    (0..9).filter_map(move |t| {
        let iy = (y + t / 3).checked_sub(1).filter(|v| *v < h)?;
        let ix = (xx + t % 3).checked_sub(1).filter(|v| *v < w)?;
        Some((t, (n * h + iy) * w + ix))
    })
}

/// NHWC `batch × h × w × c` → `(batch·h·w) × (9·c)` patches, column
/// `ci·9 + ky·3 + kx` holding `x[n, y+ky−1, x+kx−1, ci]` (0 outside).
fn im2col(x: &[f32], batch: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut cols = vec![0.0f32; batch * h * w * 9 * c];
    for (r, row) in cols.chunks_exact_mut(9 * c).enumerate() {
        for (t, p) in taps(r, h, w) {
            for (ci, v) in x[p * c..(p + 1) * c].iter().enumerate() {
                row[ci * 9 + t] = *v;
            }
        }
    }
    cols
}

/// Adjoint of [`im2col`]: scatter-adds patch gradients back to NHWC.
fn col2im(cols: &[f32], batch: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; batch * h * w * c];
    for (r, row) in cols.chunks_exact(9 * c).enumerate() {
        for (t, p) in taps(r, h, w) {
            for (ci, v) in x[p * c..(p + 1) * c].iter_mut().enumerate() {
                *v += row[ci * 9 + t];
            }
        }
    }
    x
}

/// 2×2 stride-2 max-pool of NHWC input (odd last row/column dropped). Returns
/// the pooled map and, per output, the input index of the max (first on ties).
pub(super) fn max_pool(a: &[f32], batch: usize, h: usize, w: usize, c: usize) -> (Vec<f32>, Vec<usize>) {
    let (ho, wo) = (h / 2, w / 2);
    let mut out = vec![0.0f32; batch * ho * wo * c];
    let mut arg = vec![0usize; out.len()];
    let cells = out.chunks_exact_mut(c).zip(arg.chunks_exact_mut(c));
    for (o, (out, arg)) in cells.enumerate() {
        let (n, oy, ox) = (o / (ho * wo), (o / wo) % ho, o % wo);
        let px = |dy: usize, dx: usize| ((n * h + 2 * oy + dy) * w + 2 * ox + dx) * c;
        let first = px(0, 0);
        out.copy_from_slice(&a[first..first + c]);
        arg.iter_mut().enumerate().for_each(|(ch, i)| *i = first + ch);
        // The first of equal values wins: only a larger one replaces it.
        for p in [px(0, 1), px(1, 0), px(1, 1)] {
            let cand = &a[p..p + c];
            for (ch, ((o, i), v)) in out.iter_mut().zip(arg.iter_mut()).zip(cand).enumerate() {
                let larger = *v > *o;
                *o = if larger { *v } else { *o };
                *i = if larger { p + ch } else { *i };
            }
        }
    }
    (out, arg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mlp::{Activation, Init};

    #[test]
    fn conv_matches_direct_convolution() {
        // Cross-check im2col+sgemm against a naive 3x3 convolution.
        let spec = CnnSpec {
            input: [5, 4, 2],
            blocks: vec![3],
            dense: DenseSpec {
                hidden: vec![],
                classes: 2,
                activation: Activation::Relu,
                init: Init::He,
            },
        };
        let c = Cnn::new(&spec, 5).expect("valid spec");
        // Values in [-1, 1] without a pattern the 3x3 taps could line up with.
        let x: Vec<f32> = (0..80u32).map(|i| ((i * 37 + 11) % 23) as f32 / 11.0 - 1.0).collect();
        let (blocks, _) = c.run(&x, 2);
        let conv = &c.convs[0];
        for n in 0..2 {
            for y in 0..5 {
                for xx in 0..4 {
                    for o in 0..3 {
                        let mut s = f64::from(conv.bias.data[o]);
                        for ci in 0..2 {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                    if iy < 0 || ix < 0 || iy >= 5 || ix >= 4 {
                                        continue;
                                    }
                                    let xv = x[((n * 5 + iy as usize) * 4 + ix as usize) * 2 + ci];
                                    let wv = conv.weight.data[((o * 2 + ci) * 3 + ky) * 3 + kx];
                                    s += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        let got = blocks[0].relu[((n * 5 + y) * 4 + xx) * 3 + o];
                        assert!(
                            (f64::from(got) - s.max(0.0)).abs() < 1e-5,
                            "mismatch at {n},{y},{xx},{o}"
                        );
                    }
                }
            }
        }
    }
}
