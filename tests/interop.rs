//! The shipped example, read from Python: every artifact of `pipelines/cats_dogs.yaml` opens
//! with pyarrow, polars and numpy and has the documented columns, dtypes, shape and lineage.
//! Needs `pip install -r tests/python/requirements.txt` (scripts/test.sh does it).

mod common;

#[test]
fn shipped_example_artifacts_open_in_pyarrow_and_polars() {
    let (p, run) = common::example_project();
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
    let cache = p.path("cache");
    let exported = p.path("normalize.arrow");
    let export = p
        .run(&[
            "export",
            "pipeline.yaml",
            "--stage",
            "normalize",
            "-o",
            exported.to_str().unwrap(),
        ])
        .ok();
    assert!(
        export.stdout.contains("exported stage `normalize`: 1800 rows"),
        "{}",
        export.stdout
    );
    let exported_arg = format!("normalize={}", exported.display());
    let stdout = common::python(
        "check_artifacts.py",
        &[
            cache.to_str().unwrap(),
            "cats_dogs",
            "ingest",
            "split",
            "resize",
            "mean_subtract",
            "normalize",
            "--exported",
            &exported_arg,
        ],
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), 6, "{stdout}");
    assert!(
        stdout.contains("ok normalize: 1800 rows, 1800x32x32x3 float32"),
        "{stdout}"
    );
}
