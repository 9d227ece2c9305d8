//! The stage kinds, one file each, behind one small trait: this file holds what every kind
//! builds on ([`Kind`], the [`RunCtx`] it runs in, its [`Output`], and the helpers of the
//! element-wise kinds); [`params::Params`] is the closed enum of kinds the plan and the
//! executor `match` on.
//!
//! Each kind knows how to read its params from the pipeline file ([`Kind::parse`]), how to
//! write them canonically for its fingerprint ([`Kind::to_json`]), its version (bumped when
//! its output for the same input would change) and how to run.

pub mod checkpoint;
pub mod evaluate;
pub mod ingest;
pub mod mean_subtract;
pub mod normalize;
pub mod params;
pub mod resize;
pub mod split;
pub mod train;
pub mod validate;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::data::dataset::writer::{ArtifactWriter, Written};
use crate::data::dataset::{Dtype, Meta};
use crate::data::lineage::LineageEntry;
use crate::source::diag::Diagnostic;
use crate::source::fields::Fields;

/// What every stage kind provides.
pub trait Kind: Sized {
    const KIND: &'static str;
    /// Bumped whenever the output for the same input and params would change.
    const VERSION: u32;
    const PARAMS: &'static [&'static str];
    /// Reads and checks the params of one stage; reports every problem into `diags`.
    fn parse(fields: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Self>;
    /// All params, defaults filled in, as they enter the fingerprint.
    fn to_json(&self) -> serde_json::Value;
    /// Whether the stage computes statistics from the data (which must then come from
    /// `train` rows only).
    fn fits_statistics(&self) -> bool {
        false
    }
    /// Takes the pipeline's `seed` where the stage draws random numbers and sets no seed of
    /// its own, so the seed used is in the params (and the fingerprint); whether it did.
    fn inherit_seed(&mut self, _seed: u64) -> bool {
        false
    }
}

/// Everything a stage needs to run: where its input is, where to write, its lineage entry.
pub struct RunCtx<'a> {
    /// The input artifact's data file (none for `ingest`).
    pub input: Option<PathBuf>,
    /// The folder the images live in (from the upstream `ingest`).
    pub images_root: Option<PathBuf>,
    /// The upstream `ingest`'s error policy (`on_error: skip`) and decode limits.
    pub skip_errors: bool,
    pub limits: crate::data::decode::DecodeLimits,
    pub seed: u64,
    /// This stage's lineage entry (its `fitted` is filled in by [`RunCtx::writer`]).
    pub entry: LineageEntry,
    pub out_path: PathBuf,
    pub progress: &'a indicatif::ProgressBar,
    /// The cache, for stages that check lineage against it.
    pub cache: Option<&'a crate::cache::store::Cache>,
    /// What the input's bytes are checked against as they are read (the cache's records).
    pub integrity: std::sync::Arc<dyn crate::data::integrity::Integrity>,
    /// For `evaluate`: the model's record.
    pub model_record: Option<crate::cache::store::Record>,
    /// The artifact this stage produced last time in this pipeline, when its kind, version
    /// and params equal this run's: a per-image stage reuses the rows of images it holds.
    pub previous: Option<PathBuf>,
    /// For `resize` in a merge of shards: the shards' parts, whose rows it reuses the same way.
    pub donors: Vec<PathBuf>,
    /// File hashes known by stat (from this run's scan): a per-image stage that reads a
    /// source file again checks it is unchanged by its stat instead of hashing it again.
    pub stat_cache: Option<&'a crate::cache::stat_cache::StatCache>,
    /// What the stage warns the user about ([`RunCtx::warn`]), shown as the run's warnings.
    pub warnings: std::sync::Mutex<Vec<String>>,
}

/// What a stage produced besides its data file.
pub struct Output {
    pub written: Written,
    pub fitted: serde_json::Value,
    pub summary: serde_json::Value,
}

impl RunCtx<'_> {
    /// Creates the output artifact: the input's metadata with this stage's changes, and the
    /// lineage extended by this stage (with its fitted params).
    pub fn writer(
        &self,
        input: &Meta,
        pixels: Option<([usize; 3], Dtype)>,
        has_partition: bool,
        fitted: &serde_json::Value,
    ) -> Result<ArtifactWriter> {
        ArtifactWriter::create(&self.out_path, self.output_meta(input, pixels, has_partition, fitted))
    }

    pub(crate) fn output_meta(
        &self,
        input: &Meta,
        pixels: Option<([usize; 3], Dtype)>,
        has_partition: bool,
        fitted: &serde_json::Value,
    ) -> Meta {
        let mut lineage = input.lineage.clone();
        let mut entry = self.entry.clone();
        entry.fitted = fitted.clone();
        lineage.push(entry);
        Meta {
            classes: input.classes.clone(),
            has_partition,
            pixels,
            lineage,
            pixels_from: None,
            segments: Vec::new(),
        }
    }

    /// Creates a view of the input: an artifact that stores only the row columns and takes
    /// its pixels (`dtype` after this stage) from the artifact that stores the input's, so
    /// an element-wise stage costs a fingerprint, a lineage entry and its rows, not another
    /// copy of the dataset. Readers apply the element-wise steps of the lineage.
    pub fn view_writer(
        &self,
        input: &Meta,
        dtype: Dtype,
        has_partition: bool,
        fitted: &serde_json::Value,
    ) -> Result<ArtifactWriter> {
        let Some((shape, _)) = input.pixels else {
            anyhow::bail!("stage `{}` views pixels its input does not have", self.entry.stage);
        };
        let stored = match &input.pixels_from {
            Some(from) => from.clone(),
            None => self
                .input_path()?
                .file_name()
                .and_then(|n| n.to_str())
                .context("the input artifact has no file name")?
                .to_string(),
        };
        let mut meta = self.output_meta(input, Some((shape, dtype)), has_partition, fitted);
        meta.pixels_from = Some(stored);
        ArtifactWriter::create(&self.out_path, meta)
    }

    /// Writes a whole-file artifact (a report, a model) and syncs it to disk.
    pub fn write_file(&self, bytes: &[u8], rows: u64) -> Result<Written> {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&self.out_path)
            .with_context(|| format!("cannot create {}", self.out_path.display()))?;
        let half = bytes.len() / 2;
        crate::data::fault::charge(bytes.len())?;
        file.write_all(&bytes[..half])?;
        crate::data::fault::point(|| format!("{}: file half written", self.entry.stage));
        file.write_all(&bytes[half..])?;
        file.sync_all()?;
        Ok(Written::of(bytes, rows))
    }

    /// Tells the user something went wrong that the stage worked around.
    pub fn warn(&self, message: String) {
        tracing::warn!(stage = %self.entry.stage, "{message}");
        if let Ok(mut w) = self.warnings.lock() {
            w.push(message);
        }
    }

    pub fn input_path(&self) -> Result<&Path> {
        self.input
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("stage `{}` has no input artifact", self.entry.stage))
    }
}

/// Per-channel statistics of the input's `train` rows: the only rows statistics may be
/// fitted on, so that nothing about `val` or `test` leaks into the preprocessing.
pub(crate) fn fit_train_stats(ctx: &RunCtx<'_>) -> Result<crate::kernel::pixel::ChannelStats> {
    use crate::data::dataset::columns::{self, Rows};
    use crate::data::dataset::reader;
    let input = ctx.input_path()?;
    let (meta, reader) = reader::open(input, &ctx.integrity)?;
    let Some((shape, dtype)) = meta.pixels else {
        anyhow::bail!(
            "stage `{}` needs pixels; its input has none (add a `resize` stage before it)",
            ctx.entry.stage
        );
    };
    if !meta.has_partition {
        anyhow::bail!(
            "stage `{}` fits statistics but its input has no partition column; add a `split` stage upstream",
            ctx.entry.stage
        );
    }
    let row_len = shape[0] * shape[1] * shape[2];
    let mut stats = crate::kernel::pixel::ChannelStats::new(shape[2]);
    for batch in reader {
        let batch = batch?;
        let rows = Rows::from_batch(&batch)?;
        let values = columns::pixels_as_f32(&batch, dtype)?;
        let parts = rows.partition.as_deref().unwrap_or_default();
        for (row, part) in values.chunks_exact(row_len).zip(parts) {
            if part == "train" {
                stats.add(row);
            }
        }
    }
    if stats.count == 0 {
        anyhow::bail!(
            "stage `{}` fits statistics on `train` rows, but the input has none; check the `split` fractions",
            ctx.entry.stage
        );
    }
    Ok(stats)
}

/// Runs an element-wise stage as a view: its artifact keeps the input's rows and records
/// `f` (rebuilt from its lineage entry by [`crate::data::lineage::pixel_step`]) instead of storing new pixels.
/// `f` is run on the first rows here, so a step that fails shows now, not when read.
pub(crate) fn view_pixels_f32(
    ctx: &RunCtx<'_>,
    fitted: serde_json::Value,
    f: impl Fn(&mut [f32]) + Sync,
) -> Result<Output> {
    use crate::data::dataset::mapped::Mapped;
    let data = Mapped::open(ctx.input_path()?, &ctx.integrity)?;
    let meta = &data.meta;
    let Some((shape, _)) = meta.pixels else {
        anyhow::bail!(
            "stage `{}` needs pixels; its input has none (add a `resize` stage before it)",
            ctx.entry.stage
        );
    };
    if !data.index.is_empty() {
        let mut row = Vec::with_capacity(shape.iter().product());
        data.pixels_into(0, &mut row)?;
        f(&mut row);
    }
    // Only the row columns are copied: the input as stored, never its pixels materialized.
    let mut writer = ctx.view_writer(meta, Dtype::Float32, meta.has_partition, &fitted)?;
    for rows in data.row_batches() {
        let rows = rows?;
        writer.write(&rows, None)?;
        ctx.progress.inc(rows.len() as u64);
    }
    Ok(Output {
        written: writer.finish()?,
        fitted,
        summary: serde_json::Value::Null,
    })
}
