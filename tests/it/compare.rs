//! `audit --compare`: features made outside the pipeline (by NumPy/pyarrow code in
//! tests/python/make_external.py), each with one planted difference, must be named.

use crate::support::Project;

fn setup() -> (Project, String) {
    let (p, _) = crate::support::example_project();
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = p.path("external");
    crate::support::python(
        "make_external.py",
        &[
            p.path("cache").to_str().unwrap(),
            "cats_dogs",
            &format!("{repo}/data/cats_dogs"),
            out.to_str().unwrap(),
        ],
    );
    (p, out.to_string_lossy().into_owned())
}

#[test]
fn external_features_are_diagnosed() {
    let (p, ext) = setup();
    let compare = |file: &str| p.run(&["audit", "pipeline.yaml", "--compare", &format!("{ext}/{file}")]);

    let same = compare("same.arrow").ok();
    assert_contains!(same.stdout, "matched: 1800 rows by `id`");
    assert_contains!(same.stdout, "values: consistent with the pipeline's preprocessing");
    assert_contains!(same.stdout, "verdict: consistent");

    let bgr = compare("bgr.npy");
    assert_eq!(bgr.code, 1, "{}", bgr.stdout);
    assert_contains!(bgr.stdout, "comparing statistics only");
    assert_contains!(bgr.stdout, "mismatch: channels in BGR order");

    let nomean = compare("nomean.arrow");
    assert_eq!(nomean.code, 1);
    assert_contains!(nomean.stdout, "mismatch: mean subtraction missing");
    assert_contains!(nomean.stdout, "remove the `mean_subtract` stage");

    let u8 = compare("u8.npy");
    assert_eq!(u8.code, 1);
    assert_contains!(u8.stdout, "mismatch: integer dtype: the external features are uint8");
    assert_contains!(u8.stdout, "mismatch: raw pixel values (0..255)");

    let small = compare("small.arrow");
    assert_eq!(small.code, 1);
    assert_contains!(small.stdout, "matched: 1800 rows by `path`");
    assert_contains!(
        small.stdout,
        "different size: the external rows hold 768 values",
        "{}",
        small.stdout
    );
    assert_contains!(
        small.stdout,
        "set `resize.size: [16, 16]` and `resize.filter: bicubic`",
        "{}",
        small.stdout
    );

    let json = p.run(&[
        "audit",
        "pipeline.yaml",
        "--json",
        "--compare",
        &format!("{ext}/bgr.npy"),
    ]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["consistent"], false);
    assert_eq!(doc["comparisons"][0]["hypotheses"][0]["name"], "bgr");
}

#[test]
fn unreadable_external_files_get_a_clear_error() {
    let (p, _) = crate::support::example_project();
    p.write("junk.npy", "not an npy file");
    let out = p.run(&["audit", "pipeline.yaml", "--compare", "junk.npy"]);
    assert_eq!(out.code, 1);
    assert_contains!(out.stderr, "junk.npy is not a readable .npy file");
    let missing = p.run(&["audit", "pipeline.yaml", "--compare", "nope.arrow"]);
    assert_eq!(missing.code, 1);
    assert_contains!(missing.stderr, "nope.arrow");
}
