//! Writing one artifact file batch by batch. Every byte is counted and BLAKE3-hashed on its
//! way to the file, so the cache record's size, checksum and chunk sums (what readers check
//! the bytes against, [`crate::data::integrity`]) come free with the write, and
//! the file is synced before [`ArtifactWriter::finish`] returns. Fault points after every
//! batch let the crash tests kill a write half done.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;

use crate::data::dataset::columns::{PixelValues, Rows};
use crate::data::dataset::{Meta, SegmentRef};
use crate::data::integrity::{ChunkHasher, ChunkSums};

/// A writer that counts and BLAKE3-hashes every byte on its way to the file.
struct HashingWriter<W> {
    inner: W,
    hasher: ChunkHasher,
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
    /// What readers check the file's chunks against.
    pub chunks: ChunkSums,
}

impl Written {
    /// What writing `bytes` as a whole file (a report, a model) amounts to.
    pub fn of(bytes: &[u8], rows: u64) -> Written {
        let (chunks, blake3) = ChunkSums::of(bytes);
        Written {
            rows,
            bytes: bytes.len() as u64,
            blake3,
            chunks,
        }
    }
}

impl ArtifactWriter {
    pub fn create(path: &Path, meta: Meta) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let schema = Arc::new(meta.schema());
        let sink = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: ChunkHasher::new(),
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
        self.write_batch(rows, pixels, None)
    }

    /// Writes rows of a segmented artifact: each row's (segment, row in it).
    pub fn write_refs(&mut self, rows: &Rows, refs: &[SegmentRef]) -> Result<()> {
        self.write_batch(rows, None, Some(refs))
    }

    /// One record batch of `rows` (none when there are no rows), then a fault point.
    fn write_batch(&mut self, rows: &Rows, pixels: Option<PixelValues>, refs: Option<&[SegmentRef]>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = rows.to_batch(&self.meta, &self.schema, pixels, refs)?;
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
        let (chunks, blake3) = sink.hasher.finish();
        Ok(Written {
            rows: self.rows,
            bytes: sink.bytes,
            blake3,
            chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::Dtype;

    fn rows(n: usize) -> Rows {
        Rows {
            id: (0..n).map(|i| format!("id{i}")).collect(),
            path: (0..n).map(|i| format!("{i}.png")).collect(),
            label: vec![0; n],
            class: vec!["cat".into(); n],
            partition: None,
        }
    }

    fn meta(has_partition: bool, pixels: Option<([usize; 3], Dtype)>) -> Meta {
        Meta {
            classes: vec!["cat".into()],
            has_partition,
            pixels,
            lineage: Vec::new(),
            pixels_from: None,
            segments: Vec::new(),
        }
    }

    #[test]
    fn written_numbers_are_those_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.arrow");
        let meta = meta(false, Some(([1, 2, 1], Dtype::Uint8)));
        let mut writer = ArtifactWriter::create(&path, meta).unwrap();
        writer
            .write(&rows(3), Some(PixelValues::U8(vec![1, 2, 3, 4, 5, 6])))
            .unwrap();
        // No rows, no batch: an empty write leaves the file as it was.
        writer.write(&rows(0), Some(PixelValues::U8(Vec::new()))).unwrap();
        writer.write(&rows(1), Some(PixelValues::U8(vec![7, 8]))).unwrap();
        let written = writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(written.rows, 4);
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(written.blake3, blake3::hash(&bytes).to_hex().to_string());
        assert_eq!(written.chunks, ChunkSums::of(&bytes).0);
        let reader = arrow_ipc::reader::FileReader::try_new(std::fs::File::open(&path).unwrap(), None).unwrap();
        assert_eq!(reader.num_batches(), 2);
    }

    #[test]
    fn rows_that_do_not_fit_the_artifact_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let meta = meta(true, None);
        let mut writer = ArtifactWriter::create(&dir.path().join("a.arrow"), meta).unwrap();
        let err = writer.write(&rows(1), None).unwrap_err();
        assert_eq!(err.to_string(), "rows lack the partition column");
        let with_partition = Rows {
            partition: Some(vec!["train".into()]),
            ..rows(1)
        };
        let err = writer
            .write(&with_partition, Some(PixelValues::U8(vec![1])))
            .unwrap_err();
        assert_eq!(err.to_string(), "pixel values given for an artifact that stores none");
    }
}
