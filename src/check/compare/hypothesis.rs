//! The hypotheses of a comparison: the pipeline's own steps after `resize` (read from the
//! lineage), each variant that gets one thing wrong, and their replay on resized pixels.

use anyhow::{Context, Result, bail};

use crate::check::compare::signature::Signature;
use crate::data::lineage::LineageEntry;
use crate::kernel::pixel;

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    MeanSubtract([f32; 3]),
    PerImage,
    DivideChannels([f32; 3]),
    Scale(f32),
    /// Per-channel z-score with statistics taken from the sample itself.
    ZScore,
}

/// A way the external features might have been made.
pub struct Hypothesis {
    pub name: &'static str,
    /// What differs, in words.
    pub means: String,
    /// What to change to make both agree.
    pub fix: String,
    pub reverse_input: bool,
    pub steps: Vec<Step>,
    pub reverse_output: bool,
}

/// Three numbers from a JSON array.
fn f3(v: Option<&serde_json::Value>) -> Option<[f32; 3]> {
    let a = v?.as_array()?;
    let x: Vec<f32> = a.iter().filter_map(|v| v.as_f64()).map(|v| v as f32).collect();
    (x.len() == 3).then(|| [x[0], x[1], x[2]])
}

/// The pipeline's steps after `resize`, from the lineage.
pub fn steps_of(lineage: &[LineageEntry]) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for e in lineage {
        let param = |k: &str| e.params.get(k).and_then(|v| v.as_str()).unwrap_or("");
        match e.kind.as_str() {
            "mean_subtract" => steps.push(Step::MeanSubtract(
                f3(e.params.get("mean_rgb"))
                    .or_else(|| f3(e.fitted.get("mean_rgb")))
                    .context("mean_subtract without a mean")?,
            )),
            "normalize" => match param("method") {
                "per_image" => steps.push(Step::PerImage),
                "per_channel" => steps.push(Step::DivideChannels(
                    f3(e.params.get("std"))
                        .or_else(|| f3(e.fitted.get("std_rgb")))
                        .context("normalize without a std")?,
                )),
                "scale" => steps.push(Step::Scale(
                    e.params.get("factor").and_then(|v| v.as_f64()).unwrap_or(1.0) as f32,
                )),
                other => bail!("unknown normalize method `{other}` in the lineage"),
            },
            _ => {}
        }
    }
    Ok(steps)
}

/// The pipeline as configured, then each known way of getting it wrong.
pub fn hypotheses(pipeline: &[Step]) -> Vec<Hypothesis> {
    let h = |name, means: &str, fix: &str, reverse_input, steps: Vec<Step>, reverse_output| Hypothesis {
        name,
        means: means.to_string(),
        fix: fix.to_string(),
        reverse_input,
        steps,
        reverse_output,
    };
    let has = |f: &dyn Fn(&Step) -> bool| pipeline.iter().any(f);
    let mut out = vec![h(
        "pipeline",
        "preprocessed exactly like the pipeline",
        "nothing",
        false,
        pipeline.to_vec(),
        false,
    )];
    out.push(h(
        "bgr",
        "channels in BGR order (as OpenCV's cv2.imread gives them); the pipeline's are RGB",
        "convert the external images to RGB first (cv2.cvtColor(img, cv2.COLOR_BGR2RGB)), or reverse the channel axis \
         of the features",
        false,
        pipeline.to_vec(),
        true,
    ));
    if let Some(Step::MeanSubtract(m)) = pipeline.iter().find(|s| matches!(s, Step::MeanSubtract(_))) {
        let without: Vec<Step> = pipeline
            .iter()
            .filter(|s| !matches!(s, Step::MeanSubtract(_)))
            .cloned()
            .collect();
        out.push(h(
            "no_mean_subtract",
            "mean subtraction missing",
            &format!(
                "the external code skips subtracting the per-channel mean [{:.3}, {:.3}, {:.3}] (RGB); add it, or \
                 remove the `mean_subtract` stage to match it",
                m[0], m[1], m[2]
            ),
            false,
            without,
            false,
        ));
        let mut swapped = m.to_vec();
        swapped.reverse();
        let swapped_steps: Vec<Step> = pipeline
            .iter()
            .map(|s| match s {
                Step::MeanSubtract(_) => Step::MeanSubtract([swapped[0], swapped[1], swapped[2]]),
                other => other.clone(),
            })
            .collect();
        out.push(h(
            "mean_order",
            "the channel means were subtracted in the other channel order (BGR constants on RGB pixels, or the \
             reverse)",
            "set `mean_subtract.channel_order` to the order the constants are written in",
            false,
            swapped_steps,
            false,
        ));
        out.push(h(
            "bgr_pixels_rgb_means",
            "BGR pixels (cv2.imread) with the means subtracted as if they were RGB",
            "convert the images to RGB before subtracting the means, or write the means in BGR order for BGR pixels",
            true,
            pipeline.to_vec(),
            false,
        ));
    }
    if has(&|s| *s == Step::PerImage) {
        out.push(h(
            "per_channel",
            "per-channel normalization where the pipeline normalizes per image",
            "use `normalize.method: per_image` in the external code (each image minus its mean, divided by its std), or \
             `method: per_channel` in the pipeline",
            false,
            pipeline.iter().map(|s| if *s == Step::PerImage { Step::ZScore } else { s.clone() }).collect(),
            false,
        ));
    } else {
        let mut with = pipeline.to_vec();
        with.push(Step::PerImage);
        out.push(h(
            "per_image",
            "per-image normalization where the pipeline does not normalize per image",
            "set `normalize.method: per_image` in the pipeline, or drop per-image standardization from the external code",
            false,
            with,
            false,
        ));
    }
    let normalizes = |s: &Step| matches!(s, Step::PerImage | Step::DivideChannels(_) | Step::Scale(_));
    if has(&normalizes) {
        out.push(h(
            "no_normalize",
            "normalization missing",
            "the external code skips the `normalize` stage's step",
            false,
            pipeline.iter().filter(|s| !normalizes(s)).cloned().collect(),
            false,
        ));
    }
    out.push(h(
        "raw",
        "raw pixel values (0..255) with no preprocessing after resizing",
        "apply the pipeline's `mean_subtract` and `normalize` steps, or use the pipeline's features",
        false,
        Vec::new(),
        false,
    ));
    out.push(h(
        "scaled",
        "pixels scaled to 0..1 (divided by 255) instead of the pipeline's steps",
        "use the pipeline's steps, or `normalize: {method: scale, factor: 0.00392156862745098}` to match",
        false,
        vec![Step::Scale(1.0 / 255.0)],
        false,
    ));
    out
}

/// Applies a hypothesis to resized `u8` rows (as f32), returning feature rows.
pub fn replay(h: &Hypothesis, rows: &[Vec<f32>], channels: usize) -> Vec<Vec<f32>> {
    let mut rows: Vec<Vec<f32>> = rows.to_vec();
    if h.reverse_input {
        rows.iter_mut().for_each(|r| reverse_channels(r, channels));
    }
    for step in &h.steps {
        match step {
            Step::MeanSubtract(m) => rows.iter_mut().for_each(|r| pixel::subtract_mean(r, m)),
            Step::PerImage => rows.iter_mut().for_each(|r| {
                pixel::standardize(r);
            }),
            Step::DivideChannels(s) => rows.iter_mut().for_each(|r| pixel::divide_channels(r, s)),
            Step::Scale(f) => rows.iter_mut().for_each(|r| pixel::scale(r, *f)),
            Step::ZScore => {
                let mut stats = pixel::ChannelStats::new(channels);
                rows.iter().for_each(|r| stats.add(r));
                let (m, s) = (stats.mean(), stats.std());
                let m: Vec<f32> = m.iter().map(|v| *v as f32).collect();
                let s: Vec<f32> = s.iter().map(|v| v.max(1e-12) as f32).collect();
                rows.iter_mut().for_each(|r| {
                    pixel::subtract_mean(r, &m);
                    pixel::divide_channels(r, &s);
                });
            }
        }
    }
    if h.reverse_output {
        rows.iter_mut().for_each(|r| reverse_channels(r, channels));
    }
    rows
}

/// Reverses the channel order of every pixel (RGB <-> BGR).
fn reverse_channels(row: &mut [f32], channels: usize) {
    for px in row.chunks_exact_mut(channels) {
        px.reverse();
    }
}

/// Relative RMS difference of two sets of rows.
pub fn rel_error(ours: &[Vec<f32>], theirs: &[&[f32]]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in ours.iter().zip(theirs) {
        for (x, y) in a.iter().zip(b.iter()) {
            num += f64::from(x - y).powi(2);
            den += f64::from(*y).powi(2);
        }
    }
    (num / den.max(1e-12)).sqrt()
}

/// How close replayed features are to the external ones: the relative RMS error against
/// `theirs` (the external rows matched to them) when rows are matched, else the distance of
/// their signature from the external file's.
pub fn score(feats: &[Vec<f32>], theirs: Option<&[&[f32]]>, external: &Signature, channels: usize) -> f64 {
    match theirs {
        Some(theirs) => rel_error(feats, theirs),
        None => {
            let mut sig = Signature::new(channels);
            feats.iter().for_each(|r| sig.add(r));
            external.distance(&sig)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_the_pipeline_and_its_variants() {
        let row: Vec<f32> = (0..12).map(|v| v as f32 * 10.0).collect();
        let steps = vec![Step::MeanSubtract([1.0, 2.0, 3.0]), Step::PerImage];
        let hs = hypotheses(&steps);
        let names: Vec<&str> = hs.iter().map(|h| h.name).collect();
        assert_eq!(
            names,
            [
                "pipeline",
                "bgr",
                "no_mean_subtract",
                "mean_order",
                "bgr_pixels_rgb_means",
                "per_channel",
                "no_normalize",
                "raw",
                "scaled"
            ]
        );
        let pipeline = replay(&hs[0], std::slice::from_ref(&row), 3);
        let bgr = replay(&hs[1], std::slice::from_ref(&row), 3);
        assert_eq!(pipeline[0][0], bgr[0][2]);
        let swapped = replay(&hs[4], std::slice::from_ref(&row), 3);
        assert_ne!(swapped, pipeline, "BGR pixels with RGB means is a different result");
        let raw = replay(&hs[7], std::slice::from_ref(&row), 3);
        assert_eq!(raw[0], row);
    }
}
