//! Concurrent runs: two runs of one pipeline at once, two pipelines sharing a cache, a run
//! waiting for the cache lock (and saying so), and a lock left by a killed run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Project, TRAIN_DATA};

const MODEL: &str = "  train:\n    kind: train\n    model: mlp\n    hidden: [8]\n    epochs: 3\n    lr: 0.01\n    \
                     batch_size: 16\n  evaluate:\n    kind: evaluate\n    input: train\n";

fn spawn(p: &Project, file: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["run", file])
        .current_dir(p.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn verify(p: &Project, file: &str) {
    let v = p.run(&["cache", "verify", file]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
}

#[test]
fn two_runs_of_one_pipeline_at_once_agree_with_a_lone_run() {
    let lone = Project::new();
    lone.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{MODEL}"));
    lone.run(&["run", "pipeline.yaml"]).ok();
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{MODEL}"));
    let (a, b) = (spawn(&p, "pipeline.yaml"), spawn(&p, "pipeline.yaml"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    verify(&p, "pipeline.yaml");
    for stage in ["resize", "normalize", "train", "evaluate"] {
        assert_eq!(
            p.record("m", stage)["blake3"],
            lone.record("m", stage)["blake3"],
            "{stage}"
        );
    }
}

#[test]
fn two_pipelines_sharing_a_cache_run_at_once() {
    let p = Project::new();
    p.learnable_images(30);
    let a = format!("{TRAIN_DATA}{MODEL}");
    let b = a
        .replace("name: m", "name: other")
        .replace("size: [8, 8]", "size: [10, 10]");
    p.write("a.yaml", &a).write("b.yaml", &b);
    let (x, y) = (spawn(&p, "a.yaml"), spawn(&p, "b.yaml"));
    for child in [x, y] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    verify(&p, "a.yaml");
    // Stages before the change are shared, by fingerprint; later ones differ.
    assert_eq!(
        p.record("m", "split")["fingerprint"],
        p.record("other", "split")["fingerprint"]
    );
    assert_ne!(
        p.record("m", "resize")["fingerprint"],
        p.record("other", "resize")["fingerprint"]
    );
    // Each pipeline's second run finds everything cached.
    for file in ["a.yaml", "b.yaml"] {
        let again = p.run(&["run", file]).ok();
        assert!(
            again
                .stdout
                .lines()
                .all(|l| l.starts_with(' ') || l.contains(" cached ")),
            "{}",
            again.stdout
        );
    }
}

#[test]
fn a_run_waiting_for_the_lock_says_so_and_goes_on_when_it_is_released() {
    let p = Project::new();
    p.learnable_images(10).pipeline(crate::support::BASIC);
    std::fs::create_dir_all(p.path("cache")).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p.path("cache/lock"))
        .unwrap();
    lock.lock().unwrap();
    let mut child = spawn(&p, "pipeline.yaml");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("waiting for another pipeline run that holds "),
        "{first}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run must wait while the lock is held"
    );
    lock.unlock().unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(
        rest.iter().any(|l| l.starts_with("normalize ") && l.contains(" ran ")),
        "{rest:?}"
    );
}

#[test]
fn a_lock_left_by_a_killed_run_does_not_block() {
    let p = Project::new();
    p.learnable_images(10).pipeline(crate::support::BASIC);
    let killed = p.run_env(&["run", "pipeline.yaml"], &[("PIPELINE_KILL_AT", "3")]);
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    let mut child = spawn(&p, "pipeline.yaml");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the run after a killed one did not finish in 120 s: a stale lock blocks it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_not_contains!(
        String::from_utf8_lossy(&out.stdout),
        "waiting",
        "the kernel released the dead run's lock"
    );
}
