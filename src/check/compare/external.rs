//! Reading a features file made outside the pipeline: NumPy `.npy`, or Arrow IPC (file or
//! stream) with a list-of-numbers column and an optional `id` or `path` key column. One
//! streaming pass keeps a sample of rows and the signature of all of them.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;

use crate::check::compare::SAMPLE;
use crate::check::compare::signature::Signature;

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
    /// Up to `SAMPLE` rows, each with its key when the file has a key column.
    pub sample: Vec<(Option<String>, Vec<f32>)>,
    /// The signature of every row.
    pub signature: Signature,
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

/// Reads a `.npy` array of shape `[N, H*W*C]`, `[N, H, W]` or `[N, H, W, C]`.
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

/// Reads an Arrow IPC file or stream with a list-of-numbers column (and maybe a key column).
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

/// The values of a numeric array as `f32`, with the name of their type.
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

/// The values of a string column.
fn arrow_cast_strings(c: &ArrayRef) -> Option<Vec<String>> {
    if let Some(s) = c.as_any().downcast_ref::<arrow_array::StringArray>() {
        return Some((0..s.len()).map(|i| s.value(i).to_string()).collect());
    }
    c.as_any()
        .downcast_ref::<arrow_array::LargeStringArray>()
        .map(|s| (0..s.len()).map(|i| s.value(i).to_string()).collect())
}
