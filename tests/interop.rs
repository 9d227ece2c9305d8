//! The shipped example, read from Python: every artifact of `pipelines/cats_dogs.yaml` opens
//! with pyarrow, polars and numpy and has the documented columns, dtypes, shape and lineage.
//! Needs `pip install -r tests/python/requirements.txt` (scripts/test.sh does it).

mod common;

use std::process::Command;

#[test]
fn shipped_example_artifacts_open_in_pyarrow_and_polars() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let p = common::Project::new();
    // The example pipeline itself, with its cache moved into the temp project.
    let yaml = std::fs::read_to_string(format!("{repo}/pipelines/cats_dogs.yaml"))
        .unwrap()
        .replace("path: ../data/cats_dogs", &format!("path: {repo}/data/cats_dogs"))
        .replace("name: cats_dogs", "name: cats_dogs\ncache: cache");
    p.pipeline(&yaml);
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    for stage in ["ingest", "split", "resize", "mean_subtract", "normalize", "validate"] {
        assert!(run.line(stage).contains("1800 rows"), "{}", run.stdout);
    }
    // The healthy example raises no false alarm, in the gate or in the audit.
    assert!(
        run.line("validate").contains("(0 errors, 0 warnings)"),
        "{}",
        run.stdout
    );
    let audit = p.run(&["audit", "pipeline.yaml"]).ok();
    assert!(audit.stdout.ends_with("audit: consistent\n"), "{}", audit.stdout);
    assert!(
        !audit.stdout.contains("error ") && !audit.stdout.contains("warning "),
        "{}",
        audit.stdout
    );
    let json = p.run(&["audit", "pipeline.yaml", "--json"]).ok();
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["consistent"], true);
    assert_eq!(doc["stages"].as_array().unwrap().len(), 6);
    let out = Command::new("python3")
        .arg(format!("{repo}/tests/python/check_artifacts.py"))
        .arg(p.path("cache"))
        .args(["cats_dogs", "ingest", "split", "resize", "mean_subtract", "normalize"])
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python check failed (run scripts/test.sh, which installs pyarrow/polars/numpy):\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), 5, "{stdout}");
}
