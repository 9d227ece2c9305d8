//! Random access to an artifact: the file memory-mapped, its record batches zero-copy views
//! of the mapping, so training and evaluation gather any rows in any order without copying
//! the dataset into memory (only the pages they touch are read). A view maps the artifact
//! storing its pixels too, a segmented artifact maps its segments.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;

use crate::data::dataset::columns::{Rows, extend_f32, pixels_u8, segment_refs, string_column};
use crate::data::dataset::views::ViewPixels;
use crate::data::dataset::{Dtype, Meta, SegmentRef};

/// A dataset artifact memory-mapped for random access: record batches are zero-copy views
/// of the mapped file, so training can gather any rows without copying the dataset into
/// memory (only the pages it touches are read).
pub struct Mapped {
    pub meta: Meta,
    pub batches: Vec<RecordBatch>,
    /// `(batch, row)` of every row, in file order.
    pub index: Vec<(u32, u32)>,
    row_len: usize,
    /// For a view: the mapped artifact storing the pixels, and how the view's come from them.
    stored: Option<(Box<Mapped>, ViewPixels)>,
    /// For a segmented artifact: its segments, mapped, and each row's (segment, row).
    segments: Option<(Vec<Mapped>, Vec<SegmentRef>)>,
    mmap: Arc<memmap2::Mmap>,
}

impl Mapped {
    /// Maps the artifact at `path` (and the artifacts its pixels live in), checking that a
    /// view's stored artifact matches it and holds the same rows.
    pub fn open(path: &Path) -> Result<Mapped> {
        let file = File::open(path).with_context(|| format!("cannot open artifact {}", path.display()))?;
        // SAFETY: artifacts are immutable once committed (written to a temporary name and
        // renamed into place, never modified), so the mapped bytes do not change under us.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        let mmap = Arc::new(mmap);
        let (meta, batches) = read_mapped(&mmap, path)?;
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
        let (b, r) = self.index[i];
        let len = self.row_len;
        Ok(&pixels_u8(&self.batches[b as usize])?[r as usize * len..][..len])
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
        let (b, r) = self.index[i];
        let Some((_, dtype)) = self.meta.pixels else {
            bail!("the artifact holds no pixels");
        };
        let r = r as usize;
        extend_f32(out, &self.batches[b as usize], dtype, r..r + 1)
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

/// The metadata and record batches of the Arrow IPC file mapped in `mmap`, the batches
/// pointing into the mapping (which their buffers keep alive).
fn read_mapped(mmap: &Arc<memmap2::Mmap>, path: &Path) -> Result<(Meta, Vec<RecordBatch>)> {
    use arrow_buffer::Buffer;
    use arrow_ipc::convert::try_fb_to_schema;
    use arrow_ipc::reader::{FileDecoder, read_footer_length};
    let len = mmap.len();
    if len < 10 {
        bail!("{} is too short to be an Arrow IPC file", path.display());
    }
    let ptr = std::ptr::NonNull::new(mmap.as_ptr() as *mut u8).context("mapped a null pointer")?;
    // SAFETY: `ptr` points to `len` readable bytes owned by `mmap`, which the buffer keeps alive.
    let buffer = unsafe { Buffer::from_custom_allocation(ptr, len, mmap.clone()) };
    let trailer: [u8; 10] = buffer[len - 10..].try_into().context("short trailer")?;
    let footer_len = read_footer_length(trailer)?;
    let footer_start = (len - 10)
        .checked_sub(footer_len)
        .with_context(|| format!("{}: the Arrow footer is longer than the file", path.display()))?;
    let footer = arrow_ipc::root_as_footer(&buffer[footer_start..len - 10])
        .map_err(|e| anyhow::anyhow!("{}: bad Arrow footer: {e}", path.display()))?;
    let schema = try_fb_to_schema(footer.schema().context("Arrow footer without schema")?)?;
    let meta = Meta::from_schema(&schema)?;
    let decoder = FileDecoder::new(Arc::new(schema), footer.version());
    let mut batches = Vec::new();
    for block in footer.recordBatches().into_iter().flatten() {
        let (offset, block_len) = block_span(block, len)
            .with_context(|| format!("{}: a record batch lies outside the file", path.display()))?;
        let data = buffer.slice_with_length(offset, block_len);
        if let Some(b) = decoder.read_record_batch(block, &data)? {
            batches.push(b);
        }
    }
    Ok((meta, batches))
}

/// Where a record batch's bytes are in a file of `len` bytes: `(offset, length)`, or `None`
/// when the footer puts them outside it (a corrupt file must be an error, not a panic).
fn block_span(block: &arrow_ipc::Block, len: usize) -> Option<(usize, usize)> {
    let offset = usize::try_from(block.offset()).ok()?;
    let block_len = usize::try_from(block.bodyLength())
        .ok()?
        .checked_add(usize::try_from(block.metaDataLength()).ok()?)?;
    (offset.checked_add(block_len)? <= len).then_some((offset, block_len))
}

/// The segments of a segmented artifact at `path`, mapped, each checked to store pixels of
/// the artifact's shape and dtype itself.
pub fn open_segments(path: &Path, meta: &Meta) -> Result<Vec<Mapped>> {
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
