//! `pipeline audit FILE --compare PATH`: is a features file made outside the pipeline
//! preprocessed like the pipeline's own features — and if not, how does it differ?
//!
//! The external file (Arrow IPC with a list-of-numbers column, or NumPy `.npy` of shape
//! `[N, H*W*C]` or `[N, H, W, C]`) is read in a streaming pass that keeps a sample of rows
//! and a statistical signature. Rows are matched to the pipeline's by an `id` or `path`
//! column when there is one; otherwise only signatures are compared.
//!
//! Hypotheses are built by replaying the pipeline's own preprocessing from its cached
//! `resize` output, as configured and with one thing changed each: channel order, mean
//! subtraction missing or in the other channel order, per-channel instead of per-image
//! normalization (or the reverse), no normalization, raw or 1/255-scaled pixels, and — from
//! the source images — other resize sizes and filters. The hypothesis that reproduces the
//! external features names the mismatch and the stage params that would reproduce them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;

use crate::cache::store::Cache;
use crate::data::dataset::columns::{self, Rows};
use crate::data::dataset::reader;
use crate::data::lineage::LineageEntry;
use crate::kernel::pixel;

/// Rows compared directly (matched mode) or used for our signatures (statistics mode).
const SAMPLE: usize = 2000;
/// Source images re-decoded to test other resize sizes and filters.
const SOURCE_SAMPLE: usize = 48;
/// Relative RMS error under which a hypothesis reproduces matched rows.
const MATCH_TOLERANCE: f64 = 0.02;
/// Signature distance under which a hypothesis reproduces the external statistics.
const STATS_TOLERANCE: f64 = 0.15;

/// Summary statistics of a set of feature rows, comparable without matching rows.
#[derive(Clone, Debug, Default)]
pub struct Signature {
    n: u64,
    /// Values seen per channel.
    values: u64,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    img_mean_sum: f64,
    img_mean_sq: f64,
    img_std_sum: f64,
    min: f64,
    max: f64,
}

impl Signature {
    fn new(channels: usize) -> Self {
        Signature {
            sum: vec![0.0; channels],
            sum_sq: vec![0.0; channels],
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Default::default()
        }
    }

    fn add(&mut self, row: &[f32]) {
        let c = self.sum.len();
        let mut s = 0.0;
        let mut sq = 0.0;
        self.values += (row.len() / c) as u64;
        for px in row.chunks_exact(c) {
            for (i, &v) in px.iter().enumerate() {
                let v = f64::from(v);
                self.sum[i] += v;
                self.sum_sq[i] += v * v;
                s += v;
                sq += v * v;
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
        }
        let n = row.len().max(1) as f64;
        let m = s / n;
        self.img_mean_sum += m;
        self.img_mean_sq += m * m;
        self.img_std_sum += (sq / n - m * m).max(0.0).sqrt();
        self.n += 1;
    }

    fn channel_mean(&self) -> Vec<f64> {
        let px = (self.values as f64).max(1.0);
        self.sum.iter().map(|s| s / px).collect()
    }

    fn channel_std(&self) -> Vec<f64> {
        let px = (self.values as f64).max(1.0);
        self.sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, q)| (q / px - (s / px).powi(2)).max(0.0).sqrt())
            .collect()
    }

    /// Spread of per-image means, and the mean of per-image stds.
    fn image_moments(&self) -> (f64, f64) {
        let n = self.n.max(1) as f64;
        let m = self.img_mean_sum / n;
        ((self.img_mean_sq / n - m * m).max(0.0).sqrt(), self.img_std_sum / n)
    }

    fn overall_std(&self) -> f64 {
        let std = self.channel_std();
        let mean = self.channel_mean();
        let m = mean.iter().sum::<f64>() / mean.len().max(1) as f64;
        let var = std
            .iter()
            .zip(&mean)
            .map(|(s, mu)| s * s + (mu - m).powi(2))
            .sum::<f64>()
            / std.len().max(1) as f64;
        var.sqrt()
    }

    /// How far another signature is from this one, relative to this one's spread.
    fn distance(&self, other: &Signature) -> f64 {
        let scale = self.overall_std().max(1e-9);
        let mut d = 0.0;
        for (a, b) in self.channel_mean().iter().zip(other.channel_mean()) {
            d += (a - b).abs() / scale;
        }
        for (a, b) in self.channel_std().iter().zip(other.channel_std()) {
            d += (a - b).abs() / scale;
        }
        let (sa, ta) = self.image_moments();
        let (sb, tb) = other.image_moments();
        d + (sa - sb).abs() / scale + (ta - tb).abs() / scale
    }

    fn describe(&self) -> String {
        let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
        let (spread, img_std) = self.image_moments();
        format!(
            "channel mean [{}], std [{}], range [{:.3}, {:.3}], per-image mean spread {:.3}, per-image std {:.3}",
            fmt(&self.channel_mean()),
            fmt(&self.channel_std()),
            self.min,
            self.max,
            spread,
            img_std
        )
    }
}

/// A features file made outside the pipeline.
pub struct External {
    pub kind: &'static str,
    pub dtype: String,
    pub integer: bool,
    pub shape: Option<[usize; 3]>,
    pub row_len: usize,
    pub rows: u64,
    /// Which column matched rows by, if any.
    pub key: Option<&'static str>,
    sample: Vec<(Option<String>, Vec<f32>)>,
    signature: Signature,
}

/// Reads an external features file (`.npy`, else Arrow IPC file or stream).
pub fn read_external(path: &Path, ours: [usize; 3]) -> Result<External> {
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if is_npy {
        read_npy(path, ours)
    } else {
        read_arrow(path, ours)
    }
}

/// The `[H, W, C]` of rows of `row_len` values: given, else ours when the length fits, else
/// a square RGB image.
fn infer_shape(row_len: usize, given: Option<[usize; 3]>, ours: [usize; 3]) -> Option<[usize; 3]> {
    if given.is_some() {
        return given;
    }
    if row_len == ours.iter().product::<usize>() {
        return Some(ours);
    }
    let side = ((row_len / 3) as f64).sqrt().round() as usize;
    (side * side * 3 == row_len).then_some([side, side, 3])
}

fn read_npy(path: &Path, ours: [usize; 3]) -> Result<External> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = crate::data::npy::reader::NpyReader::new(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a readable .npy file", path.display()))?;
    let header = reader.header().clone();
    let given = match header.shape.as_slice() {
        [_, h, w, c] => Some([*h, *w, *c]),
        [_, h, w] => Some([*h, *w, 1]),
        [_, _] => None,
        other => bail!(
            "{}: expected an array of shape [N, H*W*C] or [N, H, W, C], found {other:?}",
            path.display()
        ),
    };
    let row_len = reader.row_len();
    let shape = infer_shape(row_len, given, ours);
    let mut ext = External {
        kind: "npy",
        dtype: header.dtype.name().to_string(),
        integer: header.dtype.is_integer(),
        shape,
        row_len,
        rows: reader.rows() as u64,
        key: None,
        sample: Vec::new(),
        signature: Signature::new(shape.map_or(1, |s| s[2])),
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_rows_f32(256, &mut buf)?;
        if n == 0 {
            break;
        }
        for row in buf.chunks_exact(row_len.max(1)) {
            ext.signature.add(row);
            if ext.sample.len() < SAMPLE {
                ext.sample.push((None, row.to_vec()));
            }
        }
    }
    Ok(ext)
}

fn read_arrow(path: &Path, ours: [usize; 3]) -> Result<External> {
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let batches: Box<dyn Iterator<Item = Result<RecordBatch, arrow_schema::ArrowError>>> =
        match arrow_ipc::reader::FileReader::try_new_buffered(open()?, None) {
            Ok(r) => Box::new(r),
            Err(_) => Box::new(
                arrow_ipc::reader::StreamReader::try_new_buffered(open()?, None).with_context(|| {
                    format!(
                        "{} is neither an Arrow IPC file nor stream nor a .npy file",
                        path.display()
                    )
                })?,
            ),
        };
    let mut ext: Option<External> = None;
    for batch in batches {
        let batch = batch?;
        let schema = batch.schema();
        let (col, values) = pixel_column(&batch)
            .with_context(|| format!("{}: no column of numeric lists (e.g. `pixels`) found", path.display()))?;
        let key = ["id", "path"].into_iter().find(|k| {
            schema
                .field_with_name(k)
                .is_ok_and(|f| matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8))
        });
        let keys: Option<Vec<String>> = key.and_then(|k| {
            let c = batch.column_by_name(k)?;
            let c = arrow_cast_strings(c)?;
            Some(c)
        });
        let n = batch.num_rows();
        let row_len = values.len().checked_div(n).unwrap_or(0);
        let e = ext.get_or_insert_with(|| {
            let given = schema
                .metadata()
                .get("pipeline.shape")
                .and_then(|s| serde_json::from_str::<[usize; 3]>(s).ok());
            let shape = infer_shape(row_len, given, ours);
            External {
                kind: "arrow",
                dtype: format!("{}", col.1),
                integer: col.1.is_integer(),
                shape,
                row_len,
                rows: 0,
                key,
                sample: Vec::new(),
                signature: Signature::new(shape.map_or(1, |s| s[2])),
            }
        });
        if row_len != e.row_len {
            bail!(
                "{}: rows have different lengths ({} and {row_len})",
                path.display(),
                e.row_len
            );
        }
        for i in 0..n {
            let row = &values[i * row_len..][..row_len];
            e.rows += 1;
            e.signature.add(row);
            if e.sample.len() < SAMPLE {
                e.sample.push((keys.as_ref().map(|k| k[i].clone()), row.to_vec()));
            }
        }
    }
    ext.with_context(|| format!("{} holds no rows", path.display()))
}

/// The element type of a list column, for messages and the integer check.
#[derive(Clone, Copy, Debug)]
struct ElemType(&'static str);

impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl ElemType {
    fn is_integer(self) -> bool {
        self.0.contains("int")
    }
}

/// The first list column with numeric items (preferring one named `pixels`), flattened to
/// `f32` values in row order.
fn pixel_column(batch: &RecordBatch) -> Option<((String, ElemType), Vec<f32>)> {
    let schema = batch.schema();
    let mut order: Vec<usize> = (0..schema.fields().len()).collect();
    order.sort_by_key(|&i| schema.field(i).name() != "pixels");
    for i in order {
        let col = batch.column(i);
        let child: ArrayRef = match col.data_type() {
            DataType::FixedSizeList(_, _) => {
                let l = col.as_any().downcast_ref::<arrow_array::FixedSizeListArray>()?;
                let len = l.value_length() as usize;
                l.values().slice(l.offset() * len, l.len() * len)
            }
            DataType::List(_) => {
                let l = col.as_any().downcast_ref::<arrow_array::ListArray>()?;
                let offs = l.value_offsets();
                let (start, end) = (offs[0] as usize, offs[offs.len() - 1] as usize);
                l.values().slice(start, end - start)
            }
            DataType::LargeList(_) => {
                let l = col.as_any().downcast_ref::<arrow_array::LargeListArray>()?;
                let offs = l.value_offsets();
                let (start, end) = (offs[0] as usize, offs[offs.len() - 1] as usize);
                l.values().slice(start, end - start)
            }
            _ => continue,
        };
        if let Some((t, v)) = numeric_values(&child) {
            return Some(((schema.field(i).name().clone(), t), v));
        }
    }
    None
}

fn numeric_values(a: &ArrayRef) -> Option<(ElemType, Vec<f32>)> {
    use arrow_array::*;
    macro_rules! conv {
        ($t:ty, $name:expr) => {
            a.as_any()
                .downcast_ref::<$t>()
                .map(|x| (ElemType($name), x.values().iter().map(|&v| v as f32).collect()))
        };
    }
    match a.data_type() {
        DataType::UInt8 => conv!(UInt8Array, "uint8"),
        DataType::Int8 => conv!(Int8Array, "int8"),
        DataType::UInt16 => conv!(UInt16Array, "uint16"),
        DataType::Int16 => conv!(Int16Array, "int16"),
        DataType::Int32 => conv!(Int32Array, "int32"),
        DataType::Int64 => conv!(Int64Array, "int64"),
        DataType::Float32 => conv!(Float32Array, "float32"),
        DataType::Float64 => conv!(Float64Array, "float64"),
        _ => None,
    }
}

fn arrow_cast_strings(c: &ArrayRef) -> Option<Vec<String>> {
    if let Some(s) = c.as_any().downcast_ref::<arrow_array::StringArray>() {
        return Some((0..s.len()).map(|i| s.value(i).to_string()).collect());
    }
    c.as_any()
        .downcast_ref::<arrow_array::LargeStringArray>()
        .map(|s| (0..s.len()).map(|i| s.value(i).to_string()).collect())
}

/// One step of replayed preprocessing after `resize`.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    MeanSubtract([f32; 3]),
    PerImage,
    DivideChannels([f32; 3]),
    Scale(f32),
    /// Per-channel z-score with statistics taken from the sample itself.
    ZScore,
}

/// A way the external features might have been made.
struct Hypothesis {
    name: &'static str,
    /// What differs, in words.
    means: String,
    /// What to change to make both agree.
    fix: String,
    reverse_input: bool,
    steps: Vec<Step>,
    reverse_output: bool,
}

fn f3(v: Option<&serde_json::Value>) -> Option<[f32; 3]> {
    let a = v?.as_array()?;
    let x: Vec<f32> = a.iter().filter_map(|v| v.as_f64()).map(|v| v as f32).collect();
    (x.len() == 3).then(|| [x[0], x[1], x[2]])
}

/// The pipeline's steps after `resize`, from the lineage.
fn steps_of(lineage: &[LineageEntry]) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for e in lineage {
        let param = |k: &str| e.params.get(k).and_then(|v| v.as_str()).unwrap_or("");
        match e.kind.as_str() {
            "mean_subtract" => steps.push(Step::MeanSubtract(
                f3(e.params.get("mean_rgb"))
                    .or_else(|| f3(e.fitted.get("mean_rgb")))
                    .context("mean_subtract without a mean")?,
            )),
            "normalize" => match param("method") {
                "per_image" => steps.push(Step::PerImage),
                "per_channel" => steps.push(Step::DivideChannels(
                    f3(e.params.get("std"))
                        .or_else(|| f3(e.fitted.get("std_rgb")))
                        .context("normalize without a std")?,
                )),
                "scale" => steps.push(Step::Scale(
                    e.params.get("factor").and_then(|v| v.as_f64()).unwrap_or(1.0) as f32,
                )),
                other => bail!("unknown normalize method `{other}` in the lineage"),
            },
            _ => {}
        }
    }
    Ok(steps)
}

fn hypotheses(pipeline: &[Step]) -> Vec<Hypothesis> {
    let h = |name, means: &str, fix: &str, reverse_input, steps: Vec<Step>, reverse_output| Hypothesis {
        name,
        means: means.to_string(),
        fix: fix.to_string(),
        reverse_input,
        steps,
        reverse_output,
    };
    let has = |f: &dyn Fn(&Step) -> bool| pipeline.iter().any(f);
    let mut out = vec![h(
        "pipeline",
        "preprocessed exactly like the pipeline",
        "nothing",
        false,
        pipeline.to_vec(),
        false,
    )];
    out.push(h(
        "bgr",
        "channels in BGR order (as OpenCV's cv2.imread gives them); the pipeline's are RGB",
        "convert the external images to RGB first (cv2.cvtColor(img, cv2.COLOR_BGR2RGB)), or reverse the channel axis \
         of the features",
        false,
        pipeline.to_vec(),
        true,
    ));
    if let Some(Step::MeanSubtract(m)) = pipeline.iter().find(|s| matches!(s, Step::MeanSubtract(_))) {
        let without: Vec<Step> = pipeline
            .iter()
            .filter(|s| !matches!(s, Step::MeanSubtract(_)))
            .cloned()
            .collect();
        out.push(h(
            "no_mean_subtract",
            "mean subtraction missing",
            &format!(
                "the external code skips subtracting the per-channel mean [{:.3}, {:.3}, {:.3}] (RGB); add it, or \
                 remove the `mean_subtract` stage to match it",
                m[0], m[1], m[2]
            ),
            false,
            without,
            false,
        ));
        let mut swapped = m.to_vec();
        swapped.reverse();
        let swapped_steps: Vec<Step> = pipeline
            .iter()
            .map(|s| match s {
                Step::MeanSubtract(_) => Step::MeanSubtract([swapped[0], swapped[1], swapped[2]]),
                other => other.clone(),
            })
            .collect();
        out.push(h(
            "mean_order",
            "the channel means were subtracted in the other channel order (BGR constants on RGB pixels, or the \
             reverse)",
            "set `mean_subtract.channel_order` to the order the constants are written in",
            false,
            swapped_steps,
            false,
        ));
        out.push(h(
            "bgr_pixels_rgb_means",
            "BGR pixels (cv2.imread) with the means subtracted as if they were RGB",
            "convert the images to RGB before subtracting the means, or write the means in BGR order for BGR pixels",
            true,
            pipeline.to_vec(),
            false,
        ));
    }
    if has(&|s| *s == Step::PerImage) {
        out.push(h(
            "per_channel",
            "per-channel normalization where the pipeline normalizes per image",
            "use `normalize.method: per_image` in the external code (each image minus its mean, divided by its std), or \
             `method: per_channel` in the pipeline",
            false,
            pipeline.iter().map(|s| if *s == Step::PerImage { Step::ZScore } else { s.clone() }).collect(),
            false,
        ));
    } else {
        let mut with = pipeline.to_vec();
        with.push(Step::PerImage);
        out.push(h(
            "per_image",
            "per-image normalization where the pipeline does not normalize per image",
            "set `normalize.method: per_image` in the pipeline, or drop per-image standardization from the external code",
            false,
            with,
            false,
        ));
    }
    let normalizes = |s: &Step| matches!(s, Step::PerImage | Step::DivideChannels(_) | Step::Scale(_));
    if has(&normalizes) {
        out.push(h(
            "no_normalize",
            "normalization missing",
            "the external code skips the `normalize` stage's step",
            false,
            pipeline.iter().filter(|s| !normalizes(s)).cloned().collect(),
            false,
        ));
    }
    out.push(h(
        "raw",
        "raw pixel values (0..255) with no preprocessing after resizing",
        "apply the pipeline's `mean_subtract` and `normalize` steps, or use the pipeline's features",
        false,
        Vec::new(),
        false,
    ));
    out.push(h(
        "scaled",
        "pixels scaled to 0..1 (divided by 255) instead of the pipeline's steps",
        "use the pipeline's steps, or `normalize: {method: scale, factor: 0.00392156862745098}` to match",
        false,
        vec![Step::Scale(1.0 / 255.0)],
        false,
    ));
    out
}

/// Applies a hypothesis to resized `u8` rows (as f32), returning feature rows.
fn replay(h: &Hypothesis, rows: &[Vec<f32>], channels: usize) -> Vec<Vec<f32>> {
    let mut rows: Vec<Vec<f32>> = rows.to_vec();
    if h.reverse_input {
        rows.iter_mut().for_each(|r| reverse_channels(r, channels));
    }
    for step in &h.steps {
        match step {
            Step::MeanSubtract(m) => rows.iter_mut().for_each(|r| pixel::subtract_mean(r, m)),
            Step::PerImage => rows.iter_mut().for_each(|r| {
                pixel::standardize(r);
            }),
            Step::DivideChannels(s) => rows.iter_mut().for_each(|r| pixel::divide_channels(r, s)),
            Step::Scale(f) => rows.iter_mut().for_each(|r| pixel::scale(r, *f)),
            Step::ZScore => {
                let mut stats = pixel::ChannelStats::new(channels);
                rows.iter().for_each(|r| stats.add(r));
                let (m, s) = (stats.mean(), stats.std());
                let m: Vec<f32> = m.iter().map(|v| *v as f32).collect();
                let s: Vec<f32> = s.iter().map(|v| v.max(1e-12) as f32).collect();
                rows.iter_mut().for_each(|r| {
                    pixel::subtract_mean(r, &m);
                    pixel::divide_channels(r, &s);
                });
            }
        }
    }
    if h.reverse_output {
        rows.iter_mut().for_each(|r| reverse_channels(r, channels));
    }
    rows
}

fn reverse_channels(row: &mut [f32], channels: usize) {
    for px in row.chunks_exact_mut(channels) {
        px.reverse();
    }
}

/// Relative RMS difference of two sets of rows.
fn rel_error(ours: &[Vec<f32>], theirs: &[&[f32]]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in ours.iter().zip(theirs) {
        for (x, y) in a.iter().zip(b.iter()) {
            num += f64::from(x - y).powi(2);
            den += f64::from(*y).powi(2);
        }
    }
    (num / den.max(1e-12)).sqrt()
}

/// The outcome of one comparison.
pub struct Comparison {
    pub text: String,
    pub consistent: bool,
    pub json: serde_json::Value,
}

/// What the comparison needs from the pipeline.
pub struct Ours<'a> {
    pub cache: &'a Cache,
    /// The final dataset artifact and the stage name.
    pub stage: &'a str,
    pub data: &'a Path,
    /// The folder the source images are in.
    pub images_root: Option<&'a Path>,
}

/// Compares an external features file with the pipeline's features.
pub fn compare(path: &Path, ours: &Ours<'_>) -> Result<Comparison> {
    let (meta, _) = reader::open(ours.data)?;
    let Some((shape, dtype)) = meta.pixels else {
        bail!("stage `{}` holds no pixels to compare with", ours.stage);
    };
    let ext = read_external(path, shape)?;
    let resize_at = meta
        .lineage
        .iter()
        .rposition(|e| e.kind == "resize")
        .context("the pipeline's lineage has no resize stage")?;
    let resize = &meta.lineage[resize_at];
    let resize_path = ours.cache.data_path(&resize.fingerprint);
    let pipeline_steps = steps_of(&meta.lineage[resize_at + 1..])?;
    let channels = shape[2];
    let mut text = String::new();
    let mut findings: Vec<String> = Vec::new();
    let _ = writeln!(
        text,
        "compare {} with stage `{}` ({} [{}, {}, {}]):",
        path.display(),
        ours.stage,
        dtype.name(),
        shape[0],
        shape[1],
        shape[2]
    );
    let _ = writeln!(
        text,
        "   external: {} {} rows of {} values, {}{}",
        ext.kind,
        ext.rows,
        ext.row_len,
        ext.dtype,
        ext.shape
            .map_or(String::new(), |s| format!(" [{}, {}, {}]", s[0], s[1], s[2]))
    );
    let _ = writeln!(text, "   external: {}", ext.signature.describe());
    if ext.integer {
        findings.push(format!(
            "integer dtype: the external features are {}, the pipeline's are {}; integer pixels reach a model \
             unscaled (cast to float32 and apply the pipeline's steps)",
            ext.dtype,
            dtype.name()
        ));
    }
    // Our rows: matched by key when the external file has one, else a spread sample.
    let keyed: HashMap<&str, usize> = ext
        .sample
        .iter()
        .enumerate()
        .filter_map(|(i, (k, _))| k.as_deref().map(|k| (k, i)))
        .collect();
    // Without keys, a sample spread evenly over all rows (rows are sorted by path, so the
    // first rows alone would be one class).
    let step = ours
        .cache
        .record(&resize.fingerprint)
        .map_or(1, |r| (r.rows as usize).div_ceil(SAMPLE).max(1));
    let mut resized: Vec<Vec<f32>> = Vec::new();
    let mut matched: Vec<usize> = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    let mut seen = 0usize;
    reader::for_each_batch(&resize_path, |batch| {
        let rows = Rows::from_batch(batch)?;
        let px = columns::pixels_u8(batch)?;
        let len = shape.iter().product::<usize>();
        for i in 0..rows.len() {
            let take = match ext.key {
                Some(k) => {
                    let key = if k == "id" { &rows.id[i] } else { &rows.path[i] };
                    keyed.get(key.as_str()).copied()
                }
                None => (resized.len() < SAMPLE && seen.is_multiple_of(step)).then_some(usize::MAX),
            };
            seen += 1;
            if let Some(j) = take {
                resized.push(px[i * len..][..len].iter().map(|&v| f32::from(v)).collect());
                matched.push(j);
                paths.push(rows.path[i].clone());
            }
        }
        Ok(())
    })
    .with_context(|| {
        format!(
            "the resize artifact {} is not in the cache; run the pipeline first",
            resize.stage
        )
    })?;
    let same_size = ext.row_len == shape.iter().product::<usize>();
    if !same_size {
        findings.push(format!(
            "different size: the external rows hold {} values ({}), the pipeline's {} ([{}, {}, {}])",
            ext.row_len,
            ext.shape
                .map_or("shape unknown".into(), |s| format!("[{}, {}, {}]", s[0], s[1], s[2])),
            shape.iter().product::<usize>(),
            shape[0],
            shape[1],
            shape[2]
        ));
    }
    let mode_matched = ext.key.is_some() && !matched.is_empty();
    let _ = writeln!(
        text,
        "   matched: {}",
        if mode_matched {
            format!("{} rows by `{}`", matched.len(), ext.key.unwrap_or("?"))
        } else if ext.key.is_some() {
            "no rows share a key with the pipeline's; comparing statistics only".into()
        } else {
            "no `id` or `path` column; comparing statistics only".into()
        }
    );
    let mut scored: Vec<(f64, String, String, String)> = Vec::new();
    if same_size {
        for h in hypotheses(&pipeline_steps) {
            let feats = replay(&h, &resized, channels);
            let score = if mode_matched {
                let theirs: Vec<&[f32]> = matched.iter().map(|&j| ext.sample[j].1.as_slice()).collect();
                rel_error(&feats, &theirs)
            } else {
                let mut sig = Signature::new(channels);
                feats.iter().for_each(|r| sig.add(r));
                ext.signature.distance(&sig)
            };
            scored.push((score, h.name.to_string(), h.means.clone(), h.fix.clone()));
        }
    }
    let tolerance = if mode_matched { MATCH_TOLERANCE } else { STATS_TOLERANCE };
    let best_known = scored
        .iter()
        .filter(|s| s.0.is_finite())
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .cloned();
    // Resize size/filter hypotheses from the source images, when nothing else explains it.
    if best_known.as_ref().is_none_or(|b| b.0 > tolerance)
        && let (Some(root), Some(ext_shape)) = (ours.images_root, ext.shape)
    {
        scored.extend(resize_hypotheses(
            root,
            &paths,
            &matched,
            &ext,
            ext_shape,
            &pipeline_steps,
            mode_matched,
        ));
    }
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let _ = writeln!(
        text,
        "   hypotheses ({}; lower is closer, {} explains):",
        if mode_matched {
            "relative RMS error on matched rows"
        } else {
            "distance of statistics"
        },
        tolerance
    );
    for (score, name, means, _) in scored.iter().take(8) {
        let _ = writeln!(text, "     {score:>9.4}  {name:<22} {means}");
    }
    let best = scored.first().cloned();
    if !mode_matched
        && let [(a, na, ..), (b, nb, ..), ..] = scored.as_slice()
        && *b < 2.0 * a + 0.05
    {
        let _ = writeln!(
            text,
            "   note: statistics alone barely separate `{na}` from `{nb}`; an `id` or `path` column in the external \
             file allows a row-by-row comparison"
        );
    }
    let mut consistent = findings.is_empty();
    match &best {
        Some((score, name, means, fix)) if *score <= tolerance => {
            if name == "pipeline" {
                let _ = writeln!(
                    text,
                    "   values: consistent with the pipeline's preprocessing{}",
                    if mode_matched { "" } else { " (by statistics)" }
                );
            } else {
                consistent = false;
                findings.push(format!("{means}; to agree: {fix}"));
            }
        }
        Some((score, name, means, _)) => {
            consistent = false;
            findings.push(format!(
                "no single known difference reproduces the external features; the closest is `{name}` ({means}) at \
                 {score:.3}"
            ));
        }
        None => {}
    }
    for f in &findings {
        let _ = writeln!(text, "   mismatch: {f}");
    }
    let _ = writeln!(
        text,
        "   verdict: {}",
        if consistent { "consistent" } else { "MISMATCH" }
    );
    let json = serde_json::json!({
        "path": path.display().to_string(),
        "stage": ours.stage,
        "external": { "format": ext.kind, "dtype": ext.dtype, "rows": ext.rows, "row_len": ext.row_len,
                      "shape": ext.shape, "matched_by": ext.key.filter(|_| mode_matched), "matched_rows": if mode_matched { matched.len() } else { 0 } },
        "hypotheses": scored.iter().map(|(s, n, m, f)| serde_json::json!({"name": n, "score": s, "means": m, "fix": f})).collect::<Vec<_>>(),
        "mismatches": findings,
        "consistent": consistent,
    });
    Ok(Comparison { text, consistent, json })
}

/// Re-decodes a few source images, resizes them to the external size with each filter and
/// applies the pipeline's steps: does another size or filter reproduce the external rows?
#[allow(clippy::too_many_arguments)]
fn resize_hypotheses(
    root: &Path,
    paths: &[String],
    matched: &[usize],
    ext: &External,
    ext_shape: [usize; 3],
    steps: &[Step],
    mode_matched: bool,
) -> Vec<(f64, String, String, String)> {
    use crate::kernel::resize::{Filter, Mode, resize_rgb8};
    if ext_shape[2] != 3 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let picks: Vec<usize> = (0..paths.len())
        .step_by((paths.len() / SOURCE_SAMPLE).max(1))
        .take(SOURCE_SAMPLE)
        .collect();
    let decoded: Vec<Option<crate::data::decode::Rgb8Image>> = picks
        .iter()
        .map(|&i| {
            let bytes = std::fs::read(root.join(&paths[i])).ok()?;
            crate::data::decode::decode_rgb8(&bytes, &crate::data::decode::DecodeLimits::default()).ok()
        })
        .collect();
    for (name, filter) in [
        ("nearest", Filter::Nearest),
        ("bilinear", Filter::Bilinear),
        ("bicubic", Filter::Bicubic),
        ("lanczos3", Filter::Lanczos3),
    ] {
        let mut rows = Vec::new();
        let mut theirs = Vec::new();
        for (k, img) in picks.iter().zip(&decoded) {
            let Some(img) = img else { continue };
            let Ok(r) = resize_rgb8(
                &img.pixels,
                img.width,
                img.height,
                ext_shape[1] as u32,
                ext_shape[0] as u32,
                filter,
                Mode::Stretch,
                [0; 3],
            ) else {
                continue;
            };
            rows.push(r.iter().map(|&v| f32::from(v)).collect::<Vec<f32>>());
            if mode_matched {
                theirs.push(ext.sample[matched[*k]].1.as_slice());
            }
        }
        if rows.is_empty() {
            continue;
        }
        let h = Hypothesis {
            name: "resize",
            means: String::new(),
            fix: String::new(),
            reverse_input: false,
            steps: steps.to_vec(),
            reverse_output: false,
        };
        let feats = replay(&h, &rows, 3);
        let score = if mode_matched {
            rel_error(&feats, &theirs)
        } else {
            let mut sig = Signature::new(3);
            feats.iter().for_each(|r| sig.add(r));
            ext.signature.distance(&sig)
        };
        out.push((
            score,
            format!("resize {}x{} {name}", ext_shape[0], ext_shape[1]),
            format!("resized to [{}, {}] with the {name} filter", ext_shape[0], ext_shape[1]),
            format!(
                "set `resize.size: [{}, {}]` and `resize.filter: {name}` to reproduce them",
                ext_shape[0], ext_shape[1]
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_the_pipeline_and_its_variants() {
        let row: Vec<f32> = (0..12).map(|v| v as f32 * 10.0).collect();
        let steps = vec![Step::MeanSubtract([1.0, 2.0, 3.0]), Step::PerImage];
        let hs = hypotheses(&steps);
        let names: Vec<&str> = hs.iter().map(|h| h.name).collect();
        assert_eq!(
            names,
            [
                "pipeline",
                "bgr",
                "no_mean_subtract",
                "mean_order",
                "bgr_pixels_rgb_means",
                "per_channel",
                "no_normalize",
                "raw",
                "scaled"
            ]
        );
        let pipeline = replay(&hs[0], std::slice::from_ref(&row), 3);
        let bgr = replay(&hs[1], std::slice::from_ref(&row), 3);
        assert_eq!(pipeline[0][0], bgr[0][2]);
        let swapped = replay(&hs[4], std::slice::from_ref(&row), 3);
        assert_ne!(swapped, pipeline, "BGR pixels with RGB means is a different result");
        let raw = replay(&hs[7], std::slice::from_ref(&row), 3);
        assert_eq!(raw[0], row);
    }
}
