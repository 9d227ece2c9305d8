//! Reading an artifact batch by batch, in file order, for the passes over a whole dataset
//! (stages, checks, export). Whatever the storage, [`Batches`] hands out batches with their
//! pixels: a file's own, a view's made from the stored artifact's as they stream past, or a
//! segmented artifact's gathered from its mapped segments. Batches are decoded zero-copy
//! from the mapped file, each block checked whole before it is decoded ([`IpcFile`]), with a
//! helper thread checking the chunks ahead ([`CheckAhead`]); the pages behind the reader
//! are given back as it goes, so a pass over a dataset larger than memory stays small.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::SchemaRef;

use crate::data::dataset::Meta;
use crate::data::dataset::columns::{PixelValues, pixel_column, segment_refs, string_column};
use crate::data::dataset::ipc::{Check, IpcFile};
use crate::data::dataset::mapped::{Mapped, open_segments};
use crate::data::dataset::views::ViewPixels;
use crate::data::integrity::{CheckAhead, Integrity};

/// Opens an artifact for batch-by-batch reading. A view's batches come with their pixels,
/// read from the stored artifact and passed through the view's steps.
pub fn open(path: &Path, integrity: &Arc<dyn Integrity>) -> Result<(Meta, Batches)> {
    let blocks = Blocks::open(path, integrity)?;
    let meta = blocks.file.meta.clone();
    let source = if let Some(from) = &meta.pixels_from {
        let base_path = path.with_file_name(from);
        let (base_meta, base) = open(&base_path, integrity)?;
        let pixels = ViewPixels::new(&meta, &base_meta, &base_path)?;
        Source::View(View {
            base: Box::new(base),
            pending: None,
            pixels,
            schema: Arc::new(meta.read_schema()),
        })
    } else if !meta.segments.is_empty() {
        Source::Segments {
            segments: open_segments(path, &meta, integrity)?,
            schema: Arc::new(meta.read_schema()),
        }
    } else {
        Source::File
    };
    Ok((meta, Batches { blocks, source }))
}

/// Opens an artifact's file as stored, alone: a view's batches have no `pixels` column (for
/// `cache verify`, which checks each file on its own; stages read rows through
/// [`Mapped::row_batches`], which reads no pixels at all).
pub fn open_file(path: &Path, integrity: &Arc<dyn Integrity>) -> Result<(Meta, Batches)> {
    let blocks = Blocks::open(path, integrity)?;
    let meta = blocks.file.meta.clone();
    let source = Source::File;
    Ok((meta, Batches { blocks, source }))
}

/// A file's record batches in order, each block checked whole, the chunks ahead checked by a
/// helper, the pages behind given back.
struct Blocks {
    file: IpcFile,
    next: usize,
    /// The file's bytes before this offset have been given back.
    released: usize,
    ahead: CheckAhead,
}

impl Blocks {
    fn open(path: &Path, integrity: &Arc<dyn Integrity>) -> Result<Blocks> {
        let file = IpcFile::open(path, integrity)?;
        let ahead = CheckAhead::start(file.map.clone(), file.verifier.clone());
        Ok(Blocks {
            file,
            next: 0,
            released: 0,
            ahead,
        })
    }
}

impl Iterator for Blocks {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        while self.next < self.file.num_batches() {
            let i = self.next;
            self.next += 1;
            let start = self.file.block_start(i);
            let chunk = self.file.verifier.chunk_bytes();
            self.ahead.reader_at(start, chunk);
            // The chunks wholly before the previous block are done with.
            let done = (self.file.block_start(i.saturating_sub(1)) as u64 / chunk * chunk) as usize;
            if done > self.released {
                // SAFETY: a private read-only mapping: dropped pages are read again from the
                // file if touched (a batch still held reads the same bytes).
                let _ = unsafe {
                    self.file.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        self.released,
                        done - self.released,
                    )
                };
                self.released = done;
            }
            match self.file.batch(i, Check::Whole) {
                Ok(Some(batch)) => return Some(Ok(batch)),
                Ok(None) => continue,
                Err(e) => {
                    self.next = self.file.num_batches();
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Calls `f` on every batch of the artifact, in order.
pub fn for_each_batch(
    path: &Path,
    integrity: &Arc<dyn Integrity>,
    mut f: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<Meta> {
    let (meta, reader) = open(path, integrity)?;
    for batch in reader {
        f(&batch.with_context(|| format!("reading {}", path.display()))?)?;
    }
    Ok(meta)
}

/// The batches of an artifact, in order; see [`open`].
pub struct Batches {
    blocks: Blocks,
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

impl Iterator for Batches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        let batch = match self.blocks.next()? {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        Some(match &mut self.source {
            Source::File => Ok(batch),
            Source::View(view) => view.materialize(batch),
            Source::Segments { segments, schema } => gather_segments(batch, segments, schema),
        })
    }
}

/// A view being read: the stored artifact's batches, consumed in step with the view's.
struct View {
    base: Box<Batches>,
    /// The stored batch being consumed and how many of its rows were used.
    pending: Option<(RecordBatch, usize)>,
    pixels: ViewPixels,
    schema: SchemaRef,
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

    /// The view's batch of rows `batch` with its `pixels` column.
    fn materialize(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let parts = self.take(string_column(&batch, "id")?)?;
        let mut cols = batch.columns().to_vec();
        cols.push(self.pixels.column(&parts, batch.num_rows())?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::columns::{Rows, pixels_as_f32, pixels_u8};
    use crate::data::dataset::writer::ArtifactWriter;
    use crate::data::dataset::{Dtype, TARGET_BATCH_BYTES};
    use crate::data::integrity::testing::trusting;
    use crate::data::lineage::{LineageEntry, Mean, Method};
    use serde_json::{Value, json};
    use std::path::PathBuf;

    fn entry(stage: &str, kind: &str, params: Value) -> LineageEntry {
        LineageEntry {
            stage: stage.into(),
            kind: kind.into(),
            version: 1,
            params,
            fingerprint: format!("{stage}-fp"),
            fitted: Value::Null,
        }
    }

    /// The lineage of a stored artifact: ingest, then resize.
    fn stored_lineage() -> Vec<LineageEntry> {
        vec![
            entry("ingest", "ingest", json!({})),
            entry("resize", "resize", json!({ "size": [2, 1] })),
        ]
    }

    fn meta(pixels: Option<([usize; 3], Dtype)>, lineage: Vec<LineageEntry>) -> Meta {
        Meta {
            classes: vec!["cat".into(), "dog".into()],
            has_partition: true,
            pixels,
            lineage,
            pixels_from: None,
            segments: Vec::new(),
        }
    }

    /// `n` rows whose ids start with `prefix`.
    fn rows(prefix: &str, n: usize) -> Rows {
        Rows {
            id: (0..n).map(|i| format!("{prefix}{i}")).collect(),
            path: (0..n)
                .map(|i| format!("{}/{prefix}{i}.png", ["cat", "dog"][i % 2]))
                .collect(),
            label: (0..n).map(|i| (i % 2) as i32).collect(),
            class: (0..n).map(|i| ["cat", "dog"][i % 2].to_string()).collect(),
            partition: Some((0..n).map(|i| ["train", "val"][i % 2].to_string()).collect()),
        }
    }

    /// Writes `meta` to `dir/name`, one record batch per entry of `batches`.
    fn write(dir: &Path, name: &str, meta: Meta, batches: Vec<(Rows, Option<PixelValues>)>) -> PathBuf {
        let path = dir.join(name);
        let mut writer = ArtifactWriter::create(&path, meta).unwrap();
        for (rows, pixels) in batches {
            writer.write(&rows, pixels).unwrap();
        }
        writer.finish().unwrap();
        path
    }

    /// Writes `meta` to `dir/two.arrow` as two batches, rows `a0..` with the pixels `first`
    /// and rows `b0..` with `second` (as many rows as each holds images); returns the path
    /// and all the rows.
    fn two_batches(dir: &Path, meta: &Meta, first: PixelValues, second: PixelValues) -> (PathBuf, Rows) {
        let row_len = meta.pixels.map_or(1, |(s, _)| s.iter().product::<usize>());
        let count = |v: &PixelValues| match v {
            PixelValues::U8(v) => v.len() / row_len,
            PixelValues::F32(v) => v.len() / row_len,
        };
        let (a, b) = (rows("a", count(&first)), rows("b", count(&second)));
        let mut all = a.clone();
        all.append(b.clone());
        let batches = vec![(a, Some(first)), (b, Some(second))];
        (write(dir, "two.arrow", meta.clone(), batches), all)
    }

    /// Everything a batch-by-batch read hands out: rows, pixels as `f32`, batch sizes.
    fn stream(path: &Path) -> Result<(Meta, Rows, Vec<f32>, Vec<usize>)> {
        let (meta, batches) = open(path, &trusting())?;
        let (mut rows, mut pixels, mut sizes) = (Rows::default(), Vec::new(), Vec::new());
        for batch in batches {
            let batch = batch?;
            rows.append(Rows::from_batch(&batch)?);
            if let Some((_, dtype)) = meta.pixels {
                pixels.extend_from_slice(&pixels_as_f32(&batch, dtype)?);
            }
            sizes.push(batch.num_rows());
        }
        Ok((meta, rows, pixels, sizes))
    }

    /// Everything the mapped reader hands out: rows and every row's pixels as `f32`.
    fn mapped(path: &Path) -> Result<(Mapped, Rows, Vec<f32>)> {
        let mapped = Mapped::open(path, &trusting())?;
        let rows = mapped.rows()?;
        let mut pixels = Vec::new();
        for i in 0..mapped.index.len() {
            mapped.pixels_into(i, &mut pixels)?;
        }
        Ok((mapped, rows, pixels))
    }

    fn assert_same_rows(a: &Rows, b: &Rows) {
        assert_eq!((&a.id, &a.path, &a.label), (&b.id, &b.path, &b.label));
        assert_eq!((&a.class, &a.partition), (&b.class, &b.partition));
    }

    #[test]
    fn u8_rows_and_pixels_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(Some(([1, 2, 3], Dtype::Uint8)), stored_lineage());
        let values: Vec<u8> = (0..5 * 6).map(|v| (v * 37 % 256) as u8).collect();
        let (path, all) = two_batches(
            dir.path(),
            &m,
            PixelValues::U8(values[..18].to_vec()),
            PixelValues::U8(values[18..].to_vec()),
        );
        let widened: Vec<f32> = values.iter().map(|&v| f32::from(v)).collect();

        let (read_meta, read_rows, pixels, sizes) = stream(&path).unwrap();
        assert_eq!(read_meta, m);
        assert_same_rows(&read_rows, &all);
        assert_eq!((pixels, sizes), (widened.clone(), vec![3, 2]));
        let mut stored = Vec::new();
        for_each_batch(&path, &trusting(), |batch| {
            stored.extend_from_slice(pixels_u8(batch)?);
            Ok(())
        })
        .unwrap();
        assert_eq!(stored, values);

        let (mapped, mapped_rows, pixels) = mapped(&path).unwrap();
        assert_eq!((&mapped.meta, mapped.row_len()), (&m, 6));
        assert_same_rows(&mapped_rows, &all);
        assert_eq!(pixels, widened);
        assert_eq!(mapped.stored_u8(4).unwrap(), &values[24..]);
        assert_eq!(mapped.ids().unwrap(), all.id);
    }

    #[test]
    fn f32_rows_and_pixels_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(Some(([2, 1, 3], Dtype::Float32)), stored_lineage());
        let values: Vec<f32> = (0..4 * 6).map(|v| v as f32 / 7.0 - 1.5).collect();
        let (path, all) = two_batches(
            dir.path(),
            &m,
            PixelValues::F32(values[..6].to_vec()),
            PixelValues::F32(values[6..].to_vec()),
        );
        let (read_meta, read_rows, pixels, sizes) = stream(&path).unwrap();
        assert_eq!(read_meta, m);
        assert_same_rows(&read_rows, &all);
        assert_eq!((&pixels, sizes), (&values, vec![1, 3]));
        let (mapped, mapped_rows, pixels) = mapped(&path).unwrap();
        assert_same_rows(&mapped_rows, &all);
        assert_eq!(pixels, values);
        let err = mapped.stored_u8(0).unwrap_err().to_string();
        assert_eq!(err, "the artifact does not store uint8 pixels");
    }

    #[test]
    fn rows_only_artifacts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(None, stored_lineage()[..1].to_vec());
        let path = write(dir.path(), "rows.arrow", m.clone(), vec![(rows("a", 4), None)]);
        let (read_meta, read_rows, pixels, _) = stream(&path).unwrap();
        assert_eq!(read_meta, m);
        assert_same_rows(&read_rows, &rows("a", 4));
        assert!(pixels.is_empty());
        let mapped = Mapped::open(&path, &trusting()).unwrap();
        let err = mapped.pixels_into(0, &mut Vec::new()).unwrap_err().to_string();
        assert_eq!(err, "the artifact holds no pixels");
    }

    #[test]
    fn batches_written_by_rows_per_batch_stay_within_target_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(Some(([512, 512, 3], Dtype::Uint8)), stored_lineage());
        let row_bytes = 512 * 512 * 3;
        let per_batch = m.rows_per_batch();
        let n = per_batch + 1;
        let all = rows("a", n);
        let values: Vec<u8> = (0..n * row_bytes).map(|i| (i / row_bytes) as u8).collect();
        let chunks = (0..n)
            .step_by(per_batch)
            .map(|start| {
                let idx: Vec<usize> = (start..n.min(start + per_batch)).collect();
                let px = values[idx[0] * row_bytes..(idx[idx.len() - 1] + 1) * row_bytes].to_vec();
                (all.select(&idx), Some(PixelValues::U8(px)))
            })
            .collect();
        let path = write(dir.path(), "big.arrow", m, chunks);
        let (_, batches) = open(&path, &trusting()).unwrap();
        let mut sizes = Vec::new();
        for batch in batches {
            let batch = batch.unwrap();
            assert!(pixels_u8(&batch).unwrap().len() <= TARGET_BATCH_BYTES);
            sizes.push(batch.num_rows());
        }
        assert_eq!(sizes, [per_batch, 1]);
    }

    /// A stored `u8` artifact (`base.arrow`, 5 rows of 1x2x3 in batches of 3 and 2) and the
    /// pixels of its rows.
    fn stored_base(dir: &Path) -> (PathBuf, Vec<u8>) {
        let values: Vec<u8> = (0..30).map(|v| v * 3).collect();
        let m = meta(Some(([1, 2, 3], Dtype::Uint8)), stored_lineage());
        let path = write(
            dir,
            "base.arrow",
            m,
            vec![
                (rows("a", 3), Some(PixelValues::U8(values[..18].to_vec()))),
                (rows("b", 2), Some(PixelValues::U8(values[18..].to_vec()))),
            ],
        );
        (path, values)
    }

    /// The meta of a view of `base.arrow`: mean subtraction of (1, 2, 3), then scaling by 0.5.
    fn view_meta() -> Meta {
        let mut lineage = stored_lineage();
        lineage.push(entry(
            "center",
            "mean_subtract",
            Mean::Constant([1.0, 2.0, 3.0]).to_json(),
        ));
        lineage.push(entry("scale", "normalize", Method::Scale(0.5).to_json()));
        Meta {
            pixels_from: Some("base.arrow".into()),
            ..meta(Some(([1, 2, 3], Dtype::Float32)), lineage)
        }
    }

    /// The base rows, in view batches that cut across the base's (1, then 4).
    fn view_batches() -> Vec<(Rows, Option<PixelValues>)> {
        let mut all = rows("a", 3);
        all.append(rows("b", 2));
        vec![(all.select(&[0]), None), (all.select(&[1, 2, 3, 4]), None)]
    }

    #[test]
    fn a_view_reads_its_pixels_through_its_steps() {
        let dir = tempfile::tempdir().unwrap();
        let (_, values) = stored_base(dir.path());
        let view = write(dir.path(), "view.arrow", view_meta(), view_batches());
        let expected: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (f32::from(v) - [1.0, 2.0, 3.0][i % 3]) * 0.5)
            .collect();
        let (read_meta, read_rows, pixels, sizes) = stream(&view).unwrap();
        assert_eq!(read_meta, view_meta());
        assert_eq!(read_rows.id, ["a0", "a1", "a2", "b0", "b1"]);
        assert_eq!((&pixels, sizes), (&expected, vec![1, 4]));
        let (mapped, _, pixels) = mapped(&view).unwrap();
        assert_eq!(pixels, expected);
        assert!(mapped.stored_u8(0).is_err(), "a view stores no pixels");
        // As stored, the view's file has no pixels column.
        for batch in open_file(&view, &trusting()).unwrap().1 {
            assert!(batch.unwrap().schema().field_with_name("pixels").is_err());
        }
    }

    /// Writes a base with `write_base` and a view of it: both readers must refuse the view
    /// with an error containing `message`.
    fn assert_view_refused(write_base: impl Fn(&Path), message: &str) {
        let dir = tempfile::tempdir().unwrap();
        write_base(dir.path());
        let view = write(dir.path(), "view.arrow", view_meta(), view_batches());
        let streamed = stream(&view).map(|_| ()).unwrap_err();
        let mapped = Mapped::open(&view, &trusting()).map(|_| ()).unwrap_err();
        for err in [streamed, mapped] {
            let err = format!("{err:#}");
            assert!(err.contains(message), "expected `{message}`, got: {err}");
        }
    }

    /// Writes `base.arrow` in `dir`: `rows` stored as `u8` pixels of `shape` after `lineage`.
    fn write_base(dir: &Path, shape: [usize; 3], lineage: Vec<LineageEntry>, rows: Rows) {
        let values = vec![0; rows.len() * shape.iter().product::<usize>()];
        let m = meta(Some((shape, Dtype::Uint8)), lineage);
        write(dir, "base.arrow", m, vec![(rows, Some(PixelValues::U8(values)))]);
    }

    #[test]
    fn a_view_of_another_base_is_an_error() {
        let not_the_base =
            "base.arrow is not the stored artifact this view was made from (its shape or lineage differs)";
        assert_view_refused(
            |dir| {
                let mut lineage = stored_lineage();
                lineage[1].fingerprint = "another-resize".into();
                write_base(dir, [1, 2, 3], lineage, rows("a", 5));
            },
            not_the_base,
        );
        assert_view_refused(
            |dir| write_base(dir, [2, 1, 3], stored_lineage(), rows("a", 5)),
            not_the_base,
        );
        assert_view_refused(
            |dir| {
                write(
                    dir,
                    "base.arrow",
                    meta(None, stored_lineage()),
                    vec![(rows("a", 5), None)],
                );
            },
            "stores no pixels, yet a view reads its pixels from it",
        );
        assert_view_refused(
            |dir| write_base(dir, [1, 2, 3], stored_lineage(), rows("z", 5)),
            "the view's rows are not those of the artifact storing its pixels",
        );
        assert_view_refused(|_| {}, "cannot open artifact");
    }

    #[test]
    fn a_segmented_artifact_gathers_its_rows_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let shape = ([1, 1, 2], Dtype::Uint8);
        let seg = |name: &str, prefix: &str, px: Vec<u8>| {
            let n = px.len() / 2;
            write(
                dir.path(),
                name,
                meta(Some(shape), stored_lineage()),
                vec![(rows(prefix, n), Some(PixelValues::U8(px)))],
            );
        };
        seg("s0.arrow", "a", vec![10, 11, 20, 21, 30, 31]);
        seg("s1.arrow", "b", vec![40, 41, 50, 51]);
        let m = Meta {
            segments: vec!["s0.arrow".into(), "s1.arrow".into()],
            ..meta(Some(shape), stored_lineage())
        };
        let refs = [(1, 1), (0, 0), (1, 0), (0, 2)];
        let path = dir.path().join("main.arrow");
        let mut writer = ArtifactWriter::create(&path, m.clone()).unwrap();
        let r = rows("m", 4);
        writer.write_refs(&r.select(&[0, 1, 2]), &refs[..3]).unwrap();
        writer.write_refs(&r.select(&[3]), &refs[3..]).unwrap();
        writer.finish().unwrap();

        let expected = [50.0, 51.0, 10.0, 11.0, 40.0, 41.0, 30.0, 31.0];
        let (read_meta, read_rows, pixels, sizes) = stream(&path).unwrap();
        assert_eq!(read_meta, m);
        assert_same_rows(&read_rows, &r);
        assert_eq!((&pixels[..], sizes), (&expected[..], vec![3, 1]));
        let (mapped, _, pixels) = mapped(&path).unwrap();
        assert_eq!(pixels, expected);
        assert_eq!(mapped.stored_u8(3).unwrap(), [30, 31]);
        assert_eq!(mapped.segment_of(2), Some((&m.segments[..], (1, 0))));
    }

    #[test]
    fn a_segment_of_another_shape_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let seg_meta = meta(Some(([1, 1, 3], Dtype::Uint8)), stored_lineage());
        write(
            dir.path(),
            "s0.arrow",
            seg_meta,
            vec![(rows("a", 1), Some(PixelValues::U8(vec![1, 2, 3])))],
        );
        let m = Meta {
            segments: vec!["s0.arrow".into()],
            ..meta(Some(([1, 1, 2], Dtype::Uint8)), stored_lineage())
        };
        let path = dir.path().join("main.arrow");
        let mut writer = ArtifactWriter::create(&path, m).unwrap();
        writer.write_refs(&rows("m", 1), &[(0, 0)]).unwrap();
        writer.finish().unwrap();
        for err in [
            stream(&path).map(|_| ()).unwrap_err(),
            Mapped::open(&path, &trusting()).map(|_| ()).unwrap_err(),
        ] {
            assert!(
                err.to_string()
                    .contains("does not store pixels as the segmented artifact"),
                "{err}"
            );
        }
    }

    /// Every kind of artifact over several chunks: a stored `u8` base (4 chunks, 2 batches),
    /// a stored `f32` one, a view of the base, and a segmented artifact with its two
    /// segments. Returns the files to damage, each with the artifact whose full read must
    /// then fail.
    fn every_kind(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
        let shape = [64, 64, 3];
        let row: usize = shape.iter().product();
        let lineage = stored_lineage;
        let u8s = |n: usize, seed: usize| -> Vec<u8> { (0..n * row).map(|i| ((i * 7 + seed) % 251) as u8).collect() };
        let many = |prefix: &str, n: usize, seed: usize| (rows(prefix, n), Some(PixelValues::U8(u8s(n, seed))));
        let base = write(
            dir,
            "base.arrow",
            meta(Some((shape, Dtype::Uint8)), lineage()),
            vec![many("a", 150, 0), many("b", 150, 1)],
        );
        let f32s: Vec<f32> = (0..40 * row).map(|i| (i % 97) as f32 / 13.0).collect();
        let floats = write(
            dir,
            "f32.arrow",
            meta(Some((shape, Dtype::Float32)), lineage()),
            vec![(rows("f", 40), Some(PixelValues::F32(f32s)))],
        );
        let mut view_rows = rows("a", 150);
        view_rows.append(rows("b", 150));
        let view_meta = Meta {
            pixels_from: Some("base.arrow".into()),
            ..meta(Some((shape, Dtype::Float32)), view_meta().lineage)
        };
        let view = write(
            dir,
            "view.arrow",
            view_meta,
            vec![
                (view_rows.select(&(0..100).collect::<Vec<_>>()), None),
                (view_rows.select(&(100..300).collect::<Vec<_>>()), None),
            ],
        );
        let s0 = write(
            dir,
            "s0.arrow",
            meta(Some((shape, Dtype::Uint8)), lineage()),
            vec![many("s", 120, 2)],
        );
        let s1 = write(
            dir,
            "s1.arrow",
            meta(Some((shape, Dtype::Uint8)), lineage()),
            vec![many("t", 100, 3)],
        );
        let main = dir.join("main.arrow");
        let mut writer = ArtifactWriter::create(
            &main,
            Meta {
                segments: vec!["s0.arrow".into(), "s1.arrow".into()],
                ..meta(Some((shape, Dtype::Uint8)), lineage())
            },
        )
        .unwrap();
        let refs: Vec<(u16, u32)> = (0..220u32)
            .map(|i| if i % 2 == 0 { (0, i / 2) } else { (1, i / 3) })
            .collect();
        writer.write_refs(&rows("m", 220), &refs).unwrap();
        writer.finish().unwrap();
        vec![
            (base.clone(), base.clone()),
            (floats.clone(), floats),
            (view.clone(), view.clone()),
            (base, view),
            (main.clone(), main.clone()),
            (s0, main.clone()),
            (s1, main),
        ]
    }

    #[test]
    fn damage_anywhere_in_any_kind_of_artifact_is_found_before_its_bytes_are_used() {
        use crate::data::integrity::testing::FromFiles;
        let dir = tempfile::tempdir().unwrap();
        let cases = every_kind(dir.path());
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (damaged, read) in &cases {
            let good = std::fs::read(damaged).unwrap();
            assert!(good.len() > 1 << 20 || damaged.ends_with("view.arrow") || damaged.ends_with("main.arrow"));
            for _ in 0..25 {
                let source = Arc::new(FromFiles::default());
                for (f, _) in &cases {
                    source.learn(f);
                }
                let integrity: Arc<dyn crate::data::integrity::Integrity> = source.clone();
                let at = (next() % good.len() as u64) as usize;
                let mut bytes = good.clone();
                bytes[at] ^= 1 + (next() % 255) as u8;
                std::fs::write(damaged, &bytes).unwrap();
                let what = format!(
                    "{} damaged at byte {at} of {}, reading {}",
                    damaged.display(),
                    good.len(),
                    read.display()
                );
                let streamed = (|| -> Result<()> {
                    let (_, batches) = open(read, &integrity)?;
                    for b in batches {
                        b?;
                    }
                    Ok(())
                })();
                assert!(streamed.is_err(), "streaming: {what}");
                let mapped = (|| -> Result<()> {
                    let m = Mapped::open(read, &integrity)?;
                    m.rows()?;
                    let mut out = Vec::new();
                    for i in 0..m.index.len() {
                        out.clear();
                        m.pixels_into(i, &mut out)?;
                    }
                    Ok(())
                })();
                assert!(mapped.is_err(), "mapped: {what}");
                let told = source.damaged.lock().unwrap().clone();
                assert!(
                    !told.is_empty() && told.iter().all(|t| t.contains(&*damaged.to_string_lossy())),
                    "{what}: {told:?}"
                );
            }
            std::fs::write(damaged, &good).unwrap();
        }
        // Undamaged, everything reads.
        let integrity = trusting();
        for (_, read) in &cases {
            open(read, &integrity).unwrap().1.for_each(|b| {
                b.unwrap();
            });
        }
    }

    #[test]
    fn truncated_and_garbage_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let (base, _) = stored_base(dir.path());
        let good = std::fs::read(&base).unwrap();
        let bad = dir.path().join("bad.arrow");
        let mut inputs: Vec<Vec<u8>> = (0..good.len()).step_by(7).map(|cut| good[..cut].to_vec()).collect();
        inputs.push(good[..good.len() - 1].to_vec());
        inputs.push(b"not an arrow file at all, just some text\n".to_vec());
        inputs.push(
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        );
        // A valid trailer whose footer length points before the start of the file.
        let mut lying = b"ARROW1\0\0".to_vec();
        lying.extend_from_slice(&i32::MAX.to_le_bytes());
        lying.extend_from_slice(b"ARROW1");
        inputs.push(lying);
        for bytes in inputs {
            std::fs::write(&bad, &bytes).unwrap();
            let len = bytes.len();
            assert!(stream(&bad).is_err(), "streaming a {len}-byte prefix");
            assert!(
                for_each_batch(&bad, &trusting(), |_| Ok(())).is_err(),
                "for_each_batch, {len} bytes"
            );
            assert!(Mapped::open(&bad, &trusting()).is_err(), "mapping {len} bytes");
        }
        let err = format!(
            "{:#}",
            Mapped::open(&dir.path().join("missing.arrow"), &trusting())
                .map(|_| ())
                .unwrap_err()
        );
        assert!(err.starts_with("cannot open artifact"), "{err}");
    }
}
