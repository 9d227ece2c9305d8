//! `pipeline export FILE [--stage NAME] -o PATH`: one dataset artifact as a standalone Arrow
//! IPC file with its pixels, for tools outside the pipeline (pyarrow, polars, numpy); for a
//! `train` stage, its per-epoch metrics as a folder in DVCLive's layout ([`metrics`]).
//!
//! Element-wise stages store views (their rows and lineage; the pixels come from the stored
//! artifact upstream, passed through their steps on reading), so their cache files hold no
//! `pixels` column. Export writes the pixels as any reader of the stage sees them, batch by
//! batch, so memory stays bounded whatever the dataset size.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cache::store::Lookup;
use crate::data::dataset::columns::{self, PixelValues, Rows};
use crate::data::dataset::writer::{ArtifactWriter, Written};
use crate::data::dataset::{self, reader};
use crate::pipeline::executor::resolve_built;
use crate::pipeline::plan::Plan;
use crate::stage::train::Epoch;

/// What `export` wrote.
pub enum Exported {
    /// A dataset: the stage whose rows these are, and the file.
    Dataset(String, Written),
    /// A `train` stage's metrics: its name and the epochs.
    Metrics(String, usize),
}

/// Writes the dataset of `stage` (default: the one the last stage holds or reports on) to
/// `out`, or for a `train` stage its metrics ([`metrics`]).
pub fn export(plan: &Plan, stage: Option<&str>, out: &Path) -> Result<Exported> {
    if let Some(i) = stage.and_then(|name| plan.index_of(name))
        && matches!(plan.stage(i).params, crate::stage::params::Params::Train(_))
    {
        return metrics(plan, i, out).map(|epochs| Exported::Metrics(plan.stage(i).name.clone(), epochs));
    }
    dataset(plan, stage, out).map(|(name, w)| Exported::Dataset(name, w))
}

/// A metric's DVCLive name and how to read it from an epoch of the history.
type Series = (&'static str, fn(&Epoch) -> f64);

/// Writes the per-epoch metrics of `train` stage `i` (from its record's history) into the
/// folder `out` in DVCLive's layout, which `dvc plots` and other DVCLive readers show:
/// `metrics.json` (the last epoch's values and its `step`) and `plots/metrics/NAME.tsv` for
/// `train/loss`, `train/accuracy`, `val/loss`, `val/accuracy` and `lr`, each a `step` column
/// (the epoch, from 0) and the value's. Returns the number of epochs.
pub fn metrics(plan: &Plan, i: usize, out: &Path) -> Result<usize> {
    let cache = plan.open_cache()?;
    let (_, fp) = resolve_built(plan, &cache, i)?;
    let Lookup::Present(record) = cache.lookup(&fp) else {
        bail!("stage `{}` is not built", plan.stage(i).name);
    };
    let history: Vec<Epoch> = serde_json::from_value(record.summary["history"].clone())
        .context("the model's record holds no readable training history")?;
    let series: [Series; 5] = [
        ("train/loss", |e| e.train_loss),
        ("train/accuracy", |e| e.train_accuracy),
        ("val/loss", |e| e.val_loss),
        ("val/accuracy", |e| e.val_accuracy),
        ("lr", |e| e.lr),
    ];
    if out.is_file() {
        bail!("{} is a file; name a folder for the metrics", out.display());
    }
    let mut last = serde_json::Map::new();
    for (name, value) in series {
        let file = out.join("plots/metrics").join(format!("{name}.tsv"));
        let leaf = name.rsplit('/').next().unwrap_or(name);
        let mut text = format!("step\t{leaf}\n");
        for e in &history {
            text.push_str(&format!("{}\t{}\n", e.epoch.saturating_sub(1), value(e)));
        }
        std::fs::create_dir_all(file.parent().unwrap_or(out))
            .and_then(|()| std::fs::write(&file, text))
            .with_context(|| format!("cannot write {}", file.display()))?;
        if let Some(e) = history.last() {
            let v = serde_json::json!(value(e));
            match name.split_once('/') {
                Some((split, leaf)) => {
                    let entry = last.entry(split).or_insert_with(|| serde_json::json!({}));
                    entry[leaf] = v;
                }
                None => {
                    last.insert(name.to_string(), v);
                }
            }
        }
    }
    if let Some(e) = history.last() {
        last.insert("step".into(), serde_json::json!(e.epoch.saturating_sub(1)));
    }
    let file = out.join("metrics.json");
    std::fs::write(&file, serde_json::to_string_pretty(&last)? + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(history.len())
}

/// Writes the dataset of `stage` (default: the one the last stage holds or reports on) to
/// `out`; returns the stage's name and what was written.
fn dataset(plan: &Plan, stage: Option<&str>, out: &Path) -> Result<(String, Written)> {
    let cache = plan.open_cache()?;
    let target = match stage {
        Some(name) => plan.index_of(name).context("unknown stage")?,
        None => *plan.order.last().context("the pipeline has no stages")?,
    };
    let target = plan.data_source(target);
    let name = plan.stage(target).name.clone();
    let (_, fp) = resolve_built(plan, &cache, target)?;
    let (meta, batches) = reader::open(&cache.data_path(&fp), &cache.integrity())?;
    let mut standalone = meta.clone();
    standalone.pixels_from = None;
    standalone.segments = Vec::new();
    let temp = out.with_extension("arrow.partial");
    let written = (|| {
        let mut writer = ArtifactWriter::create(&temp, standalone)?;
        for batch in batches {
            let batch = batch?;
            let rows = Rows::from_batch(&batch)?;
            let pixels = match meta.pixels {
                Some((_, dataset::Dtype::Uint8)) => Some(PixelValues::U8(columns::pixels_u8(&batch)?.to_vec())),
                Some((_, dataset::Dtype::Float32)) => Some(PixelValues::F32(columns::pixels_f32(&batch)?.to_vec())),
                None => None,
            };
            writer.write(&rows, pixels)?;
        }
        writer.finish()
    })();
    match written {
        Ok(w) => {
            std::fs::rename(&temp, out).with_context(|| format!("cannot write {}", out.display()))?;
            Ok((name, w))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}
