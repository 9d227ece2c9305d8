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

use anyhow::{Context, Result, bail};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, StringArray, UInt8Array,
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

/// One step of an artifact's history, as stored in `pipeline.lineage`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineageEntry {
    pub stage: String,
    pub kind: String,
    pub version: u32,
    pub params: serde_json::Value,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub fitted: serde_json::Value,
}

/// What an artifact holds besides its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub classes: Vec<String>,
    pub has_partition: bool,
    /// `(shape [H, W, C], dtype)` when the artifact carries pixels.
    pub pixels: Option<([usize; 3], Dtype)>,
    pub lineage: Vec<LineageEntry>,
}

impl Meta {
    pub fn schema(&self) -> Schema {
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
            fields.push(pixels_field(shape, dtype));
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
    pub fn to_batch(&self, meta: &Meta, schema: &SchemaRef, pixels: Option<PixelValues>) -> Result<RecordBatch> {
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
        if let Some((shape, dtype)) = meta.pixels {
            let len = (shape[0] * shape[1] * shape[2]) as i32;
            let values: ArrayRef = match (pixels, dtype) {
                (Some(PixelValues::U8(v)), Dtype::Uint8) => Arc::new(UInt8Array::from(v)),
                (Some(PixelValues::F32(v)), Dtype::Float32) => Arc::new(Float32Array::from(v)),
                _ => bail!("pixel values do not match the artifact dtype {}", dtype.name()),
            };
            let item = Arc::new(Field::new("item", dtype.arrow(), false));
            cols.push(Arc::new(FixedSizeListArray::try_new(item, len, values, None)?));
        }
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    }
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
        crate::fault::charge(buf.len())?;
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
        let batch = rows.to_batch(&self.meta, &self.schema, pixels)?;
        self.writer.write(&batch)?;
        self.rows += rows.len() as u64;
        crate::fault::point(|| format!("artifact: {} rows written", self.rows));
        Ok(())
    }

    /// Finishes the file and syncs it to disk.
    pub fn finish(mut self) -> Result<Written> {
        self.writer.finish()?;
        let mut sink = self.writer.into_inner()?;
        sink.flush()?;
        let file = sink.inner.into_inner().map_err(|e| e.into_error())?;
        crate::fault::point(|| "artifact: finished, not synced".into());
        file.sync_all()?;
        Ok(Written {
            rows: self.rows,
            bytes: sink.bytes,
            blake3: sink.hasher.finalize().to_hex().to_string(),
        })
    }
}

/// Opens an artifact for batch-by-batch reading.
pub fn open(path: &Path) -> Result<(Meta, FileReader<std::io::BufReader<File>>)> {
    let file = File::open(path).with_context(|| format!("cannot open artifact {}", path.display()))?;
    let reader = FileReader::try_new_buffered(file, None)
        .with_context(|| format!("{} is not a readable Arrow IPC file", path.display()))?;
    let meta = Meta::from_schema(&reader.schema())?;
    Ok((meta, reader))
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
}

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
        let buffer = unsafe { Buffer::from_custom_allocation(ptr, len, Arc::new(mmap)) };
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
        let index = batches
            .iter()
            .enumerate()
            .flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b as u32, r as u32)))
            .collect();
        let row_len = meta.pixels.map_or(0, |(s, _)| s.iter().product());
        Ok(Mapped {
            meta,
            batches,
            index,
            row_len,
        })
    }

    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Appends the pixels of row `i` (file order), widened to `f32`, to `out`.
    pub fn pixels_into(&self, i: usize, out: &mut Vec<f32>) -> Result<()> {
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

    /// The non-pixel columns of every row, in file order.
    pub fn rows(&self) -> Result<Rows> {
        let mut all = Rows::default();
        for batch in &self.batches {
            let r = Rows::from_batch(batch)?;
            all.id.extend(r.id);
            all.path.extend(r.path);
            all.label.extend(r.label);
            all.class.extend(r.class);
            if let Some(p) = r.partition {
                all.partition.get_or_insert_with(Vec::new).extend(p);
            }
        }
        Ok(all)
    }
}
