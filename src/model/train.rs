//! Mini-batch training steps: [`train_batch`] (what the product calls with
//! batches streamed from disk) and [`train_epoch`], a reproducible shuffled
//! pass over in-memory data.

use crate::model::net::Model;
use crate::model::optim::Optimizer;
use crate::model::{Grads, Loss, ModelError, Stats, check_batch, ops};

/// Summary of one [`train_epoch`] pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochStats {
    /// Example-weighted mean of the per-batch losses (each measured before its
    /// update, so it lags the end-of-epoch model). NaN/inf if training diverged.
    pub mean_loss: f32,
    /// Fraction of examples classified correctly, each measured just before
    /// the update on its batch.
    pub accuracy: f32,
    /// Mini-batches taken.
    pub batches: usize,
    /// Examples seen (`n`).
    pub examples: usize,
    /// Stats of the last batch (dead units, gradient norms).
    pub last: Stats,
}

/// One optimization step on a batch: loss and gradients at the current
/// weights, then `opt.step`. Returns the pre-update loss and stats. A
/// non-finite loss is returned as is (the update is still applied), so the
/// caller decides whether to stop.
pub fn train_batch(
    model: &mut Model,
    opt: &mut Optimizer,
    xb: &[f32],
    yb: &[u32],
    b: usize,
    loss: impl Into<Loss>,
) -> Result<(f32, Stats), ModelError> {
    let (loss, grads, stats) = loss_grad_sharded(model, xb, yb, b, loss)?;
    opt.step(model, &grads)?;
    model.track_running(&stats.batch_norm)?;
    Ok((loss, stats))
}

/// Rows per shard of a training step of `model`. A batch is cut into shards of this many
/// rows whatever the number of threads, their gradients are computed in parallel and merged
/// in shard order: the same seed gives the same weights on one core or many (`-j`). A CNN's
/// convolutions are most of its work, and a shard of 16 rows is faster even on one core
/// (its im2col matrices stay in cache): 42 steps/s against 22 whole, 76-84 on two cores
/// (`bench_forward_backward`). An MLP's gradients are as large as its work, so shards would
/// cost more than they share (149 steps/s in shards against 459 whole): it steps whole.
pub fn shard_rows(model: &Model) -> usize {
    match model {
        Model::Cnn(_) | Model::Resnet(_) => 16,
        Model::Mlp(_) => usize::MAX,
    }
}

/// [`Model::loss_grad`] of a batch computed in shards of [`shard_rows`] rows on every core
/// and merged in shard order: the loss and gradients are the shards' weighted by their
/// rows (the batch means), the stats those of the whole batch (a unit is dead when it is in
/// every shard; gradient norms of the merged gradients; batch-norm statistics the shards'
/// weighted mean: each shard is normalized with its own).
pub fn loss_grad_sharded(
    model: &Model,
    x: &[f32],
    y: &[u32],
    b: usize,
    loss: impl Into<Loss>,
) -> Result<(f32, Grads, Stats), ModelError> {
    use rayon::prelude::*;
    let objective = loss.into();
    let d = model.input_len();
    check_batch(x, Some(y), b, d, model.classes())?;
    let size = shard_rows(model);
    if size >= b {
        return model.loss_grad(x, y, b, objective);
    }
    let parts = (0..b.div_ceil(size))
        .into_par_iter()
        .map(|s| {
            let rows = s * size..((s + 1) * size).min(b);
            let n = rows.len();
            let part = model.loss_grad(&x[rows.start * d..rows.end * d], &y[rows], n, objective)?;
            Ok((n, part))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let mut parts = parts.into_iter();
    let Some((n0, (loss0, mut grads, mut stats))) = parts.next() else {
        return model.loss_grad(x, y, b, objective);
    };
    let share = |n: usize| n as f32 / b as f32;
    let mut loss = share(n0) * loss0;
    for t in grads.tensors.iter_mut().chain(&mut stats.batch_norm) {
        t.data.iter_mut().for_each(|g| *g *= share(n0));
    }
    for (n, (l, g, st)) in parts {
        loss += share(n) * l;
        let sums = grads.tensors.iter_mut().chain(&mut stats.batch_norm);
        for (sum, part) in sums.zip(g.tensors.iter().chain(&st.batch_norm)) {
            sum.data
                .iter_mut()
                .zip(&part.data)
                .for_each(|(s, v)| *s += share(n) * v);
        }
        stats.correct += st.correct;
        stats.batch += st.batch;
        for (layer, part) in stats.layers.iter_mut().zip(&st.layers) {
            layer
                .dead_units
                .iter_mut()
                .zip(&part.dead_units)
                .for_each(|(d, p)| *d &= *p);
        }
    }
    for layer in &mut stats.layers {
        if layer.dead_fraction.is_some() {
            layer.dead_fraction = Some(crate::model::mlp::fraction_of(&layer.dead_units));
        }
        let norm = |suffix: &str| {
            let name = format!("{}.{suffix}", layer.name);
            grads
                .tensors
                .iter()
                .find(|t| t.name == name)
                .map_or(0.0, |t| t.l2_norm())
        };
        layer.weight_grad_norm = norm("weight");
        layer.bias_grad_norm = norm("bias");
    }
    Ok((loss, grads, stats))
}

/// One epoch over `n` in-memory examples in an order shuffled by a ChaCha8
/// stream keyed by `(seed, epoch)`, in mini-batches of `batch_size` (the last
/// one may be smaller). Same inputs ⇒ bit-identical result.
#[allow(clippy::too_many_arguments)] // mirrors the product's call shape
pub fn train_epoch(
    model: &mut Model,
    opt: &mut Optimizer,
    x: &[f32],
    y: &[u32],
    n: usize,
    batch_size: usize,
    l2: f32,
    seed: u64,
    epoch: u64,
) -> Result<EpochStats, ModelError> {
    if batch_size == 0 {
        return Err(ModelError::Hyper("batch_size must be > 0".into()));
    }
    let d = model.input_len();
    check_batch(x, Some(y), n, d, model.classes())?;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ops::rng_for(seed, epoch, b"shuffle\0");
    ops::shuffle(&mut rng, &mut order);

    let mut xb = Vec::with_capacity(batch_size * d);
    let mut yb = Vec::with_capacity(batch_size);
    let mut loss_sum = 0.0f64;
    let mut correct = 0usize;
    let mut batches = 0usize;
    let mut last = Stats::default();
    for chunk in order.chunks(batch_size) {
        xb.clear();
        yb.clear();
        for &i in chunk {
            xb.extend_from_slice(&x[i * d..(i + 1) * d]);
            yb.push(y[i]);
        }
        let (loss, stats) = train_batch(model, opt, &xb, &yb, chunk.len(), l2)?;
        loss_sum += f64::from(loss) * chunk.len() as f64;
        correct += stats.correct;
        batches += 1;
        last = stats;
    }
    Ok(EpochStats {
        mean_loss: (loss_sum / n as f64) as f32,
        accuracy: correct as f32 / n as f32,
        batches,
        examples: n,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cnn::CnnSpec;
    use crate::model::mlp::MlpSpec;
    use crate::model::net::ModelSpec;
    use crate::model::testutil::{dense_spec, random_data};
    use std::time::Instant;

    fn specs() -> Vec<ModelSpec> {
        vec![
            ModelSpec::Mlp(MlpSpec {
                input_len: 48,
                dense: dense_spec(vec![16], 3),
            }),
            ModelSpec::Cnn(CnnSpec {
                input: [4, 4, 3],
                blocks: vec![4],
                dense: dense_spec(vec![8], 3),
            }),
        ]
    }

    /// The trained weights' bytes (every parameter's `f32` values, little-endian, in order).
    fn train(spec: &ModelSpec, seed: u64, opt: Optimizer) -> Vec<u8> {
        train_in_batches(spec, seed, opt, 8)
    }

    fn train_in_batches(spec: &ModelSpec, seed: u64, opt: Optimizer, batch: usize) -> Vec<u8> {
        let mut m = Model::new(spec, seed).expect("valid spec");
        let mut opt = opt;
        let (x, y) = random_data(50, 48, 3, 5);
        for epoch in 0..3 {
            train_epoch(&mut m, &mut opt, &x, &y, 50, batch, 1e-3, seed, epoch).expect("valid data");
        }
        m.params()
            .iter()
            .flat_map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()))
            .collect()
    }

    #[test]
    fn same_seed_gives_identical_bytes() {
        for spec in specs() {
            for opt in [Optimizer::adam(1e-2), Optimizer::sgd(0.05, 0.9)] {
                let a = train(&spec, 42, opt.clone());
                let b = train(&spec, 42, opt.clone());
                assert!(a == b, "same seed, different bytes");
                // Printed so separate processes can be compared too.
                let fnv = a.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                println!("trained weights fnv1a64 {fnv:016x} ({} bytes)", a.len());
                let c = train(&spec, 43, opt);
                assert!(a != c, "different seeds gave identical weights");
            }
        }
    }

    /// `train` in a pool of `threads` threads.
    fn train_on(threads: usize, spec: &ModelSpec, opt: Optimizer) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a pool");
        // Batches of 40: shards of 16, 16 and 8 rows for the CNN.
        pool.install(|| train_in_batches(spec, 42, opt, 40))
    }

    #[test]
    fn the_same_weights_on_one_core_or_several() {
        for spec in specs() {
            for opt in [Optimizer::adam(1e-2), Optimizer::sgd(0.05, 0.9)] {
                let one = train_on(1, &spec, opt.clone());
                assert!(one == train_on(2, &spec, opt.clone()), "-j 1 and -j 2 differ");
                assert!(one == train_on(3, &spec, opt), "-j 1 and -j 3 differ");
            }
        }
    }

    #[test]
    fn a_batch_in_shards_is_the_whole_batch() {
        let (x, y) = random_data(50, 48, 3, 5);
        for spec in specs() {
            let m = Model::new(&spec, 7).expect("valid spec");
            let (loss, grads, stats) = m.loss_grad(&x, &y, 50, 1e-3).expect("valid data");
            let (sloss, sgrads, sstats) = loss_grad_sharded(&m, &x, &y, 50, 1e-3).expect("valid data");
            assert!((loss - sloss).abs() < 1e-5 * loss.abs().max(1.0), "{loss} vs {sloss}");
            for (a, b) in grads.tensors.iter().zip(&sgrads.tensors) {
                assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
                let scale = a.l2_norm().max(1e-3);
                let diff = a
                    .data
                    .iter()
                    .zip(&b.data)
                    .map(|(p, q)| (p - q).powi(2))
                    .sum::<f32>()
                    .sqrt();
                assert!(diff < 1e-4 * scale, "{}: off by {diff} (norm {scale})", a.name);
            }
            assert_eq!((stats.correct, stats.batch), (sstats.correct, sstats.batch));
            for (a, b) in stats.layers.iter().zip(&sstats.layers) {
                assert_eq!(
                    (&a.name, a.dead_fraction, &a.dead_units),
                    (&b.name, b.dead_fraction, &b.dead_units)
                );
                assert!((a.weight_grad_norm - b.weight_grad_norm).abs() < 1e-4 * a.weight_grad_norm.max(1e-3));
            }
        }
        // Dead units are merged, not taken from one shard: with a negative bias and faint
        // first rows, every conv channel is zero on the first shard's rows only.
        let mut m = Model::new(&specs()[1], 7).expect("valid spec");
        let bias = m
            .params_mut()
            .into_iter()
            .find(|t| t.name == "conv0.bias")
            .expect("conv0.bias");
        bias.data.iter_mut().for_each(|b| *b = -0.1);
        let mut x = x;
        x[..16 * 48].iter_mut().for_each(|v| *v *= 0.01);
        let dead = |s: &Stats| s.layers[0].dead_units.iter().filter(|d| **d).count();
        let (_, _, whole) = m.loss_grad(&x, &y, 50, 0.0).expect("valid data");
        let (_, _, first) = m.loss_grad(&x[..16 * 48], &y[..16], 16, 0.0).expect("valid data");
        let (_, _, merged) = loss_grad_sharded(&m, &x, &y, 50, 0.0).expect("valid data");
        assert_eq!(merged.layers[0].dead_units, whole.layers[0].dead_units);
        assert!(
            dead(&first) > dead(&whole),
            "{} vs {}: the case shows nothing",
            dead(&first),
            dead(&whole)
        );
    }

    #[test]
    fn param_count_matches_built_models() {
        for spec in specs() {
            let m = Model::new(&spec, 0).expect("valid spec");
            let n: usize = m.params().iter().map(|p| p.data.len()).sum();
            assert_eq!(spec.param_count(), Some(n));
        }
    }

    #[test]
    fn epoch_covers_every_example_once_in_shuffled_batches() {
        let spec = &specs()[0];
        let mut m = Model::new(spec, 1).expect("valid spec");
        let mut opt = Optimizer::sgd(0.0, 0.0); // lr 0: weights fixed, so accuracy is exact
        let (x, y) = random_data(50, 48, 3, 5);
        let s = train_epoch(&mut m, &mut opt, &x, &y, 50, 8, 0.0, 1, 0).expect("valid data");
        assert_eq!((s.batches, s.examples), (7, 50));
        let pred = m.predict(&x, 50).expect("valid data");
        let acc = pred.iter().zip(&y).filter(|(p, t)| p == t).count() as f32 / 50.0;
        assert!((s.accuracy - acc).abs() < 1e-6);
        let full = m.loss_grad(&x, &y, 50, 0.0).expect("valid data").0;
        assert!((s.mean_loss - full).abs() < 1e-5, "{} vs {full}", s.mean_loss);
        assert!(train_epoch(&mut m, &mut opt, &x, &y, 50, 0, 0.0, 1, 0).is_err());
        assert!(train_epoch(&mut m, &mut opt, &x, &y, 51, 8, 0.0, 1, 0).is_err());
    }

    fn time<F: FnMut()>(iters: usize, mut f: F) -> f64 {
        for _ in 0..2 {
            f();
        }
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed().as_secs_f64() / iters as f64
    }

    /// `cargo test --release -- --ignored --nocapture bench`
    #[test]
    #[ignore = "benchmark; run in release"]
    fn bench_forward_backward() {
        let cases = [
            (
                "mlp 3072-128-2",
                ModelSpec::Mlp(MlpSpec {
                    input_len: 3072,
                    dense: dense_spec(vec![128], 2),
                }),
                200,
            ),
            (
                "cnn 32x32x3 [16,32]",
                ModelSpec::Cnn(CnnSpec {
                    input: [32, 32, 3],
                    blocks: vec![16, 32],
                    dense: dense_spec(vec![], 2),
                }),
                20,
            ),
            (
                "resnet 32x32x3 [16,32r,64,128r]",
                ModelSpec::Resnet(crate::model::resnet::ResnetSpec {
                    input: [32, 32, 3],
                    widths: vec![16, 32, 64, 128],
                    residual: vec![1, 3],
                    pool: crate::model::resnet::GlobalPool::Max,
                    classes: 2,
                    init: crate::model::mlp::Init::He,
                }),
                5,
            ),
        ];
        let b = 64;
        for (name, spec, iters) in cases {
            let mut m = Model::new(&spec, 0).expect("valid spec");
            let (x, y) = random_data(b, m.input_len(), 2, 1);
            let fwd = time(iters, || {
                std::hint::black_box(m.forward(&x, b).expect("valid batch"));
            });
            let fb = time(iters, || {
                std::hint::black_box(m.loss_grad(&x, &y, b, 1e-4).expect("valid batch"));
            });
            let mut opt = Optimizer::adam(1e-3);
            let whole = time(iters, || {
                let (_, g, _) = m.loss_grad(&x, &y, b, 1e-4).expect("valid batch");
                opt.step(&mut m, &g).expect("valid grads");
            });
            let mut steps = Vec::new();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a pool");
                let mut opt = Optimizer::adam(1e-3);
                steps.push(pool.install(|| {
                    time(iters, || {
                        train_batch(&mut m, &mut opt, &x, &y, b, 1e-4).expect("valid batch");
                    })
                }));
            }
            println!(
                "{name:<20} batch {b}: forward {:.2} ms | forward+backward {:.2} ms = {:.1} steps/s ({:.0} img/s) | \
                 step unsharded {:.1} steps/s | step (sharded, +adam) -j 1 {:.1} steps/s, -j 2 {:.1} steps/s ({:.2}x)",
                fwd * 1e3,
                fb * 1e3,
                1.0 / fb,
                b as f64 / fb,
                1.0 / whole,
                1.0 / steps[0],
                1.0 / steps[1],
                steps[0] / steps[1]
            );
        }
    }
}
