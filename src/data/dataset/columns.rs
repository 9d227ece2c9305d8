//! The columns of a record batch: the row columns as plain vectors ([`Rows`]), the `pixels`
//! column built from and read as flat row-major slices, and a segmented artifact's
//! `segment`/`segment_row`. Reading pixels borrows the batch's buffers (a batch of a mapped
//! file is the file's bytes), so the per-batch reads of training copy nothing.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{ArrowPrimitiveType, Float32Type, UInt8Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, StringArray, UInt8Array, UInt16Array,
    UInt32Array,
};
use arrow_schema::{Field, SchemaRef};

use crate::data::dataset::{Dtype, Meta, SegmentRef};

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
        refs: Option<&[SegmentRef]>,
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
pub fn pixel_column(shape: [usize; 3], dtype: Dtype, pixels: Option<PixelValues>) -> Result<ArrayRef> {
    let len = (shape[0] * shape[1] * shape[2]) as i32;
    let values: ArrayRef = match (pixels, dtype) {
        (Some(PixelValues::U8(v)), Dtype::Uint8) => Arc::new(UInt8Array::from(v)),
        (Some(PixelValues::F32(v)), Dtype::Float32) => Arc::new(Float32Array::from(v)),
        _ => bail!("pixel values do not match the artifact dtype {}", dtype.name()),
    };
    let item = Arc::new(Field::new("item", dtype.arrow(), false));
    Ok(Arc::new(FixedSizeListArray::try_new(item, len, values, None)?))
}

/// The string column `name` of a batch.
pub fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .with_context(|| format!("column `{name}` missing or not a string column"))
}

/// The `pixels` column of a batch as `u8` values (row-major).
pub fn pixels_u8(batch: &RecordBatch) -> Result<&[u8]> {
    pixel_values::<UInt8Type>(batch, Dtype::Uint8)
}

/// The `pixels` column of a batch as `f32` values (row-major).
pub fn pixels_f32(batch: &RecordBatch) -> Result<&[f32]> {
    pixel_values::<Float32Type>(batch, Dtype::Float32)
}

/// The bytes of the pixels of `rows` as stored: what a reader checks before it uses them.
pub fn pixel_bytes(batch: &RecordBatch, dtype: Dtype, rows: Range<usize>) -> Result<&[u8]> {
    let list = pixel_list(batch)?;
    let bytes = match dtype {
        Dtype::Uint8 => stored_values::<UInt8Type>(list, dtype)?.inner().as_slice(),
        Dtype::Float32 => stored_values::<Float32Type>(list, dtype)?.inner().as_slice(),
    };
    let row_bytes = list.value_length() as usize * dtype.size();
    let start = (list.offset() + rows.start) * row_bytes;
    bytes
        .get(start..start + rows.len() * row_bytes)
        .context("rows outside the batch's pixels")
}

fn stored_values<T: ArrowPrimitiveType>(
    list: &FixedSizeListArray,
    dtype: Dtype,
) -> Result<&arrow_buffer::ScalarBuffer<T::Native>> {
    Ok(list
        .values()
        .as_primitive_opt::<T>()
        .with_context(|| format!("column `pixels` is not {}", dtype.name()))?
        .values())
}

/// The values of the `pixels` column, stored as `T` (`dtype`), borrowed from the batch: the
/// rows the batch's list covers (a sliced batch starts at its offset).
fn pixel_values<T: ArrowPrimitiveType>(batch: &RecordBatch, dtype: Dtype) -> Result<&[T::Native]> {
    let list = pixel_list(batch)?;
    let row_len = list.value_length() as usize;
    Ok(&stored_values::<T>(list, dtype)?[list.offset() * row_len..][..list.len() * row_len])
}

fn pixel_list(batch: &RecordBatch) -> Result<&FixedSizeListArray> {
    batch
        .column_by_name("pixels")
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
        .context("column `pixels` missing")
}

/// Pixel values of a batch widened to `f32`, whatever the stored dtype.
pub fn pixels_as_f32(batch: &RecordBatch, dtype: Dtype) -> Result<Cow<'_, [f32]>> {
    Ok(match dtype {
        Dtype::Float32 => Cow::Borrowed(pixels_f32(batch)?),
        Dtype::Uint8 => Cow::Owned(pixels_u8(batch)?.iter().map(|&v| f32::from(v)).collect()),
    })
}

/// Appends the pixels of the batch's `rows`, stored as `dtype`, widened to `f32` to `out`:
/// the one copy a reader of `f32` pixels makes, with no buffer in between.
pub fn extend_f32(out: &mut Vec<f32>, batch: &RecordBatch, dtype: Dtype, rows: Range<usize>) -> Result<()> {
    let row_len = pixel_list(batch)?.value_length() as usize;
    let span = rows.start * row_len..rows.end * row_len;
    match dtype {
        Dtype::Float32 => out.extend_from_slice(&pixels_f32(batch)?[span]),
        Dtype::Uint8 => out.extend(pixels_u8(batch)?[span].iter().map(|&v| f32::from(v))),
    }
    Ok(())
}

/// Each row's (segment, row in it) of a batch of a segmented artifact.
pub fn segment_refs(batch: &RecordBatch) -> Result<Vec<SegmentRef>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pixels: Option<([usize; 3], Dtype)>, segments: Vec<String>) -> Meta {
        Meta {
            classes: vec!["a".into(), "b".into()],
            has_partition: true,
            pixels,
            lineage: Vec::new(),
            pixels_from: None,
            segments,
        }
    }

    fn rows(n: usize) -> Rows {
        Rows {
            id: (0..n).map(|i| format!("id{i}")).collect(),
            path: (0..n).map(|i| format!("b/{i}.png")).collect(),
            label: (0..n).map(|i| (i % 2) as i32).collect(),
            class: (0..n).map(|i| ["a", "b"][i % 2].to_string()).collect(),
            partition: Some((0..n).map(|i| ["train", "val", "test"][i % 3].to_string()).collect()),
        }
    }

    fn batch(meta: &Meta, rows: &Rows, pixels: Option<PixelValues>) -> RecordBatch {
        rows.to_batch(meta, &Arc::new(meta.schema()), pixels, None).unwrap()
    }

    #[test]
    fn rows_and_pixels_round_trip_through_a_batch() {
        let u8_meta = meta(Some(([1, 2, 3], Dtype::Uint8)), Vec::new());
        let values: Vec<u8> = (0..4 * 6).collect();
        let b = batch(&u8_meta, &rows(4), Some(PixelValues::U8(values.clone())));
        let back = Rows::from_batch(&b).unwrap();
        assert_eq!(
            (back.id, back.path, back.label),
            (rows(4).id, rows(4).path, rows(4).label)
        );
        assert_eq!((back.class, back.partition), (rows(4).class, rows(4).partition));
        assert_eq!(pixels_u8(&b).unwrap(), values);

        let f32_meta = meta(Some(([1, 2, 3], Dtype::Float32)), Vec::new());
        let values: Vec<f32> = (0..4 * 6).map(|v| v as f32 * 0.5 - 3.0).collect();
        let b = batch(&f32_meta, &rows(4), Some(PixelValues::F32(values.clone())));
        assert_eq!(pixels_f32(&b).unwrap(), values);
        assert_eq!(pixels_as_f32(&b, Dtype::Float32).unwrap(), values);
    }

    #[test]
    fn pixels_of_a_sliced_batch_are_its_rows_only() {
        let meta = meta(Some(([1, 1, 2], Dtype::Uint8)), Vec::new());
        let b = batch(&meta, &rows(5), Some(PixelValues::U8((0..10).collect())));
        let middle = b.slice(1, 3);
        assert_eq!(pixels_u8(&middle).unwrap(), [2, 3, 4, 5, 6, 7]);
        assert_eq!(
            *pixels_as_f32(&middle, Dtype::Uint8).unwrap(),
            [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
        let mut out = vec![-1.0];
        extend_f32(&mut out, &middle, Dtype::Uint8, 1..3).unwrap();
        assert_eq!(out, [-1.0, 4.0, 5.0, 6.0, 7.0]);
    }

    #[test]
    fn wrong_pixel_dtype_is_an_error() {
        let meta = meta(Some(([1, 1, 2], Dtype::Uint8)), Vec::new());
        let b = batch(&meta, &rows(1), Some(PixelValues::U8(vec![1, 2])));
        assert_eq!(
            pixels_f32(&b).unwrap_err().to_string(),
            "column `pixels` is not float32"
        );
        let schema = Arc::new(meta.schema());
        let err = rows(1)
            .to_batch(&meta, &schema, Some(PixelValues::F32(vec![1.0, 2.0])), None)
            .unwrap_err();
        assert_eq!(err.to_string(), "pixel values do not match the artifact dtype uint8");
        let rows_only = Rows::from_batch(&b).unwrap().to_batch(
            &Meta {
                pixels: None,
                ..meta.clone()
            },
            &Arc::new(Meta { pixels: None, ..meta }.schema()),
            None,
            None,
        );
        assert_eq!(
            pixels_u8(&rows_only.unwrap()).unwrap_err().to_string(),
            "column `pixels` missing"
        );
    }

    #[test]
    fn segment_refs_round_trip() {
        let meta = meta(Some(([1, 1, 2], Dtype::Uint8)), vec!["s0".into(), "s1".into()]);
        let refs = [(1, 0), (0, 7), (1, 1)];
        let b = rows(3)
            .to_batch(&meta, &Arc::new(meta.schema()), None, Some(&refs))
            .unwrap();
        assert_eq!(segment_refs(&b).unwrap(), refs);
        let missing = rows(3).to_batch(&meta, &Arc::new(meta.schema()), None, None);
        assert!(missing.is_err());
    }

    #[test]
    fn select_and_append_keep_row_order() {
        let picked = rows(5).select(&[4, 0, 2]);
        assert_eq!(picked.id, ["id4", "id0", "id2"]);
        assert_eq!(
            picked.partition.as_deref(),
            Some(&["val".to_string(), "train".into(), "test".into()][..])
        );
        let mut all = rows(2);
        all.append(picked);
        assert_eq!(all.len(), 5);
        assert_eq!(all.label, [0, 1, 0, 0, 0]);
    }
}
