//! An artifact's Arrow IPC file, memory-mapped, as both readers see it: its footer read and
//! its record batches decoded zero-copy from the mapping, each byte checked against the
//! file's chunk sums ([`Verifier`]) before it is parsed, and every offset and length the file
//! states checked against the file before Arrow's decoder trusts it (the decoder slices
//! buffers at the offsets a message gives, and panics on one outside the body).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, RecordBatch};
use arrow_buffer::Buffer;
use arrow_data::ArrayData;
use arrow_ipc::Block;
use arrow_ipc::reader::FileDecoder;

use crate::data::dataset::Meta;
use crate::data::integrity::{Integrity, Verifier, map_with_metadata};

/// An open artifact file: its metadata, its blocks, and how to check and decode them.
pub struct IpcFile {
    pub path: PathBuf,
    pub meta: Meta,
    pub map: Arc<memmap2::Mmap>,
    pub verifier: Arc<Verifier>,
    buffer: Buffer,
    schema: arrow_schema::SchemaRef,
    decoder: FileDecoder,
    blocks: Vec<Block>,
}

/// How much of a batch [`IpcFile::batch`] checks before handing it out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Every byte of the block: the reader uses all its columns.
    Whole,
    /// The block's metadata and its columns but `pixels`: the reader checks a row's pixels
    /// itself when it reads them.
    RowColumns,
}

impl IpcFile {
    /// Maps the file at `path`, checks and reads its footer and schema.
    pub fn open(path: &Path, integrity: &Arc<dyn Integrity>) -> Result<IpcFile> {
        let (map, file_meta) = map_with_metadata(path)?;
        let verifier = Arc::new(
            Verifier::new(path, &file_meta, integrity)
                .with_context(|| format!("cannot read artifact {}", path.display()))?,
        );
        let len = map.len();
        if len < 10 {
            bail!("{} is too short to be an Arrow IPC file", path.display());
        }
        let ptr = std::ptr::NonNull::new(map.as_ptr() as *mut u8).context("mapped a null pointer")?;
        // SAFETY: `ptr` points to `len` readable bytes owned by `map`, which the buffer keeps alive.
        let buffer = unsafe { Buffer::from_custom_allocation(ptr, len, map.clone()) };
        verifier.ensure(&map, len - 10..len)?;
        let trailer: [u8; 10] = map[len - 10..].try_into().context("short trailer")?;
        let footer_len = arrow_ipc::reader::read_footer_length(trailer)
            .with_context(|| format!("{} is not a readable Arrow IPC file", path.display()))?;
        let footer_start = (len - 10)
            .checked_sub(footer_len)
            .with_context(|| format!("{}: the Arrow footer is longer than the file", path.display()))?;
        verifier.ensure(&map, footer_start..len)?;
        let footer = arrow_ipc::root_as_footer(&map[footer_start..len - 10])
            .map_err(|e| anyhow::anyhow!("{}: bad Arrow footer: {e}", path.display()))?;
        if footer.dictionaries().is_some_and(|d| !d.is_empty()) {
            bail!("{}: an artifact has no dictionaries, this file has", path.display());
        }
        let schema = arrow_ipc::convert::try_fb_to_schema(footer.schema().context("Arrow footer without schema")?)?;
        let meta = Meta::from_schema(&schema)?;
        let schema = Arc::new(schema);
        let decoder = FileDecoder::new(schema.clone(), footer.version());
        let blocks = footer
            .recordBatches()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        Ok(IpcFile {
            path: path.to_path_buf(),
            meta,
            map,
            verifier,
            buffer,
            schema,
            decoder,
            blocks,
        })
    }

    pub fn num_batches(&self) -> usize {
        self.blocks.len()
    }

    /// Where block `i` starts in the file (for a reader that releases the pages behind it).
    pub fn block_start(&self, i: usize) -> usize {
        self.blocks
            .get(i)
            .map_or(self.map.len(), |b| b.offset().max(0) as usize)
    }

    /// Record batch `i`, checked as `check` says; `None` for a block that holds none.
    pub fn batch(&self, i: usize, check: Check) -> Result<Option<RecordBatch>> {
        let block = self.blocks.get(i).context("no such record batch")?;
        let (offset, len, meta_len) = self
            .block_span(block)
            .with_context(|| format!("{}: record batch {i} lies outside the file", self.path.display()))?;
        let checked = match check {
            Check::Whole => offset..offset + len,
            Check::RowColumns => offset..offset + meta_len,
        };
        self.verifier.ensure(&self.map, checked)?;
        self.check_message(&self.map[offset..offset + meta_len], len - meta_len)
            .with_context(|| format!("{}: record batch {i} is not readable", self.path.display()))?;
        let data = self.buffer.slice_with_length(offset, len);
        let Some(batch) = self.decoder.read_record_batch(block, &data)? else {
            return Ok(None);
        };
        if check == Check::RowColumns {
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                if field.name() != "pixels" {
                    self.ensure_array(&column.to_data())?;
                }
            }
        }
        let classes = self.meta.classes.len();
        if let Some(labels) = batch
            .column_by_name("label")
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            && let Some(bad) = labels.values().iter().find(|&&l| l < 0 || l as usize >= classes)
        {
            bail!(
                "{}: record batch {i} has a row labelled {bad}, not one of its {classes} classes",
                self.path.display()
            );
        }
        Ok(Some(batch))
    }

    /// Where a block's bytes are in the file: `(offset, length, metadata length)`, or `None`
    /// when the footer puts them outside it.
    fn block_span(&self, block: &Block) -> Option<(usize, usize, usize)> {
        let offset = usize::try_from(block.offset()).ok()?;
        let meta_len = usize::try_from(block.metaDataLength()).ok()?;
        let len = usize::try_from(block.bodyLength()).ok()?.checked_add(meta_len)?;
        (offset.checked_add(len)? <= self.map.len()).then_some((offset, len, meta_len))
    }

    /// Checks a block's message before Arrow decodes it: an uncompressed record batch (as
    /// this tool writes them) whose buffers are as Arrow's decoder will take them for the
    /// file's schema: each inside the `body_len` bytes of the body, 8-byte aligned (as the
    /// format requires), and a whole number of the values it holds.
    fn check_message(&self, meta: &[u8], body_len: usize) -> Result<()> {
        // The message: an optional continuation marker, its length, the flatbuffer.
        let start = if meta.get(..4) == Some(&[0xff; 4]) { 8 } else { 4 };
        let message = meta
            .get(start..)
            .filter(|m| !m.is_empty())
            .context("the block's metadata is too short")?;
        let message = arrow_ipc::root_as_message(message).map_err(|e| anyhow::anyhow!("bad message: {e}"))?;
        let Some(batch) = message.header_as_record_batch() else {
            return Ok(());
        };
        if batch.compression().is_some() {
            bail!("the record batch is compressed; artifacts never are");
        }
        let mut buffers = batch.buffers().into_iter().flatten();
        let mut next = |width: u64| -> Result<()> {
            // Fewer buffers than the schema needs: the decoder says so itself.
            let Some(b) = buffers.next() else { return Ok(()) };
            let (offset, length) = (u64::try_from(b.offset()), u64::try_from(b.length()));
            let (Ok(offset), Ok(length)) = (offset, length) else {
                bail!("a buffer has a negative offset or length");
            };
            if offset.checked_add(length).is_none_or(|end| end > body_len as u64) {
                bail!("a buffer lies outside the record batch's body");
            }
            if offset % 8 != 0 || length % width != 0 {
                bail!("a buffer of {length} bytes at {offset} does not hold whole {width}-byte values");
            }
            Ok(())
        };
        for field in self.schema.fields() {
            buffers_of(field.data_type(), &mut next)?;
        }
        Ok(())
    }

    /// Checks every buffer of `array` (and of its children) as bytes of the mapped file.
    fn ensure_array(&self, array: &ArrayData) -> Result<()> {
        let nulls = array.nulls().map(|n| n.inner().inner());
        for buffer in array.buffers().iter().chain(nulls) {
            self.verifier
                .ensure(&self.map, Verifier::range_of(&self.map, buffer.as_slice()))?;
        }
        array.child_data().iter().try_for_each(|child| self.ensure_array(child))
    }
}

/// Walks the buffers a column of type `dt` has in a record batch message, in the decoder's
/// order, calling `next` with the width of the values each holds (1 for bytes and bitmaps).
fn buffers_of(dt: &arrow_schema::DataType, next: &mut impl FnMut(u64) -> Result<()>) -> Result<()> {
    use arrow_schema::DataType as T;
    next(1)?; // the validity bitmap
    match dt {
        T::Utf8 | T::Binary => {
            next(4)?;
            next(1)
        }
        T::LargeUtf8 | T::LargeBinary => {
            next(8)?;
            next(1)
        }
        T::Boolean => next(1),
        T::FixedSizeList(child, _) => buffers_of(child.data_type(), next),
        dt if dt.is_primitive() => next(dt.primitive_width().unwrap_or(1) as u64),
        other => bail!("a column of type {other}, which artifacts never have"),
    }
}
