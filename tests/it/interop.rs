//! The shipped example, read from Python: every artifact of `pipelines/cats_dogs.yaml` opens
//! with pyarrow, polars and numpy and has the documented columns, dtypes, shape and lineage.
//! Needs `pip install -r tests/python/requirements.txt` (scripts/test.sh does it).

#[test]
fn shipped_example_artifacts_open_in_pyarrow_and_polars() {
    let (p, run) = crate::support::example_project();
    for stage in ["ingest", "split", "resize", "mean_subtract", "normalize", "validate"] {
        assert_contains!(run.line(stage), "1800 rows", "{}", run.stdout);
    }
    // The healthy example raises no false alarm, in the gate or in the audit.
    assert_contains!(run.line("validate"), "(0 errors, 0 warnings)", "{}", run.stdout);
    let audit = p.run(&["audit", "pipeline.yaml"]).ok();
    assert!(audit.stdout.ends_with("audit: consistent\n"), "{}", audit.stdout);
    assert_not_contains!(audit.stdout, "error ");
    assert_not_contains!(audit.stdout, "warning ");
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
    assert_contains!(export.stdout, "exported stage `normalize`: 1800 rows");
    let exported_arg = format!("normalize={}", exported.display());
    let stdout = crate::support::python(
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
    assert_contains!(stdout, "ok normalize: 1800 rows, 1800x32x32x3 float32");
}
