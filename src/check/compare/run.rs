//! [`compare`]: one comparison from the files to the verdict, in named steps — read both
//! sides ([`OurSample::read`]), score the hypotheses, try other resizes when none explains the
//! external features, and write the text and JSON of the verdict.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cache::store::Cache;
use crate::check::compare::external::{External, read_external};
use crate::check::compare::hypothesis::{self, Step};
use crate::check::compare::{Comparison, MATCH_TOLERANCE, Ours, SAMPLE, STATS_TOLERANCE, Scored};
use crate::data::dataset::columns::{self, Rows};
use crate::data::dataset::{Dtype, reader};
use crate::data::lineage::LineageEntry;

/// Compares an external features file with the pipeline's features.
pub fn compare(path: &Path, ours: &Ours<'_>) -> Result<Comparison> {
    let (meta, _) = reader::open(ours.data, &ours.cache.integrity())?;
    let Some((shape, dtype)) = meta.pixels else {
        bail!("stage `{}` holds no pixels to compare with", ours.stage);
    };
    let ext = read_external(path, shape)?;
    let resize_at = meta
        .lineage
        .iter()
        .rposition(|e| e.kind == "resize")
        .context("the pipeline's lineage has no resize stage")?;
    let resize = &meta.lineage[resize_at];
    let steps = hypothesis::steps_of(&meta.lineage[resize_at + 1..])?;
    let mut text = header(path, ours.stage, dtype, shape, &ext);
    let mut findings: Vec<String> = Vec::new();
    if ext.integer {
        findings.push(format!(
            "integer dtype: the external features are {}, the pipeline's are {}; integer pixels reach a model \
             unscaled (cast to float32 and apply the pipeline's steps)",
            ext.dtype,
            dtype.name()
        ));
    }
    let sample = OurSample::read(ours.cache, resize, shape, &ext)?;
    let row_len = shape.iter().product::<usize>();
    let same_size = ext.row_len == row_len;
    if !same_size {
        findings.push(format!(
            "different size: the external rows hold {} values ({}), the pipeline's {row_len} ([{}, {}, {}])",
            ext.row_len,
            ext.shape
                .map_or("shape unknown".into(), |s| format!("[{}, {}, {}]", s[0], s[1], s[2])),
            shape[0],
            shape[1],
            shape[2]
        ));
    }
    let matched = ext.key.is_some() && !sample.matched.is_empty();
    let _ = writeln!(
        text,
        "   matched: {}",
        if matched {
            format!("{} rows by `{}`", sample.matched.len(), ext.key.unwrap_or("?"))
        } else if ext.key.is_some() {
            "no rows share a key with the pipeline's; comparing statistics only".into()
        } else {
            "no `id` or `path` column; comparing statistics only".into()
        }
    );
    let mut scored = if same_size {
        score_hypotheses(&steps, &sample, &ext, shape[2], matched)
    } else {
        Vec::new()
    };
    let tolerance = if matched { MATCH_TOLERANCE } else { STATS_TOLERANCE };
    let best_known = scored
        .iter()
        .filter(|s| s.score.is_finite())
        .min_by(|a, b| a.score.total_cmp(&b.score));
    // Resize size/filter hypotheses from the source images, when nothing else explains it.
    if best_known.is_none_or(|b| b.score > tolerance)
        && let (Some(root), Some(ext_shape)) = (ours.images_root, ext.shape)
    {
        let matched_rows = matched.then_some(sample.matched.as_slice());
        scored.extend(crate::check::compare::resize::hypotheses(
            root,
            &sample.paths,
            matched_rows,
            &ext,
            ext_shape,
            &steps,
        ));
    }
    scored.sort_by(|a, b| a.score.total_cmp(&b.score));
    write_hypotheses(&mut text, &scored, matched, tolerance);
    let consistent = verdict(&mut text, &mut findings, scored.first(), tolerance, matched);
    let json = serde_json::json!({
        "path": path.display().to_string(),
        "stage": ours.stage,
        "external": { "format": ext.kind, "dtype": ext.dtype, "rows": ext.rows, "row_len": ext.row_len,
                      "shape": ext.shape, "matched_by": ext.key.filter(|_| matched),
                      "matched_rows": if matched { sample.matched.len() } else { 0 } },
        "hypotheses": scored.iter().map(|s| serde_json::json!({"name": s.name, "score": s.score, "means": s.means, "fix": s.fix})).collect::<Vec<_>>(),
        "mismatches": findings,
        "consistent": consistent,
    });
    Ok(Comparison { text, consistent, json })
}

/// The first lines: what is compared with what.
fn header(path: &Path, stage: &str, dtype: Dtype, shape: [usize; 3], ext: &External) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "compare {} with stage `{stage}` ({} [{}, {}, {}]):",
        path.display(),
        dtype.name(),
        shape[0],
        shape[1],
        shape[2]
    );
    let _ = writeln!(
        text,
        "   external: {} {} rows of {} values, {}{}",
        ext.kind,
        ext.rows,
        ext.row_len,
        ext.dtype,
        ext.shape
            .map_or(String::new(), |s| format!(" [{}, {}, {}]", s[0], s[1], s[2]))
    );
    let _ = writeln!(text, "   external: {}", ext.signature.describe());
    text
}

/// The pipeline's resized rows the hypotheses are replayed on: those whose key the external
/// sample holds, or (without keys) a sample spread evenly over all rows — rows are sorted by
/// path, so the first rows alone would be one class.
struct OurSample {
    /// Resized pixels as `f32`.
    resized: Vec<Vec<f32>>,
    /// Per row: the index of its external sample row (`usize::MAX` when unmatched).
    matched: Vec<usize>,
    /// Per row: its source image path.
    paths: Vec<String>,
}

impl OurSample {
    fn read(cache: &Cache, resize: &LineageEntry, shape: [usize; 3], ext: &External) -> Result<OurSample> {
        let keyed: HashMap<&str, usize> = ext
            .sample
            .iter()
            .enumerate()
            .filter_map(|(i, (k, _))| k.as_deref().map(|k| (k, i)))
            .collect();
        let step = cache
            .record(&resize.fingerprint)
            .map_or(1, |r| (r.rows as usize).div_ceil(SAMPLE).max(1));
        let len = shape.iter().product::<usize>();
        let mut sample = OurSample {
            resized: Vec::new(),
            matched: Vec::new(),
            paths: Vec::new(),
        };
        let mut seen = 0usize;
        reader::for_each_batch(&cache.data_path(&resize.fingerprint), &cache.integrity(), |batch| {
            let rows = Rows::from_batch(batch)?;
            let px = columns::pixels_u8(batch)?;
            for (i, pixels) in px.chunks_exact(len).enumerate().take(rows.len()) {
                let take = match ext.key {
                    Some(k) => {
                        let key = if k == "id" { &rows.id[i] } else { &rows.path[i] };
                        keyed.get(key.as_str()).copied()
                    }
                    None => (sample.resized.len() < SAMPLE && seen.is_multiple_of(step)).then_some(usize::MAX),
                };
                seen += 1;
                if let Some(j) = take {
                    sample.resized.push(pixels.iter().map(|&v| f32::from(v)).collect());
                    sample.matched.push(j);
                    sample.paths.push(rows.path[i].clone());
                }
            }
            Ok(())
        })
        .with_context(|| {
            format!(
                "the resize artifact {} is not in the cache; run the pipeline first",
                resize.stage
            )
        })?;
        Ok(sample)
    }
}

/// Replays every hypothesis on our sample and scores it against the external features.
fn score_hypotheses(steps: &[Step], sample: &OurSample, ext: &External, channels: usize, matched: bool) -> Vec<Scored> {
    let theirs: Option<Vec<&[f32]>> =
        matched.then(|| sample.matched.iter().map(|&j| ext.sample[j].1.as_slice()).collect());
    hypothesis::hypotheses(steps)
        .iter()
        .map(|h| {
            let feats = hypothesis::replay(h, &sample.resized, channels);
            Scored {
                score: hypothesis::score(&feats, theirs.as_deref(), &ext.signature, channels),
                name: h.name.to_string(),
                means: h.means.clone(),
                fix: h.fix.clone(),
            }
        })
        .collect()
}

/// The closest hypotheses, and a note when statistics alone cannot tell the best two apart.
fn write_hypotheses(text: &mut String, scored: &[Scored], matched: bool, tolerance: f64) {
    let _ = writeln!(
        text,
        "   hypotheses ({}; lower is closer, {} explains):",
        if matched {
            "relative RMS error on matched rows"
        } else {
            "distance of statistics"
        },
        tolerance
    );
    for s in scored.iter().take(8) {
        let _ = writeln!(text, "     {:>9.4}  {:<22} {}", s.score, s.name, s.means);
    }
    if !matched
        && let [a, b, ..] = scored
        && b.score < 2.0 * a.score + 0.05
    {
        let _ = writeln!(
            text,
            "   note: statistics alone barely separate `{}` from `{}`; an `id` or `path` column in the external \
             file allows a row-by-row comparison",
            a.name, b.name
        );
    }
}

/// Writes the mismatches and the verdict; true when the external features are consistent.
fn verdict(
    text: &mut String,
    findings: &mut Vec<String>,
    best: Option<&Scored>,
    tolerance: f64,
    matched: bool,
) -> bool {
    let mut consistent = findings.is_empty();
    match best {
        Some(b) if b.score <= tolerance => {
            if b.name == "pipeline" {
                let _ = writeln!(
                    text,
                    "   values: consistent with the pipeline's preprocessing{}",
                    if matched { "" } else { " (by statistics)" }
                );
            } else {
                consistent = false;
                findings.push(format!("{}; to agree: {}", b.means, b.fix));
            }
        }
        Some(b) => {
            consistent = false;
            findings.push(format!(
                "no single known difference reproduces the external features; the closest is `{}` ({}) at {:.3}",
                b.name, b.means, b.score
            ));
        }
        None => {}
    }
    for f in findings.iter() {
        let _ = writeln!(text, "   mismatch: {f}");
    }
    let _ = writeln!(
        text,
        "   verdict: {}",
        if consistent { "consistent" } else { "MISMATCH" }
    );
    consistent
}
