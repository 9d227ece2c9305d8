//! `train`: fit a classifier on the `train` rows of its (validated) input, choosing the
//! epoch with the best `val` accuracy; `test` rows are never read.
//!
//! Models: logistic regression, an MLP and a small CNN ([`crate::model`], explicit backprop
//! checked against finite differences). Mini-batches are gathered from the memory-mapped
//! Arrow artifact, so the dataset is never copied into memory. Training is deterministic for
//! a seed: shuffling and augmentation draw from ChaCha8 streams keyed by the seed and epoch,
//! and the math is single-threaded. The artifact is the weights as safetensors; its record
//! keeps the architecture, hyperparameters, classes, per-epoch history and the lineage of
//! the data it was trained on (the fingerprints `evaluate` and `predict` check).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use super::checkpoint::Checkpoint;
use super::{Kind, Output, RunCtx};
use crate::check::metrics;
use crate::data::dataset::mapped::Mapped;
use crate::model;
use crate::model::cnn::CnnSpec;
use crate::model::ema::Ema;
use crate::model::mlp::{Activation, DenseSpec, Init, MlpSpec};
use crate::model::net::{Model, ModelSpec};
use crate::model::optim::{Optimizer, Schedule};
use crate::model::resnet::{GlobalPool, ResnetSpec};
use crate::source::diag::Diagnostic;
use crate::source::fields::{Fields, get_choice, get_f64, get_u64};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Logistic,
    Mlp,
    Cnn,
    Resnet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opt {
    Sgd,
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augment {
    Hflip,
    CropPad,
    CropReflect,
    Cutout,
}

#[derive(Clone, Debug)]
pub struct Train {
    pub arch: Arch,
    pub hidden: Vec<usize>,
    pub blocks: Vec<usize>,
    /// `model: resnet`: the stem's width, then each stage's.
    pub widths: Vec<usize>,
    /// `model: resnet`: the stages (0: the stem) followed by a residual block.
    pub residual: Vec<usize>,
    /// `model: resnet`: the global pooling before the dense layer.
    pub pool: GlobalPool,
    pub activation: Activation,
    pub init: Init,
    pub optimizer: Opt,
    pub lr: f64,
    pub momentum: f64,
    /// Nesterov momentum (`optimizer: sgd` with `momentum` > 0).
    pub nesterov: bool,
    /// Decoupled weight decay (SGDW, AdamW): weights shrink by `lr·weight_decay` per step.
    pub weight_decay: f64,
    /// How the learning rate moves over the steps (`lr` is its peak).
    pub schedule: Schedule,
    /// Epochs of linear warm-up from 0 to `lr` (`constant` and `cosine`).
    pub warmup_epochs: u64,
    pub epochs: u64,
    pub batch_size: u64,
    pub l2: f64,
    /// Label smoothing of the training loss (val loss stays the plain cross-entropy).
    pub label_smoothing: f64,
    /// The decay of an exponential moving average of the weights ([`Ema`]), which is then
    /// what validation measures and the run keeps (0: none).
    pub ema: f64,
    pub seed: Option<u64>,
    pub augment: Vec<Augment>,
    /// Test-time augmentation: each prediction (val during training, `evaluate`, `predict`)
    /// is the mean of the image's and its mirror image's probabilities.
    pub tta_hflip: bool,
    /// Stop after this many epochs without a better `val` accuracy (0: never).
    pub patience: u64,
    /// Train without a `validate` stage upstream (warned about on every run).
    pub unvalidated: bool,
    /// Keep the weights of the epoch with the best `val` accuracy (`best_val`), or of the
    /// last epoch (`last`, what a plain training loop does).
    pub keep_last: bool,
}

const ARCHS: &[(&str, Arch)] = &[
    ("logistic", Arch::Logistic),
    ("mlp", Arch::Mlp),
    ("cnn", Arch::Cnn),
    ("resnet", Arch::Resnet),
];
const POOLS: &[(&str, GlobalPool)] = &[("max", GlobalPool::Max), ("avg", GlobalPool::Avg)];
const ACTS: &[(&str, Activation)] = &[
    ("relu", Activation::Relu),
    ("leaky_relu", Activation::LeakyRelu),
    ("tanh", Activation::Tanh),
    ("sigmoid", Activation::Sigmoid),
];
const INITS: &[(&str, Init)] = &[("he", Init::He), ("xavier", Init::Xavier), ("zeros", Init::Zeros)];
const OPTS: &[(&str, Opt)] = &[("sgd", Opt::Sgd), ("adam", Opt::Adam)];
const AUGS: &[(&str, Augment)] = &[
    ("hflip", Augment::Hflip),
    ("crop_pad", Augment::CropPad),
    ("crop_reflect", Augment::CropReflect),
    ("cutout", Augment::Cutout),
];
const SCHEDULES: &[(&str, Schedule)] = &[
    ("constant", Schedule::Constant),
    ("cosine", Schedule::Cosine),
    ("one_cycle", Schedule::OneCycle),
];

fn name<T: PartialEq + Copy>(table: &[(&'static str, T)], v: T) -> &'static str {
    table.iter().find(|(_, x)| *x == v).map_or("?", |(n, _)| n)
}

/// An optional choice param with its default.
fn choice_or<T: Copy>(
    f: &mut Fields<'_>,
    key: &str,
    table: &[(&str, T)],
    default: T,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    match f.get(key) {
        Some(n) => get_choice(n, key, table, diags),
        None => Some(default),
    }
}

fn sizes(node: &crate::source::yaml::Node, field: &str, diags: &mut Vec<Diagnostic>) -> Option<Vec<usize>> {
    let Some(items) = node.as_seq() else {
        diags.push(Diagnostic::new(
            node.span,
            format!(
                "`{field}` must be a list of sizes, e.g. [128], found {}",
                node.describe()
            ),
        ));
        return None;
    };
    items
        .iter()
        .map(|i| get_u64(i, field, (1, 65536), diags).map(|v| v as usize))
        .collect()
}

impl Kind for Train {
    const KIND: &'static str = "train";
    // 2: the history's prediction shares leave out predictions that are not numbers.
    // 3: a step's gradients are computed in shards of 16 rows on every core and merged in
    //    shard order (the same weights at any `-j`; other last bits than version 2's).
    const VERSION: u32 = 3;
    const PARAMS: &'static [&'static str] = &[
        "model",
        "hidden",
        "blocks",
        "widths",
        "residual",
        "pool",
        "activation",
        "init",
        "optimizer",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "schedule",
        "warmup_epochs",
        "epochs",
        "batch_size",
        "l2",
        "label_smoothing",
        "ema",
        "seed",
        "augment",
        "tta",
        "patience",
        "unvalidated",
        "select",
    ];

    fn parse(f: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Self> {
        let before = diags.len();
        let arch = f
            .require("model", "add `model: mlp` (or logistic, cnn, resnet)", diags)
            .and_then(|n| get_choice(n, "model", ARCHS, diags));
        let hidden = match f.get("hidden") {
            Some(n) => sizes(n, "hidden", diags),
            None => Some(if arch == Some(Arch::Mlp) { vec![128] } else { Vec::new() }),
        };
        let blocks_node = f.get("blocks");
        let blocks = match blocks_node {
            Some(n) => sizes(n, "blocks", diags),
            None => Some(vec![16, 32]),
        };
        if let (Some(n), Some(a)) = (blocks_node, arch)
            && a != Arch::Cnn
        {
            diags.push(Diagnostic::new(
                n.span,
                "`blocks` (conv channels) only applies to `model: cnn`",
            ));
        }
        let widths_node = f.get("widths");
        let widths = match widths_node {
            Some(n) => sizes(n, "widths", diags),
            None => Some(vec![16, 32, 64, 128]),
        };
        let residual_node = f.get("residual");
        let residual = match residual_node {
            Some(n) => match n.as_seq() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let v = get_u64(i, "residual", (0, 1023), diags)? as usize;
                        match &widths {
                            Some(w) if v >= w.len() => {
                                diags.push(
                                    Diagnostic::new(
                                        i.span,
                                        format!("there is no stage {v}: `widths` has {} (0 is the stem)", w.len()),
                                    )
                                    .with_help(format!("use a stage from 0 to {}", w.len().saturating_sub(1))),
                                );
                                None
                            }
                            _ => Some(v),
                        }
                    })
                    .collect(),
                None => {
                    diags.push(Diagnostic::new(
                        n.span,
                        "`residual` must be a list of stage numbers, e.g. [1, 3]",
                    ));
                    None
                }
            },
            None => Some(vec![1, 3]),
        };
        let pool_node = f.get("pool");
        let pool = choice_or(f, "pool", POOLS, GlobalPool::Avg, diags);
        if let Some(a) = arch
            && a != Arch::Resnet
        {
            for (node, key) in [
                (widths_node, "widths"),
                (residual_node, "residual"),
                (pool_node, "pool"),
            ] {
                if let Some(n) = node {
                    diags.push(Diagnostic::new(
                        n.span,
                        format!("`{key}` only applies to `model: resnet`"),
                    ));
                }
            }
        }
        if let (Some(Arch::Resnet), Some(n)) = (arch, f.get("hidden")) {
            diags.push(
                Diagnostic::new(
                    n.span,
                    "`hidden` does not apply to `model: resnet` (its head is one dense layer)",
                )
                .with_help("remove `hidden`, or widen the last of `widths`"),
            );
        }
        let activation_node = f.get("activation");
        let activation = choice_or(f, "activation", ACTS, Activation::Relu, diags);
        if let (Some(Arch::Resnet), Some(n), Some(a)) = (arch, activation_node, activation)
            && a != Activation::Relu
        {
            diags.push(Diagnostic::new(
                n.span,
                "`model: resnet` uses ReLU after every batch norm; only `activation: relu` applies",
            ));
        }
        let init = choice_or(f, "init", INITS, Init::He, diags);
        let optimizer = choice_or(f, "optimizer", OPTS, Opt::Adam, diags);
        let mut num = |key: &str, range, default: f64, diags: &mut Vec<Diagnostic>| match f.get(key) {
            Some(n) => get_f64(n, key, range, diags),
            None => Some(default),
        };
        let lr = num("lr", (1e-9, 100.0), 0.001, diags);
        let momentum = num("momentum", (0.0, 0.9999), 0.0, diags);
        let l2 = num("l2", (0.0, 100.0), 0.0, diags);
        let label_smoothing = num("label_smoothing", (0.0, 0.99), 0.0, diags);
        let weight_decay = num("weight_decay", (0.0, 10.0), 0.0, diags);
        let ema = num("ema", (0.0, 0.99999), 0.0, diags);
        let mut int = |key: &str, range, default: u64, diags: &mut Vec<Diagnostic>| match f.get(key) {
            Some(n) => get_u64(n, key, range, diags),
            None => Some(default),
        };
        let epochs = int("epochs", (1, 100_000), 20, diags);
        let warmup_epochs = int("warmup_epochs", (0, 100_000), 0, diags);
        let batch_size = int("batch_size", (1, 65_536), 64, diags);
        let patience = int("patience", (0, 100_000), 0, diags);
        let seed = f
            .get("seed")
            .and_then(|n| get_u64(n, "seed", (0, u64::MAX >> 1), diags));
        let augment = match f.get("augment") {
            Some(n) => match n.as_seq() {
                Some(items) => items.iter().map(|i| get_choice(i, "augment", AUGS, diags)).collect(),
                None => {
                    diags.push(Diagnostic::new(
                        n.span,
                        "`augment` must be a list, e.g. [hflip, crop_pad]",
                    ));
                    None
                }
            },
            None => Some(Vec::new()),
        };
        let unvalidated = match f.get("unvalidated") {
            Some(n) => match n.as_str() {
                Some("true") => Some(true),
                Some("false") => Some(false),
                _ => {
                    diags.push(Diagnostic::new(n.span, "`unvalidated` must be true or false"));
                    None
                }
            },
            None => Some(false),
        };
        let keep_last = choice_or(f, "select", &[("best_val", false), ("last", true)], false, diags);
        let tta_hflip = match f.get("tta") {
            Some(n) => match n.as_seq() {
                Some(items) => items
                    .iter()
                    .map(|i| get_choice(i, "tta", &[("hflip", true)], diags))
                    .collect::<Option<Vec<bool>>>()
                    .map(|v| v.contains(&true)),
                None => {
                    diags.push(Diagnostic::new(n.span, "`tta` must be a list, e.g. [hflip]"));
                    None
                }
            },
            None => Some(false),
        };
        let schedule = choice_or(f, "schedule", SCHEDULES, Schedule::Constant, diags);
        let nesterov_node = f.get("nesterov");
        let nesterov = match nesterov_node {
            Some(n) => get_choice(n, "nesterov", &[("true", true), ("false", false)], diags),
            None => Some(false),
        };
        if let (Some(n), Some(true)) = (nesterov_node, nesterov)
            && (optimizer != Some(Opt::Sgd) || momentum.is_some_and(|m| m <= 0.0))
        {
            diags.push(
                Diagnostic::new(n.span, "`nesterov` needs `optimizer: sgd` with a `momentum` above 0")
                    .with_help("add `optimizer: sgd` and `momentum: 0.9`, or remove `nesterov`"),
            );
        }
        if let (Some(n), Some(Schedule::OneCycle)) = (f.get("warmup_epochs"), schedule) {
            diags.push(
                Diagnostic::new(
                    n.span,
                    "`warmup_epochs` does not apply to `schedule: one_cycle` (its rise is its warm-up)",
                )
                .with_help("remove `warmup_epochs`, or use `schedule: cosine`"),
            );
        }
        if let (Some(w), Some(e)) = (warmup_epochs, epochs)
            && w >= e
            && let Some(n) = f.get("warmup_epochs")
        {
            diags.push(Diagnostic::new(
                n.span,
                format!("`warmup_epochs` must be fewer than `epochs` ({e})"),
            ));
        }
        if diags.len() > before {
            return None;
        }
        Some(Train {
            keep_last: keep_last?,
            arch: arch?,
            hidden: hidden?,
            blocks: blocks?,
            widths: widths?,
            residual: residual?,
            pool: pool?,
            activation: activation?,
            init: init?,
            optimizer: optimizer?,
            lr: lr?,
            momentum: momentum?,
            nesterov: nesterov?,
            weight_decay: weight_decay?,
            schedule: schedule?,
            warmup_epochs: warmup_epochs?,
            epochs: epochs?,
            batch_size: batch_size?,
            l2: l2?,
            label_smoothing: label_smoothing?,
            ema: ema?,
            seed,
            augment: augment?,
            tta_hflip: tta_hflip?,
            patience: patience?,
            unvalidated: unvalidated?,
        })
    }

    fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "model": name(ARCHS, self.arch),
            "hidden": if self.arch == Arch::Logistic { Vec::new() } else { self.hidden.clone() },
            "blocks": if self.arch == Arch::Cnn { self.blocks.clone() } else { Vec::new() },
            "activation": name(ACTS, self.activation),
            "init": name(INITS, self.init),
            "optimizer": name(OPTS, self.optimizer),
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "schedule": name(SCHEDULES, self.schedule),
            "warmup_epochs": self.warmup_epochs,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "l2": self.l2,
            "seed": self.seed,
            "augment": self.augment.iter().map(|a| name(AUGS, *a)).collect::<Vec<_>>(),
            "tta": if self.tta_hflip { vec!["hflip"] } else { Vec::new() },
            "patience": self.patience,
            "unvalidated": self.unvalidated,
            "select": if self.keep_last { "last" } else { "best_val" },
        });
        // Written only where they apply, so the fingerprints of pipelines without them stay as
        // they were.
        if let Some(map) = json.as_object_mut() {
            if self.arch == Arch::Resnet {
                map.insert("widths".into(), serde_json::json!(self.widths));
                map.insert("residual".into(), serde_json::json!(self.residual));
                map.insert("pool".into(), serde_json::json!(name(POOLS, self.pool)));
            }
            if self.label_smoothing > 0.0 {
                map.insert("label_smoothing".into(), serde_json::json!(self.label_smoothing));
            }
            if self.ema > 0.0 {
                map.insert("ema".into(), serde_json::json!(self.ema));
            }
        }
        json
    }

    fn inherit_seed(&mut self, pipeline: u64) -> bool {
        let inherited = self.seed.is_none();
        self.seed.get_or_insert(pipeline);
        inherited
    }
}

/// One epoch of the training history.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Epoch {
    pub epoch: u64,
    /// The learning rate of the epoch's last step (absent from records before schedules).
    #[serde(default, deserialize_with = "crate::check::metrics::null_as_nan")]
    pub lr: f64,
    #[serde(deserialize_with = "crate::check::metrics::null_as_nan")]
    pub train_loss: f64,
    #[serde(deserialize_with = "crate::check::metrics::null_as_nan")]
    pub train_accuracy: f64,
    #[serde(deserialize_with = "crate::check::metrics::null_as_nan")]
    pub val_loss: f64,
    #[serde(deserialize_with = "crate::check::metrics::null_as_nan")]
    pub val_accuracy: f64,
    /// Range of the predicted probability of the last class on `val`.
    #[serde(deserialize_with = "crate::check::metrics::null_as_nan")]
    pub val_probability_min: f64,
    #[serde(deserialize_with = "crate::check::metrics::null_as_nan")]
    pub val_probability_max: f64,
    /// Fraction of `val` rows predicted as the most predicted class.
    #[serde(deserialize_with = "crate::check::metrics::null_as_nan")]
    pub val_majority_fraction: f64,
    /// Per hidden layer: fraction of dead units in the epoch's last batch.
    #[serde(deserialize_with = "crate::check::metrics::nulls_as_nan")]
    pub dead_fraction: Vec<f32>,
    /// Per layer: L2 norm of the weight gradient in the epoch's last batch.
    #[serde(deserialize_with = "crate::check::metrics::nulls_as_nan")]
    pub grad_norm: Vec<f32>,
}

impl Train {
    /// The architecture for inputs of `shape` and `classes` classes.
    pub fn spec(&self, shape: [usize; 3], classes: usize) -> ModelSpec {
        let dense = |hidden: &[usize]| DenseSpec {
            hidden: hidden.to_vec(),
            classes,
            activation: self.activation,
            init: self.init,
        };
        match self.arch {
            Arch::Logistic => ModelSpec::Mlp(MlpSpec {
                input_len: shape.iter().product(),
                dense: dense(&[]),
            }),
            Arch::Mlp => ModelSpec::Mlp(MlpSpec {
                input_len: shape.iter().product(),
                dense: dense(&self.hidden),
            }),
            Arch::Cnn => ModelSpec::Cnn(CnnSpec {
                input: shape,
                blocks: self.blocks.clone(),
                dense: dense(&self.hidden),
            }),
            Arch::Resnet => ModelSpec::Resnet(ResnetSpec {
                input: shape,
                widths: self.widths.clone(),
                residual: self.residual.clone(),
                pool: self.pool,
                classes,
                init: self.init,
            }),
        }
    }

    /// What a training step minimizes besides the data: the L2 term and label smoothing.
    pub fn loss(&self) -> model::Loss {
        model::Loss {
            l2: self.l2 as f32,
            smoothing: self.label_smoothing as f32,
        }
    }

    /// The configured optimizer (fresh state) with learning rate `lr`.
    pub fn optimizer_with_lr(&self, lr: f64) -> Optimizer {
        let opt = match self.optimizer {
            Opt::Sgd if self.nesterov => Optimizer::nesterov(lr as f32, self.momentum as f32),
            Opt::Sgd => Optimizer::sgd(lr as f32, self.momentum as f32),
            Opt::Adam => Optimizer::adam(lr as f32),
        };
        opt.with_weight_decay(self.weight_decay as f32)
    }

    pub fn run(&self, ctx: &RunCtx<'_>) -> Result<Output> {
        let data = Mapped::open(ctx.input_path()?, &ctx.integrity)?;
        let Some((shape, _)) = data.meta.pixels else {
            bail!("stage `{}` needs pixels to train on", ctx.entry.stage);
        };
        let rows = data.rows()?;
        let parts = rows
            .partition
            .as_ref()
            .context("the training data has no partition column")?;
        let classes = data.meta.classes.len();
        let labels: Vec<u32> = rows.label.iter().map(|&l| l.max(0) as u32).collect();
        let train: Vec<usize> = (0..rows.len()).filter(|&i| parts[i] == "train").collect();
        let val: Vec<usize> = (0..rows.len()).filter(|&i| parts[i] == "val").collect();
        if train.is_empty() {
            bail!("no `train` rows to train on");
        }
        let seed = self.seed.unwrap_or(ctx.seed);
        let spec = self.spec(shape, classes);
        let mut model = Model::new(&spec, seed).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut ema = (self.ema > 0.0).then(|| Ema::new(&model, self.ema as f32));
        let mut opt = self.optimizer_with_lr(self.lr);
        let row_len = data.row_len();
        let bs = self.batch_size as usize;
        let mut order = train.clone();
        let mut history: Vec<Epoch> = Vec::new();
        let mut best: Option<(f64, f64, u64, Model)> = None;
        let mut since_best = 0;
        let mut diverged = false;
        ctx.progress.set_length(self.epochs);
        let started = std::time::Instant::now();
        let per_epoch = train.len().div_ceil(bs) as u64;
        let (total, warmup) = (self.epochs * per_epoch, self.warmup_epochs * per_epoch);
        // A run killed mid-training left a checkpoint under this fingerprint: go on from it.
        let checkpoint = ctx.cache.and_then(|c| c.checkpoint_path(&ctx.entry.fingerprint));
        let (mut first, mut seconds_before) = (0, 0.0);
        match checkpoint.as_deref().and_then(|p| Checkpoint::<Epoch>::load(p, &spec)) {
            Some(Ok(c)) if c.ema.is_some() != ema.is_some() => ctx.warn(format!(
                "stage `{}`: the checkpoint of an interrupted run is unusable (it {} an average of the weights, `ema` asks {}); training from the start",
                ctx.entry.stage,
                if c.ema.is_some() { "holds" } else { "lacks" },
                if ema.is_some() { "for one" } else { "for none" },
            )),
            Some(Ok(c)) if c.epoch < self.epochs => {
                opt.restore(&c.optimizer.0, c.optimizer.1)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                (model, best, since_best, history) = (c.model, c.best, c.since_best, c.history);
                ema = c.ema.map(|(m, n)| Ema::resume(m, self.ema as f32, n));
                (first, seconds_before) = (c.epoch, c.seconds);
                ctx.progress.inc(first);
            }
            Some(Err(e)) => ctx.warn(format!(
                "stage `{}`: the checkpoint of an interrupted run is unusable ({e:#}); training from the start",
                ctx.entry.stage
            )),
            _ => {}
        }
        for epoch in 0..first {
            shuffle_epoch(&mut order, seed, epoch);
        }
        let mut step = first * per_epoch;
        for epoch in first..self.epochs {
            let mut rng = shuffle_epoch(&mut order, seed, epoch);
            let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
            let mut last_stats = None;
            let mut xb = Vec::with_capacity(bs * row_len);
            let mut yb = Vec::with_capacity(bs);
            for chunk in order.chunks(bs) {
                xb.clear();
                yb.clear();
                for &i in chunk {
                    data.pixels_into(i, &mut xb)?;
                    yb.push(labels[i]);
                }
                for row in xb.chunks_exact_mut(row_len) {
                    augment(row, shape, &self.augment, &mut rng);
                }
                opt.set_lr(self.schedule.lr_at(self.lr, step, total, warmup) as f32);
                step += 1;
                let (loss, stats) = model::train::train_batch(&mut model, &mut opt, &xb, &yb, chunk.len(), self.loss())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some(ema) = &mut ema {
                    ema.update(&model).map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                loss_sum += f64::from(loss) * chunk.len() as f64;
                correct += stats.correct;
                seen += chunk.len();
                last_stats = Some(stats);
                if !loss.is_finite() {
                    diverged = true;
                    break;
                }
            }
            // What validation measures and a run keeps: the average of the weights, if any.
            let judged = ema.as_ref().map_or(&model, |e| &e.model);
            let (probs, val_labels) = predict_rows(judged, &data, &val, &labels, self.tta_hflip)?;
            let m = metrics::compute(&probs, &val_labels, classes);
            let stats = last_stats.unwrap_or_default();
            let e = Epoch {
                epoch: epoch + 1,
                lr: f64::from(opt.lr()),
                train_loss: loss_sum / seen.max(1) as f64,
                train_accuracy: correct as f64 / seen.max(1) as f64,
                val_loss: m.log_loss,
                val_accuracy: m.accuracy,
                val_probability_min: m.collapse.probability_min,
                val_probability_max: m.collapse.probability_max,
                val_majority_fraction: m.collapse.majority_fraction,
                dead_fraction: stats.layers.iter().filter_map(|l| l.dead_fraction).collect(),
                grad_norm: stats.layers.iter().map(|l| l.weight_grad_norm).collect(),
            };
            tracing::debug!(
                epoch = e.epoch,
                train_loss = e.train_loss,
                train_acc = e.train_accuracy,
                val_loss = e.val_loss,
                val_acc = e.val_accuracy,
                "epoch"
            );
            let better = best.as_ref().is_none_or(|(acc, loss, _, _)| {
                e.val_accuracy > *acc || (e.val_accuracy == *acc && e.val_loss < *loss)
            });
            if better && !diverged {
                best = Some((e.val_accuracy, e.val_loss, e.epoch, judged.clone()));
                since_best = 0;
            } else {
                since_best += 1;
            }
            history.push(e);
            ctx.progress.inc(1);
            crate::data::fault::point(|| format!("{}: epoch {} trained", ctx.entry.stage, epoch + 1));
            if diverged || (self.patience > 0 && since_best >= self.patience) {
                break;
            }
            if let Some(path) = checkpoint.as_deref().filter(|_| epoch + 1 < self.epochs) {
                let state = Checkpoint {
                    epoch: epoch + 1,
                    model: model.clone(),
                    optimizer: opt.state(),
                    best: best.clone(),
                    ema: ema.as_ref().map(|e| (e.model.clone(), e.updates())),
                    since_best,
                    history: history.clone(),
                    seconds: seconds_before + started.elapsed().as_secs_f64(),
                };
                // A checkpoint that cannot be written costs a rerun its head start, nothing else.
                let tmp = ctx.cache.map(|c| c.temp_path("checkpoint"));
                if let Err(e) = tmp.map_or(Ok(()), |tmp| state.save(path, &tmp)) {
                    ctx.warn(format!("stage `{}`: no checkpoint: {e:#}", ctx.entry.stage));
                }
                crate::data::fault::point(|| format!("{}: checkpoint of epoch {} written", ctx.entry.stage, epoch + 1));
            }
        }
        if let Some(path) = &checkpoint {
            let _ = std::fs::remove_file(path);
        }
        let (best_epoch, chosen) = match best {
            Some((_, _, epoch, m)) if !self.keep_last => (epoch, m),
            _ => (history.len() as u64, ema.map_or(model, |e| e.model)),
        };
        let lineage: Vec<serde_json::Value> = data
            .meta
            .lineage
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .collect();
        let mut md = BTreeMap::new();
        md.insert("classes".to_string(), serde_json::to_string(&data.meta.classes)?);
        md.insert(
            "data_fingerprint".to_string(),
            data.meta
                .lineage
                .last()
                .map(|e| e.fingerprint.clone())
                .unwrap_or_default(),
        );
        md.insert("input_shape".to_string(), serde_json::to_string(&shape)?);
        let bytes = model::io::to_bytes(&chosen, &md).map_err(|e| anyhow::anyhow!("{e}"))?;
        let last = history.last();
        Ok(Output {
            written: ctx.write_file(&bytes, train.len() as u64)?,
            fitted: serde_json::Value::Null,
            summary: serde_json::json!({
                "architecture": spec,
                "hyperparameters": self.to_json(),
                "classes": data.meta.classes,
                "input_shape": shape,
                "best_epoch": best_epoch,
                "best_val_accuracy": history.get(best_epoch.saturating_sub(1) as usize).map(|e| e.val_accuracy),
                "epochs_run": history.len(),
                "diverged": diverged,
                "final_train_loss": last.map(|e| e.train_loss),
                "train_rows": train.len(),
                "val_rows": val.len(),
                "train_seconds": seconds_before + started.elapsed().as_secs_f64(),
                "resumed_after_epoch": (first > 0).then_some(first),
                "data_lineage": lineage,
                "history": history,
            }),
        })
    }
}

/// Shuffles `order` (the train rows, as the previous epoch left them) for `epoch` (from 0)
/// and returns the stream the epoch's augmentation goes on drawing from: both are functions
/// of the seed and the epoch, so a resumed run replays the shuffles of the epochs it skips.
fn shuffle_epoch(order: &mut [usize], seed: u64, epoch: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (epoch + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    rng
}

/// Class probabilities of `rows` (indices into `data`), in batches.
pub fn predict_rows(
    model: &Model,
    data: &Mapped,
    rows: &[usize],
    labels: &[u32],
    hflip_too: bool,
) -> Result<(Vec<f32>, Vec<u32>)> {
    use rayon::prelude::*;
    let shape = data.meta.pixels.map_or([0; 3], |(s, _)| s);
    // Chunks of a fixed size on every core, in order: the same probabilities whatever `-j`.
    let parts = rows
        .par_chunks(64)
        .map(|chunk| {
            let mut x = Vec::with_capacity(chunk.len() * data.row_len());
            for &i in chunk {
                data.pixels_into(i, &mut x)?;
            }
            forward_tta(model, &x, chunk.len(), shape, hflip_too).map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((parts.concat(), rows.iter().map(|&i| labels[i]).collect()))
}

/// Train-time augmentation of one image (HWC), drawn from `rng`: `hflip` mirrors half the
/// images; `crop_pad` shifts by up to 4 pixels, filling with zeros (the normalized mean).
/// Mirrors an HWC image left to right, in place.
fn hflip(row: &mut [f32], [h, w, c]: [usize; 3]) {
    for y in 0..h {
        for x in 0..w / 2 {
            for ch in 0..c {
                row.swap((y * w + x) * c + ch, (y * w + (w - 1 - x)) * c + ch);
            }
        }
    }
}

/// Whether a model's hyperparameters (its record's `summary.hyperparameters`) ask for
/// flip test-time augmentation.
pub fn tta_hflip(hyperparameters: &serde_json::Value) -> bool {
    hyperparameters["tta"]
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t == "hflip"))
}

/// Class probabilities of the `n` HWC images of `shape` in `x`; with `hflip`, the mean of
/// each image's and its mirror image's (test-time augmentation).
pub fn forward_tta(
    model: &Model,
    x: &[f32],
    n: usize,
    shape: [usize; 3],
    hflip_too: bool,
) -> Result<Vec<f32>, model::ModelError> {
    let mut p = model.forward(x, n)?;
    if hflip_too {
        let mut flipped = x.to_vec();
        let len = shape.iter().product::<usize>().max(1);
        flipped.chunks_exact_mut(len).for_each(|row| hflip(row, shape));
        let q = model.forward(&flipped, n)?;
        p.iter_mut().zip(&q).for_each(|(a, b)| *a = (*a + b) / 2.0);
    }
    Ok(p)
}

fn augment(row: &mut [f32], shape: [usize; 3], augs: &[Augment], rng: &mut ChaCha8Rng) {
    let [h, w, c] = shape;
    for a in augs {
        match a {
            Augment::Hflip => {
                if rng.next_u32() & 1 == 1 {
                    hflip(row, shape);
                }
            }
            Augment::CropPad | Augment::CropReflect => {
                let (dy, dx) = if *a == Augment::CropPad {
                    ((rng.next_u32() % 9) as isize - 4, (rng.next_u32() % 9) as isize - 4)
                } else {
                    let (py, px) = ((h / 8).max(1) as u32, (w / 8).max(1) as u32);
                    (
                        (rng.next_u32() % (2 * py + 1)) as isize - py as isize,
                        (rng.next_u32() % (2 * px + 1)) as isize - px as isize,
                    )
                };
                if dy == 0 && dx == 0 {
                    continue;
                }
                let src = row.to_vec();
                // Reflected about the edge pixel, as PyTorch's `padding_mode="reflect"`.
                let reflect = |i: isize, n: usize| -> Option<usize> {
                    let n = n as isize;
                    let r = if i < 0 {
                        -i
                    } else if i >= n {
                        2 * (n - 1) - i
                    } else {
                        i
                    };
                    (0..n).contains(&r).then_some(r as usize)
                };
                for y in 0..h as isize {
                    for x in 0..w as isize {
                        let (sy, sx) = (y + dy, x + dx);
                        let from = if *a == Augment::CropPad {
                            let inside = sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize;
                            inside.then_some((sy as usize, sx as usize))
                        } else {
                            reflect(sy, h).zip(reflect(sx, w))
                        };
                        for ch in 0..c {
                            row[(y as usize * w + x as usize) * c + ch] =
                                from.map_or(0.0, |(sy, sx)| src[(sy * w + sx) * c + ch]);
                        }
                    }
                }
            }
            Augment::Cutout => {
                // A square of a quarter of the side, centred anywhere (cut off at the edges),
                // set to 0: the mean of normalized data.
                let (sh, sw) = ((h / 4).max(1), (w / 4).max(1));
                let cy = (rng.next_u32() % h as u32) as usize;
                let cx = (rng.next_u32() % w as u32) as usize;
                for y in cy.saturating_sub(sh / 2)..(cy + sh.div_ceil(2)).min(h) {
                    for x in cx.saturating_sub(sw / 2)..(cx + sw.div_ceil(2)).min(w) {
                        row[(y * w + x) * c..][..c].iter_mut().for_each(|v| *v = 0.0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(h: usize, w: usize) -> Vec<f32> {
        (0..h * w * 3).map(|i| i as f32 + 1.0).collect()
    }

    /// `src` shifted by `(dy, dx)` with reflected edges.
    fn reflected(src: &[f32], h: usize, w: usize, dy: isize, dx: isize) -> Vec<f32> {
        let r = |i: isize, n: usize| {
            let n = n as isize;
            (if i < 0 {
                -i
            } else if i >= n {
                2 * (n - 1) - i
            } else {
                i
            }) as usize
        };
        let mut out = vec![0.0; src.len()];
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (r(y as isize + dy, h), r(x as isize + dx, w));
                for c in 0..3 {
                    out[(y * w + x) * 3 + c] = src[(sy * w + sx) * 3 + c];
                }
            }
        }
        out
    }

    #[test]
    fn crop_reflect_shifts_by_up_to_an_eighth_with_reflected_edges() {
        let (h, w) = (32, 24);
        let src = image(h, w);
        let mut shifts = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut row = src.clone();
            augment(
                &mut row,
                [h, w, 3],
                &[Augment::CropReflect],
                &mut ChaCha8Rng::seed_from_u64(seed),
            );
            let shift = (-4..=4)
                .flat_map(|dy| (-3..=3).map(move |dx| (dy, dx)))
                .find(|&(dy, dx)| reflected(&src, h, w, dy, dx) == row);
            shifts.insert(shift.expect("a reflect-padded crop within h/8 and w/8"));
        }
        assert!(shifts.len() > 40, "shifts drawn: {}", shifts.len());
    }

    #[test]
    fn cutout_zeroes_one_square_of_a_quarter_side() {
        let (h, w) = (32, 32);
        let src = image(h, w);
        let mut sizes = std::collections::BTreeSet::new();
        for seed in 0..100 {
            let mut row = src.clone();
            augment(
                &mut row,
                [h, w, 3],
                &[Augment::Cutout],
                &mut ChaCha8Rng::seed_from_u64(seed),
            );
            let zero: Vec<(usize, usize)> = (0..h * w)
                .filter(|&p| row[p * 3..p * 3 + 3] == [0.0; 3])
                .map(|p| (p / w, p % w))
                .collect();
            let (ys, xs): (Vec<usize>, Vec<usize>) = zero.iter().copied().unzip();
            let (y0, y1) = (*ys.iter().min().unwrap(), *ys.iter().max().unwrap());
            let (x0, x1) = (*xs.iter().min().unwrap(), *xs.iter().max().unwrap());
            assert_eq!(zero.len(), (y1 - y0 + 1) * (x1 - x0 + 1), "one rectangle");
            assert!(y1 - y0 < 8 && x1 - x0 < 8, "at most 8x8");
            for p in 0..h * w {
                if !zero.contains(&(p / w, p % w)) {
                    assert_eq!(row[p * 3..p * 3 + 3], src[p * 3..p * 3 + 3]);
                }
            }
            sizes.insert(zero.len());
        }
        assert!(
            sizes.contains(&64) && sizes.len() > 3,
            "whole and cut-off squares: {sizes:?}"
        );
    }
}
