//! `pipeline cache gc`: what the given pipeline files need stays, the rest goes, and a run
//! beside it on the same cache loses nothing it needs.

use std::process::{Command, Stdio};

use crate::shared::S3;
use crate::support::{BASIC, Project};

/// The fingerprints of the committed artifacts (`cache ls`, one line each).
fn artifacts(p: &Project) -> Vec<String> {
    let ls = p.run(&["cache", "ls", "pipeline.yaml"]).ok();
    ls.stdout.lines().map(String::from).collect()
}

#[test]
fn gc_keeps_what_the_files_need_and_removes_the_rest() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml"]).ok();
    let wanted = artifacts(&p);
    // Another size: new resize, mean_subtract and normalize artifacts nobody's file names.
    p.run(&["run", "pipeline.yaml", "--set", "resize.size=[6,6]"]).ok();
    assert_eq!(artifacts(&p).len(), wanted.len() + 3);
    // Litter a killed run could leave: a data file no record commits.
    std::fs::write(p.path("cache/artifacts/deadbeef.arrow"), b"half").unwrap();

    let dry = p.run(&["cache", "gc", "pipeline.yaml", "--dry-run"]).ok();
    assert_eq!(dry.stdout.matches("would remove  t / ").count(), 3, "{}", dry.stdout);
    assert_contains!(dry.stdout, "deadbeef.arrow (no record commits it)");
    assert_contains!(dry.stdout, "would free 3 artifact(s) and 1 other file(s)");
    assert_contains!(
        dry.stdout,
        &format!("kept {} artifact(s) needed by the given files", wanted.len())
    );
    assert_eq!(artifacts(&p).len(), wanted.len() + 3, "a dry run removes nothing");

    // Made a moment ago: --keep-recent keeps them.
    let recent = p.run(&["cache", "gc", "pipeline.yaml", "--keep-recent", "1"]).ok();
    assert_contains!(recent.stdout, "freed 0 artifact(s) and 1 other file(s)");
    assert!(!p.path("cache/artifacts/deadbeef.arrow").exists());

    let gc = p.run(&["cache", "gc", "pipeline.yaml"]).ok();
    for stage in ["resize", "mean_subtract", "normalize"] {
        assert_contains!(gc.stdout, &format!("removed  t / {stage} ({stage})"));
    }
    assert_eq!(artifacts(&p), wanted);
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    for stage in ["ingest", "split", "resize", "mean_subtract", "normalize"] {
        assert!(run.cached(stage), "{}", run.stdout);
    }
    p.run(&["cache", "verify", "pipeline.yaml"]).ok();
    let again = p.run(&["cache", "gc", "pipeline.yaml"]).ok();
    assert_contains!(again.stdout, "freed 0 artifact(s) and 0 other file(s), 0.0 MB");
}

#[test]
fn gc_with_several_files_keeps_what_each_needs_and_refuses_other_caches() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    p.write(
        "small.yaml",
        &BASIC
            .replace("size: [8, 8]", "size: [4, 4]")
            .replace("name: t", "name: s"),
    );
    p.run(&["run", "pipeline.yaml"]).ok();
    p.run(&["run", "small.yaml"]).ok();
    let before = artifacts(&p);
    let gc = p.run(&["cache", "gc", "pipeline.yaml", "small.yaml"]).ok();
    assert_contains!(gc.stdout, "freed 0 artifact(s)");
    assert_eq!(artifacts(&p), before);
    let only = p.run(&["cache", "gc", "pipeline.yaml"]).ok();
    assert_contains!(only.stdout, "removed  s / resize (resize)");

    p.write("elsewhere.yaml", &format!("cache: other-cache\n{BASIC}"));
    let refused = p.run(&["cache", "gc", "pipeline.yaml", "elsewhere.yaml"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert_contains!(refused.stderr, "run `cache gc` once per cache");
    let bad = p.run(&["cache", "ls", "pipeline.yaml", "small.yaml"]);
    assert_contains!(bad.stderr, "`cache ls` takes one pipeline file");
}

/// Runs of a pipeline the gc does not keep, beside repeated `gc`s on the same cache: every
/// run finishes with all its artifacts intact (the lock keeps them apart), and what gc
/// removed in between is simply made again.
#[test]
fn runs_beside_gc_lose_nothing_they_need() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 40).pipeline(BASIC);
    p.write(
        "other.yaml",
        &BASIC
            .replace("size: [8, 8]", "size: [24, 24]")
            .replace("name: t", "name: o"),
    );
    p.run(&["run", "pipeline.yaml"]).ok();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(args)
            .current_dir(p.root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for round in 0..4 {
        let run = spawn(&["run", "other.yaml", "--force"]);
        let gc = spawn(&["cache", "gc", "pipeline.yaml"]);
        for (what, child) in [("run", run), ("gc", gc)] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}, {what}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Whatever order they ran in, other.yaml's run left a complete, intact result or gc
        // removed all of it afterwards; never a half.
        let status = p.run(&["status", "other.yaml"]).ok();
        let stale: Vec<bool> = ["resize", "mean_subtract", "normalize"]
            .iter()
            .map(|s| status.line(s).contains("stale"))
            .collect();
        assert!(stale.iter().all(|&s| s == stale[0]), "round {round}: {}", status.stdout);
        p.run(&["cache", "verify", "pipeline.yaml"]).ok();
    }
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(run.stdout.lines().all(|l| !l.contains(" ran ")), "{}", run.stdout);
}

/// `cache gc` of a shared cache on a real S3 server (moto), where no lock orders machines:
/// nothing younger than the grace period goes, so runs writing now lose nothing; past it (here
/// `--grace 0s`), what no given file needs goes, with data no record commits and the parts of
/// an upload a killed run left; what the file needs stays and a new machine still copies it.
#[test]
fn gc_of_a_shared_cache_spares_the_young_and_takes_what_killed_runs_left() {
    let s3 = S3::start("team");
    let mut env = s3.env();
    env.push(("PIPELINE_CACHE", "s3://team/g".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fn with<'a>(env: &[(&'a str, &'a str)], extra: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
        [env, &[extra]].concat()
    }
    // 120 images at 224x224: resize's 18 MB go up in parts.
    let machine = || {
        let p = Project::new();
        p.kaggle_images(&["cat", "dog"], 60)
            .pipeline(&BASIC.replace("size: [8, 8]", "size: [224, 224]"));
        p.write(
            "small.yaml",
            &BASIC
                .replace("size: [8, 8]", "size: [6, 6]")
                .replace("name: t", "name: s"),
        );
        p
    };
    // Where the kill after resize's first part falls, found on a machine of the same history.
    let tracer = machine();
    tracer
        .run_env(&["run", "small.yaml", "--cache", "s3://team/trace"], &env)
        .ok();
    let traced = tracer.run_env(
        &["run", "pipeline.yaml", "--cache", "s3://team/trace"],
        &with(&env, ("PIPELINE_KILL_TRACE", "1")),
    );
    let point = traced.kill_point("part 1 of an upload sent");

    let p = machine();
    p.run_env(&["run", "small.yaml"], &env).ok();
    let killed = p.run_env(
        &["run", "pipeline.yaml"],
        &with(&env, ("PIPELINE_KILL_AT", point.as_str())),
    );
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    assert_eq!(s3.open_uploads("team"), 1, "the killed run's upload is open");
    assert_eq!(s3.keys("team", "g/uploads/").len(), 1, "and noted");
    // Data a run killed between data and record left.
    let orphan = format!("g/artifacts/{}.0123456789abcdef0123456789abcdef.arrow", "ab".repeat(32));
    s3.put("team", &orphan, b"left by a killed run");

    // Everything is younger than a day: nothing goes from the shared cache.
    let gc = p.run_env(&["cache", "gc", "pipeline.yaml"], &env).ok();
    assert_contains!(
        gc.stdout,
        "shared cache s3://team/g: freed 0 artifact(s), 0 other object(s) and 0 unfinished upload(s)"
    );
    let listed = s3.keys("team", "g/");
    let dry = p
        .run_env(&["cache", "gc", "pipeline.yaml", "--grace", "0s", "--dry-run"], &env)
        .ok();
    assert_eq!(s3.keys("team", "g/"), listed, "a dry run removes nothing");
    assert_eq!(s3.open_uploads("team"), 1);
    for stage in ["resize", "mean_subtract", "normalize"] {
        assert_contains!(dry.stdout, &format!("would remove  s / {stage} ({stage})"));
    }
    assert_contains!(
        dry.stdout,
        &format!("would remove  s3://team/{orphan} (no record commits it")
    );
    assert_contains!(dry.stdout, "would abort  the upload noted in s3://team/g/uploads/");
    assert_contains!(
        dry.stdout,
        "would free 3 artifact(s), 1 other object(s) and 1 unfinished upload(s)"
    );

    let gc = p.run_env(&["cache", "gc", "pipeline.yaml", "--grace", "0s"], &env).ok();
    assert_contains!(
        gc.stdout,
        "freed 3 artifact(s), 1 other object(s) and 1 unfinished upload(s)"
    );
    assert_eq!(s3.open_uploads("team"), 0, "the killed upload's parts are dropped");
    let left = s3.keys("team", "g/");
    assert!(
        !left.iter().any(|k| k.starts_with("g/uploads/") || *k == orphan),
        "{left:?}"
    );
    // ingest and split (shared by both files): record and data each.
    assert_eq!(left.len(), 4, "{left:?}");

    // The rerun publishes what the kill stopped; another machine then copies every stage,
    // and computes again what went.
    p.run_env(&["run", "pipeline.yaml"], &env).ok();
    let other = machine();
    let copied = other.run_env(&["run", "pipeline.yaml"], &env).ok();
    for stage in ["ingest", "split", "resize", "mean_subtract", "normalize"] {
        assert!(copied.cached(stage), "{}", copied.stdout);
    }
    let small = other.run_env(&["run", "small.yaml"], &env).ok();
    assert!(small.cached("split") && small.ran("resize"), "{}", small.stdout);
    let again = p
        .run_env(&["cache", "gc", "pipeline.yaml", "small.yaml", "--grace", "0s"], &env)
        .ok();
    assert_contains!(
        again.stdout,
        "freed 0 artifact(s), 0 other object(s) and 0 unfinished upload(s)"
    );
}
