//! Sharded runs on a real scheduler: the job definitions of `deploy/slurm/` submitted to a
//! one-node Slurm cluster (scripts/test.sh starts it with scripts/slurm.sh and sets
//! SLURM_CONF), shards of real photos written into an `s3://` cache on moto_server.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::shared::S3;
use crate::support::Project;

/// A project holding the first `n` shipped photos of each class and the example's data
/// stages, up to `validate`.
fn photos(n: usize) -> Project {
    let repo = env!("CARGO_MANIFEST_DIR");
    let p = Project::new();
    std::fs::create_dir_all(p.path("photos")).unwrap();
    for class in ["cat", "dog"] {
        for i in 0..n {
            let name = format!("{class}.{i}.png");
            std::fs::copy(
                format!("{repo}/data/cats_dogs/{name}"),
                p.path(&format!("photos/{name}")),
            )
            .unwrap();
        }
    }
    let full = std::fs::read_to_string(format!("{repo}/pipelines/cats_dogs.yaml")).unwrap();
    let yaml = full
        .split("\n  train:")
        .next()
        .unwrap()
        .replace("path: ../data/cats_dogs", "path: photos");
    p.pipeline(&yaml);
    p
}

fn slurm_conf() -> String {
    std::env::var("SLURM_CONF").unwrap_or_else(|_| {
        panic!("no Slurm cluster: scripts/test.sh starts one (scripts/slurm.sh) and sets SLURM_CONF")
    })
}

/// Waits until Slurm no longer lists `job` (finished, whatever way), at most `limit`.
fn wait_for(job: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let out = Command::new("squeue")
            .args(["-h", "-j", job])
            .env("SLURM_CONF", slurm_conf())
            .output()
            .unwrap();
        if out.status.success() && out.stdout.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "job {job} still queued or running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_slurm_array_of_shards_and_its_merge_make_what_one_process_makes() {
    let conf = slurm_conf();
    let s3 = S3::start("slurm");
    let p = photos(60);
    let file = p.path("pipeline.yaml");
    let submit = Command::new(format!("{}/deploy/slurm/submit.sh", env!("CARGO_MANIFEST_DIR")))
        .args([file.to_str().unwrap(), "4"])
        .current_dir(p.root())
        .env("SLURM_CONF", &conf)
        .env("PIPELINE_BIN", env!("CARGO_BIN_EXE_pipeline"))
        .env("PIPELINE_CACHE", "s3://slurm/photos")
        .envs(s3.env())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&submit.stdout).into_owned();
    assert!(
        submit.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    let merge = said.rsplit("merge: job ").next().unwrap().trim().to_string();
    wait_for(&merge, Duration::from_secs(180));

    let log = |name: &str| std::fs::read_to_string(p.path(name)).unwrap_or_default();
    let merged = log(&format!("pipeline-merge-{merge}.out"));
    assert_contains!(merged, "reused from 4 shards", "the merge's output");
    assert_contains!(merged, "validate: 0 error(s)");
    let shards: Vec<String> = std::fs::read_dir(p.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pipeline-shard-"))
        .collect();
    assert_eq!(shards.len(), 4, "{shards:?}");
    for name in &shards {
        assert_contains!(log(name), "resize         ran", "{name}");
    }

    // One process, no scheduler, no shared cache: the same resize, pixel for pixel.
    let one = photos(60);
    one.run(&["run", "pipeline.yaml"]).ok();
    let export = |q: &Project, env: &[(&str, &str)]| {
        q.run_env(
            &["export", "pipeline.yaml", "--stage", "resize", "-o", "resize.arrow"],
            env,
        )
        .ok();
        std::fs::read(q.path("resize.arrow")).unwrap()
    };
    let env = s3.env();
    let remote: Vec<(&str, &str)> = [
        vec![("PIPELINE_CACHE", "s3://slurm/photos")],
        env.iter().map(|(k, v)| (*k, v.as_str())).collect(),
    ]
    .concat();
    assert_eq!(export(&p, &remote), export(&one, &[]));
    // Another machine, empty local cache: every stage is in the shared cache.
    let other = photos(60);
    let copied = other.run_env(&["run", "pipeline.yaml"], &remote).ok();
    for stage in ["ingest", "split", "resize", "mean_subtract", "normalize", "validate"] {
        assert!(copied.cached(stage), "{}", copied.stdout);
    }
}
