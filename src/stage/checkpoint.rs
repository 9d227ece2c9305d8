//! A `train` run's state at the end of an epoch, kept in the cache under the stage's
//! fingerprint ([`crate::cache::store::Cache::checkpoint_path`]), so that a run killed mid-training
//! resumes after its last completed epoch and ends with the weights an uninterrupted run
//! gives: the weights and batch-norm statistics, the optimizer's state, the best epoch's
//! weights, the history and the early-stopping count. The shuffle order of the next epoch
//! is not stored: each epoch's shuffle is a function of the seed and the epoch, replayed.
//!
//! One safetensors file: the tensors under `model.`, `best.`, `ema.` and `optimizer.`, the rest as
//! JSON in the metadata (`checkpoint`), floats that decide the best epoch as their bits.
//! Written to a temporary file and renamed, so a kill leaves the previous checkpoint or the
//! new one; a damaged one is reported and training starts over.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::model::io;
use crate::model::net::{Model, ModelSpec};
use crate::model::{ModelError, Tensor};

/// Metadata key of the JSON part.
const KEY: &str = "checkpoint";

/// The state after `epoch` completed epochs, with a history of `H` per epoch.
pub struct Checkpoint<H> {
    pub epoch: u64,
    pub model: Model,
    /// [`crate::model::optim::Optimizer::state`].
    pub optimizer: (Vec<Tensor>, u64),
    /// The best epoch so far: val accuracy, val loss, epoch, weights.
    pub best: Option<(f64, f64, u64, Model)>,
    /// The average of the weights (`ema`) and the updates folded into it.
    pub ema: Option<(Model, u64)>,
    pub since_best: u64,
    pub history: Vec<H>,
    /// Training seconds spent before this checkpoint (over every run that got here).
    pub seconds: f64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct State<H> {
    epoch: u64,
    architecture: ModelSpec,
    optimizer_steps: u64,
    /// `(val accuracy bits, val loss bits, epoch)` of the best epoch.
    best: Option<(u64, u64, u64)>,
    /// Updates folded into the average of the weights, when there is one.
    #[serde(default)]
    ema_updates: Option<u64>,
    since_best: u64,
    history: Vec<H>,
    seconds: f64,
}

fn prefixed<'a>(prefix: &str, tensors: impl IntoIterator<Item = &'a Tensor>) -> Vec<Tensor> {
    tensors
        .into_iter()
        .map(|t| Tensor {
            name: format!("{prefix}.{}", t.name),
            ..t.clone()
        })
        .collect()
}

impl<H: serde::Serialize + serde::de::DeserializeOwned + Clone> Checkpoint<H> {
    /// The checkpoint as bytes (the same state always gives the same bytes).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = prefixed("model", self.model.stored());
        if let Some((_, _, _, m)) = &self.best {
            tensors.extend(prefixed("best", m.stored()));
        }
        if let Some((m, _)) = &self.ema {
            tensors.extend(prefixed("ema", m.stored()));
        }
        tensors.extend(prefixed("optimizer", &self.optimizer.0));
        let state = State {
            epoch: self.epoch,
            architecture: self.model.spec(),
            optimizer_steps: self.optimizer.1,
            best: self.best.as_ref().map(|(a, l, e, _)| (a.to_bits(), l.to_bits(), *e)),
            ema_updates: self.ema.as_ref().map(|(_, n)| *n),
            since_best: self.since_best,
            history: self.history.clone(),
            seconds: self.seconds,
        };
        let meta = BTreeMap::from([(KEY.to_string(), serde_json::to_string(&state)?)]);
        Ok(io::tensors_to_bytes(tensors.iter().collect(), &meta)?)
    }

    /// Reads a checkpoint of a model of `spec`; a checkpoint of another architecture, or one
    /// whose bytes do not hold every tensor it needs, is an error.
    pub fn from_bytes(bytes: &[u8], spec: &ModelSpec) -> Result<Checkpoint<H>> {
        let (tensors, meta) = io::tensors_from_bytes(bytes)?;
        let state: State<H> = serde_json::from_str(meta.get(KEY).context("no checkpoint metadata")?)
            .context("the checkpoint metadata does not parse")?;
        if &state.architecture != spec {
            bail!("it is of another architecture");
        }
        let by_name: BTreeMap<&str, &Tensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let model = |prefix: &str| -> Result<Model> {
            let mut m = Model::new(spec, 0)?;
            for t in m.stored_mut() {
                let src = by_name
                    .get(format!("{prefix}.{}", t.name).as_str())
                    .filter(|s| s.shape == t.shape)
                    .ok_or_else(|| ModelError::Format(format!("{prefix}.{} is missing or misshapen", t.name)))?;
                t.data.copy_from_slice(&src.data);
            }
            Ok(m)
        };
        let optimizer: Vec<Tensor> = tensors
            .iter()
            .filter_map(|t| {
                Some(Tensor {
                    name: t.name.strip_prefix("optimizer.")?.to_string(),
                    ..t.clone()
                })
            })
            .collect();
        let best = match state.best {
            Some((a, l, e)) => Some((f64::from_bits(a), f64::from_bits(l), e, model("best")?)),
            None => None,
        };
        let ema = match state.ema_updates {
            Some(n) => Some((model("ema")?, n)),
            None => None,
        };
        Ok(Checkpoint {
            epoch: state.epoch,
            model: model("model")?,
            optimizer: (optimizer, state.optimizer_steps),
            best,
            ema,
            since_best: state.since_best,
            history: state.history,
            seconds: state.seconds,
        })
    }

    /// Writes the checkpoint to `path` through the temporary file `tmp` (on the same file
    /// system) and a rename.
    pub fn save(&self, path: &Path, tmp: &Path) -> Result<()> {
        use std::io::Write as _;
        let dir = path.parent().context("a checkpoint path has a folder")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut file = std::fs::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(&self.to_bytes()?)?;
        file.sync_all()?;
        std::fs::rename(tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The checkpoint at `path`, if there is one; `Err` when it is there but unusable.
    pub fn load(path: &Path, spec: &ModelSpec) -> Option<Result<Checkpoint<H>>> {
        let bytes = std::fs::read(path).ok()?;
        Some(Checkpoint::from_bytes(&bytes, spec))
    }
}
