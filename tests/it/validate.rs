//! Planted faults: each is made in the test and must be found by `validate` (or `audit`) with
//! its specific message; the healthy shipped example must raise nothing (see interop.rs).

use crate::support::Project;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Copies a shipped photo into the project.
fn photo(p: &Project, name: &str, to: &str) {
    let dst = p.path(to);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(format!("{REPO}/data/cats_dogs/{name}"), dst).unwrap();
}

const TAIL: &str = "  resize:\n    kind: resize\n    size: [32, 32]\n  normalize:\n    kind: normalize\n    \
                    method: per_image\n  validate:\n    kind: validate\n";

#[test]
fn integer_pixels_stop_the_run_every_time() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 10).pipeline(
        "name: t\nstages:\n  ingest:\n    kind: ingest\n    path: images\n  split:\n    kind: split\n    \
         train: 0.5\n    val: 0.25\n    test: 0.25\n  resize:\n    kind: resize\n    size: [8, 8]\n  \
         validate:\n    kind: validate\n",
    );
    let out = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_contains!(out.stdout, "error   [dtype] pixels are uint8, training expects float32");
    assert_contains!(
        out.stdout,
        "likely cause: integer pixels (0..255) reach the model unscaled"
    );
    assert_contains!(out.stderr, "stage `validate` found 1 error(s) in the data");
    // Cached, the verdict stands: the run still stops, and says why.
    let again = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(again.code, 1);
    assert!(again.cached("validate"), "{}", again.stdout);
    assert_contains!(again.line("validate"), "(1 error, ", "{}", again.stdout);
    assert_contains!(again.stdout, "[dtype] pixels are uint8");
    let audit = p.run(&["audit", "pipeline.yaml"]);
    assert_eq!(audit.code, 1, "{}", audit.stdout);
}

#[test]
fn a_partition_without_a_class_is_an_error() {
    let p = Project::new();
    p.kaggle_images(&["cat"], 30).image("images/dog.0.png", 20, 20, 77);
    p.pipeline(&format!(
        "name: t\nstages:\n  ingest:\n    kind: ingest\n    path: images\n  split:\n    kind: split\n    \
         train: 0.6\n    val: 0.2\n    test: 0.2\n{TAIL}"
    ));
    let out = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_contains!(out.stdout, "error   [classes] partition `");
    assert_contains!(out.stdout, "has no images of class `dog`");
    assert_eq!(
        out.stdout.matches("has no images of class `dog`").count(),
        2,
        "{}",
        out.stdout
    );
}

/// A dataset that comes split in folders, with shipped photos in each partition.
fn folder_dataset(p: &Project) {
    let parts = ["train", "train", "train", "train", "val", "test"];
    for i in 0..24 {
        let (part, class) = (parts[(i / 2) % 6], if i % 2 == 0 { "cat" } else { "dog" });
        photo(
            p,
            &format!("{class}.{}.png", i + 10),
            &format!("images/{part}/{class}.{}.png", i + 10),
        );
    }
    p.pipeline(&format!(
        "name: t\nstages:\n  ingest:\n    kind: ingest\n    path: images\n  split:\n    kind: split\n    \
         method: folder\n{TAIL}"
    ));
}

#[test]
fn healthy_folder_split_passes() {
    let p = Project::new();
    folder_dataset(&p);
    let out = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(out.line("validate"), "(0 errors,", "{}", out.stdout);
    assert_contains!(out.stdout, "leakage: 0 identical and 0 near-identical");
}

#[test]
fn the_same_image_in_train_and_test_is_leakage() {
    let p = Project::new();
    folder_dataset(&p);
    photo(&p, "cat.500.png", "images/train/cat.500.png");
    photo(&p, "cat.500.png", "images/test/cat.copy.png");
    let out = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_contains!(
        out.stdout,
        "error   [leakage] 1 image(s) appear in two partitions (same content)"
    );
    assert_contains!(out.stdout, "test/cat.copy.png (test) = train/cat.500.png (train)");
}

#[test]
fn a_re_encoded_photo_across_partitions_is_a_near_duplicate() {
    let p = Project::new();
    folder_dataset(&p);
    photo(&p, "dog.600.png", "images/train/dog.600.png");
    let img = image::open(format!("{REPO}/data/cats_dogs/dog.600.png"))
        .unwrap()
        .to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&img)
        .unwrap();
    std::fs::write(p.path("images/val/dog.600.jpg"), jpeg).unwrap();
    let out = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(
        out.stdout,
        "warning [near_duplicates] 1 pair(s) of near-identical images"
    );
    assert_contains!(out.stdout, "train/dog.600.png (train) ~ val/dog.600.jpg (val)");
    assert_not_contains!(out.stdout, "[leakage]", "different bytes are not identical content");
}

#[test]
fn a_validate_typo_and_a_fitted_stage_without_split_are_plan_errors() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 2).pipeline(&format!(
        "name: t\nstages:\n  ingest:\n    kind: ingest\n    path: images\n{TAIL}    drift_lnf: 0.2\n"
    ));
    let out = p.run(&["check", "pipeline.yaml"]);
    assert_eq!(out.code, 2);
    assert_contains!(out.stderr, "unknown param `drift_lnf` in stage `validate`");
    assert_contains!(out.stderr, "did you mean `drift_linf`?");
}
