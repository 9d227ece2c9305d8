//! Tests of the architectures through [`Model`], the interface training, optimizers and
//! saving use: gradient checks against finite differences, overfitting tiny sets, and
//! symmetry of zero-initialized units. They sit above `net` because `Model` wraps every
//! architecture.

use crate::model::net::Model;
use crate::model::optim::Optimizer;
use crate::model::train::train_batch;

/// Full-batch training until 100% training accuracy; returns the step count.
fn steps_to_fit(m: &mut Model, opt: &mut Optimizer, x: &[f32], y: &[u32], max_steps: usize) -> Option<usize> {
    let n = y.len();
    for step in 1..=max_steps {
        train_batch(m, opt, x, y, n, 0.0).expect("valid batch");
        let pred = m.predict(x, n).expect("valid batch");
        if pred.iter().zip(y).all(|(p, t)| p == t) {
            return Some(step);
        }
    }
    None
}

mod mlp {
    use super::steps_to_fit;
    use crate::model::mlp::*;
    use crate::model::net::{Model, ModelSpec};
    use crate::model::optim::Optimizer;
    use crate::model::testutil::*;
    use crate::model::train::train_batch;
    use crate::model::*;

    fn spec(hidden: Vec<usize>, activation: Activation, init: Init) -> MlpSpec {
        MlpSpec {
            input_len: 12,
            dense: DenseSpec {
                hidden,
                classes: 3,
                activation,
                init,
            },
        }
    }

    #[test]
    fn gradcheck_logistic_regression() {
        let m = Model::new(&ModelSpec::Mlp(spec(vec![], Activation::Relu, Init::Xavier)), 1).expect("valid spec");
        let e = grad_check(&m, 5, 0.0, 11);
        println!("gradcheck logistic: max rel err {e:.3e}");
        assert!(e < 1e-2, "max rel err {e}");
    }

    #[test]
    fn gradcheck_mlp_with_label_smoothing() {
        let m = Model::new(&ModelSpec::Mlp(spec(vec![6], Activation::Tanh, Init::Xavier)), 4).expect("valid spec");
        let loss = Loss {
            l2: 0.05,
            smoothing: 0.1,
        };
        let e = grad_check(&m, 5, loss, 13);
        println!("gradcheck mlp smoothing 0.1: max rel err {e:.3e}");
        assert!(e < 1e-2, "max rel err {e}");
    }

    /// PyTorch's `CrossEntropyLoss(label_smoothing=s)`: `(1 − s)·(−log p_y) + s·mean_j(−log p_j)`.
    #[test]
    fn label_smoothing_is_pytorchs() {
        let m = Model::new(&ModelSpec::Mlp(spec(vec![], Activation::Relu, Init::Xavier)), 8).expect("valid spec");
        let (x, y) = random_data(4, 12, 3, 9);
        let p = m.forward(&x, 4).expect("valid batch");
        let s = 0.2;
        let want: f64 = p
            .chunks_exact(3)
            .zip(&y)
            .map(|(row, &label)| {
                let nll = |j: usize| -f64::from(row[j]).ln();
                (1.0 - s) * nll(label as usize) + s * (0..3).map(nll).sum::<f64>() / 3.0
            })
            .sum::<f64>()
            / 4.0;
        let smooth = Loss {
            l2: 0.0,
            smoothing: s as f32,
        };
        let (got, _, _) = m.loss_grad(&x, &y, 4, smooth).expect("valid batch");
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
        let (plain, _, _) = m.loss_grad(&x, &y, 4, 0.0).expect("valid batch");
        assert_ne!(plain, got);
        let bad = Loss {
            l2: 0.0,
            smoothing: 1.0,
        };
        assert!(matches!(m.loss_grad(&x, &y, 4, bad), Err(ModelError::Hyper(_))));
    }

    #[test]
    fn gradcheck_logistic_regression_l2() {
        let m = Model::new(&ModelSpec::Mlp(spec(vec![], Activation::Relu, Init::Xavier)), 2).expect("valid spec");
        let e = grad_check(&m, 5, 0.1, 12);
        println!("gradcheck logistic l2=0.1: max rel err {e:.3e}");
        assert!(e < 1e-2, "max rel err {e}");
    }

    #[test]
    fn gradcheck_mlp_each_activation() {
        for (k, act) in [
            Activation::Relu,
            Activation::LeakyRelu,
            Activation::Tanh,
            Activation::Sigmoid,
        ]
        .into_iter()
        .enumerate()
        {
            for l2 in [0.0, 0.05] {
                let init = if matches!(act, Activation::Relu | Activation::LeakyRelu) {
                    Init::He
                } else {
                    Init::Xavier
                };
                let m = Model::new(&ModelSpec::Mlp(spec(vec![10, 7], act, init)), 3 + k as u64).expect("valid spec");
                let e = grad_check(&m, 6, l2, 20 + k as u64);
                println!("gradcheck mlp {act:?} l2={l2}: max rel err {e:.3e}");
                assert!(e < 1e-2, "{act:?} l2={l2}: max rel err {e}");
            }
        }
    }

    #[test]
    fn overfits_eight_examples() {
        let spec = MlpSpec {
            input_len: 48,
            dense: dense_spec(vec![32], 2),
        };
        let mut m = Model::new(&ModelSpec::Mlp(spec), 7).expect("valid spec");
        let (x, y) = random_data(8, 48, 2, 99);
        let mut opt = Optimizer::adam(1e-2);
        let steps = steps_to_fit(&mut m, &mut opt, &x, &y, 300);
        println!("mlp overfit: 100% train accuracy after {steps:?} steps");
        assert!(steps.is_some(), "MLP did not reach 100% in 300 steps");
    }

    /// Zero init never breaks symmetry: all hidden units of a layer keep
    /// identical incoming weights and biases, and identical outgoing weights.
    #[test]
    fn zeros_init_stays_symmetric() {
        for act in [Activation::Sigmoid, Activation::Relu, Activation::Tanh] {
            let mut m = Model::new(&ModelSpec::Mlp(spec(vec![6, 5], act, Init::Zeros)), 1).expect("valid spec");
            let (x, y) = random_data(16, 12, 3, 5);
            let mut opt = Optimizer::adam(1e-2);
            for _ in 0..50 {
                train_batch(&mut m, &mut opt, &x, &y, 16, 0.0).expect("valid batch");
            }
            let p = m.params();
            for layer in 0..2 {
                let (w, b) = (p[2 * layer], p[2 * layer + 1]);
                let n_in = w.shape[1];
                for r in 1..w.shape[0] {
                    assert_eq!(
                        w.data[r * n_in..(r + 1) * n_in],
                        w.data[..n_in],
                        "{act:?}: {} row {r} differs from row 0",
                        w.name
                    );
                    assert_eq!(b.data[r], b.data[0], "{act:?}: {} differs", b.name);
                }
            }
            // Outgoing weights: every column of the next layer is identical.
            for w in [p[2], p[4]] {
                let n_in = w.shape[1];
                for row in w.data.chunks_exact(n_in) {
                    assert!(row.iter().all(|v| *v == row[0]), "{act:?}: {} columns differ", w.name);
                }
            }
            let moved = p[0].data.iter().any(|v| *v != 0.0);
            println!("zeros init {act:?}: first-layer weights moved from 0: {moved}");
            if act == Activation::Sigmoid {
                // Sigmoid(0) = 0.5 ≠ 0, so gradients reach the first layer and the
                // weights do move — they just move in lockstep.
                assert!(moved, "sigmoid: expected first-layer weights to change");
            }
        }
    }

    /// Far too large an SGD step on standardized inputs: observed behaviour is
    /// that the logits blow up within a few steps and the model either
    /// predicts one class for (almost) every example or the loss becomes
    /// non-finite.
    #[test]
    fn huge_sgd_lr_collapses_or_diverges() {
        let spec = MlpSpec {
            input_len: 48,
            dense: dense_spec(vec![32, 32], 2),
        };
        let mut m = Model::new(&ModelSpec::Mlp(spec), 3).expect("valid spec");
        let (x, y) = random_data(64, 48, 2, 8);
        let x = standardize(&x, 48);
        let mut opt = Optimizer::sgd(10.0, 0.9);
        let mut losses = vec![];
        for _ in 0..30 {
            let (loss, _) = train_batch(&mut m, &mut opt, &x, &y, 64, 0.0).expect("valid batch");
            losses.push(loss);
        }
        let loss = m.loss_grad(&x, &y, 64, 0.0).expect("valid batch").0;
        let majority = majority_fraction(&m.predict(&x, 64).expect("valid batch"), 2);
        let dead = m.loss_grad(&x, &y, 64, 0.0).map(|r| r.2.layers).expect("valid batch");
        println!("huge lr: losses {losses:?}");
        println!("huge lr: final loss {loss}, majority prediction fraction {majority}");
        println!("huge lr: layer stats {dead:?}");
        assert!(
            !loss.is_finite() || majority >= 0.95,
            "loss {loss}, majority {majority}"
        );
    }

    #[test]
    fn rejects_bad_inputs() {
        let m = Model::from(Mlp::new(&spec(vec![4], Activation::Relu, Init::He), 0).expect("valid spec"));
        assert!(matches!(m.forward(&[0.0; 11], 1), Err(ModelError::InputShape { .. })));
        assert!(matches!(m.forward(&[], 0), Err(ModelError::InputShape { .. })));
        assert!(matches!(
            m.loss_grad(&[0.0; 12], &[3], 1, 0.0),
            Err(ModelError::LabelRange { label: 3, .. })
        ));
        assert!(matches!(
            m.loss_grad(&[0.0; 12], &[0, 1], 1, 0.0),
            Err(ModelError::LabelCount { .. })
        ));
        assert!(matches!(
            m.loss_grad(&[0.0; 12], &[0], 1, -1.0),
            Err(ModelError::Hyper(_))
        ));
        assert!(Mlp::new(&spec(vec![0], Activation::Relu, Init::He), 0).is_err());
        let mut s = spec(vec![], Activation::Relu, Init::He);
        s.dense.classes = 1;
        assert!(Mlp::new(&s, 0).is_err());
    }

    #[test]
    fn forward_is_probability_and_stable() {
        let mut m = Model::from(Mlp::new(&spec(vec![], Activation::Relu, Init::He), 0).expect("valid spec"));
        // Huge logits must not overflow the softmax or the loss.
        let w = &mut m.params_mut()[0].data;
        w.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 5) as f32 * 1e4);
        let x = vec![1.0; 24];
        let p = m.forward(&x, 2).expect("valid batch");
        assert!(p.iter().all(|v| v.is_finite()));
        for row in p.chunks_exact(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let (loss, g, _) = m.loss_grad(&x, &[0, 1], 2, 0.0).expect("valid batch");
        assert!(loss.is_finite());
        assert!(g.tensors.iter().all(|t| t.data.iter().all(|v| v.is_finite())));
    }
}

mod cnn {
    use super::steps_to_fit;
    use crate::model::cnn::*;
    use crate::model::net::{Model, ModelSpec};
    use crate::model::optim::Optimizer;
    use crate::model::testutil::*;
    use crate::model::*;

    fn cnn(input: [usize; 3], blocks: Vec<usize>, hidden: Vec<usize>, classes: usize, seed: u64) -> Model {
        let spec = CnnSpec {
            input,
            blocks,
            dense: dense_spec(hidden, classes),
        };
        Model::new(&ModelSpec::Cnn(spec), seed).expect("valid spec")
    }

    #[test]
    fn gradcheck_one_block_dense_hidden() {
        for l2 in [0.0, 0.05] {
            let m = cnn([6, 5, 2], vec![3], vec![4], 3, 31);
            let e = grad_check(&m, 3, l2, 41);
            println!("gradcheck cnn [3]+[4] l2={l2}: max rel err {e:.3e}");
            assert!(e < 1e-2, "l2={l2}: max rel err {e}");
        }
    }

    #[test]
    fn gradcheck_two_blocks_dense_hidden() {
        for l2 in [0.0, 0.05] {
            let m = cnn([8, 7, 2], vec![3, 4], vec![5], 3, 32);
            let e = grad_check(&m, 3, l2, 42);
            println!("gradcheck cnn [3,4]+[5] l2={l2}: max rel err {e:.3e}");
            assert!(e < 1e-2, "l2={l2}: max rel err {e}");
        }
    }

    #[test]
    fn overfits_eight_examples() {
        let mut m = cnn([8, 8, 3], vec![8], vec![16], 2, 9);
        let (x, y) = random_data(8, 8 * 8 * 3, 2, 77);
        let mut opt = Optimizer::adam(1e-2);
        let steps = steps_to_fit(&mut m, &mut opt, &x, &y, 300);
        println!("cnn overfit: 100% train accuracy after {steps:?} steps");
        assert!(steps.is_some(), "CNN did not reach 100% in 300 steps");
    }

    #[test]
    fn rejects_too_small_images_and_bad_input() {
        let spec = CnnSpec {
            input: [4, 4, 1],
            blocks: vec![2, 2, 2],
            dense: dense_spec(vec![], 2),
        };
        assert!(matches!(Cnn::new(&spec, 0), Err(ModelError::InvalidSpec(_))));
        let m = cnn([4, 4, 1], vec![2], vec![], 2, 0);
        assert!(m.forward(&[0.0; 15], 1).is_err());
        let Model::Cnn(c) = &m else { unreachable!("built a CNN") };
        assert_eq!(c.feature_shape(), [2, 2, 2]);
    }
}

mod resnet {
    use super::steps_to_fit;
    use crate::model::io;
    use crate::model::mlp::Init;
    use crate::model::net::{Model, ModelSpec};
    use crate::model::optim::Optimizer;
    use crate::model::resnet::*;
    use crate::model::testutil::*;
    use crate::model::train::train_batch;
    use crate::model::*;

    fn spec(input: [usize; 3], widths: Vec<usize>, residual: Vec<usize>, pool: GlobalPool) -> ResnetSpec {
        ResnetSpec {
            input,
            widths,
            residual,
            pool,
            classes: 3,
            init: Init::He,
        }
    }

    fn net(s: ResnetSpec, seed: u64) -> Model {
        Model::new(&ModelSpec::Resnet(s), seed).expect("valid spec")
    }

    // Batch norm moves every activation when any weight moves, so a ReLU near 0 anywhere
    // makes a finite difference cross a kink: the maps are small enough for most entries to
    // stay clear of one. Normalizing over a few values also curves the loss sharply, so the
    // steps are small (at 1e-2 the third-order term is a few percent of the slope), and the
    // f32 round-off of the batch statistics then shows on gradients below 1e-2: errors are
    // relative to at least 1e-2.
    #[test]
    fn gradcheck_stem_residual_stage_residual_max_pool() {
        for l2 in [0.0, 0.05] {
            let m = net(spec([4, 4, 2], vec![2, 3], vec![0, 1], GlobalPool::Max), 51);
            let e = grad_check_steps(&m, 2, l2, 61, &[3e-3, 1e-3], 1e-2);
            println!("gradcheck resnet [2r,3r] max l2={l2}: max rel err {e:.3e}");
            assert!(e < 1e-2, "l2={l2}: max rel err {e}");
        }
    }

    #[test]
    fn gradcheck_three_stages_avg_pool() {
        for l2 in [0.0, 0.05] {
            let m = net(spec([6, 6, 2], vec![2, 2, 3], vec![1], GlobalPool::Avg), 52);
            let e = grad_check_steps(&m, 2, l2, 62, &[3e-3, 1e-3], 1e-2);
            println!("gradcheck resnet [2,2r,3] avg l2={l2}: max rel err {e:.3e}");
            assert!(e < 1e-2, "l2={l2}: max rel err {e}");
        }
    }

    #[test]
    fn overfits_eight_examples() {
        let mut m = net(spec([8, 8, 3], vec![8, 16], vec![1], GlobalPool::Max), 9);
        let (x, y) = random_data(8, 8 * 8 * 3, 3, 78);
        let mut opt = Optimizer::nesterov(0.05, 0.9);
        let steps = steps_to_fit(&mut m, &mut opt, &x, &y, 300);
        println!("resnet overfit: 100% train accuracy after {steps:?} steps");
        assert!(steps.is_some(), "ResNet did not reach 100% in 300 steps");
    }

    #[test]
    fn running_statistics_follow_the_batches_and_are_what_prediction_uses() {
        let mut m = net(spec([6, 6, 3], vec![4, 5], vec![1], GlobalPool::Max), 3);
        let (x, y) = random_data(8, 6 * 6 * 3, 3, 5);
        let x: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
        let (_, _, first) = m.loss_grad(&x, &y, 8, 0.0).expect("valid batch");
        assert_eq!(first.batch_norm.len(), 2 * 4, "mean and variance of 4 units");
        // With lr 0 the weights stay; 200 steps pull the running statistics to the batch's.
        let mut opt = Optimizer::sgd(0.0, 0.0);
        for _ in 0..200 {
            train_batch(&mut m, &mut opt, &x, &y, 8, 0.0).expect("valid batch");
        }
        for (run, batch) in m.buffers().iter().zip(&first.batch_norm) {
            assert_eq!(run.name, batch.name);
            for (r, b) in run.data.iter().zip(&batch.data) {
                assert!((r - b).abs() < 1e-4 * b.abs().max(1.0), "{}: {r} vs {b}", run.name);
            }
        }
        // Prediction normalizes with them: change them and the probabilities move.
        let before = m.forward(&x, 8).expect("valid batch");
        m.buffers_mut()[1].data.iter_mut().for_each(|v| *v *= 100.0);
        assert_ne!(m.forward(&x, 8).expect("valid batch"), before);
        // They are saved with the weights and read back.
        let bytes = io::to_bytes(&m, &Default::default()).expect("serializable");
        let (back, _) = io::from_bytes(&bytes).expect("readable");
        assert_eq!(back, m);
    }

    #[test]
    fn same_weights_on_one_thread_or_two() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                let mut m = net(spec([8, 8, 3], vec![4, 8], vec![1], GlobalPool::Max), 7);
                let (x, y) = random_data(40, 8 * 8 * 3, 3, 8);
                let mut opt = Optimizer::nesterov(0.05, 0.9);
                for _ in 0..3 {
                    train_batch(&mut m, &mut opt, &x, &y, 40, 5e-4).expect("valid batch");
                }
                m
            })
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn rejects_bad_specs() {
        let bad = [
            spec([4, 4, 1], vec![2, 2, 2, 2], vec![], GlobalPool::Max),
            spec([8, 8, 1], vec![], vec![], GlobalPool::Max),
            spec([8, 8, 1], vec![2, 0], vec![], GlobalPool::Max),
            spec([8, 8, 1], vec![2, 3], vec![2], GlobalPool::Max),
        ];
        for s in bad {
            assert!(matches!(Resnet::new(&s, 0), Err(ModelError::InvalidSpec(_))), "{s:?}");
        }
        let m = net(spec([4, 4, 1], vec![2], vec![], GlobalPool::Avg), 0);
        assert!(m.forward(&[0.0; 15], 1).is_err());
    }
}
