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
//!
//! This module holds what every part of the format builds on ([`Meta`], [`Dtype`]); the
//! files below it, bottom up: [`schema`] (`Meta` to and from the Arrow schema), [`columns`]
//! (the row and pixel columns of a batch), [`writer`], [`views`] (a view's steps and
//! pixels), [`ipc`] (a file mapped, checked and decoded), [`mapped`] (random access) and
//! [`reader`] (batch by batch).

use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use crate::data::lineage::LineageEntry;

pub mod columns;
pub mod ipc;
pub mod mapped;
pub mod reader;
pub mod schema;
pub mod views;
pub mod writer;

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
    /// Rows per record batch so a batch's pixels stay near [`TARGET_BATCH_BYTES`].
    pub fn rows_per_batch(&self) -> usize {
        match self.pixels {
            Some((s, d)) => (TARGET_BATCH_BYTES / (s[0] * s[1] * s[2] * d.size()).max(1)).clamp(1, 8192),
            None => 8192,
        }
    }
}

/// Where a row of a segmented artifact is: (segment index, row in that segment).
pub type SegmentRef = (u16, u32);

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_with(pixels: Option<([usize; 3], Dtype)>) -> Meta {
        Meta {
            classes: vec!["cat".into()],
            has_partition: false,
            pixels,
            lineage: Vec::new(),
            pixels_from: None,
            segments: Vec::new(),
        }
    }

    #[test]
    fn rows_per_batch_keeps_a_batch_within_the_target_bytes() {
        for (shape, dtype) in [
            ([64, 64, 3], Dtype::Uint8),
            ([224, 224, 3], Dtype::Float32),
            ([97, 13, 1], Dtype::Float32),
            ([512, 512, 3], Dtype::Uint8),
        ] {
            let rows = meta_with(Some((shape, dtype))).rows_per_batch();
            let row_bytes = shape.iter().product::<usize>() * dtype.size();
            assert!(
                rows * row_bytes <= TARGET_BATCH_BYTES,
                "{shape:?} {dtype:?}: {rows} rows"
            );
            assert!(
                rows == 8192 || (rows + 1) * row_bytes > TARGET_BATCH_BYTES,
                "{shape:?} {dtype:?}: {rows} rows leave room for another"
            );
        }
    }

    #[test]
    fn rows_per_batch_is_clamped() {
        // A row larger than the target still makes batches of one row; tiny rows and row
        // columns alone are capped at 8192 rows.
        assert_eq!(meta_with(Some(([4096, 4096, 3], Dtype::Float32))).rows_per_batch(), 1);
        assert_eq!(meta_with(Some(([1, 1, 1], Dtype::Uint8))).rows_per_batch(), 8192);
        assert_eq!(meta_with(None).rows_per_batch(), 8192);
    }
}
