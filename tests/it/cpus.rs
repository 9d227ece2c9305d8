//! The same bytes on every machine: the preprocessing stages run natively and under
//! `qemu-x86_64 -cpu MODEL` for CPUs without AVX-512, AVX2 or even SSSE3 (the crates pick
//! their SIMD paths by what the CPU reports), on real photos as PNGs and as JPEGs large
//! enough for the DCT-scaled decoder; every artifact must be the same file. Shards made on
//! different machines are merged, so this is what makes a merge trustworthy. scripts/test.sh
//! installs qemu-user.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::Project;

const PIPELINE: &str = "name: q\nseed: 7\nstages:\n  ingest: {kind: ingest, path: images}\n  \
                        split: {kind: split, train: 0.6, val: 0.2, test: 0.2}\n  \
                        resize: {kind: resize, size: [48, 64], filter: lanczos3}\n  \
                        mean_subtract: {kind: mean_subtract, mean: fit}\n  \
                        normalize: {kind: normalize, method: per_image}\n";

/// Shipped photos as PNGs, as 1024x768 JPEGs (decoded at 1/4 scale) and as small progressive-free
/// JPEGs (decoded whole).
fn project() -> Project {
    let repo = env!("CARGO_MANIFEST_DIR");
    let p = Project::new();
    std::fs::create_dir_all(p.path("images")).unwrap();
    for (k, class) in ["cat", "dog"].iter().enumerate() {
        for i in 0..9 {
            let photo = image::open(format!("{repo}/data/cats_dogs/{class}.{}.png", i * 7 + k))
                .unwrap()
                .to_rgb8();
            let (w, h, ext) = match i % 3 {
                0 => (32, 32, "png"),
                1 => (1024, 768, "jpg"),
                _ => (160, 120, "jpg"),
            };
            let img = image::imageops::resize(&photo, w, h, image::imageops::FilterType::CatmullRom);
            img.save(p.path(&format!("images/{class}.{i}.{ext}"))).unwrap();
        }
    }
    p.pipeline(PIPELINE);
    p
}

/// Every stage's artifact (by its pointer) as a BLAKE3 of its bytes, after a run by `runner`.
fn artifacts(p: &Project, runner: &[&str]) -> BTreeMap<String, String> {
    let _ = std::fs::remove_dir_all(p.path("cache"));
    let (program, args) = runner.split_first().unwrap();
    let out = Command::new(program)
        .args(args)
        .args([env!("CARGO_BIN_EXE_pipeline"), "run", "pipeline.yaml"])
        .current_dir(p.root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/test.sh installs qemu-user): {e}"));
    assert!(
        out.status.success(),
        "{runner:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ["ingest", "split", "resize", "mean_subtract", "normalize"]
        .iter()
        .map(|s| {
            let pointer = std::fs::read_to_string(p.path(&format!("cache/pipelines/q/{s}.json"))).unwrap();
            let v: serde_json::Value = serde_json::from_str(&pointer).unwrap();
            let file = p.path(&format!("cache/artifacts/{}.arrow", v["fingerprint"].as_str().unwrap()));
            (
                s.to_string(),
                blake3::hash(&std::fs::read(file).unwrap()).to_hex().to_string(),
            )
        })
        .collect()
}

#[test]
#[cfg(target_arch = "x86_64")]
fn preprocessing_makes_the_same_bytes_on_every_x86_64_simd_level() {
    let p = project();
    let native = artifacts(&p, &["env"]);
    // Haswell: AVX2, no AVX-512; Nehalem: SSE4.2, no AVX; qemu64: SSE3, no SSSE3.
    for cpu in ["Haswell", "Nehalem", "qemu64"] {
        assert_eq!(artifacts(&p, &["qemu-x86_64", "-cpu", cpu]), native, "-cpu {cpu}");
    }
}
