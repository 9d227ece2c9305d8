//! `pipeline export FILE [--stage NAME] -o PATH`: one dataset artifact as a standalone Arrow
//! IPC file with its pixels, for tools outside the pipeline (pyarrow, polars, numpy).
//!
//! Element-wise stages store views (their rows and lineage; the pixels come from the stored
//! artifact upstream, passed through their steps on reading), so their cache files hold no
//! `pixels` column. Export writes the pixels as any reader of the stage sees them, batch by
//! batch, so memory stays bounded whatever the dataset size.

use std::path::Path;

use anyhow::{Context, Result};

use crate::data::dataset::columns::{self, PixelValues, Rows};
use crate::data::dataset::writer::{ArtifactWriter, Written};
use crate::data::dataset::{self, reader};
use crate::pipeline::executor::resolve_built;
use crate::pipeline::plan::Plan;

/// Writes the dataset of `stage` (default: the one the last stage holds or reports on) to
/// `out`; returns the stage's name and what was written.
pub fn export(plan: &Plan, stage: Option<&str>, out: &Path) -> Result<(String, Written)> {
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
