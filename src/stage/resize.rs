//! `resize`: decode every image and bring it to one size; output `u8` RGB, HWC.
//!
//! Reads the source files of its input's rows (relative to the ingest folder), checks each
//! file's SHA-256 against its row `id` (a file changed since ingest is an error, never used
//! silently), decodes it (EXIF orientation applied, grayscale replicated to RGB, alpha
//! dropped: see [`crate::data::decode`]) and resizes it with [`crate::kernel::resize`]. Images are
//! processed in parallel within bounded batches; the output keeps the input's row order.
//! Every unreadable file is reported, not just the first.

use std::fs;

use anyhow::{Result, bail};
use rayon::prelude::*;

use super::{Kind, Output, RunCtx};
use std::collections::HashMap;

use crate::data::dataset::columns::{PixelValues, Rows};
use crate::data::dataset::mapped::Mapped;
use crate::data::dataset::writer::ArtifactWriter;
use crate::data::dataset::{self, Dtype, reader};
use crate::data::decode::{DecodeLimits, decode_rgb8, decode_rgb8_for};
use crate::data::hash::sha256_hex;
use crate::kernel::resize::{Filter, Mode, resize_rgb8};
use crate::source::diag::Diagnostic;
use crate::source::fields::{Fields, get_choice, get_f64_list, get_u64};

/// Largest side accepted for `size`.
const MAX_SIDE: u64 = 8192;

#[derive(Clone, Debug)]
pub struct Resize {
    /// `[height, width]`.
    pub size: [u32; 2],
    pub filter: Filter,
    pub mode: Mode,
    pub fill: [u8; 3],
    /// JPEGs at least 8 times the target on both sides decode in the DCT domain at 1/4
    /// scale (see [`crate::data::decode::decode_rgb8_for`]); `jpeg_scaling: off` decodes every
    /// image at full size.
    pub jpeg_scaling: bool,
}

const FILTERS: &[(&str, Filter)] = &[
    ("nearest", Filter::Nearest),
    ("bilinear", Filter::Bilinear),
    ("bicubic", Filter::Bicubic),
    ("lanczos3", Filter::Lanczos3),
];
const MODES: &[(&str, Mode)] = &[("stretch", Mode::Stretch), ("crop", Mode::Crop), ("pad", Mode::Pad)];

fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], v: T) -> &'static str {
    table.iter().find(|(_, x)| *x == v).map_or("?", |(n, _)| n)
}

impl Kind for Resize {
    const KIND: &'static str = "resize";
    /// 2: Pillow-exact kernels (Nearest, Lanczos3 ported; Pillow's pass order).
    /// 3: DCT-scaled JPEG decoding for large downscales (`jpeg_scaling`).
    /// 4: the scaled decoder's portable colour conversion: the same bytes on every x86-64
    ///    SIMD level (its SSSE3 path rounds otherwise).
    /// 5: reduced JPEG decoding keeps at least twice the target (Pillow's `reducing_gap`
    ///    rule), at 1/4 only.
    const VERSION: u32 = 5;
    const PARAMS: &'static [&'static str] = &["size", "filter", "mode", "fill", "jpeg_scaling"];

    fn parse(f: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Self> {
        let size = f
            .require("size", "add `size: [32, 32]` (height, width)", diags)
            .and_then(|n| {
                let Some(items) = n.as_seq().filter(|s| s.len() == 2) else {
                    diags.push(
                        Diagnostic::new(
                            n.span,
                            format!("`size` must be `[height, width]`, found {}", n.describe()),
                        )
                        .with_help("e.g. `size: [224, 224]`"),
                    );
                    return None;
                };
                let h = get_u64(&items[0], "size", (1, MAX_SIDE), diags);
                let w = get_u64(&items[1], "size", (1, MAX_SIDE), diags);
                Some([h? as u32, w? as u32])
            });
        let filter = match f.get("filter") {
            Some(n) => get_choice(n, "filter", FILTERS, diags),
            None => Some(Filter::Bilinear),
        };
        let mode = match f.get("mode") {
            Some(n) => get_choice(n, "mode", MODES, diags),
            None => Some(Mode::Stretch),
        };
        let fill_node = f.get("fill");
        let fill = match fill_node {
            Some(n) => get_f64_list::<3>(n, "fill", (0.0, 255.0), diags).map(|v| v.map(|x| x.round() as u8)),
            None => Some([0, 0, 0]),
        };
        if let (Some(n), Some(m)) = (fill_node, mode)
            && m != Mode::Pad
        {
            diags.push(
                Diagnostic::new(n.span, "`fill` is only used with `mode: pad`")
                    .with_help("add `mode: pad` or remove `fill`"),
            );
        }
        let jpeg_scaling = match f.get("jpeg_scaling") {
            Some(n) => get_choice(n, "jpeg_scaling", &[("auto", true), ("off", false)], diags),
            None => Some(true),
        };
        Some(Resize {
            size: size?,
            filter: filter?,
            mode: mode?,
            fill: fill?,
            jpeg_scaling: jpeg_scaling?,
        })
    }

    fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "size": self.size,
            "filter": name_of(FILTERS, self.filter),
            "mode": name_of(MODES, self.mode),
        });
        if self.mode == Mode::Pad {
            v["fill"] = serde_json::json!(self.fill);
        }
        // The decoders and the scaling rule are part of what makes the pixels.
        v["jpeg_decode"] = serde_json::json!(if self.jpeg_scaling {
            crate::data::decode::SCALED_JPEG_DECODER
        } else {
            "zune-jpeg 0.5"
        });
        v
    }
}

impl Resize {
    /// Decodes one image file's bytes and resizes it: `u8` RGB HWC of `size`. The one code
    /// path for the stage and for `pipeline predict`.
    pub fn image_to_pixels(&self, bytes: &[u8], limits: &DecodeLimits) -> Result<Vec<u8>, String> {
        let [h, w] = self.size;
        let img = if self.jpeg_scaling {
            decode_rgb8_for(bytes, limits, (w, h))
        } else {
            decode_rgb8(bytes, limits)
        }
        .map_err(|e| e.to_string())?;
        self.pixels_to_pixels(&img.pixels, img.width, img.height)
    }

    /// Resizes decoded pixels (`u8` RGB HWC, `width` x `height`) as [`Resize::image_to_pixels`]
    /// does after decoding.
    pub fn pixels_to_pixels(&self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
        let [h, w] = self.size;
        resize_rgb8(rgb, width, height, w, h, self.filter, self.mode, self.fill).map_err(|e| e.to_string())
    }

    /// One image's pixels from its file: read, checked unchanged since ingest (by the stat the
    /// scan hashed, else by hashing it again), decoded and resized. The error says whether
    /// `on_error: skip` may skip it (a changed file never is).
    fn load_row(
        &self,
        ctx: &RunCtx<'_>,
        root: &std::path::Path,
        rel: &str,
        id: &str,
    ) -> Result<(Vec<u8>, Option<String>), (bool, String)> {
        let file = root.join(rel);
        let (bytes, stat) = read_with_stat(&file).map_err(|e| (true, format!("cannot read: {e}")))?;
        let known = ctx
            .stat_cache
            .and_then(|c| c.get(&file.to_string_lossy(), stat))
            .is_some_and(|sha| sha == id);
        if !known && sha256_hex(&bytes) != id {
            return Err((
                false,
                format!("changed since ingest (its SHA-256 is no longer {id}); run `pipeline run` again to re-ingest"),
            ));
        }
        let pixels = self.image_to_pixels(&bytes, &ctx.limits).map_err(|e| (true, e))?;
        Ok((pixels, crate::data::decode::exif_note(&bytes)))
    }

    pub fn run(&self, ctx: &RunCtx<'_>) -> Result<Output> {
        let input = ctx.input_path()?;
        let Some(root) = ctx.images_root.as_deref() else {
            bail!(
                "stage `{}` cannot find its images: no `ingest` upstream",
                ctx.entry.stage
            );
        };
        let (meta, reader) = reader::open(input, &ctx.integrity)?;
        if meta.pixels.is_some() {
            bail!(
                "stage `{}` reads the source images, but its input already holds pixels; put `resize` directly after `ingest` or `split`",
                ctx.entry.stage
            );
        }
        let [h, w] = self.size;
        let shape = [h as usize, w as usize, 3];
        let reuse = Reusable::open(ctx.previous.iter().chain(&ctx.donors), &ctx.integrity, &meta, shape);
        if let Some(r) = &reuse
            && let Some(out) = self.run_segmented(ctx, root, input, r, shape)?
        {
            return Ok(out);
        }
        let mut writer = ctx.writer(
            &meta,
            Some((shape, Dtype::Uint8)),
            meta.has_partition,
            &serde_json::Value::Null,
        )?;
        let batch_rows = writer.meta.rows_per_batch();
        let row_len = shape.iter().product::<usize>();
        let mut outcomes = Outcomes::default();
        // The writer runs on its own thread, one batch behind: writing (copying into the page
        // cache, hashing) overlaps decoding the next batch instead of idling the cores.
        let writer = std::thread::scope(|scope| -> Result<ArtifactWriter> {
            let (to_writer, batches) = std::sync::mpsc::sync_channel::<(Rows, Vec<u8>)>(1);
            let sink = scope.spawn(move || -> Result<ArtifactWriter> {
                for (rows, pixels) in batches {
                    writer.write(&rows, Some(PixelValues::U8(pixels)))?;
                }
                Ok(writer)
            });
            'batches: for batch in reader {
                let batch = batch?;
                let mut start = 0;
                while start < batch.num_rows() {
                    let len = batch_rows.min(batch.num_rows() - start);
                    let rows = Rows::from_batch(&batch.slice(start, len))?;
                    let results: Vec<RowResult> = rows
                        .path
                        .par_iter()
                        .zip(&rows.id)
                        .map(|(rel, id)| {
                            if let Some(pixels) = reuse.as_ref().and_then(|r| r.pixels(id)) {
                                return Ok((pixels.to_vec(), true, None));
                            }
                            self.load_row(ctx, root, rel, id).map(|(p, note)| (p, false, note))
                        })
                        .collect();
                    let paths: Vec<&str> = rows.path.iter().map(String::as_str).collect();
                    let (pixels, keep) = outcomes.sort(ctx, root, &paths, results, row_len);
                    if outcomes.failures.is_empty() {
                        let rows = if keep.len() == rows.len() {
                            rows
                        } else {
                            rows.select(&keep)
                        };
                        if to_writer.send((rows, pixels)).is_err() {
                            // The writer stopped on an error, which `join` below returns.
                            break 'batches;
                        }
                    }
                    if let Some(r) = &reuse {
                        r.release();
                    }
                    ctx.progress.inc(len as u64);
                    start += len;
                }
            }
            drop(to_writer);
            sink.join()
                .map_err(|_| anyhow::anyhow!("the artifact writer thread panicked"))?
        })?;
        outcomes.check()?;
        let written = writer.finish()?;
        if written.rows == 0 {
            bail!("no image could be used ({} skipped)", outcomes.skipped.len());
        }
        let mut summary = serde_json::Map::new();
        if !outcomes.skipped.is_empty() {
            summary.insert("skipped".into(), super::ingest::skipped_json(&outcomes.skipped));
        }
        if !outcomes.notes.is_empty() {
            summary.insert("notes".into(), notes_json(&outcomes.notes));
        }
        if reuse.is_some() {
            summary.insert("reused".into(), outcomes.reused.into());
        }
        Ok(Output {
            written,
            fitted: serde_json::Value::Null,
            summary: if summary.is_empty() {
                serde_json::Value::Null
            } else {
                summary.into()
            },
        })
    }
}

impl Resize {
    /// Images added to a folder mostly processed before: the new artifact stores no copy of
    /// the images its last artifact holds. Its rows name, per image, a segment file and a
    /// row in it: the segments of the last artifact (or the last artifact itself), plus one
    /// new segment, committed to the cache first, with the pixels of the images decoded now.
    /// `None` (decode and copy everything) when fewer than half the rows can be reused.
    fn run_segmented(
        &self,
        ctx: &RunCtx<'_>,
        root: &std::path::Path,
        input: &std::path::Path,
        reuse: &Reusable,
        shape: [usize; 3],
    ) -> Result<Option<Output>> {
        let Some(cache) = ctx.cache else { return Ok(None) };
        let data = Mapped::open(input, &ctx.integrity)?;
        let (meta, all) = (&data.meta, data.rows()?);
        let found: Vec<Option<(u16, u32)>> = all.id.iter().map(|id| reuse.locate(id)).collect();
        let reused = found.iter().filter(|f| f.is_some()).count();
        let mut segments = reuse.segments();
        if reused * 2 < all.len() || segments.len() >= usize::from(u16::MAX) {
            return Ok(None);
        }
        // The new images, decoded in parallel batches into the new segment.
        let new_rows: Vec<usize> = (0..all.len()).filter(|&i| found[i].is_none()).collect();
        let seg_fp = crate::data::hash::sha256_hex(format!("{}:new-images", ctx.entry.fingerprint).as_bytes());
        let seg_index = segments.len() as u16;
        let row_len = shape.iter().product::<usize>();
        let out_meta = ctx.output_meta(
            meta,
            Some((shape, Dtype::Uint8)),
            meta.has_partition,
            &serde_json::Value::Null,
        );
        let mut seg_row: Vec<Option<u32>> = vec![None; all.len()];
        let mut outcomes = Outcomes::default();
        let started = std::time::Instant::now();
        if !new_rows.is_empty() {
            let temp = cache.temp_path(&seg_fp);
            let mut writer = ArtifactWriter::create(&temp, out_meta.clone())?;
            let mut next = 0u32;
            for chunk in new_rows.chunks(writer.meta.rows_per_batch()) {
                let results: Vec<RowResult> = chunk
                    .par_iter()
                    .map(|&i| {
                        self.load_row(ctx, root, &all.path[i], &all.id[i])
                            .map(|(p, note)| (p, false, note))
                    })
                    .collect();
                let paths: Vec<&str> = chunk.iter().map(|&i| all.path[i].as_str()).collect();
                let (pixels, keep) = outcomes.sort(ctx, root, &paths, results, row_len);
                let keep: Vec<usize> = keep.into_iter().map(|k| chunk[k]).collect();
                for &i in &keep {
                    seg_row[i] = Some(next);
                    next += 1;
                }
                if outcomes.failures.is_empty() {
                    writer.write(&all.select(&keep), Some(PixelValues::U8(pixels)))?;
                }
                ctx.progress.inc(chunk.len() as u64);
            }
            if let Err(e) = outcomes.check() {
                drop(writer);
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
            let written = writer.finish()?;
            if written.rows > 0 {
                cache.commit(
                    &temp,
                    &crate::cache::store::Record {
                        fingerprint: seg_fp.clone(),
                        format: crate::cache::store::Format::Arrow,
                        kind: Self::KIND.into(),
                        version: Self::VERSION,
                        pipeline: String::new(),
                        stage: format!("{} (new images)", ctx.entry.stage),
                        params: ctx.entry.params.clone(),
                        inputs: Vec::new(),
                        content: None,
                        rows: written.rows,
                        bytes: written.bytes,
                        blake3: written.blake3,
                        chunks: Some(written.chunks),
                        fitted: serde_json::Value::Null,
                        summary: serde_json::json!({ "segment_of": ctx.entry.fingerprint }),
                        seconds: started.elapsed().as_secs_f64(),
                        check_seconds: 0.0,
                        created_unix: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                    },
                )?;
                segments.push(format!("{seg_fp}.arrow"));
            } else {
                let _ = fs::remove_file(&temp);
            }
        }
        // The rows: every image that has pixels, in input order, with where they are.
        let mut out_meta = out_meta;
        out_meta.segments = segments.clone();
        // Batches of as many rows as a stored batch, so a reader gathers a bounded amount.
        let out_meta_rows = out_meta.rows_per_batch();
        let mut writer = ArtifactWriter::create(&ctx.out_path, out_meta)?;
        let keep: Vec<usize> = (0..all.len())
            .filter(|&i| found[i].is_some() || seg_row[i].is_some())
            .collect();
        for chunk in keep.chunks(out_meta_rows) {
            let refs: Vec<(u16, u32)> = chunk
                .iter()
                .map(|&i| found[i].unwrap_or((seg_index, seg_row[i].unwrap_or(0))))
                .collect();
            writer.write_refs(&all.select(chunk), &refs)?;
        }
        ctx.progress.inc(reused as u64);
        let written = writer.finish()?;
        let fps: Vec<&str> = segments.iter().map(|s| s.trim_end_matches(".arrow")).collect();
        let mut summary = serde_json::json!({ "reused": reused, "segments": fps });
        if !ctx.donors.is_empty() {
            summary["shards"] = ctx.donors.len().into();
        }
        if !outcomes.skipped.is_empty() {
            summary["skipped"] = super::ingest::skipped_json(&outcomes.skipped);
        }
        if !outcomes.notes.is_empty() {
            summary["notes"] = notes_json(&outcomes.notes);
        }
        Ok(Some(Output {
            written,
            fitted: serde_json::Value::Null,
            summary,
        }))
    }
}

/// Per row: the pixels and whether they were reused, or (whether `on_error: skip` may skip
/// it, the reason).
/// A row's pixels, whether they were reused, and a note on its file (an EXIF block that
/// cannot be read, say); or whether `on_error: skip` may skip it, and why it failed.
type RowResult = Result<(Vec<u8>, bool, Option<String>), (bool, String)>;

/// What became of the images so far. Files that do not decode are, under `on_error: skip`
/// (on `ingest`), left out and recorded; otherwise all listed in one error. A file changed
/// since ingest always stops the run.
#[derive(Default)]
struct Outcomes {
    failures: Vec<String>,
    skipped: Vec<(String, String)>,
    /// Files used with a note (path, note).
    notes: Vec<(String, String)>,
    reused: u64,
}

impl Outcomes {
    /// Sorts a chunk's results (row k's path is `paths[k]`): the pixels of the rows kept, in
    /// order, and their positions in the chunk.
    fn sort(
        &mut self,
        ctx: &RunCtx<'_>,
        root: &std::path::Path,
        paths: &[&str],
        results: Vec<RowResult>,
        row_len: usize,
    ) -> (Vec<u8>, Vec<usize>) {
        let mut pixels = Vec::with_capacity(results.len() * row_len);
        let mut keep = Vec::with_capacity(results.len());
        for (k, r) in results.into_iter().enumerate() {
            match r {
                Ok((p, was_reused, note)) => {
                    pixels.extend_from_slice(&p);
                    keep.push(k);
                    self.reused += u64::from(was_reused);
                    if let Some(note) = note {
                        self.notes.push((paths[k].to_string(), note));
                    }
                }
                Err((true, why)) if ctx.skip_errors => self.skipped.push((paths[k].to_string(), why)),
                Err((_, why)) => self.failures.push(format!("{}: {why}", root.join(paths[k]).display())),
            }
        }
        (pixels, keep)
    }

    /// The error listing every image that could not be used, if any.
    fn check(&self) -> Result<()> {
        if !self.failures.is_empty() {
            bail!(
                "{} image(s) could not be used:\n  {}\nfix or remove them, or add `on_error: skip` to the `ingest` \
                 stage to go on without them",
                self.failures.len(),
                self.failures.join("\n  ")
            );
        }
        Ok(())
    }
}

/// The record's list of files used with a note: `[{"path": …, "note": …}]`.
fn notes_json(notes: &[(String, String)]) -> serde_json::Value {
    notes
        .iter()
        .map(|(p, n)| serde_json::json!({ "path": p, "note": n }))
        .collect()
}

/// A file's bytes and the stat of the very file read (not of a path that may have been
/// replaced in between).
fn read_with_stat(path: &std::path::Path) -> std::io::Result<(Vec<u8>, crate::data::file::FileStat)> {
    use std::io::Read as _;
    let mut file = fs::File::open(path)?;
    let stat = crate::data::file::FileStat::of(&file.metadata()?);
    let mut bytes = Vec::with_capacity(stat.size as usize);
    file.read_to_end(&mut bytes)?;
    Ok((bytes, stat))
}

/// Artifacts made before with this stage's params whose rows a new artifact reuses: the
/// stage's last artifact in this pipeline, and in a merge of shards, the shards' parts. Their
/// segments (or the artifacts themselves) become the new artifact's first segments, in order.
struct Reusable {
    donors: Vec<Donor>,
    /// Image `id` -> (donor, row in it); the first donor holding an image gives it.
    rows: HashMap<String, (usize, usize)>,
}

/// One artifact [`Reusable`] draws on, with where its segments start among all of them.
struct Donor {
    data: Mapped,
    /// The artifact's file name.
    file: String,
    /// The index of its first segment in [`Reusable::segments`].
    first_segment: usize,
}

impl Donor {
    fn open(
        path: &std::path::Path,
        integrity: &std::sync::Arc<dyn crate::data::integrity::Integrity>,
        input: &dataset::Meta,
        shape: [usize; 3],
    ) -> Option<Donor> {
        let data = match Mapped::open(path, integrity) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "artifact not reusable");
                return None;
            }
        };
        let ingest = |lineage: &[crate::data::lineage::LineageEntry]| {
            lineage.iter().find(|e| e.kind == super::ingest::Ingest::KIND).map(|e| {
                // A shard's part was ingested with the same params but for its shard.
                let mut params = e.params.clone();
                if let Some(p) = params.as_object_mut() {
                    p.remove("shard");
                }
                params
            })
        };
        if data.meta.pixels != Some((shape, Dtype::Uint8)) || ingest(&data.meta.lineage) != ingest(&input.lineage) {
            return None;
        }
        let file = path.file_name()?.to_str()?.to_string();
        Some(Donor {
            data,
            file,
            first_segment: 0,
        })
    }

    /// Its segment files: its own segments, or itself.
    fn segments(&self) -> Vec<String> {
        if self.data.meta.segments.is_empty() {
            vec![self.file.clone()]
        } else {
            self.data.meta.segments.clone()
        }
    }
}

impl Reusable {
    /// The donors among `paths` that hold pixels of this shape from the same ingest params;
    /// `None` when none does.
    fn open<'p>(
        paths: impl Iterator<Item = &'p std::path::PathBuf>,
        integrity: &std::sync::Arc<dyn crate::data::integrity::Integrity>,
        input: &dataset::Meta,
        shape: [usize; 3],
    ) -> Option<Reusable> {
        let mut donors: Vec<Donor> = paths.filter_map(|p| Donor::open(p, integrity, input, shape)).collect();
        let mut rows = HashMap::new();
        let mut first_segment = 0;
        for (d, donor) in donors.iter_mut().enumerate() {
            donor.first_segment = first_segment;
            first_segment += donor.segments().len();
            for (i, id) in donor.data.ids().ok()?.into_iter().enumerate() {
                rows.entry(id).or_insert((d, i));
            }
        }
        (!donors.is_empty()).then_some(Reusable { donors, rows })
    }

    /// The segment files a segmented successor starts from: every donor's, in order.
    fn segments(&self) -> Vec<String> {
        self.donors.iter().flat_map(Donor::segments).collect()
    }

    /// Where the image `id` is in [`Reusable::segments`], if a donor holds it.
    fn locate(&self, id: &str) -> Option<(u16, u32)> {
        let &(d, j) = self.rows.get(id)?;
        let donor = &self.donors[d];
        let (segment, row) = match donor.data.segment_of(j) {
            Some((_, at)) => at,
            None => (0, u32::try_from(j).ok()?),
        };
        Some((u16::try_from(donor.first_segment + usize::from(segment)).ok()?, row))
    }

    /// Lets go of the pages copied so far (see [`Mapped::release_pages`]).
    fn release(&self) {
        for donor in &self.donors {
            donor.data.release_pages();
        }
    }

    fn pixels(&self, id: &str) -> Option<&[u8]> {
        let &(d, j) = self.rows.get(id)?;
        self.donors[d].data.stored_u8(j).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::Meta;
    use crate::data::dataset::writer::ArtifactWriter;
    use crate::data::lineage::LineageEntry;

    /// An ingest-like artifact listing `files` (path, id) in `dir`.
    fn ingest_artifact(dir: &std::path::Path, files: &[(&str, String)]) -> std::path::PathBuf {
        let path = dir.join("ingest.arrow");
        let meta = Meta {
            classes: vec!["cat".into()],
            has_partition: false,
            pixels: None,
            lineage: Vec::new(),
            pixels_from: None,
            segments: Vec::new(),
        };
        let mut w = ArtifactWriter::create(&path, meta).unwrap();
        let rows = Rows {
            id: files.iter().map(|(_, id)| id.clone()).collect(),
            path: files.iter().map(|(p, _)| p.to_string()).collect(),
            label: vec![0; files.len()],
            class: vec!["cat".into(); files.len()],
            partition: None,
        };
        w.write(&rows, None).unwrap();
        w.finish().unwrap();
        path
    }

    #[test]
    fn a_file_changed_since_ingest_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_pixel(5, 4, image::Rgb([10, 20, 30]));
        img.save(dir.path().join("cat.0.png")).unwrap();
        img.save(dir.path().join("cat.1.png")).unwrap();
        let good = sha256_hex(&fs::read(dir.path().join("cat.0.png")).unwrap());
        // cat.1.png was ingested with other content than it has now.
        let input = ingest_artifact(
            dir.path(),
            &[("cat.0.png", good), ("cat.1.png", sha256_hex(b"old bytes"))],
        );
        let progress = indicatif::ProgressBar::hidden();
        let ctx = RunCtx {
            input: Some(input),
            images_root: Some(dir.path().to_path_buf()),
            // A changed file stops the run even under `on_error: skip`.
            skip_errors: true,
            limits: DecodeLimits::default(),
            seed: 0,
            entry: LineageEntry {
                stage: "resize".into(),
                kind: "resize".into(),
                version: Resize::VERSION,
                params: serde_json::Value::Null,
                fingerprint: "f".into(),
                fitted: serde_json::Value::Null,
            },
            out_path: dir.path().join("out.arrow"),
            progress: &progress,
            cache: None,
            integrity: crate::data::integrity::testing::trusting(),
            model_record: None,
            previous: None,
            donors: Vec::new(),
            stat_cache: None,
            warnings: Default::default(),
        };
        let stage = Resize {
            size: [2, 2],
            filter: Filter::Bilinear,
            mode: Mode::Stretch,
            fill: [0; 3],
            jpeg_scaling: true,
        };
        let err = stage.run(&ctx).err().expect("must fail").to_string();
        assert!(err.contains("1 image(s) could not be used"), "{err}");
        assert!(err.contains("cat.1.png: changed since ingest"), "{err}");
        assert!(!err.contains("cat.0.png"), "{err}");
    }
}
