//! Hostile or broken pipeline files and a hostile disk: each a clear error, nothing wrong
//! cached, nothing written outside the cache.

use std::process::Command;

use crate::support::{BASIC, Project};

fn images(p: &Project) -> &Project {
    for i in 0..6 {
        p.image(&format!("images/cat.{i}.png"), 12, 10, i)
            .image(&format!("images/dog.{i}.png"), 12, 10, 50 + i);
    }
    p
}

#[test]
fn nonsense_params_are_each_reported_and_nothing_runs() {
    let p = Project::new();
    images(&p).pipeline(
        "name: h\nstages:\n  ingest: {kind: ingest, path: images}\n  \
         split: {kind: split, train: .nan, val: -0.2, test: 1e400}\n  \
         resize: {kind: resize, size: [99999999999999999999, 0]}\n  \
         normalize: {kind: normalize, method: scale, factor: .inf}\n  \
         train: {kind: train, input: normalize, model: mlp, lr: -1, epochs: 0, batch_size: 0, l2: .nan, unvalidated: true}\n",
    );
    let run = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    for (what, at) in [
        (
            "`train` must be a finite number in [0, 1], found NaN",
            "pipeline.yaml:4:",
        ),
        (
            "`val` must be a finite number in [0, 1], found -0.2",
            "pipeline.yaml:4:",
        ),
        (
            "`test` must be a finite number in [0, 1], found inf",
            "pipeline.yaml:4:",
        ),
        ("found `99999999999999999999`", "pipeline.yaml:5:"),
        ("found `0`", "pipeline.yaml:5:"),
        ("`factor` must be a finite number", "pipeline.yaml:6:"),
        (
            "`lr` must be a finite number in [0.000000001, 100], found -1",
            "pipeline.yaml:7:",
        ),
        (
            "`epochs` must be a whole number in [1, 100000], found `0`",
            "pipeline.yaml:7:",
        ),
        (
            "`batch_size` must be a whole number in [1, 65536], found `0`",
            "pipeline.yaml:7:",
        ),
        (
            "`l2` must be a finite number in [0, 100], found NaN",
            "pipeline.yaml:7:",
        ),
    ] {
        assert_contains!(run.stderr, what, "missing `{what}`:\n{}", run.stderr);
        assert_contains!(run.stderr, at);
    }
    assert_contains!(run.stderr, "10 problems found");
    assert!(!p.path("cache").exists(), "nothing may be written for a broken file");
}

#[test]
fn a_cache_outside_the_project_is_refused_unless_the_user_chooses_it() {
    let p = Project::new();
    let outside = p.root().parent().unwrap().join(format!(
        "pipeline-escape-{}",
        p.root().file_name().unwrap().to_string_lossy()
    ));
    images(&p);
    let yaml = BASIC.replace("name: t\n", "name: t\ncache: ../PLACE\n");
    p.pipeline(&yaml.replace("PLACE", outside.file_name().unwrap().to_str().unwrap()));
    let run = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_contains!(run.stderr, "outside the project");
    assert_contains!(run.stderr, "pipeline.yaml:2:8");
    assert!(!outside.exists(), "{} was created", outside.display());
    // The user's own choice, from the environment, is honoured.
    let chosen = p.path("chosen-cache");
    let run = p.run_env(
        &["run", "pipeline.yaml"],
        &[("PIPELINE_CACHE", chosen.to_str().unwrap())],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(chosen.join("artifacts").is_dir());
    assert!(!outside.exists());
}

#[test]
fn input_paths_outside_the_project_are_refused_unless_the_user_allows_them() {
    let p = Project::new();
    images(&p).write("proj/.keep", "");
    let yaml = BASIC.replace("path: images", "path: ../../../../../../etc");
    p.write("proj/pipeline.yaml", &yaml);
    let run = p.run_env(&["check", "proj/pipeline.yaml"], &[("PIPELINE_DATA_ROOTS", "")]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_contains!(
        run.stderr,
        "`path: ../../../../../../etc` resolves to /etc, outside the project"
    );
    assert_contains!(run.stderr, "PIPELINE_DATA_ROOTS");
    // Another folder (here: another project's images) is refused until the user lists it.
    let other = Project::new();
    images(&other);
    let theirs = other.path("images");
    p.pipeline(&BASIC.replace("path: images", &format!("path: {}", theirs.display())));
    let refused = p.run_env(&["run", "pipeline.yaml"], &[("PIPELINE_DATA_ROOTS", "")]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(!p.path("cache").exists(), "nothing runs");
    let allowed = p.run_env(
        &["run", "pipeline.yaml"],
        &[("PIPELINE_DATA_ROOTS", theirs.to_str().unwrap())],
    );
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
}

#[test]
fn a_cache_path_that_is_a_file_is_a_clear_error() {
    let p = Project::new();
    images(&p).pipeline(BASIC).write("cache", "not a folder");
    let run = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(run.code, 1);
    assert_contains!(run.stderr, "exists but is not a directory");
    assert_eq!(std::fs::read_to_string(p.path("cache")).unwrap(), "not a folder");
}

/// Stage name -> fingerprint of the stages that finished.
fn finished(p: &Project, cache: &str) -> Vec<String> {
    let dir = p.path(&format!("{cache}/pipelines/t"));
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".json")
                    .to_string()
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_full_disk_fails_clearly_keeps_what_finished_and_caches_nothing_wrong() {
    let reference = Project::new();
    images(&reference).pipeline(BASIC);
    reference.run(&["run", "pipeline.yaml"]).ok();
    let total: u64 = std::fs::read_dir(reference.path("cache/artifacts"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // Disks that fill up at 12 points of the cold run.
    for k in 0..12u64 {
        let limit = total * k / 12 + 100;
        let p = Project::new();
        images(&p).pipeline(BASIC);
        let run = p.run_env(
            &["run", "pipeline.yaml"],
            &[("PIPELINE_DISK_LIMIT", &limit.to_string())],
        );
        assert_eq!(run.code, 1, "limit {limit}: {}{}", run.stdout, run.stderr);
        assert_contains!(run.stderr, "No space left on device", "limit {limit}: {}", run.stderr);
        let tmp: Vec<_> = std::fs::read_dir(p.path("cache/tmp")).unwrap().collect();
        assert!(tmp.is_empty(), "limit {limit}: temporary files left behind: {tmp:?}");
        let verify = p.run(&["cache", "verify", "pipeline.yaml"]);
        assert_eq!(verify.code, 0, "limit {limit}: {}", verify.stdout);
        let before = finished(&p, "cache");
        let again = p.run(&["run", "pipeline.yaml"]).ok();
        for stage in &before {
            assert!(
                again.cached(stage),
                "limit {limit}: `{stage}` finished before and was recomputed"
            );
        }
    }
}

/// The same on a real, tiny file system when this machine lets us mount one (root in a
/// container usually can): a 256 KiB tmpfs, and a read-only one.
#[test]
fn a_real_full_or_read_only_file_system() {
    let p = Project::new();
    images(&p).pipeline(BASIC);
    let mnt = p.path("tiny");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = |opts: &str| {
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&mnt)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !mount("size=256k") {
        // Unprivileged machines cannot; the PIPELINE_DISK_LIMIT test above covers them.
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let cache = mnt.join("cache");
    let run = p.run_env(
        &["run", "pipeline.yaml", "--set", "resize.size=[128,128]"],
        &[("PIPELINE_CACHE", cache.to_str().unwrap())],
    );
    let verify = p.run_env(
        &["cache", "verify", "pipeline.yaml"],
        &[("PIPELINE_CACHE", cache.to_str().unwrap())],
    );
    Command::new("umount").arg(&mnt).status().unwrap();
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_contains!(run.stderr, "No space left on device");
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    assert!(mount("ro,size=64k"));
    let run = p.run_env(
        &["run", "pipeline.yaml"],
        &[("PIPELINE_CACHE", cache.to_str().unwrap())],
    );
    Command::new("umount").arg(&mnt).status().unwrap();
    assert_eq!(run.code, 1);
    assert_contains!(run.stderr, "Read-only file system");
}
