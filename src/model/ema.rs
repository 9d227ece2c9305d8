//! An exponential moving average of a model's weights over the training steps (Polyak
//! averaging, as timm's `ModelEmaV2`): after every step, each stored value `e` of the
//! average becomes `d·e + (1 − d)·w`, `w` the trained model's value. The batch norm's running
//! statistics are averaged the same way (they are stored with the weights). The decay ramps
//! up as `d = min(decay, (1 + n)/(10 + n))` at the `n`-th update (TensorFlow's
//! `ExponentialMovingAverage` with `num_updates`), so the first steps' weights (far from
//! anything useful) fade fast instead of weighing on a short run.
//!
//! The average is a model: it is what validation measures each epoch and what a run keeps.

use crate::model::ModelError;
use crate::model::net::Model;

/// The average of a model's weights, with its decay and the updates folded in so far.
#[derive(Clone, Debug)]
pub struct Ema {
    pub model: Model,
    decay: f32,
    updates: u64,
}

impl Ema {
    /// An average that starts at `model`'s weights (nothing folded in yet).
    pub fn new(model: &Model, decay: f32) -> Ema {
        Ema::resume(model.clone(), decay, 0)
    }

    /// An average `model` after `updates` updates (a checkpoint's).
    pub fn resume(model: Model, decay: f32, updates: u64) -> Ema {
        Ema { model, decay, updates }
    }

    /// Updates folded in so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay the next update uses.
    pub fn next_decay(&self) -> f32 {
        let n = self.updates as f32 + 1.0;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Folds `model`'s weights (and running statistics) into the average.
    pub fn update(&mut self, model: &Model) -> Result<(), ModelError> {
        let d = self.next_decay();
        let (avg, now) = (self.model.stored_mut(), model.stored());
        if avg.len() != now.len() {
            return Err(ModelError::GradMismatch(format!(
                "the average holds {} tensors, the model {}",
                avg.len(),
                now.len()
            )));
        }
        for (e, w) in avg.into_iter().zip(now) {
            if e.shape != w.shape {
                return Err(ModelError::GradMismatch(format!(
                    "{}: the average is {:?}, the model {:?}",
                    e.name, e.shape, w.shape
                )));
            }
            e.data
                .iter_mut()
                .zip(&w.data)
                .for_each(|(e, w)| *e = d * *e + (1.0 - d) * w);
        }
        self.updates += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mlp::MlpSpec;
    use crate::model::net::ModelSpec;
    use crate::model::testutil::dense_spec;

    fn model(seed: u64) -> Model {
        let spec = ModelSpec::Mlp(MlpSpec {
            input_len: 6,
            dense: dense_spec(vec![4], 3),
        });
        Model::new(&spec, seed).expect("valid spec")
    }

    #[test]
    fn the_average_is_the_decayed_sum_of_the_steps_weights() {
        let start = model(1);
        let steps: Vec<Model> = (2..40).map(model).collect();
        let decay = 0.75f64;
        let mut ema = Ema::new(&start, decay as f32);
        for m in &steps {
            ema.update(m).expect("same architecture");
        }
        assert_eq!(ema.updates(), steps.len() as u64);
        // In closed form: the start's weight is the product of every step's d, step k's is
        // (1 − d_k) times the product of the later d's.
        let ds: Vec<f64> = (1..=steps.len())
            .map(|n| decay.min((1.0 + n as f64) / (10.0 + n as f64)))
            .collect();
        assert!(ds[0] < 0.2 && ds[ds.len() - 1] == 0.75, "the ramp: {ds:?}");
        for (t, avg) in ema.model.stored().iter().enumerate() {
            for j in 0..avg.data.len() {
                let mut want = f64::from(start.stored()[t].data[j]);
                for (k, m) in steps.iter().enumerate() {
                    want = ds[k] * want + (1.0 - ds[k]) * f64::from(m.stored()[t].data[j]);
                }
                let got = f64::from(avg.data[j]);
                assert!(
                    (got - want).abs() < 1e-5 * want.abs().max(1e-2),
                    "{}[{j}]: {got} vs {want}",
                    avg.name
                );
            }
        }
        // The average is not the last step's weights nor the start's.
        assert_ne!(ema.model.stored()[0].data, steps[steps.len() - 1].stored()[0].data);
    }

    #[test]
    fn another_architecture_is_an_error() {
        let other = Model::new(
            &ModelSpec::Mlp(MlpSpec {
                input_len: 6,
                dense: dense_spec(vec![5], 3),
            }),
            0,
        )
        .expect("valid spec");
        assert!(Ema::new(&model(0), 0.99).update(&other).is_err());
    }
}
