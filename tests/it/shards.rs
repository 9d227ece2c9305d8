//! Sharded runs: `--shard I/N` does the per-image stages for one shard of the files, and a
//! run without it merges the parts into what a single process makes.

use std::collections::BTreeMap;

use crate::shared::{S3, STAGES, machine, run};
use crate::support::{Project, Run};

/// Each stage's fingerprint in the project's cache (its pointers).
fn fingerprints(p: &Project) -> BTreeMap<String, String> {
    STAGES
        .iter()
        .map(|s| {
            let pointer = std::fs::read_to_string(p.path(&format!("cache/pipelines/m/{s}.json"))).unwrap();
            let v: serde_json::Value = serde_json::from_str(&pointer).unwrap();
            (s.to_string(), v["fingerprint"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The record of the artifact `stage` stands for now.
fn record(p: &Project, fingerprints: &BTreeMap<String, String>, stage: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(p.path(&format!("cache/artifacts/{}.json", fingerprints[stage]))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `resize` exported to one standalone Arrow file.
fn exported(p: &Project, args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    let mut all = vec!["export", "pipeline.yaml", "--stage", "resize", "-o", "resize.arrow"];
    all.extend_from_slice(args);
    p.run_env(&all, env).ok();
    std::fs::read(p.path("resize.arrow")).unwrap()
}

/// The rows each shard's `ingest` part holds.
fn shard_rows(runs: &[Run]) -> Vec<u64> {
    runs.iter()
        .map(|r| r.line("ingest").split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect()
}

/// What a single process makes of the same files, for comparison.
fn single() -> (Project, BTreeMap<String, String>) {
    let p = machine();
    p.run(&["run", "pipeline.yaml"]).ok();
    let fps = fingerprints(&p);
    (p, fps)
}

#[test]
fn four_shards_and_a_merge_make_what_one_process_makes() {
    let p = machine();
    let shards: Vec<Run> = (0..4)
        .map(|i| p.run(&["run", "pipeline.yaml", "--shard", &format!("{i}/4")]).ok())
        .collect();
    for r in &shards {
        assert!(r.ran("ingest") && r.ran("split") && r.ran("resize"), "{}", r.stdout);
        assert_contains!(
            r.stdout,
            "`mean_subtract`, `normalize`, `validate`, `train`, `evaluate` run after the merge"
        );
        assert!(!r.stdout.lines().any(|l| l.starts_with("train ")), "{}", r.stdout);
    }
    let rows = shard_rows(&shards);
    assert_eq!(rows.iter().sum::<u64>(), 60, "{rows:?}");
    assert!(rows.iter().all(|&n| n > 0), "{rows:?}");

    let merged = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(STAGES.iter().all(|s| merged.ran(s)), "{}", merged.stdout);
    let fps = fingerprints(&p);
    // The merged resize decoded nothing: every row's pixels are in the shards' parts.
    let resize = record(&p, &fps, "resize");
    assert_eq!(resize["summary"]["reused"], 60, "{resize}");
    assert_eq!(resize["summary"]["segments"].as_array().unwrap().len(), 4, "{resize}");
    assert_contains!(merged.line("resize"), "(0 decoded, 60 reused from 4 shards)");

    // The same artifacts as one process: fingerprints of every stage, pixels, model.
    let (one, one_fps) = single();
    assert_eq!(fps, one_fps);
    assert_eq!(exported(&p, &[], &[]), exported(&one, &[], &[]));
    for stage in ["normalize", "train"] {
        let file = |q: &Project, fps: &BTreeMap<String, String>| {
            let ext = if stage == "train" { "safetensors" } else { "arrow" };
            std::fs::read(q.path(&format!("cache/artifacts/{}.{ext}", fps[stage]))).unwrap()
        };
        assert_eq!(file(&p, &fps), file(&one, &one_fps), "{stage}");
    }
    // Shards run again are cached; the merge too.
    let again = p.run(&["run", "pipeline.yaml", "--shard", "2/4"]).ok();
    assert!(again.cached("ingest") && again.cached("resize"), "{}", again.stdout);
    let warm = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(STAGES.iter().all(|s| warm.cached(s)), "{}", warm.stdout);
}

#[test]
fn a_slurm_array_task_finds_its_shard_and_bad_shards_are_refused() {
    let p = machine();
    let by_hand = p.run(&["run", "pipeline.yaml", "--shard", "1/3"]).ok();
    let auto = p
        .run_env(
            &["run", "pipeline.yaml", "--shard", "auto"],
            &[
                ("SLURM_ARRAY_TASK_ID", "6"),
                ("SLURM_ARRAY_TASK_MIN", "5"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
        )
        .ok();
    assert!(auto.cached("ingest") && auto.cached("resize"), "{}", auto.stdout);
    assert_eq!(shard_rows(&[by_hand]), shard_rows(&[auto]));
    let k8s = p
        .run_env(
            &["run", "pipeline.yaml", "--shard", "auto/3"],
            &[("JOB_COMPLETION_INDEX", "1")],
        )
        .ok();
    assert!(k8s.cached("resize"), "{}", k8s.stdout);

    for (shard, message) in [
        ("4/4", "shard 4 of 4 does not exist (the last is 3/4)"),
        ("0/0", "the count must be 1 to 65535, not 0"),
        ("a/b", "the shard `a` is not a whole number"),
        (
            "auto",
            "`--shard auto` reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, which are not set",
        ),
    ] {
        let bad = p.run(&["run", "pipeline.yaml", "--shard", shard]);
        assert_eq!(bad.code, 2, "{shard}: {}", bad.stderr);
        assert_contains!(bad.stderr, message);
    }
    // An incomplete set is not merged: the merge computes everything itself.
    let merged = p.run(&["run", "pipeline.yaml"]).ok();
    let fps = fingerprints(&p);
    assert_eq!(record(&p, &fps, "resize")["summary"]["reused"], serde_json::Value::Null);
    assert!(merged.ran("resize"), "{}", merged.stdout);
}

#[test]
fn shards_on_four_machines_merge_on_a_fifth_through_s3() {
    let s3 = S3::start("cluster");
    let env = s3.env();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = "s3://cluster/cats";
    for i in 0..4 {
        let shard = format!("{i}/4");
        let worker = machine();
        let env: Vec<(&str, &str)> = env_ref.clone();
        worker
            .run_env(&["run", "pipeline.yaml", "--shard", &shard, "--cache", url], &env)
            .ok();
    }
    // The merge machine has none of it locally.
    let merge = machine();
    let merged = run(&merge, url, &env).ok();
    assert!(STAGES.iter().all(|s| merged.ran(s)), "{}", merged.stdout);
    let fps = fingerprints(&merge);
    assert_eq!(record(&merge, &fps, "resize")["summary"]["reused"], 60);
    let (one, one_fps) = single();
    assert_eq!(fps, one_fps);
    assert_eq!(exported(&merge, &[], &[]), exported(&one, &[], &[]));
    // Warm on the merge machine: whatever the number of shards, the listing, one of the
    // shards' entries (copied here once) and one look per stage.
    let before = s3.requests();
    let warm = run(&merge, url, &env).ok();
    assert!(STAGES.iter().all(|s| warm.cached(s)), "{}", warm.stdout);
    assert_eq!(s3.requests() - before, 2 + STAGES.len());
    // And a sixth machine finds everything in the shared cache.
    let reader = machine();
    let copied = run(&reader, url, &env).ok();
    assert!(STAGES.iter().all(|s| copied.cached(s)), "{}", copied.stdout);
}

#[test]
fn a_shard_killed_mid_run_and_run_again_completes_and_the_merge_is_whole() {
    // Where the kill points of a shard are, on a throwaway copy.
    let traced = machine().run_env(
        &["run", "pipeline.yaml", "--shard", "1/2"],
        &[("PIPELINE_KILL_TRACE", "1")],
    );
    let point = traced.kill_point("resize: artifact in place, record not written");
    let p = machine();
    p.run(&["run", "pipeline.yaml", "--shard", "0/2"]).ok();
    let killed = p.run_env(
        &["run", "pipeline.yaml", "--shard", "1/2"],
        &[("PIPELINE_KILL_AT", &point)],
    );
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    // Run again (a resubmitted task): what finished is reused, the rest is made.
    let again = p.run(&["run", "pipeline.yaml", "--shard", "1/2"]).ok();
    assert!(
        again.cached("ingest") && again.cached("split") && again.ran("resize"),
        "{}",
        again.stdout
    );
    let merged = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(merged.line("resize"), "(0 decoded, 60 reused from 2 shards)");
    p.run(&["cache", "verify", "pipeline.yaml"]).ok();
    let (one, one_fps) = single();
    assert_eq!(fingerprints(&p), one_fps);
    assert_eq!(exported(&p, &[], &[]), exported(&one, &[], &[]));
}
