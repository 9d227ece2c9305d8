//! Shared test helpers: synthetic data and finite-difference gradient checks.

use crate::model::mlp::{Activation, DenseSpec, Init};
use crate::model::net::Model;
use crate::model::{Loss, ops};

/// A dense stack of `hidden` widths and `classes` outputs with ReLU and He init.
pub fn dense_spec(hidden: Vec<usize>, classes: usize) -> DenseSpec {
    DenseSpec {
        hidden,
        classes,
        activation: Activation::Relu,
        init: Init::He,
    }
}

/// `n` examples of `d` standard-normal features, balanced labels `i % classes`.
pub fn random_data(n: usize, d: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ops::rng_for(seed, 0, b"testdata");
    let x = (0..n * d).map(|_| ops::normal(&mut rng) as f32).collect();
    let y = (0..n).map(|i| (i % classes) as u32).collect();
    (x, y)
}

/// Per-feature zero mean / unit variance.
pub fn standardize(x: &[f32], d: usize) -> Vec<f32> {
    let n = x.len() / d;
    let mut out = x.to_vec();
    for j in 0..d {
        let mean = (0..n).map(|i| f64::from(x[i * d + j])).sum::<f64>() / n as f64;
        let var = (0..n).map(|i| (f64::from(x[i * d + j]) - mean).powi(2)).sum::<f64>() / n as f64;
        let sd = var.sqrt().max(1e-12);
        for i in 0..n {
            out[i * d + j] = ((f64::from(x[i * d + j]) - mean) / sd) as f32;
        }
    }
    out
}

/// Central-difference gradient check on a random batch. For every parameter
/// tensor, checks all entries if it has ≤ 24, else 24 random ones. Returns
/// the max relative error `|a − n| / max(|a|, |n|, 1e-3)`; the 1e-3 floor keeps
/// f32 round-off on near-zero gradients from dominating.
///
/// ReLU and max-pool are not differentiable at their kinks; an entry whose
/// ±eps perturbation changes the activation pattern ([`Model::kink_pattern`])
/// is retried with a smaller step (1e-2, 3e-3, 1e-3, or [`grad_check_steps`]'), and skipped for the next
/// random entry if every step crosses a kink.
pub fn grad_check(model: &Model, batch: usize, l2: impl Into<Loss>, seed: u64) -> f64 {
    grad_check_steps(model, batch, l2, seed, &[1e-2, 3e-3, 1e-3], 1e-3)
}

/// [`grad_check`] trying the finite-difference steps `steps`, largest first, with errors
/// relative to at least `floor`.
pub fn grad_check_steps(model: &Model, batch: usize, l2: impl Into<Loss>, seed: u64, steps: &[f32], floor: f64) -> f64 {
    let l2: Loss = l2.into();
    let d = model.input_len();
    let (x, mut y) = random_data(batch, d, model.classes(), seed);
    let mut rng = ops::rng_for(seed, 1, b"gradchck");
    ops::shuffle(&mut rng, &mut y);
    let (_, grads, _) = model.loss_grad(&x, &y, batch, l2).expect("valid test batch");
    let pattern = model.kink_pattern(&x, batch);
    let mut worst = 0.0f64;
    for (ti, g) in grads.tensors.iter().enumerate() {
        let mut idx: Vec<usize> = (0..g.data.len()).collect();
        ops::shuffle(&mut rng, &mut idx);
        let (mut checked, mut skipped) = (0, 0);
        let mut tensor_worst = 0.0f64;
        for &j in &idx {
            if checked == 24 {
                break;
            }
            // Largest step whose ±perturbation crosses no kink, if any.
            let mut m = model.clone();
            let w0 = m.params()[ti].data[j];
            let mut found = None;
            for &eps in steps {
                m.params_mut()[ti].data[j] = w0 + eps;
                let lp = m.loss_f64(&x, &y, batch, l2).expect("valid test batch");
                let kink_p = m.kink_pattern(&x, batch) != pattern;
                m.params_mut()[ti].data[j] = w0 - eps;
                let lm = m.loss_f64(&x, &y, batch, l2).expect("valid test batch");
                if !kink_p && m.kink_pattern(&x, batch) == pattern {
                    found = Some((eps, lp, lm));
                    break;
                }
            }
            let Some((eps, lp, lm)) = found else {
                skipped += 1;
                continue;
            };
            checked += 1;
            // Divide by the actual f32 step, not 2·eps, to cancel rounding of w0 ± eps.
            let h = f64::from(w0 + eps) - f64::from(w0 - eps);
            let num = (lp - lm) / h;
            let ana = f64::from(g.data[j]);
            let rel = (ana - num).abs() / ana.abs().max(num.abs()).max(floor);
            tensor_worst = tensor_worst.max(rel);
        }
        println!(
            "  {:<14} checked {checked:>3}/{:<4} (kink skips {skipped}) max rel err {tensor_worst:.2e}",
            g.name,
            g.data.len()
        );
        assert!(
            checked >= 20.min(g.data.len()),
            "{}: only {checked} entries checkable",
            g.name
        );
        worst = worst.max(tensor_worst);
    }
    worst
}

/// Fraction of predictions equal to the most frequent predicted class.
pub fn majority_fraction(pred: &[u32], classes: usize) -> f32 {
    let mut counts = vec![0usize; classes];
    pred.iter().for_each(|p| counts[*p as usize] += 1);
    *counts.iter().max().unwrap_or(&0) as f32 / pred.len() as f32
}
