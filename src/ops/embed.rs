//! The pipeline as a library, for the Python package (`python/`): a pipeline file opened
//! once, then a stage's frozen preprocessing, its cached dataset memory-mapped, its model,
//! and lineage, with the checks and messages of the commands that do the same
//! (`predict`, `export`). Nothing here re-implements a stage: the bindings only move bytes.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use crate::cache::store::Cache;
use crate::data::dataset::Dtype;
use crate::data::dataset::mapped::Mapped;
use crate::data::lineage::LineageEntry;
use crate::ops::predict::{Frozen, Predictor};
use crate::pipeline::executor::{resolve_built, resolve_closure};
use crate::pipeline::plan::{self, Plan};
use crate::stage::params::Params;

/// A pipeline file, loaded and checked as `pipeline run` loads it.
pub struct Project {
    plan: Plan,
}

/// An image given to [`Frozen`] by a binding: a file, its encoded bytes, or decoded pixels.
pub enum Image {
    Path(std::path::PathBuf),
    Encoded(Vec<u8>),
    /// `u8` RGB, HWC: pixels, width, height.
    Decoded(Vec<u8>, u32, u32),
}

impl Image {
    /// The image's values after `frozen`; the error starts with what the image is (its path,
    /// or its place `k` in the batch), as `predict`'s do.
    pub fn values(&self, frozen: &Frozen, k: usize) -> Result<Vec<f32>> {
        let result = match self {
            Image::Path(path) => {
                let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
                frozen.encoded(&bytes)
            }
            Image::Encoded(bytes) => frozen.encoded(bytes),
            Image::Decoded(rgb, w, h) => frozen.decoded(rgb, *w, *h),
        };
        result.map_err(|why| match self {
            Image::Path(path) => anyhow!("{}: {why}", path.display()),
            _ => anyhow!("image {k}: {why}"),
        })
    }
}

/// The values of `images` after `frozen`, one row after another, made on every core.
pub fn transform(frozen: &Frozen, images: &[Image]) -> Result<Vec<f32>> {
    let len = frozen.shape().iter().product::<usize>();
    rows(images.len(), len, |k, row| {
        let values = images[k].values(frozen, k)?;
        if values.len() != row.len() {
            bail!("image {k}: {} values where the stage makes {}", values.len(), row.len());
        }
        row.copy_from_slice(&values);
        Ok(())
    })
}

/// `n` rows of `len` values, row `k` filled by `fill(k, row)`, on every core.
fn rows(n: usize, len: usize, fill: impl Fn(usize, &mut [f32]) -> Result<()> + Sync) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; n * len];
    out.par_chunks_mut(len.max(1))
        .take(n)
        .enumerate()
        .try_for_each(|(k, row)| fill(k, row))?;
    Ok(out)
}

/// Runs `f` on this process's thread pool. In a forked copy of the process (a `DataLoader`
/// worker) the threads of the parent's pool do not exist, and work handed to them would
/// never end: there `f` runs on a pool made for the copy (everything it hands to the pool,
/// hashing included, goes there).
pub fn on_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    static PARENT: OnceLock<u32> = OnceLock::new();
    static CHILD: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let pid = std::process::id();
    if *PARENT.get_or_init(|| pid) == pid {
        return f();
    }
    let pool = {
        let mut child = CHILD.lock().unwrap_or_else(|e| e.into_inner());
        match &*child {
            Some((p, pool)) if *p == pid => Some(Arc::clone(pool)),
            _ => match rayon::ThreadPoolBuilder::new().build() {
                Ok(pool) => {
                    let pool = Arc::new(pool);
                    *child = Some((pid, Arc::clone(&pool)));
                    Some(pool)
                }
                Err(_) => None,
            },
        }
    };
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

impl Project {
    /// Loads the pipeline file with `--set` overrides `sets`, its cache where `cache` says
    /// (a folder or a shared cache's URL) when given; the error is the CLI's.
    pub fn open(file: &Path, sets: &[String], cache: Option<&str>) -> Result<Project> {
        // The process whose thread pool the rest uses, known before any fork.
        on_pool(|| ());
        let mut plan = plan::load(file, sets).map_err(|e| anyhow!("{}", e.rendered.trim_end()))?;
        if let Some(cache) = cache {
            plan.set_cache(cache).map_err(|e| anyhow!(e))?;
        }
        Ok(Project { plan })
    }

    /// Every stage's name and kind, in file order.
    pub fn stages(&self) -> Vec<(String, &'static str)> {
        self.plan
            .spec
            .stages
            .iter()
            .map(|s| (s.name.clone(), s.params.kind()))
            .collect()
    }

    fn named(&self, name: &str) -> Result<usize> {
        self.plan.named(name).map_err(|why| anyhow!(why))
    }

    /// The stage whose dataset `name` is or stands for (a `train`, `validate` or `evaluate`
    /// stage stands for its data); by default the data of the only `train` stage, else the
    /// last stage that makes pixels. It must make pixels.
    pub fn pixel_stage(&self, name: Option<&str>) -> Result<usize> {
        let plan = &self.plan;
        let i = match name {
            Some(name) => plan.data_source(self.named(name)?),
            None => match plan.train_stage(None) {
                Ok(t) => plan.data_source(t),
                Err(_) => *plan
                    .order
                    .iter()
                    .rev()
                    .find(|&&i| makes_pixels(&plan.stage(i).params))
                    .context("the pipeline has no stage that makes pixels (a `resize` stage)")?,
            },
        };
        if !makes_pixels(&plan.stage(i).params) {
            bail!(
                "stage `{}` holds no pixels; name `resize` or a stage after it",
                plan.stage(i).name
            );
        }
        Ok(i)
    }

    pub fn stage_name(&self, i: usize) -> &str {
        &self.plan.stage(i).name
    }

    /// The frozen preprocessing of pixel stage `stage` (see [`Project::pixel_stage`]).
    pub fn frozen(&self, stage: usize) -> Result<Frozen> {
        Frozen::of_stage(&self.plan, stage)
    }

    /// The model of `train` stage `name` (the only one when `None`).
    pub fn predictor(&self, name: Option<&str>) -> Result<Predictor> {
        if let Some(name) = name {
            self.named(name)?;
        }
        Predictor::load(&self.plan, name)
    }

    /// The fingerprint every stage has for the pipeline as it is now (built or not), in file
    /// order.
    pub fn fingerprints(&self) -> Result<Vec<(String, String)>> {
        let cache = self.plan.open_cache()?.looking_only();
        let done = resolve_closure(&self.plan, &cache, &self.plan.order)?;
        Ok(done
            .iter()
            .zip(&self.plan.spec.stages)
            .filter_map(|(r, s)| Some((s.name.clone(), r.as_ref()?.fingerprint.clone())))
            .collect())
    }

    /// The cache and the path of the built artifact of stage `i`, or the CLI's error when it
    /// is not built.
    fn built(&self, i: usize) -> Result<(Cache, std::path::PathBuf)> {
        let cache = self.plan.open_cache()?;
        let (_, fp) = resolve_built(&self.plan, &cache, i)?;
        let path = cache.data_path(&fp);
        Ok((cache, path))
    }

    /// The lineage of the dataset stage `name` is or stands for: the stages that made it,
    /// with their params, fingerprints and fitted parameters.
    pub fn lineage(&self, name: &str) -> Result<Vec<LineageEntry>> {
        let i = self.plan.data_source(self.named(name)?);
        let (cache, path) = self.built(i)?;
        let (meta, _) = crate::data::dataset::reader::open(&path, &cache.integrity())?;
        Ok(meta.lineage)
    }

    /// The built dataset of pixel stage `stage`, memory-mapped, with the rows of `partition`
    /// (`train`, `val`, `test`; all rows when `None`).
    pub fn dataset(&self, stage: usize, partition: Option<&str>) -> Result<Dataset> {
        let (cache, path) = self.built(stage)?;
        let mapped = Mapped::open(&path, &cache.integrity())?;
        let rows = mapped.rows()?;
        let keep: Vec<usize> = match (partition, &rows.partition) {
            (None, _) => (0..rows.len()).collect(),
            (Some(p), Some(parts)) => {
                if !["train", "val", "test"].contains(&p) {
                    bail!("there is no partition `{p}`; partitions: train, val, test");
                }
                (0..rows.len()).filter(|&i| parts[i] == p).collect()
            }
            (Some(_), None) => bail!(
                "stage `{}` has no partitions (no `split` stage upstream)",
                self.plan.stage(stage).name
            ),
        };
        let Some((shape, dtype)) = mapped.meta.pixels else {
            bail!("stage `{}` holds no pixels", self.plan.stage(stage).name);
        };
        let zero_copy = dtype == Dtype::Uint8 && mapped.meta.pixels_from.is_none();
        Ok(Dataset {
            labels: keep.iter().map(|&i| rows.label[i]).collect(),
            ids: keep.iter().map(|&i| rows.id[i].clone()).collect(),
            paths: keep.iter().map(|&i| rows.path[i].clone()).collect(),
            classes: mapped.meta.classes.clone(),
            shape,
            zero_copy,
            read: AtomicUsize::new(0),
            rows: keep,
            mapped,
        })
    }
}

fn makes_pixels(p: &Params) -> bool {
    matches!(p, Params::Resize(_) | Params::MeanSubtract(_) | Params::Normalize(_))
}

/// A stage's cached dataset, memory-mapped: the rows of one partition. A stage that stores
/// `u8` pixels (`resize`) gives each row's bytes in place, without a copy; a view
/// (`mean_subtract`, `normalize`) makes a row's `f32` values from the stored pixels as
/// training does, one row at a time.
pub struct Dataset {
    mapped: Mapped,
    /// The artifact's rows (file order) in the partition.
    rows: Vec<usize>,
    pub labels: Vec<i32>,
    pub ids: Vec<String>,
    pub paths: Vec<String>,
    pub classes: Vec<String>,
    /// `[height, width, channels]`.
    pub shape: [usize; 3],
    /// Whether rows are stored `u8` pixels ([`Dataset::stored`]) rather than made `f32`.
    pub zero_copy: bool,
    /// Bytes of pixels read since the mapped pages were last dropped from the process.
    read: AtomicUsize,
}

/// How many bytes of pixels a [`Dataset`] reads before it drops the mapped pages from the
/// process: a pass over a dataset of any size stays within this much resident memory.
const RELEASE_EVERY: usize = 32 << 20;

impl Dataset {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn row(&self, k: usize) -> Result<usize> {
        self.rows
            .get(k)
            .copied()
            .ok_or_else(|| anyhow!("row {k} is out of range: the dataset has {} rows", self.rows.len()))
    }

    /// Row `k`'s stored `u8` pixels, in the mapping (checked on first read). The bytes stay
    /// valid as long as the dataset: dropped pages are read again from the file, which an
    /// artifact never changes.
    pub fn stored(&self, k: usize) -> Result<&[u8]> {
        let bytes = self.mapped.stored_u8(self.row(k)?)?;
        self.count(bytes.len());
        Ok(bytes)
    }

    /// Counts `bytes` read, dropping the mapped pages every [`RELEASE_EVERY`].
    fn count(&self, bytes: usize) {
        if self.read.fetch_add(bytes, Ordering::Relaxed) + bytes >= RELEASE_EVERY {
            self.read.store(0, Ordering::Relaxed);
            self.mapped.release_pages();
        }
    }

    /// The values of rows `ks`, one after another, as `f32` (what training reads), made on
    /// every core.
    pub fn values(&self, ks: &[usize]) -> Result<Vec<f32>> {
        let len = self.mapped.row_len();
        let out = rows(ks.len(), len, |j, dst| {
            let k = ks[j];
            let mut row = Vec::with_capacity(len);
            self.mapped.pixels_into(self.row(k)?, &mut row)?;
            if row.len() != dst.len() {
                bail!(
                    "row {k} holds {} values where the dataset's rows hold {}",
                    row.len(),
                    dst.len()
                );
            }
            dst.copy_from_slice(&row);
            Ok(())
        })?;
        self.count(ks.len() * len);
        Ok(out)
    }

    /// Drops the mapped pages read so far from the process (they stay in the page cache).
    pub fn release_pages(&self) {
        self.mapped.release_pages();
    }
}
