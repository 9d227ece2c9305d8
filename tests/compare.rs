//! `audit --compare`: features made outside the pipeline (by NumPy/pyarrow code in
//! tests/python/make_external.py), each with one planted difference, must be named.

mod common;

use common::Project;

fn setup() -> (Project, String) {
    let (p, _) = common::example_project();
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = p.path("external");
    common::python(
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
    assert!(same.stdout.contains("matched: 1800 rows by `id`"), "{}", same.stdout);
    assert!(
        same.stdout
            .contains("values: consistent with the pipeline's preprocessing"),
        "{}",
        same.stdout
    );
    assert!(same.stdout.contains("verdict: consistent"));

    let bgr = compare("bgr.npy");
    assert_eq!(bgr.code, 1, "{}", bgr.stdout);
    assert!(bgr.stdout.contains("comparing statistics only"), "{}", bgr.stdout);
    assert!(bgr.stdout.contains("mismatch: channels in BGR order"), "{}", bgr.stdout);

    let nomean = compare("nomean.arrow");
    assert_eq!(nomean.code, 1);
    assert!(
        nomean.stdout.contains("mismatch: mean subtraction missing"),
        "{}",
        nomean.stdout
    );
    assert!(
        nomean.stdout.contains("remove the `mean_subtract` stage"),
        "{}",
        nomean.stdout
    );

    let u8 = compare("u8.npy");
    assert_eq!(u8.code, 1);
    assert!(
        u8.stdout
            .contains("mismatch: integer dtype: the external features are uint8"),
        "{}",
        u8.stdout
    );
    assert!(
        u8.stdout.contains("mismatch: raw pixel values (0..255)"),
        "{}",
        u8.stdout
    );

    let small = compare("small.arrow");
    assert_eq!(small.code, 1);
    assert!(
        small.stdout.contains("matched: 1800 rows by `path`"),
        "{}",
        small.stdout
    );
    assert!(
        small
            .stdout
            .contains("different size: the external rows hold 768 values"),
        "{}",
        small.stdout
    );
    assert!(
        small
            .stdout
            .contains("set `resize.size: [16, 16]` and `resize.filter: bicubic`"),
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
    let (p, _) = common::example_project();
    p.write("junk.npy", "not an npy file");
    let out = p.run(&["audit", "pipeline.yaml", "--compare", "junk.npy"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("junk.npy is not a readable .npy file"),
        "{}",
        out.stderr
    );
    let missing = p.run(&["audit", "pipeline.yaml", "--compare", "nope.arrow"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("nope.arrow"), "{}", missing.stderr);
}
