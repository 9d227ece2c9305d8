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
