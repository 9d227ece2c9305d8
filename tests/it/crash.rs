//! Crash safety: `pipeline run` killed with SIGKILL at many points (the binary's fault hook,
//! `PIPELINE_KILL_AT`), then run again. The rerun must finish, reuse every stage that had
//! finished before the kill, produce exactly what an uninterrupted run produces, and leave a
//! cache that `pipeline cache verify` accepts.

use std::collections::BTreeMap;

use crate::support::{Project, TRAIN_DATA};

const MODEL: &str = "  train:\n    kind: train\n    model: mlp\n    hidden: [8]\n    epochs: 3\n    lr: 0.01\n    \
                     batch_size: 16\n  evaluate:\n    kind: evaluate\n    input: train\n";

/// The pipeline has a stage of every kind, named after its kind: a new kind must join it.
const STAGES: &[&str] = pipeline::catalog::KINDS;

/// Stage name -> fingerprint of every stage whose pointer (the last thing a stage writes) exists.
fn finished(p: &Project) -> BTreeMap<String, String> {
    STAGES
        .iter()
        .filter_map(|s| {
            let text = std::fs::read_to_string(p.path(&format!("cache/pipelines/m/{s}.json"))).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some((s.to_string(), v["fingerprint"].as_str()?.to_string()))
        })
        .collect()
}

/// Stage name -> the BLAKE3 its record gives the artifact.
fn checksums(p: &Project) -> BTreeMap<String, String> {
    finished(p)
        .into_iter()
        .map(|(s, fp)| {
            let text = std::fs::read_to_string(p.path(&format!("cache/artifacts/{fp}.json"))).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            (s, v["blake3"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn runs_killed_at_every_kind_of_point_lose_nothing() {
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{MODEL}"));
    // An uninterrupted run, tracing its kill points: what every rerun must reproduce.
    let traced = p
        .run_env(&["run", "pipeline.yaml"], &[("PIPELINE_KILL_TRACE", "1")])
        .ok();
    let points: Vec<&str> = traced.stderr.lines().filter(|l| l.starts_with("kill point ")).collect();
    let want = checksums(&p);
    assert_eq!(want.len(), STAGES.len());
    // The training epochs are deterministic, so the model (and the evaluation) must match too.
    let n = points.len();
    assert!(n >= 50, "only {n} kill points:\n{}", points.join("\n"));
    for stage in STAGES {
        assert!(
            points
                .iter()
                .any(|l| l.contains(&format!(" {stage}: ")) || l.contains(&format!("/{stage}.json"))),
            "no kill point in `{stage}`"
        );
    }
    let mut survived = 0;
    for k in 1..=n {
        std::fs::remove_dir_all(p.path("cache")).unwrap();
        let killed = p.run_env(&["run", "pipeline.yaml"], &[("PIPELINE_KILL_AT", &k.to_string())]);
        assert_eq!(
            killed.code,
            -1,
            "kill point {k} ({}) did not kill the run",
            points[k - 1]
        );
        let before = finished(&p);
        let rerun = p.run(&["run", "pipeline.yaml"]);
        assert_eq!(
            rerun.code,
            0,
            "rerun after kill point {k} ({}):\n{}{}",
            points[k - 1],
            rerun.stdout,
            rerun.stderr
        );
        for (stage, fp) in &before {
            // A pointer left by the killed run may be from the killed run only if its stage finished.
            assert!(
                rerun.cached(stage),
                "after kill point {k} ({}), `{stage}` ({fp}) was recomputed:\n{}",
                points[k - 1],
                rerun.stdout
            );
        }
        assert_eq!(
            checksums(&p),
            want,
            "after kill point {k} ({}) the results differ",
            points[k - 1]
        );
        let litter: Vec<_> = std::fs::read_dir(p.path("cache/tmp")).unwrap().collect();
        assert!(
            litter.is_empty(),
            "after kill point {k} the rerun left the killed run's temporary files: {litter:?}"
        );
        let verify = p.run(&["cache", "verify", "pipeline.yaml"]);
        assert_eq!(
            verify.code,
            0,
            "after kill point {k} ({}):\n{}",
            points[k - 1],
            verify.stdout
        );
        survived += 1;
    }
    eprintln!("{survived} of {n} kill points survived");
}

/// The checkpoint kill point after epoch 2 of the pipeline's `train`, with the weights of an
/// uninterrupted run.
fn uninterrupted(p: &Project) -> (usize, Vec<u8>) {
    let traced = p
        .run_env(&["run", "pipeline.yaml"], &[("PIPELINE_KILL_TRACE", "1")])
        .ok();
    let points: Vec<&str> = traced.stderr.lines().filter(|l| l.starts_with("kill point ")).collect();
    let at = points
        .iter()
        .position(|l| l.ends_with("train: checkpoint of epoch 2 written"))
        .unwrap_or_else(|| panic!("no checkpoint kill point:\n{}", points.join("\n")))
        + 1;
    (at, trained(p))
}

fn trained(p: &Project) -> Vec<u8> {
    std::fs::read(p.artifact_path("m", "train").with_extension("safetensors")).unwrap()
}

fn checkpoints(p: &Project) -> usize {
    std::fs::read_dir(p.path("cache/checkpoints")).map_or(0, |d| d.count())
}

/// Runs the pipeline from an empty cache, killed at kill point `at`, leaving a checkpoint.
fn kill_at(p: &Project, at: usize) {
    std::fs::remove_dir_all(p.path("cache")).unwrap();
    let out = p.run_env(&["run", "pipeline.yaml"], &[("PIPELINE_KILL_AT", &at.to_string())]);
    assert_eq!(out.code, -1, "kill point {at} did not kill the run");
    assert_eq!(checkpoints(p), 1, "the killed run left its checkpoint");
}

const RESNET: &str = "  train:\n    kind: train\n    model: resnet\n    widths: [4, 8]\n    residual: [1]\n    \
                      optimizer: sgd\n    momentum: 0.9\n    lr: 0.05\n    schedule: one_cycle\n    epochs: 4\n    \
                      batch_size: 16\n";

/// A `train` killed after an epoch resumes from that epoch's checkpoint on the rerun (same
/// fingerprint) and ends with the weights of an uninterrupted run: the weights, batch-norm
/// statistics, momentum, best epoch and shuffle order all carry over. A damaged checkpoint
/// is reported and training starts over, to the same weights.
#[test]
fn a_killed_training_resumes_from_its_last_checkpoint_to_the_same_weights() {
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{RESNET}"));
    let (at, want) = uninterrupted(&p);
    assert_eq!(checkpoints(&p), 0, "a finished run leaves no checkpoint");
    let killed = |p: &Project| kill_at(p, at);
    killed(&p);
    let rerun = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(
        rerun.stdout,
        "resumed after epoch 2, from an interrupted run's checkpoint"
    );
    assert!(trained(&p) == want, "the resumed run trained other weights");
    assert_eq!(checkpoints(&p), 0, "the resumed run removed its checkpoint");
    let record = p.record("m", "train");
    let history = &record["summary"]["history"];
    assert_eq!(history.as_array().map(Vec::len), Some(4), "{history}");

    killed(&p);
    let file = std::fs::read_dir(p.path("cache/checkpoints"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&file, bytes).unwrap();
    let rerun = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(
        format!("{}{}", rerun.stdout, rerun.stderr),
        "warning: stage `train`: the checkpoint of an interrupted run is unusable"
    );
    assert!(!rerun.stdout.contains("resumed after"), "{}", rerun.stdout);
    assert!(trained(&p) == want, "training from the start trained other weights");

    // `cache gc` keeps the checkpoint of a stage its files need, and removes it once none does.
    killed(&p);
    p.run(&["cache", "gc", "pipeline.yaml"]).ok();
    assert_eq!(
        checkpoints(&p),
        1,
        "gc removed the checkpoint the pipeline resumes from"
    );
    let yaml = std::fs::read_to_string(p.path("pipeline.yaml")).unwrap();
    std::fs::write(p.path("other.yaml"), yaml.replace("epochs: 4", "epochs: 5")).unwrap();
    p.run(&["cache", "gc", "other.yaml"]).ok();
    assert_eq!(checkpoints(&p), 0, "gc kept a checkpoint no pipeline resumes from");
}

/// With an average of the weights kept to the end (`ema`, `select: last`), the resumed run
/// ends with the uninterrupted run's average: the checkpoint holds it and its update count.
#[test]
fn a_killed_training_resumes_its_average_of_the_weights() {
    let p = Project::new();
    let train = format!("{RESNET}    ema: 0.9\n    select: last\n");
    p.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{train}"));
    let (at, want) = uninterrupted(&p);
    kill_at(&p, at);
    let rerun = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(rerun.stdout, "resumed after epoch 2");
    assert!(trained(&p) == want, "the resumed run ended with another average");
}
