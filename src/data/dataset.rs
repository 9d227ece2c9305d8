//! The dataset artifact format: Arrow IPC files with one row per image.
//!
//! Columns (in this order; `partition` from the `split` stage on, `pixels` from `resize` on):
//!
//! | column      | Arrow type                              | meaning                              |
//! |-------------|-----------------------------------------|--------------------------------------|
//! | `id`        | Utf8                                    | SHA-256 of the source file (hex)     |
//! | `path`      | Utf8                                    | path relative to the ingest folder   |
//! | `label`     | Int32                                   | class index into `classes`           |
//! | `class`     | Utf8                                    | class name                           |
//! | `partition` | Utf8                                    | `train`, `val` or `test`             |
//! | `pixels`    | FixedSizeList<UInt8 or Float32, H*W*C>  | the image, HWC order                 |
//!
//! Schema metadata (all values JSON text): `pipeline.shape` (`[H, W, C]`),
//! `pipeline.dtype` (`uint8`/`float32`), `pipeline.channel_order` (`RGB`), `pipeline.classes`,
//! and `pipeline.lineage`: every stage the data went through, in order, each with kind,
//! version, params, fingerprint and fitted parameters. Files are written as a sequence of
//! record batches of bounded size (about [`TARGET_BATCH_BYTES`]), so neither writing nor
//! reading ever holds a whole dataset in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use crate::data::lineage::{LineageEntry, Step};
use anyhow::{Context, Result, bail};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, StringArray, UInt8Array, UInt16Array,
    UInt32Array,
};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// Upper bound on the pixel bytes of one record batch.
pub const TARGET_BATCH_BYTES: usize = 16 << 20;

/// Element type of the `pixels` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Uint8,
    Float32,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Uint8 => "uint8",
            Dtype::Float32 => "float32",
        }
    }
    fn arrow(self) -> DataType {
        match self {
            Dtype::Uint8 => DataType::UInt8,
            Dtype::Float32 => DataType::Float32,
        }
    }
    pub fn size(self) -> usize {
        match self {
            Dtype::Uint8 => 1,
            Dtype::Float32 => 4,
        }
    }
}

/// What an artifact holds besides its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub classes: Vec<String>,
    pub has_partition: bool,
    /// `(shape [H, W, C], dtype)` when the artifact carries pixels.
    pub pixels: Option<([usize; 3], Dtype)>,
    pub lineage: Vec<LineageEntry>,
    /// A view: the file name (beside this artifact) of the artifact that stores the pixels.
    /// This file then holds only the row columns, and its pixels are the stored ones passed
    /// through the element-wise steps of the lineage entries after the stored artifact's.
    pub pixels_from: Option<String>,
    /// Segmented storage: the files (beside this artifact) holding the pixels, each a stored
    /// artifact; this file's rows name theirs by `segment` (index here) and `segment_row`.
    /// `resize` writes this when images were added: only the new images' pixels go to a new
    /// segment, the others stay where they are.
    pub segments: Vec<String>,
}

impl Meta {
    /// The schema stored in the file (a view has no `pixels` column; a segmented artifact
    /// has `segment` and `segment_row` instead).
    pub fn schema(&self) -> Schema {
        let mut schema = self.schema_with_pixels(self.pixels_from.is_none() && self.segments.is_empty());
        if !self.segments.is_empty() {
            let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new("segment", DataType::UInt16, false));
            fields.push(Field::new("segment_row", DataType::UInt32, false));
            schema = Schema::new(fields).with_metadata(schema.metadata().clone());
        }
        schema
    }

    /// The schema of the batches a reader hands out: with `pixels` whenever the artifact has
    /// pixels, stored or viewed.
    pub fn read_schema(&self) -> Schema {
        self.schema_with_pixels(true)
    }

    fn schema_with_pixels(&self, with_pixels: bool) -> Schema {
        let mut fields = vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("path", DataType::Utf8, false),
            Field::new("label", DataType::Int32, false),
            Field::new("class", DataType::Utf8, false),
        ];
        if self.has_partition {
            fields.push(Field::new("partition", DataType::Utf8, false));
        }
        let mut md = HashMap::new();
        md.insert(
            "pipeline.classes".into(),
            serde_json::to_string(&self.classes).expect("strings serialize"),
        );
        md.insert(
            "pipeline.lineage".into(),
            serde_json::to_string(&self.lineage).expect("json values serialize"),
        );
        md.insert("pipeline.channel_order".into(), "RGB".into());
        if let Some((shape, dtype)) = self.pixels {
            if with_pixels {
                fields.push(pixels_field(shape, dtype));
            }
            if let Some(from) = &self.pixels_from {
                md.insert("pipeline.pixels_from".into(), from.clone());
            }
            if !self.segments.is_empty() {
                md.insert(
                    "pipeline.segments".into(),
                    serde_json::to_string(&self.segments).expect("strings serialize"),
                );
            }
            md.insert(
                "pipeline.shape".into(),
                format!("[{}, {}, {}]", shape[0], shape[1], shape[2]),
            );
            md.insert("pipeline.dtype".into(), dtype.name().into());
        }
        Schema::new(fields).with_metadata(md)
    }

    pub fn from_schema(schema: &Schema) -> Result<Meta> {
        let md = schema.metadata();
        let get = |k: &str| {
            md.get(k)
                .with_context(|| format!("artifact schema lacks metadata `{k}`"))
        };
        let classes: Vec<String> = serde_json::from_str(get("pipeline.classes")?)?;
        let lineage: Vec<LineageEntry> = serde_json::from_str(get("pipeline.lineage")?)?;
        let pixels = match md.get("pipeline.shape") {
            Some(shape) => {
                let shape: [usize; 3] = serde_json::from_str(shape)?;
                let dtype: Dtype = serde_json::from_value(serde_json::Value::String(get("pipeline.dtype")?.clone()))?;
                Some((shape, dtype))
            }
            None => None,
        };
        Ok(Meta {
            classes,
            has_partition: schema.field_with_name("partition").is_ok(),
            pixels,
            lineage,
            pixels_from: md.get("pipeline.pixels_from").cloned(),
            segments: match md.get("pipeline.segments") {
                Some(v) => serde_json::from_str(v)?,
                None => Vec::new(),
            },
        })
    }

    /// Rows per record batch so a batch's pixels stay near [`TARGET_BATCH_BYTES`].
    pub fn rows_per_batch(&self) -> usize {
        match self.pixels {
            Some((s, d)) => (TARGET_BATCH_BYTES / (s[0] * s[1] * s[2] * d.size()).max(1)).clamp(1, 8192),
            None => 8192,
        }
    }
}

fn pixels_field(shape: [usize; 3], dtype: Dtype) -> Field {
    let len = (shape[0] * shape[1] * shape[2]) as i32;
    Field::new(
        "pixels",
        DataType::FixedSizeList(Arc::new(Field::new("item", dtype.arrow(), false)), len),
        false,
    )
}

/// Pixel values of a batch, by dtype.
pub enum PixelValues {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// The non-pixel columns of a batch of rows.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub id: Vec<String>,
    pub path: Vec<String>,
    pub label: Vec<i32>,
    pub class: Vec<String>,
    pub partition: Option<Vec<String>>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// Appends `more`'s rows after these.
    pub fn append(&mut self, more: Rows) {
        self.id.extend(more.id);
        self.path.extend(more.path);
        self.label.extend(more.label);
        self.class.extend(more.class);
        if let Some(p) = more.partition {
            self.partition.get_or_insert_with(Vec::new).extend(p);
        }
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Rows {
        let pick = |v: &Vec<String>| indices.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
        Rows {
            id: pick(&self.id),
            path: pick(&self.path),
            label: indices.iter().map(|&i| self.label[i]).collect(),
            class: pick(&self.class),
            partition: self.partition.as_ref().map(pick),
        }
    }

    /// Reads the row columns of a batch.
    pub fn from_batch(batch: &RecordBatch) -> Result<Rows> {
        let s = |name: &str| -> Result<Vec<String>> {
            Ok(string_column(batch, name)?
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect())
        };
        let label = batch
            .column_by_name("label")
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
            .context("column `label` missing or not int32")?
            .values()
            .to_vec();
        let partition = if batch.schema().field_with_name("partition").is_ok() {
            Some(s("partition")?)
        } else {
            None
        };
        Ok(Rows {
            id: s("id")?,
            path: s("path")?,
            label,
            class: s("class")?,
            partition,
        })
    }

    /// Builds a batch of these rows plus optional pixel values (row-major, `len * row_len`).
    pub fn to_batch(
        &self,
        meta: &Meta,
        schema: &SchemaRef,
        pixels: Option<PixelValues>,
        refs: Option<&[(u16, u32)]>,
    ) -> Result<RecordBatch> {
        let strings = |v: &[String]| -> ArrayRef { Arc::new(StringArray::from_iter_values(v.iter())) };
        let mut cols: Vec<ArrayRef> = vec![
            strings(&self.id),
            strings(&self.path),
            Arc::new(Int32Array::from(self.label.clone())),
            strings(&self.class),
        ];
        if meta.has_partition {
            let p = self.partition.as_ref().context("rows lack the partition column")?;
            cols.push(strings(p));
        }
        if let Some((shape, dtype)) = meta.pixels
            && meta.pixels_from.is_none()
            && meta.segments.is_empty()
        {
            cols.push(pixel_column(shape, dtype, pixels)?);
        } else if pixels.is_some() {
            bail!("pixel values given for an artifact that stores none");
        }
        if !meta.segments.is_empty() {
            let refs = refs.context("a segmented artifact needs each row's segment")?;
            cols.push(Arc::new(UInt16Array::from_iter_values(refs.iter().map(|r| r.0))));
            cols.push(Arc::new(UInt32Array::from_iter_values(refs.iter().map(|r| r.1))));
        }
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    }
}

/// The `pixels` column holding `pixels` (row-major) of `shape` and `dtype`.
fn pixel_column(shape: [usize; 3], dtype: Dtype, pixels: Option<PixelValues>) -> Result<ArrayRef> {
    let len = (shape[0] * shape[1] * shape[2]) as i32;
    let values: ArrayRef = match (pixels, dtype) {
        (Some(PixelValues::U8(v)), Dtype::Uint8) => Arc::new(UInt8Array::from(v)),
        (Some(PixelValues::F32(v)), Dtype::Float32) => Arc::new(Float32Array::from(v)),
        _ => bail!("pixel values do not match the artifact dtype {}", dtype.name()),
    };
    let item = Arc::new(Field::new("item", dtype.arrow(), false));
    Ok(Arc::new(FixedSizeListArray::try_new(item, len, values, None)?))
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .with_context(|| format!("column `{name}` missing or not a string column"))
}

/// The `pixels` column of a batch as `u8` values (row-major).
pub fn pixels_u8(batch: &RecordBatch) -> Result<&[u8]> {
    let list = pixel_list(batch)?;
    list.values()
        .as_any()
        .downcast_ref::<UInt8Array>()
        .map(|a| {
            &a.values()[list.offset() * list.value_length() as usize..][..list.len() * list.value_length() as usize]
        })
        .context("column `pixels` is not uint8")
}

/// The `pixels` column of a batch as `f32` values (row-major).
pub fn pixels_f32(batch: &RecordBatch) -> Result<&[f32]> {
    let list = pixel_list(batch)?;
    list.values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .map(|a| {
            &a.values()[list.offset() * list.value_length() as usize..][..list.len() * list.value_length() as usize]
        })
        .context("column `pixels` is not float32")
}

fn pixel_list(batch: &RecordBatch) -> Result<&FixedSizeListArray> {
    batch
        .column_by_name("pixels")
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
        .context("column `pixels` missing")
}

/// Pixel values of a batch widened to `f32`, whatever the stored dtype.
pub fn pixels_as_f32(batch: &RecordBatch, dtype: Dtype) -> Result<std::borrow::Cow<'_, [f32]>> {
    Ok(match dtype {
        Dtype::Float32 => std::borrow::Cow::Borrowed(pixels_f32(batch)?),
        Dtype::Uint8 => std::borrow::Cow::Owned(pixels_u8(batch)?.iter().map(|&v| f32::from(v)).collect()),
    })
}

/// A writer that counts and BLAKE3-hashes every byte on its way to the file.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::data::fault::charge(buf.len())?;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one artifact file batch by batch.
pub struct ArtifactWriter {
    writer: FileWriter<HashingWriter<BufWriter<File>>>,
    pub meta: Meta,
    pub schema: SchemaRef,
    rows: u64,
}

/// What was written: the numbers the cache record keeps.
#[derive(Clone, Debug)]
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
    pub blake3: String,
}

impl ArtifactWriter {
    pub fn create(path: &Path, meta: Meta) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let schema = Arc::new(meta.schema());
        let sink = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        let writer = FileWriter::try_new(sink, &schema)?;
        Ok(ArtifactWriter {
            writer,
            meta,
            schema,
            rows: 0,
        })
    }

    /// Writes rows with their pixels (if this artifact has a pixels column).
    pub fn write(&mut self, rows: &Rows, pixels: Option<PixelValues>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = rows.to_batch(&self.meta, &self.schema, pixels, None)?;
        self.writer.write(&batch)?;
        self.rows += rows.len() as u64;
        crate::data::fault::point(|| format!("artifact: {} rows written", self.rows));
        Ok(())
    }

    /// Writes rows of a segmented artifact: each row's (segment, row in it).
    pub fn write_refs(&mut self, rows: &Rows, refs: &[(u16, u32)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = rows.to_batch(&self.meta, &self.schema, None, Some(refs))?;
        self.writer.write(&batch)?;
        self.rows += rows.len() as u64;
        crate::data::fault::point(|| format!("artifact: {} rows written", self.rows));
        Ok(())
    }

    /// Finishes the file and syncs it to disk.
    pub fn finish(mut self) -> Result<Written> {
        self.writer.finish()?;
        let mut sink = self.writer.into_inner()?;
        sink.flush()?;
        let file = sink.inner.into_inner().map_err(|e| e.into_error())?;
        crate::data::fault::point(|| "artifact: finished, not synced".into());
        file.sync_all()?;
        Ok(Written {
            rows: self.rows,
            bytes: sink.bytes,
            blake3: sink.hasher.finalize().to_hex().to_string(),
        })
    }
}

/// Opens an artifact for batch-by-batch reading. A view's batches come with their pixels,
/// read from the stored artifact and passed through the view's steps.
pub fn open(path: &Path) -> Result<(Meta, Batches)> {
    let (meta, reader) = open_file(path)?;
    let source = if let Some(from) = &meta.pixels_from {
        let base_path = path.with_file_name(from);
        let (base_meta, base) = open(&base_path)?;
        let steps = view_steps(&meta, &base_meta, &base_path)?;
        Source::View(View {
            base: Box::new(base),
            base_dtype: base_meta.pixels.map(|(_, d)| d),
            pending: None,
            steps,
            schema: Arc::new(meta.read_schema()),
            meta: meta.clone(),
        })
    } else if !meta.segments.is_empty() {
        Source::Segments {
            segments: open_segments(path, &meta)?,
            schema: Arc::new(meta.read_schema()),
        }
    } else {
        Source::File
    };
    Ok((meta, Batches { reader, source }))
}

/// The segments of a segmented artifact at `path`, mapped, each checked to store pixels of
/// the artifact's shape and dtype itself.
fn open_segments(path: &Path, meta: &Meta) -> Result<Vec<Mapped>> {
    meta.segments
        .iter()
        .map(|name| {
            let seg_path = path.with_file_name(name);
            let seg = Mapped::open(&seg_path)?;
            if seg.meta.pixels != meta.pixels || seg.meta.pixels_from.is_some() || !seg.meta.segments.is_empty() {
                bail!(
                    "{} does not store pixels as the segmented artifact {} expects",
                    seg_path.display(),
                    path.display()
                );
            }
            Ok(seg)
        })
        .collect()
}

/// Each row's (segment, row in it) of a batch of a segmented artifact.
fn segment_refs(batch: &RecordBatch) -> Result<Vec<(u16, u32)>> {
    let seg = batch
        .column_by_name("segment")
        .and_then(|c| c.as_any().downcast_ref::<UInt16Array>())
        .context("column `segment` missing or not uint16")?;
    let row = batch
        .column_by_name("segment_row")
        .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
        .context("column `segment_row` missing or not uint32")?;
    Ok(seg.values().iter().copied().zip(row.values().iter().copied()).collect())
}

/// Opens an artifact's file as stored: a view's batches have no `pixels` column. For
/// readers that need only the row columns.
pub fn open_file(path: &Path) -> Result<(Meta, FileReader<std::io::BufReader<File>>)> {
    let file = File::open(path).with_context(|| format!("cannot open artifact {}", path.display()))?;
    let reader = FileReader::try_new_buffered(file, None)
        .with_context(|| format!("{} is not a readable Arrow IPC file", path.display()))?;
    let meta = Meta::from_schema(&reader.schema())?;
    Ok((meta, reader))
}

/// The steps that turn the stored pixels of `base` into those of the view `meta`: one per
/// element-wise stage in the view's lineage after the stored artifact's.
fn view_steps(meta: &Meta, base: &Meta, base_path: &Path) -> Result<Vec<Step>> {
    let Some((shape, _)) = base.pixels.filter(|_| base.pixels_from.is_none()) else {
        bail!(
            "{} stores no pixels, yet a view reads its pixels from it",
            base_path.display()
        );
    };
    if Some(shape) != meta.pixels.map(|(s, _)| s)
        || base.lineage.len() > meta.lineage.len()
        || base.lineage[..] != meta.lineage[..base.lineage.len()]
    {
        bail!(
            "{} is not the stored artifact this view was made from (its shape or lineage differs)",
            base_path.display()
        );
    }
    let mut steps = Vec::new();
    for entry in &meta.lineage[base.lineage.len()..] {
        if let Some(step) = crate::data::lineage::pixel_step(entry)? {
            steps.push(step);
        }
    }
    Ok(steps)
}

/// The batches of an artifact, in order; see [`open`].
pub struct Batches {
    reader: FileReader<std::io::BufReader<File>>,
    source: Source,
}

/// Where a reader's pixels come from.
enum Source {
    /// The file's own `pixels` column (or none).
    File,
    /// Another artifact's, through element-wise steps.
    View(View),
    /// The segments the rows name.
    Segments { segments: Vec<Mapped>, schema: SchemaRef },
}

struct View {
    base: Box<Batches>,
    base_dtype: Option<Dtype>,
    /// The stored batch being consumed and how many of its rows were used.
    pending: Option<(RecordBatch, usize)>,
    steps: Vec<Step>,
    schema: SchemaRef,
    meta: Meta,
}

impl View {
    /// The next rows of the stored artifact, as many as `ids` and checked against them.
    fn take(&mut self, ids: &StringArray) -> Result<Vec<RecordBatch>> {
        let n = ids.len();
        let mut parts = Vec::new();
        let mut got = 0;
        while got < n {
            let (batch, used) = match self.pending.take() {
                Some(p) => p,
                None => match self.base.next() {
                    Some(b) => (b?, 0),
                    None => bail!("the stored artifact has fewer rows than the view"),
                },
            };
            let k = (batch.num_rows() - used).min(n - got);
            parts.push(batch.slice(used, k));
            got += k;
            if used + k < batch.num_rows() {
                self.pending = Some((batch, used + k));
            }
        }
        let mut at = 0;
        for part in &parts {
            let stored_ids = string_column(part, "id")?;
            if stored_ids.iter().zip(ids.iter().skip(at)).any(|(a, b)| a != b) {
                bail!("the view's rows are not those of the artifact storing its pixels");
            }
            at += part.num_rows();
        }
        Ok(parts)
    }

    fn materialize(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        use rayon::prelude::*;
        let parts = self.take(string_column(&batch, "id")?)?;
        let Some((shape, dtype)) = self.meta.pixels else {
            bail!("a view without pixels");
        };
        let row_len = shape.iter().product::<usize>();
        let base_dtype = self.base_dtype.context("stored artifact without pixels")?;
        let pixels = match dtype {
            Dtype::Uint8 if self.steps.is_empty() => {
                let mut values = Vec::with_capacity(batch.num_rows() * row_len);
                for part in &parts {
                    values.extend_from_slice(pixels_u8(part)?);
                }
                PixelValues::U8(values)
            }
            Dtype::Uint8 => bail!("a uint8 view cannot apply element-wise steps"),
            Dtype::Float32 => {
                let mut values = Vec::with_capacity(batch.num_rows() * row_len);
                for part in &parts {
                    match base_dtype {
                        Dtype::Uint8 => values.extend(pixels_u8(part)?.iter().map(|&v| f32::from(v))),
                        Dtype::Float32 => values.extend_from_slice(pixels_f32(part)?),
                    }
                }
                let steps = &self.steps;
                values.par_chunks_mut(row_len.max(1)).for_each(|row| {
                    for step in steps {
                        step(row);
                    }
                });
                PixelValues::F32(values)
            }
        };
        let mut cols = batch.columns().to_vec();
        cols.push(pixel_column(shape, dtype, Some(pixels))?);
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

/// A batch of a segmented artifact with its pixels gathered from the segments.
fn gather_segments(batch: RecordBatch, segments: &[Mapped], schema: &SchemaRef) -> Result<RecordBatch> {
    let refs = segment_refs(&batch)?;
    let Some(first) = segments.first() else {
        bail!("a segmented artifact without segments");
    };
    let Some((shape, dtype)) = first.meta.pixels else {
        bail!("a segment without pixels");
    };
    let mut values = Vec::with_capacity(refs.len() * first.row_len());
    for &(s, r) in &refs {
        let seg = segments
            .get(usize::from(s))
            .context("a row names a segment that does not exist")?;
        values.extend_from_slice(seg.stored_u8(r as usize)?);
    }
    for seg in segments {
        seg.release_pages();
    }
    let mut cols = batch.columns()[..schema.fields().len() - 1].to_vec();
    cols.push(pixel_column(shape, dtype, Some(PixelValues::U8(values)))?);
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

impl Iterator for Batches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        let batch = match self.reader.next()? {
            Ok(b) => b,
            Err(e) => return Some(Err(e.into())),
        };
        Some(match &mut self.source {
            Source::File => Ok(batch),
            Source::View(view) => view.materialize(batch),
            Source::Segments { segments, schema } => gather_segments(batch, segments, schema),
        })
    }
}

/// Calls `f` on every batch of the artifact, in order.
pub fn for_each_batch(path: &Path, mut f: impl FnMut(&RecordBatch) -> Result<()>) -> Result<Meta> {
    let (meta, reader) = open(path)?;
    for batch in reader {
        f(&batch.with_context(|| format!("reading {}", path.display()))?)?;
    }
    Ok(meta)
}

/// A dataset artifact memory-mapped for random access: record batches are zero-copy views
/// of the mapped file, so training can gather any rows without copying the dataset into
/// memory (only the pages it touches are read).
pub struct Mapped {
    pub meta: Meta,
    pub batches: Vec<RecordBatch>,
    /// `(batch, row)` of every row, in file order.
    pub index: Vec<(u32, u32)>,
    row_len: usize,
    /// For a view: the mapped artifact storing the pixels, and the steps applied to them.
    stored: Option<(Box<Mapped>, Vec<Step>)>,
    /// For a segmented artifact: its segments, mapped, and each row's (segment, row).
    segments: Option<(Vec<Mapped>, Vec<SegmentRef>)>,
    mmap: Arc<memmap2::Mmap>,
}

/// Where a row of a segmented artifact is: (segment index, row in that segment).
pub type SegmentRef = (u16, u32);

impl Mapped {
    pub fn open(path: &Path) -> Result<Mapped> {
        use arrow_buffer::Buffer;
        use arrow_ipc::convert::try_fb_to_schema;
        use arrow_ipc::reader::{FileDecoder, read_footer_length};
        let file = File::open(path).with_context(|| format!("cannot open artifact {}", path.display()))?;
        // SAFETY: artifacts are immutable once committed (written to a temporary name and
        // renamed into place, never modified), so the mapped bytes do not change under us.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        let len = mmap.len();
        if len < 10 {
            bail!("{} is too short to be an Arrow IPC file", path.display());
        }
        let ptr = std::ptr::NonNull::new(mmap.as_ptr() as *mut u8).context("mapped a null pointer")?;
        // SAFETY: `ptr` points to `len` readable bytes owned by `mmap`, which the buffer keeps alive.
        let mmap = Arc::new(mmap);
        let buffer = unsafe { Buffer::from_custom_allocation(ptr, len, mmap.clone()) };
        let trailer: [u8; 10] = buffer[len - 10..].try_into().context("short trailer")?;
        let footer_len = read_footer_length(trailer)?;
        let footer = arrow_ipc::root_as_footer(&buffer[len - 10 - footer_len..len - 10])
            .map_err(|e| anyhow::anyhow!("{}: bad Arrow footer: {e}", path.display()))?;
        let schema = try_fb_to_schema(footer.schema().context("Arrow footer without schema")?)?;
        let meta = Meta::from_schema(&schema)?;
        let decoder = FileDecoder::new(Arc::new(schema), footer.version());
        let mut batches = Vec::new();
        for block in footer.recordBatches().into_iter().flatten() {
            let block_len = block.bodyLength() as usize + block.metaDataLength() as usize;
            let data = buffer.slice_with_length(block.offset() as usize, block_len);
            if let Some(b) = decoder.read_record_batch(block, &data)? {
                batches.push(b);
            }
        }
        let index: Vec<(u32, u32)> = batches
            .iter()
            .enumerate()
            .flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b as u32, r as u32)))
            .collect();
        let row_len = meta.pixels.map_or(0, |(s, _)| s.iter().product());
        let stored = match &meta.pixels_from {
            None => None,
            Some(from) => {
                let base_path = path.with_file_name(from);
                let base = Mapped::open(&base_path)?;
                let steps = view_steps(&meta, &base.meta, &base_path)?;
                Some((Box::new(base), steps))
            }
        };
        let segments = if meta.segments.is_empty() {
            None
        } else {
            let mut refs = Vec::with_capacity(index.len());
            for b in &batches {
                refs.extend(segment_refs(b)?);
            }
            Some((open_segments(path, &meta)?, refs))
        };
        let mapped = Mapped {
            meta,
            batches,
            index,
            row_len,
            stored,
            segments,
            mmap,
        };
        if let Some((base, _)) = &mapped.stored
            && base.ids()? != mapped.ids()?
        {
            bail!(
                "{}: the view's rows are not those of the artifact storing its pixels",
                path.display()
            );
        }
        Ok(mapped)
    }

    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Unmaps the pages read so far from this process (they stay in the page cache and are
    /// read back on the next access), so a pass over a large artifact does not count it
    /// all in the process's resident memory.
    pub fn release_pages(&self) {
        // SAFETY: a read-only, private file mapping: dropping its pages loses nothing, the
        // next access reads the same bytes from the file again.
        let _ = unsafe { self.mmap.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        if let Some((base, _)) = &self.stored {
            base.release_pages();
        }
        for seg in self.segments.iter().flat_map(|(s, _)| s) {
            seg.release_pages();
        }
    }

    /// A segmented artifact's segment files and where row `i` is in them.
    pub fn segment_of(&self, i: usize) -> Option<(&[String], (u16, u32))> {
        let (_, refs) = self.segments.as_ref()?;
        Some((&self.meta.segments, *refs.get(i)?))
    }

    /// The stored `u8` pixels of row `i` (file order); an error for views and `f32` data.
    pub fn stored_u8(&self, i: usize) -> Result<&[u8]> {
        if let Some((segs, refs)) = &self.segments {
            let (s, r) = *refs.get(i).context("row out of range")?;
            return segs
                .get(usize::from(s))
                .context("no such segment")?
                .stored_u8(r as usize);
        }
        if self.stored.is_some() || self.meta.pixels.map(|(_, d)| d) != Some(Dtype::Uint8) {
            bail!("the artifact does not store uint8 pixels");
        }
        let (b, r) = self.index[i];
        let len = self.row_len;
        Ok(&pixels_u8(&self.batches[b as usize])?[r as usize * len..][..len])
    }

    /// Appends the pixels of row `i` (file order), widened to `f32`, to `out`.
    pub fn pixels_into(&self, i: usize, out: &mut Vec<f32>) -> Result<()> {
        if let Some((base, steps)) = &self.stored {
            let start = out.len();
            base.pixels_into(i, out)?;
            for step in steps {
                step(&mut out[start..]);
            }
            return Ok(());
        }
        if let Some((segs, refs)) = &self.segments {
            let (s, r) = *refs.get(i).context("row out of range")?;
            return segs
                .get(usize::from(s))
                .context("no such segment")?
                .pixels_into(r as usize, out);
        }
        let (b, r) = self.index[i];
        let batch = &self.batches[b as usize];
        let len = self.row_len;
        match self.meta.pixels {
            Some((_, Dtype::Float32)) => out.extend_from_slice(&pixels_f32(batch)?[r as usize * len..][..len]),
            Some((_, Dtype::Uint8)) => out.extend(
                pixels_u8(batch)?[r as usize * len..][..len]
                    .iter()
                    .map(|&v| f32::from(v)),
            ),
            None => bail!("the artifact holds no pixels"),
        }
        Ok(())
    }

    /// The `id` of every row, in file order (without building the other columns).
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(self.index.len());
        for batch in &self.batches {
            ids.extend(
                string_column(batch, "id")?
                    .iter()
                    .map(|v| v.unwrap_or_default().to_string()),
            );
        }
        Ok(ids)
    }

    /// The non-pixel columns of every row, in file order.
    pub fn rows(&self) -> Result<Rows> {
        let mut all = Rows::default();
        for batch in &self.batches {
            all.append(Rows::from_batch(batch)?);
        }
        Ok(all)
    }
}
