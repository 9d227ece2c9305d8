//! Short, seeded training runs on the cached data: the material diagnose's checks are made of.
//!
//! Batches are gathered from the memory-mapped artifact the `train` stage reads, with the
//! stage's own model, optimizer and hyperparameters; nothing is preprocessed again.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::check::metrics;
use crate::data::dataset::Dtype;
use crate::data::dataset::mapped::Mapped;
use crate::data::integrity::Integrity;
use crate::model::net::{Model, ModelSpec};
use crate::model::optim::Optimizer;
use crate::model::{self, Stats};
use crate::stage::train::Train;

/// The training data of a `train` stage.
pub struct Data {
    pub mapped: Mapped,
    pub labels: Vec<u32>,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub classes: Vec<String>,
    pub shape: [usize; 3],
    pub dtype: Dtype,
}

impl Data {
    pub fn open(path: &Path, integrity: &Arc<dyn Integrity>) -> Result<Data> {
        let mapped = Mapped::open(path, integrity)?;
        let Some((shape, dtype)) = mapped.meta.pixels else {
            bail!("the training data has no pixels");
        };
        let rows = mapped.rows()?;
        let Some(parts) = rows.partition.as_ref() else {
            bail!("the training data has no partition column");
        };
        let part = |name: &str| (0..rows.len()).filter(|&i| parts[i] == name).collect::<Vec<_>>();
        let (train, val) = (part("train"), part("val"));
        if train.is_empty() {
            bail!("the training data has no `train` rows");
        }
        Ok(Data {
            labels: rows.label.iter().map(|&l| l.max(0) as u32).collect(),
            classes: mapped.meta.classes.clone(),
            train,
            val,
            shape,
            dtype,
            mapped,
        })
    }

    /// Pixels (as `f32`, or zeros when `zero`) and labels of `rows`, appended to `x` and `y`.
    pub fn gather(&self, rows: &[usize], zero: bool, x: &mut Vec<f32>, y: &mut Vec<u32>) -> Result<()> {
        x.clear();
        y.clear();
        for &i in rows {
            if zero {
                x.resize(x.len() + self.mapped.row_len(), 0.0);
            } else {
                self.mapped.pixels_into(i, x)?;
            }
            y.push(self.labels[i]);
        }
        Ok(())
    }

    /// The first `n` `train` rows of each class (fewer when a class has fewer).
    pub fn per_class(&self, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for c in 0..self.classes.len() as u32 {
            out.extend(self.train.iter().copied().filter(|&i| self.labels[i] == c).take(n));
        }
        out
    }

    /// An evenly spread sample of at most `n` of `rows`, in order.
    pub fn sample(rows: &[usize], n: usize) -> Vec<usize> {
        if rows.len() <= n {
            return rows.to_vec();
        }
        (0..n).map(|k| rows[k * rows.len() / n]).collect()
    }
}

/// A `train` stage's model and optimizer recipe.
pub struct Recipe<'a> {
    pub train: &'a Train,
    pub spec: ModelSpec,
    pub seed: u64,
}

impl Recipe<'_> {
    pub fn model(&self) -> Result<Model> {
        Model::new(&self.spec, self.seed).map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn batch_size(&self) -> usize {
        self.train.batch_size as usize
    }
}

/// One step of a [`run`]: its index, the learning rate used, the loss before the update, and
/// the step's layer statistics.
pub struct Step<'a> {
    pub index: usize,
    pub loss: f32,
    pub stats: &'a Stats,
}

/// What a [`run`] needs besides the model.
pub struct RunSpec<'a> {
    pub rows: &'a [usize],
    pub steps: usize,
    pub batch: usize,
    pub l2: f32,
    /// Train on all-zero inputs (the input-independent baseline).
    pub zero: bool,
    /// A learning rate per step (the range test); the optimizer's own when `None`.
    pub lrs: Option<&'a [f64]>,
    pub seed: u64,
}

/// Trains `model` for up to `spec.steps` mini-batches over shuffled passes of `spec.rows`.
/// `each` sees every step and returns `false` to stop; a non-finite loss stops too. Returns
/// the steps taken.
pub fn run(
    data: &Data,
    model: &mut Model,
    opt: &mut Optimizer,
    spec: &RunSpec<'_>,
    mut each: impl FnMut(&Step<'_>) -> bool,
) -> Result<usize> {
    let mut order = spec.rows.to_vec();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut index = 0;
    let mut epoch = 0u64;
    while index < spec.steps && !order.is_empty() {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ (epoch + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for chunk in order.chunks(spec.batch.max(1)) {
            if index >= spec.steps {
                break;
            }
            if let Some(lrs) = spec.lrs {
                opt.set_lr(lrs[index] as f32);
            }
            data.gather(chunk, spec.zero, &mut x, &mut y)?;
            let (loss, stats) = model::train::train_batch(model, opt, &x, &y, chunk.len(), spec.l2)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let go_on = each(&Step {
                index,
                loss,
                stats: &stats,
            });
            index += 1;
            if !go_on || !loss.is_finite() {
                return Ok(index);
            }
        }
        epoch += 1;
    }
    Ok(index)
}

/// Loss (without L2) and accuracy of `model` on `rows`.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Score {
    pub loss: f64,
    pub accuracy: f64,
    /// Share of the rows predicted as the most predicted class.
    pub majority: f64,
    /// Rows whose prediction is not a number: the model diverged.
    pub non_finite: usize,
    /// Range of the predicted probability of the last class (NaN when none is a number).
    pub p_min: f64,
    pub p_max: f64,
}

pub fn score(data: &Data, model: &Model, rows: &[usize], zero: bool) -> Result<Score> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut probs = Vec::with_capacity(rows.len() * model.classes());
    let mut labels = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(256) {
        data.gather(chunk, zero, &mut x, &mut y)?;
        probs.extend(model.forward(&x, chunk.len()).map_err(|e| anyhow::anyhow!("{e}"))?);
        labels.extend_from_slice(&y);
    }
    let m = metrics::compute(&probs, &labels, model.classes());
    Ok(Score {
        loss: m.log_loss,
        accuracy: m.accuracy,
        majority: m.collapse.majority_fraction,
        non_finite: m.collapse.non_finite,
        p_min: m.collapse.probability_min,
        p_max: m.collapse.probability_max,
    })
}

/// Loss, gradients' statistics and nothing else: one forward/backward pass without an update.
pub fn probe(data: &Data, model: &Model, rows: &[usize], l2: f32) -> Result<(f32, Stats)> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    data.gather(rows, false, &mut x, &mut y)?;
    let (loss, _, stats) = model
        .loss_grad(&x, &y, rows.len(), l2)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((loss, stats))
}

/// Per weight tensor (hidden layers and conv blocks, not the output layer): how many units
/// (rows of the weight, i.e. output channels) have exactly the incoming weights and bias of
/// another unit. Identical units get identical gradients and stay identical: the layer has
/// the capacity of one unit. Layers with weights that are not numbers (a diverged model) are
/// left out: NaN units are alike for another reason.
pub fn identical_units(model: &Model) -> Vec<(String, usize, usize)> {
    let params = model.params();
    let weights: Vec<usize> = (0..params.len()).filter(|&i| params[i].is_weight()).collect();
    let mut out = Vec::new();
    for &wi in weights.iter().take(weights.len().saturating_sub(1)) {
        let w = params[wi];
        if w.data.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let bias = params
            .iter()
            .find(|t| t.name == w.name.replace(".weight", ".bias"))
            .map(|t| t.data.as_slice());
        let units = w.shape[0];
        let fan_in = w.data.len() / units.max(1);
        let unit = |u: usize| {
            let mut v: Vec<u32> = w.data[u * fan_in..(u + 1) * fan_in]
                .iter()
                .map(|x| x.to_bits())
                .collect();
            v.push(bias.map_or(0, |b| b[u].to_bits()));
            v
        };
        let mut keys: Vec<Vec<u32>> = (0..units).map(unit).collect();
        keys.sort_unstable();
        let mut duplicated = 0;
        let mut i = 0;
        while i < keys.len() {
            let j = (i..keys.len()).find(|&j| keys[j] != keys[i]).unwrap_or(keys.len());
            if j - i > 1 {
                duplicated += j - i;
            }
            i = j;
        }
        let layer = w.name.trim_end_matches(".weight").to_string();
        out.push((layer, duplicated, units));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mlp::{Activation, DenseSpec, Init, MlpSpec};

    fn mlp(init: Init) -> Model {
        let spec = ModelSpec::Mlp(MlpSpec {
            input_len: 12,
            dense: DenseSpec {
                hidden: vec![5],
                classes: 2,
                activation: Activation::Relu,
                init,
            },
        });
        Model::new(&spec, 7).unwrap()
    }

    #[test]
    fn zero_init_units_are_all_identical_and_he_units_are_not() {
        assert_eq!(identical_units(&mlp(Init::Zeros)), vec![("dense0".to_string(), 5, 5)]);
        assert_eq!(identical_units(&mlp(Init::He)), vec![("dense0".to_string(), 0, 5)]);
    }

    #[test]
    fn diverged_layers_are_not_called_symmetric() {
        let mut m = mlp(Init::He);
        for t in m.params_mut() {
            t.data.fill(f32::NAN);
        }
        assert!(identical_units(&m).is_empty());
    }

    #[test]
    fn sample_spreads_evenly() {
        let rows: Vec<usize> = (0..10).collect();
        assert_eq!(Data::sample(&rows, 3), vec![0, 3, 6]);
        assert_eq!(Data::sample(&rows, 20), rows);
    }
}
