//! A damaged cache is detected, reported and repaired by recomputation.

mod common;

use common::{BASIC, Project};

#[test]
fn truncated_bit_flipped_and_missing_artifacts_are_detected_and_recomputed() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml"]).ok();
    let ok = p.run(&["cache", "verify", "pipeline.yaml"]).ok();
    assert!(
        ok.stdout.contains("verified 5 artifact(s): 5 intact, 0 damaged"),
        "{}",
        ok.stdout
    );
    // Flip one bit in the resize artifact, truncate split's, delete mean_subtract's.
    let resize = p.artifact_path("t", "resize");
    let mut bytes = std::fs::read(&resize).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&resize, bytes).unwrap();
    let split = p.artifact_path("t", "split");
    let len = std::fs::metadata(&split).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&split)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    std::fs::remove_file(p.artifact_path("t", "mean_subtract")).unwrap();

    let verify = p.run(&["cache", "verify", "pipeline.yaml"]);
    assert_eq!(verify.code, 1, "{}", verify.stdout);
    assert!(
        verify.stdout.contains("verified 5 artifact(s): 2 intact, 3 damaged"),
        "{}",
        verify.stdout
    );
    assert!(verify.stdout.contains("resize (resize)") && verify.stdout.contains("checksum mismatch"));
    assert!(
        verify
            .stdout
            .contains(&format!("the data file has {} bytes, the record says {len}", len - 7))
    );
    assert!(verify.stdout.contains("the data file is missing"), "{}", verify.stdout);

    let status = p.run(&["status", "pipeline.yaml"]).ok();
    assert!(
        status
            .line("resize")
            .contains("stale  cached artifact unusable: its data file does not match"),
        "{}",
        status.stdout
    );
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(run.cached("ingest"), "{}", run.stdout);
    for stage in ["split", "resize", "mean_subtract"] {
        assert!(
            run.ran(stage) && run.line(stage).contains("cached artifact unusable"),
            "{}",
            run.stdout
        );
    }
    let after = p.run(&["cache", "verify", "pipeline.yaml"]).ok();
    assert!(after.stdout.contains("5 intact, 0 damaged"), "{}", after.stdout);
    let ls = p.run(&["cache", "ls", "pipeline.yaml"]).ok();
    assert_eq!(ls.stdout.lines().count(), 5, "{}", ls.stdout);
    let du = p.run(&["cache", "du", "pipeline.yaml"]).ok();
    assert!(du.stdout.contains("total"), "{}", du.stdout);
}

/// Images added to (or removed from) the folder: `resize` decodes only the new ones and
/// copies the rest from its last artifact, and the result is byte for byte what a cold run
/// makes; element-wise stages are views holding no pixels of their own.
#[test]
fn added_images_are_decoded_alone_and_the_result_equals_a_cold_run() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    let first = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(first.line("resize").contains("12 rows"), "{}", first.stdout);
    assert!(!first.line("resize").contains("reused"), "{}", first.stdout);
    p.image("images/cat.50.png", 21, 17, 50)
        .image("images/dog.50.png", 23, 16, 1050);
    let second = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(
        second
            .line("resize")
            .contains("(2 decoded, 12 reused from the last run)"),
        "{}",
        second.stdout
    );
    // The same folder into an empty cache: every stage's artifact is identical.
    let cold = p.path("cold-cache");
    p.run_env(&["run", "pipeline.yaml"], &[("PIPELINE_CACHE", cold.to_str().unwrap())])
        .ok();
    for stage in ["ingest", "split", "resize", "mean_subtract", "normalize"] {
        let warm = p.artifact_path("t", stage);
        let other = cold.join("artifacts").join(warm.file_name().unwrap());
        assert_eq!(
            std::fs::read(&warm).unwrap(),
            std::fs::read(&other).unwrap(),
            "{stage} differs from a cold run"
        );
    }
    // Views: the element-wise stages' files hold rows, not another copy of the pixels.
    let resize_bytes = std::fs::metadata(p.artifact_path("t", "resize")).unwrap().len();
    for stage in ["mean_subtract", "normalize"] {
        let batches = p.read_artifact("t", stage);
        assert!(batches[0].schema().field_with_name("pixels").is_err(), "{stage}");
        let bytes = std::fs::metadata(p.artifact_path("t", stage)).unwrap().len();
        assert!(bytes < resize_bytes, "{stage}: {bytes} bytes vs resize {resize_bytes}");
    }
    // Removing an image decodes nothing.
    std::fs::remove_file(p.path("images/dog.3.png")).unwrap();
    let third = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(
        third
            .line("resize")
            .contains("(0 decoded, 13 reused from the last run)"),
        "{}",
        third.stdout
    );
    let verify = p.run(&["cache", "verify", "pipeline.yaml"]).ok();
    assert!(verify.stdout.contains("0 damaged"), "{}", verify.stdout);
}
