//! Views: artifacts that store no pixels of their own. `mean_subtract` and `normalize` write
//! only the row columns and name the artifact storing the pixels (`pipeline.pixels_from`);
//! a view's pixels are those, passed through the element-wise steps its lineage records
//! after the stored artifact's. [`ViewPixels`] checks the pairing once and then makes the
//! pixels, for a batch (the streaming reader) or for one row (the mapped reader).

use std::path::Path;

use anyhow::{Result, bail};
use arrow_array::{ArrayRef, RecordBatch};

use crate::data::dataset::columns::{PixelValues, extend_f32, pixel_column, pixels_u8};
use crate::data::dataset::{Dtype, Meta};
use crate::data::lineage::Step;

/// How a view's pixels are made from those of the artifact storing them.
pub struct ViewPixels {
    /// The shape of both artifacts' pixels.
    shape: [usize; 3],
    /// The view's dtype.
    dtype: Dtype,
    /// The stored artifact's dtype.
    stored_dtype: Dtype,
    /// One per element-wise stage in the view's lineage after the stored artifact's.
    steps: Vec<Step>,
}

impl ViewPixels {
    /// Checks that `base` (at `base_path`) is the stored artifact the view `meta` was made
    /// from (it stores pixels of the view's shape, and its lineage starts the view's), and
    /// rebuilds the steps of the view's later lineage entries.
    pub fn new(meta: &Meta, base: &Meta, base_path: &Path) -> Result<ViewPixels> {
        let Some((shape, stored_dtype)) = base.pixels.filter(|_| base.pixels_from.is_none()) else {
            bail!(
                "{} stores no pixels, yet a view reads its pixels from it",
                base_path.display()
            );
        };
        let dtype = match meta.pixels {
            Some((s, dtype)) if s == shape && meta.lineage.starts_with(&base.lineage) => dtype,
            _ => bail!(
                "{} is not the stored artifact this view was made from (its shape or lineage differs)",
                base_path.display()
            ),
        };
        let mut steps = Vec::new();
        for entry in &meta.lineage[base.lineage.len()..] {
            if let Some(step) = crate::data::lineage::pixel_step(entry)? {
                steps.push(step);
            }
        }
        Ok(ViewPixels {
            shape,
            dtype,
            stored_dtype,
            steps,
        })
    }

    /// Turns one row of stored pixels, widened to `f32`, into the view's, in place.
    pub fn apply(&self, row: &mut [f32]) {
        for step in &self.steps {
            step(row);
        }
    }

    /// The `pixels` column of `rows` rows of the view, made from `parts`: the stored
    /// artifact's batches holding those rows, in order. The rows are widened straight into
    /// the column's buffer and the steps run in place there, in parallel over rows.
    pub fn column(&self, parts: &[RecordBatch], rows: usize) -> Result<ArrayRef> {
        use rayon::prelude::*;
        let row_len = self.shape.iter().product::<usize>();
        let pixels = match self.dtype {
            Dtype::Uint8 if self.steps.is_empty() => {
                let mut values = Vec::with_capacity(rows * row_len);
                for part in parts {
                    values.extend_from_slice(pixels_u8(part)?);
                }
                PixelValues::U8(values)
            }
            Dtype::Uint8 => bail!("a uint8 view cannot apply element-wise steps"),
            Dtype::Float32 => {
                let mut values = Vec::with_capacity(rows * row_len);
                for part in parts {
                    extend_f32(&mut values, part, self.stored_dtype, 0..part.num_rows())?;
                }
                values.par_chunks_mut(row_len.max(1)).for_each(|row| self.apply(row));
                PixelValues::F32(values)
            }
        };
        pixel_column(self.shape, self.dtype, Some(pixels))
    }
}
