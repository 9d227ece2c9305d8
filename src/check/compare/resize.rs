//! Resize hypotheses: a few source images re-decoded, resized to the external size with each
//! filter and put through the pipeline's steps — does another size or filter reproduce the
//! external rows?

use std::path::Path;

use crate::check::compare::external::External;
use crate::check::compare::hypothesis::{self, Hypothesis, Step};
use crate::check::compare::{SOURCE_SAMPLE, Scored};
use crate::data::decode::{DecodeLimits, decode_rgb8};
use crate::kernel::resize::{Filter, Mode, resize_rgb8};

/// Scores each filter at the external `[H, W, 3]` on up to [`SOURCE_SAMPLE`] of `paths`
/// (relative to `root`). `matched` gives, per path, its external sample row when rows are
/// matched by key; without it, signatures are compared.
pub fn hypotheses(
    root: &Path,
    paths: &[String],
    matched: Option<&[usize]>,
    ext: &External,
    ext_shape: [usize; 3],
    steps: &[Step],
) -> Vec<Scored> {
    if ext_shape[2] != 3 {
        return Vec::new();
    }
    let picks: Vec<usize> = (0..paths.len())
        .step_by((paths.len() / SOURCE_SAMPLE).max(1))
        .take(SOURCE_SAMPLE)
        .collect();
    let decoded: Vec<_> = picks
        .iter()
        .map(|&i| {
            let bytes = std::fs::read(root.join(&paths[i])).ok()?;
            decode_rgb8(&bytes, &DecodeLimits::default()).ok()
        })
        .collect();
    let replayed = Hypothesis {
        name: "resize",
        means: String::new(),
        fix: String::new(),
        reverse_input: false,
        steps: steps.to_vec(),
        reverse_output: false,
    };
    let mut out = Vec::new();
    for (name, filter) in [
        ("nearest", Filter::Nearest),
        ("bilinear", Filter::Bilinear),
        ("bicubic", Filter::Bicubic),
        ("lanczos3", Filter::Lanczos3),
    ] {
        let mut rows = Vec::new();
        let mut theirs = Vec::new();
        for (k, img) in picks.iter().zip(&decoded) {
            let Some(img) = img else { continue };
            let Ok(r) = resize_rgb8(
                &img.pixels,
                img.width,
                img.height,
                ext_shape[1] as u32,
                ext_shape[0] as u32,
                filter,
                Mode::Stretch,
                [0; 3],
            ) else {
                continue;
            };
            rows.push(r.iter().map(|&v| f32::from(v)).collect::<Vec<f32>>());
            if let Some(m) = matched {
                theirs.push(ext.sample[m[*k]].1.as_slice());
            }
        }
        if rows.is_empty() {
            continue;
        }
        let feats = hypothesis::replay(&replayed, &rows, 3);
        let theirs = matched.map(|_| theirs.as_slice());
        out.push(Scored {
            score: hypothesis::score(&feats, theirs, &ext.signature, 3),
            name: format!("resize {}x{} {name}", ext_shape[0], ext_shape[1]),
            means: format!("resized to [{}, {}] with the {name} filter", ext_shape[0], ext_shape[1]),
            fix: format!(
                "set `resize.size: [{}, {}]` and `resize.filter: {name}` to reproduce them",
                ext_shape[0], ext_shape[1]
            ),
        });
    }
    out
}
