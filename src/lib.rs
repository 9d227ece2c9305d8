//! `pipeline`: declarative, content-hashed, cached image-classifier pipelines.
//!
//! The binary (`src/main.rs`) is the product; this library holds all of it so that the fuzz
//! targets in `fuzz/` can reach the parsers through [`fuzz`].

mod cache;
mod check;
pub mod cli;
mod data;
mod diagnose;
pub mod error;
mod kernel;
// Parts of the model API (whole-epoch training on in-memory data) serve its tests and
// the diagnose work to come.
#[allow(dead_code)]
mod model;
mod ops;
mod pipeline;
mod report;
mod source;
mod stage;

/// The closed lists the product defines, for tests that go through every one of them: the
/// stage kinds in pipeline order, and the checks of `pipeline diagnose` in run order.
pub mod catalog {
    pub use crate::diagnose::diagnosis::CHECKS;
    pub use crate::stage::params::KINDS;
}

/// Entry points for the fuzz targets (`fuzz/fuzz_targets/`). Each takes arbitrary bytes and
/// must return normally: an error is the right answer to bad input, a panic, hang or abort is
/// a bug.
pub mod fuzz {
    use std::path::Path;

    /// Parses, types and plans a pipeline file (as `pipeline check` does), and renders the
    /// problems it finds.
    pub fn pipeline_file(bytes: &[u8]) {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return;
        };
        if text.len() > crate::source::yaml::MAX_SOURCE_BYTES {
            return;
        }
        match crate::pipeline::plan::load_source(Path::new("fuzz/pipeline.yaml"), text, &[]) {
            Ok(plan) => {
                let _ = crate::pipeline::dag::dag(&plan, crate::pipeline::dag::DagFormat::Mermaid);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }

    /// Decodes an image file's bytes (with limits small enough for a fuzzer's memory) and
    /// resizes it, as `resize` does.
    pub fn image(bytes: &[u8]) {
        let limits = crate::data::decode::DecodeLimits {
            max_width: 4096,
            max_height: 4096,
            max_pixels: 4_000_000,
        };
        // The first byte picks the filter, the mode and the height, so every kernel is reached.
        use crate::kernel::resize::{Filter, Mode};
        let b = bytes.first().copied().unwrap_or(0);
        let resize = crate::stage::resize::Resize {
            size: [8 + u32::from(b >> 4), 24],
            filter: [Filter::Nearest, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3][usize::from(b & 3)],
            mode: [Mode::Stretch, Mode::Crop, Mode::Pad][usize::from(b >> 2 & 3) % 3],
            fill: [0, 0, 0],
            jpeg_scaling: b & 0x80 == 0,
        };
        let _ = resize.image_to_pixels(bytes, &limits);
    }
}
