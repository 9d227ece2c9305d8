//! `pipeline`: declarative, content-hashed, cached image-classifier pipelines.
//!
//! The binary (`src/main.rs`) is the product; this library holds all of it so that the fuzz
//! targets in `fuzz/` can reach the parsers through [`fuzz`], and the Python package in
//! `python/` the pipeline through [`embed`].

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

/// The pipeline as a library for the Python package (`python/`): a pipeline file opened,
/// then a stage's frozen preprocessing, cached dataset, model and lineage.
pub mod embed {
    pub use crate::data::lineage::LineageEntry;
    pub use crate::ops::embed::{Dataset, Image, Project, on_pool, transform};
    pub use crate::ops::predict::{Frozen, Prediction, Predictor};
}

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

    /// Reads arbitrary bytes as what the cache holds, through every reader: the first byte
    /// picks what the rest is: 0 a stored artifact, 1 a view (of an intact stored one beside
    /// it), 2 a segmented artifact (of intact segments), 3 the record of an intact artifact in
    /// a cache. Artifacts are read with sums made from their own bytes, so the parsers see
    /// every input (a damaged chunk would stop them first); a record is read as the cache
    /// reads it.
    pub fn artifact(bytes: &[u8]) {
        let Some((&what, rest)) = bytes.split_first() else {
            return;
        };
        let dir = artifact_fixtures::dir();
        let integrity: std::sync::Arc<dyn crate::data::integrity::Integrity> =
            std::sync::Arc::new(artifact_fixtures::OwnSums::default());
        let target = match what % 4 {
            0 => dir.join("stored.arrow"),
            1 => dir.join("view.arrow"),
            2 => dir.join("main.arrow"),
            _ => {
                let Ok(cache) = crate::cache::store::Cache::open(&dir.join("cache")) else {
                    return;
                };
                if std::fs::write(dir.join("cache/artifacts/f0.json"), rest).is_ok() {
                    let _ = cache.lookup("f0");
                    artifact_fixtures::read_all(&cache.data_path("f0"), &cache.integrity());
                }
                return;
            }
        };
        if std::fs::write(&target, rest).is_ok() {
            artifact_fixtures::read_all(&target, &integrity);
        }
    }

    /// The first inputs of the `artifact` target: one intact input of each kind.
    pub fn artifact_seeds() -> Vec<Vec<u8>> {
        let dir = artifact_fixtures::dir();
        let seed = |what: u8, file: &str| {
            let mut bytes = vec![what];
            bytes.extend(std::fs::read(dir.join(file)).unwrap_or_default());
            bytes
        };
        vec![
            seed(0, "base.arrow"),
            seed(1, "view.seed"),
            seed(2, "main.seed"),
            seed(3, "cache/artifacts/f0.json"),
        ]
    }

    mod artifact_fixtures {
        use std::path::{Path, PathBuf};
        use std::sync::{Arc, OnceLock};

        use crate::data::dataset::columns::{PixelValues, Rows, pixels_as_f32};
        use crate::data::dataset::mapped::Mapped;
        use crate::data::dataset::writer::ArtifactWriter;
        use crate::data::dataset::{Dtype, Meta, reader};
        use crate::data::integrity::{Checked, ChunkSums, Integrity};
        use crate::data::lineage::{LineageEntry, Mean};

        /// Sums made from each file as it is: every byte passes its check.
        #[derive(Default)]
        pub struct OwnSums {
            checked: Checked,
        }

        impl Integrity for OwnSums {
            fn sums(&self, file: &Path) -> anyhow::Result<ChunkSums> {
                Ok(ChunkSums::of(&std::fs::read(file)?).0)
            }
            fn damaged(&self, _: &Path, _: &str) {}
            fn checked(&self) -> &Checked {
                &self.checked
            }
        }

        /// Everything the stages read of the artifact at `path`, by both readers.
        pub fn read_all(path: &Path, integrity: &Arc<dyn Integrity>) {
            if let Ok((meta, batches)) = reader::open(path, integrity) {
                for batch in batches {
                    let Ok(batch) = batch else { break };
                    let _ = Rows::from_batch(&batch);
                    if let Some((_, dtype)) = meta.pixels {
                        let _ = pixels_as_f32(&batch, dtype);
                    }
                }
            }
            if let Ok(mapped) = Mapped::open(path, integrity) {
                let _ = mapped.rows();
                let mut out = Vec::new();
                for i in 0..mapped.index.len().min(64) {
                    out.clear();
                    let _ = mapped.pixels_into(i, &mut out);
                    let _ = mapped.stored_u8(i);
                }
            }
        }

        /// A folder of intact artifacts, made once per process: `base.arrow` (stored `u8`,
        /// 2 batches), `view.seed` (a view of it: copied to `view.arrow` when fuzzed),
        /// `s0.arrow`/`s1.arrow` and `main.seed` (segmented), and a cache holding `f0`.
        pub fn dir() -> &'static Path {
            static DIR: OnceLock<PathBuf> = OnceLock::new();
            DIR.get_or_init(|| {
                let dir = std::env::temp_dir().join(format!("pipeline-fuzz-{}", std::process::id()));
                let _ = make(&dir);
                dir
            })
        }

        fn rows(prefix: &str, n: usize) -> Rows {
            Rows {
                id: (0..n).map(|i| format!("{prefix}{i}")).collect(),
                path: (0..n).map(|i| format!("cat/{prefix}{i}.png")).collect(),
                label: (0..n).map(|i| (i % 2) as i32).collect(),
                class: (0..n).map(|i| ["cat", "dog"][i % 2].to_string()).collect(),
                partition: Some((0..n).map(|i| ["train", "val", "test"][i % 3].to_string()).collect()),
            }
        }

        fn entry(stage: &str, kind: &str, params: serde_json::Value) -> LineageEntry {
            LineageEntry {
                stage: stage.into(),
                kind: kind.into(),
                version: 1,
                params,
                fingerprint: format!("{stage}-fp"),
                fitted: serde_json::Value::Null,
            }
        }

        fn meta(lineage: Vec<LineageEntry>, dtype: Dtype) -> Meta {
            Meta {
                classes: vec!["cat".into(), "dog".into()],
                has_partition: true,
                pixels: Some(([2, 2, 3], dtype)),
                lineage,
                pixels_from: None,
                segments: Vec::new(),
            }
        }

        fn stored(
            dir: &Path,
            name: &str,
            prefix: &str,
            batches: &[usize],
        ) -> anyhow::Result<crate::data::dataset::writer::Written> {
            let lineage = vec![
                entry("ingest", "ingest", serde_json::json!({})),
                entry("resize", "resize", serde_json::json!({ "size": [2, 2] })),
            ];
            let mut w = ArtifactWriter::create(&dir.join(name), meta(lineage, Dtype::Uint8))?;
            let mut at = 0;
            for &n in batches {
                let r = rows(prefix, at + n).select(&(at..at + n).collect::<Vec<_>>());
                w.write(
                    &r,
                    Some(PixelValues::U8((0..n * 12).map(|v| (v * 13 + at) as u8).collect())),
                )?;
                at += n;
            }
            w.finish()
        }

        fn make(dir: &Path) -> anyhow::Result<()> {
            std::fs::create_dir_all(dir)?;
            stored(dir, "base.arrow", "a", &[3, 2])?;
            let mut view = meta(
                vec![
                    entry("ingest", "ingest", serde_json::json!({})),
                    entry("resize", "resize", serde_json::json!({ "size": [2, 2] })),
                    entry("center", "mean_subtract", Mean::Constant([1.0, 2.0, 3.0]).to_json()),
                ],
                Dtype::Float32,
            );
            view.pixels_from = Some("base.arrow".into());
            let mut w = ArtifactWriter::create(&dir.join("view.seed"), view)?;
            w.write(&rows("a", 5), None)?;
            w.finish()?;
            stored(dir, "s0.arrow", "s", &[3])?;
            stored(dir, "s1.arrow", "t", &[2])?;
            let mut seg = meta(
                vec![
                    entry("ingest", "ingest", serde_json::json!({})),
                    entry("resize", "resize", serde_json::json!({ "size": [2, 2] })),
                ],
                Dtype::Uint8,
            );
            seg.segments = vec!["s0.arrow".into(), "s1.arrow".into()];
            let mut w = ArtifactWriter::create(&dir.join("main.seed"), seg)?;
            w.write_refs(&rows("m", 4), &[(1, 1), (0, 0), (1, 0), (0, 2)])?;
            w.finish()?;
            let cache = crate::cache::store::Cache::open(&dir.join("cache"))?;
            let temp = cache.temp_path("f0");
            let written = stored(
                temp.parent().unwrap_or(dir),
                &temp.file_name().unwrap_or_default().to_string_lossy(),
                "c",
                &[4],
            )?;
            let record = crate::cache::store::Record {
                fingerprint: "f0".into(),
                format: crate::cache::store::Format::Arrow,
                kind: "resize".into(),
                version: 1,
                pipeline: "fuzz".into(),
                stage: "resize".into(),
                params: serde_json::json!({ "size": [2, 2] }),
                inputs: Vec::new(),
                content: None,
                rows: written.rows,
                bytes: written.bytes,
                blake3: written.blake3,
                chunks: Some(written.chunks),
                fitted: serde_json::Value::Null,
                summary: serde_json::Value::Null,
                seconds: 0.0,
                check_seconds: 0.0,
                created_unix: 0,
            };
            cache.commit(&temp, &record)
        }
    }
}

#[cfg(test)]
mod tests {
    /// The `artifact` fuzz target's seeds, and every one of them with one byte changed at
    /// a stride of positions (a small fuzz run in every test run): no input panics.
    #[test]
    fn the_artifact_target_survives_its_seeds_and_their_mutations() {
        let seeds = crate::fuzz::artifact_seeds();
        assert_eq!(seeds.len(), 4);
        for seed in &seeds {
            assert!(
                seed.len() > 200,
                "a seed of {} bytes: its fixtures were not made",
                seed.len()
            );
            crate::fuzz::artifact(seed);
            for at in (1..seed.len()).step_by(3) {
                for flip in [0x01, 0x80, 0xff] {
                    let mut input = seed.clone();
                    input[at] ^= flip;
                    crate::fuzz::artifact(&input);
                }
            }
            for cut in (1..seed.len()).step_by(11) {
                crate::fuzz::artifact(&seed[..cut]);
            }
        }
        for regression in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions/artifact"))
            .into_iter()
            .flatten()
            .flatten()
        {
            crate::fuzz::artifact(&std::fs::read(regression.path()).unwrap());
        }
    }
}

/// Writes the `artifact` target's seeds into `fuzz/corpus/artifact/` (run by hand when the
/// format changes: `cargo test --lib write_artifact_seeds -- --ignored`).
#[cfg(test)]
#[test]
#[ignore = "writes into the source tree"]
fn write_artifact_seeds() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/artifact");
    std::fs::create_dir_all(dir).unwrap();
    for (i, seed) in fuzz::artifact_seeds().iter().enumerate() {
        std::fs::write(format!("{dir}/seed-{i}"), seed).unwrap();
    }
}
