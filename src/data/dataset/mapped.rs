//! Random access to an artifact: the file memory-mapped, its record batches zero-copy views
//! of the mapping, so training and evaluation gather any rows in any order without copying
//! the dataset into memory (only the pages they touch are read). A view maps the artifact
//! storing its pixels too, a segmented artifact maps its segments.
//!
//! Nothing of the mapping is used unchecked ([`Verifier`]): opening checks the chunks holding
//! the footer, every batch's metadata and the row columns; a row's pixels are checked when
//! the row is first read (a chunk once), so a pass over the data checks each byte once.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;

use crate::data::dataset::columns::{Rows, extend_f32, pixel_bytes, pixels_u8, segment_refs, string_column};
use crate::data::dataset::ipc::{Check, IpcFile};
use crate::data::dataset::views::ViewPixels;
use crate::data::dataset::{Dtype, Meta, SegmentRef};
use crate::data::integrity::{Integrity, Verifier};

/// A dataset artifact memory-mapped for random access: record batches are zero-copy views
/// of the mapped file, so training can gather any rows without copying the dataset into
/// memory (only the pages it touches are read).
pub struct Mapped {
    pub meta: Meta,
    batches: Vec<RecordBatch>,
    /// `(batch, row)` of every row, in file order.
    pub index: Vec<(u32, u32)>,
    row_len: usize,
    /// For a view: the mapped artifact storing the pixels, and how the view's come from them.
    stored: Option<(Box<Mapped>, ViewPixels)>,
    /// For a segmented artifact: its segments, mapped, and each row's (segment, row).
    segments: Option<(Vec<Mapped>, Vec<SegmentRef>)>,
    file: IpcFile,
}

impl Mapped {
    /// Maps the artifact at `path` (and the artifacts its pixels live in), checking that a
    /// view's stored artifact matches it and holds the same rows.
    pub fn open(path: &Path, integrity: &Arc<dyn Integrity>) -> Result<Mapped> {
        let file = IpcFile::open(path, integrity)?;
        let mut batches = Vec::with_capacity(file.num_batches());
        for i in 0..file.num_batches() {
            batches.extend(file.batch(i, Check::RowColumns)?);
        }
        let meta = file.meta.clone();
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
                let base = Mapped::open(&base_path, integrity)?;
                let view = ViewPixels::new(&meta, &base.meta, &base_path)?;
                Some((Box::new(base), view))
            }
        };
        let segments = if meta.segments.is_empty() {
            None
        } else {
            let mut refs = Vec::with_capacity(index.len());
            for b in &batches {
                refs.extend(segment_refs(b)?);
            }
            Some((open_segments(path, &meta, integrity)?, refs))
        };
        let mapped = Mapped {
            meta,
            batches,
            index,
            row_len,
            stored,
            segments,
            file,
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
        let _ = unsafe { self.file.map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        if let Some((base, _)) = &self.stored {
            base.release_pages();
        }
        for seg in self.segments.iter().flat_map(|(s, _)| s) {
            seg.release_pages();
        }
    }

    /// A segmented artifact's segment files and where row `i` is in them.
    pub fn segment_of(&self, i: usize) -> Option<(&[String], SegmentRef)> {
        let (_, refs) = self.segments.as_ref()?;
        Some((&self.meta.segments, *refs.get(i)?))
    }

    /// For a segmented artifact, the segment holding row `i` and the row there.
    fn in_segment(&self, i: usize) -> Result<Option<(&Mapped, usize)>> {
        let Some((segs, refs)) = &self.segments else {
            return Ok(None);
        };
        let (s, r) = *refs.get(i).context("row out of range")?;
        Ok(Some((segs.get(usize::from(s)).context("no such segment")?, r as usize)))
    }

    /// The stored `u8` pixels of row `i` (file order); an error for views and `f32` data.
    pub fn stored_u8(&self, i: usize) -> Result<&[u8]> {
        if let Some((seg, r)) = self.in_segment(i)? {
            return seg.stored_u8(r);
        }
        if self.stored.is_some() || self.meta.pixels.map(|(_, d)| d) != Some(Dtype::Uint8) {
            bail!("the artifact does not store uint8 pixels");
        }
        let (b, r) = *self.index.get(i).context("row out of range")?;
        let len = self.row_len;
        let batch = &self.batches[b as usize];
        self.check_rows(batch, Dtype::Uint8, r as usize)?;
        Ok(&pixels_u8(batch)?[r as usize * len..][..len])
    }

    /// Checks the stored pixels of row `r` of `batch` before they are used.
    fn check_rows(&self, batch: &RecordBatch, dtype: Dtype, r: usize) -> Result<()> {
        let bytes = pixel_bytes(batch, dtype, r..r + 1)?;
        let map = &self.file.map;
        Ok(self.file.verifier.ensure(map, Verifier::range_of(map, bytes))?)
    }

    /// Appends the pixels of row `i` (file order), widened to `f32`, to `out`.
    pub fn pixels_into(&self, i: usize, out: &mut Vec<f32>) -> Result<()> {
        if let Some((base, view)) = &self.stored {
            let start = out.len();
            base.pixels_into(i, out)?;
            view.apply(&mut out[start..]);
            return Ok(());
        }
        if let Some((seg, r)) = self.in_segment(i)? {
            return seg.pixels_into(r, out);
        }
        let (b, r) = *self.index.get(i).context("row out of range")?;
        let Some((_, dtype)) = self.meta.pixels else {
            bail!("the artifact holds no pixels");
        };
        let (batch, r) = (&self.batches[b as usize], r as usize);
        self.check_rows(batch, dtype, r)?;
        extend_f32(out, batch, dtype, r..r + 1)
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
        for rows in self.row_batches() {
            all.append(rows?);
        }
        Ok(all)
    }

    /// The non-pixel columns of each record batch, in file order: for stages that pass rows
    /// on and leave the pixels where they are (checked when the file was opened, unlike the
    /// pixels, which are not read at all).
    pub fn row_batches(&self) -> impl Iterator<Item = Result<Rows>> + '_ {
        self.batches.iter().map(Rows::from_batch)
    }
}

/// The segments of a segmented artifact at `path`, mapped, each checked to store pixels of
/// the artifact's shape and dtype itself.
pub fn open_segments(path: &Path, meta: &Meta, integrity: &Arc<dyn Integrity>) -> Result<Vec<Mapped>> {
    meta.segments
        .iter()
        .map(|name| {
            let seg_path = path.with_file_name(name);
            let seg = Mapped::open(&seg_path, integrity)?;
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
