//! A cache built by an earlier binary (tests/fixtures/cache_v0, see its README) is fresh for
//! this one, and a run from an empty cache writes the same artifacts.

use std::fs;
use std::path::Path;

use crate::support::Project;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cache_v0");

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The artifact files of a cache (records aside: they hold timings), by name.
fn artifacts(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(cache.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".json") || n.ends_with(".report.json"))
        .collect();
    names.sort();
    names
}

/// The fixture's stages: one pointer file each in its cache.
fn stages() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(Path::new(FIXTURE).join("cache/pipelines/compat"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .into_string()
                .unwrap()
                .trim_end_matches(".json")
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names.len(), 8, "the fixture has a stage of every kind: {names:?}");
    names
}

#[test]
fn cache_of_the_previous_layout_is_fresh() {
    let p = Project::new();
    copy_dir(Path::new(FIXTURE), p.root());
    let status = p.run(&["status", "pipeline.yaml"]).ok();
    for stage in stages() {
        assert_eq!(
            status
                .stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(stage.as_str()))
                .map(|l| l.split_whitespace().nth(1)),
            Some(Some("fresh")),
            "{stage} is not fresh:\n{}",
            status.stdout
        );
    }
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    for stage in stages() {
        assert!(run.cached(&stage), "{stage} was not reused:\n{}", run.stdout);
    }
    p.run(&["cache", "verify", "pipeline.yaml"]).ok();
}

#[test]
fn fresh_run_writes_the_previous_layouts_artifacts() {
    let p = Project::new();
    copy_dir(&Path::new(FIXTURE).join("images"), &p.path("images"));
    fs::copy(Path::new(FIXTURE).join("pipeline.yaml"), p.path("pipeline.yaml")).unwrap();
    p.run(&["run", "pipeline.yaml"]).ok();
    let old = Path::new(FIXTURE).join("cache");
    let new = p.path("cache");
    assert_eq!(artifacts(&new), artifacts(&old), "the artifacts' fingerprints changed");
    // The model and what is computed from it may differ in the last bits on another CPU.
    let model_fp = |cache: &Path, stage: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(cache.join(format!("pipelines/compat/{stage}.json"))).unwrap())
                .unwrap();
        v["fingerprint"].as_str().unwrap().to_string()
    };
    let skip = [model_fp(&old, "train"), model_fp(&old, "evaluate")];
    for name in artifacts(&old) {
        if skip.iter().any(|fp| name.starts_with(fp.as_str())) {
            continue;
        }
        let (a, b) = (
            fs::read(old.join("artifacts").join(&name)).unwrap(),
            fs::read(new.join("artifacts").join(&name)).unwrap(),
        );
        assert!(a == b, "artifact {name} has other bytes than the previous layout wrote");
    }
}
