//! A damaged cache is detected, reported and repaired by recomputation.

use crate::support::{BASIC, Project};

#[test]
fn truncated_bit_flipped_and_missing_artifacts_are_detected_and_recomputed() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml"]).ok();
    let ok = p.run(&["cache", "verify", "pipeline.yaml"]).ok();
    assert_contains!(ok.stdout, "verified 5 artifact(s): 5 intact, 0 damaged");
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
    assert_contains!(verify.stdout, "verified 5 artifact(s): 2 intact, 3 damaged");
    assert_contains!(verify.stdout, "resize (resize)");
    assert_contains!(verify.stdout, "checksum mismatch");
    assert_contains!(
        verify.stdout,
        &format!("the data file has {} bytes, the record says {len}", len - 7)
    );
    assert_contains!(verify.stdout, "the data file is missing");

    let status = p.run(&["status", "pipeline.yaml"]).ok();
    assert_contains!(
        status.line("resize"),
        "stale  cached artifact unusable: its data file does not match",
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
    assert_contains!(after.stdout, "5 intact, 0 damaged");
    let ls = p.run(&["cache", "ls", "pipeline.yaml"]).ok();
    assert_eq!(ls.stdout.lines().count(), 5, "{}", ls.stdout);
    let du = p.run(&["cache", "du", "pipeline.yaml"]).ok();
    assert_contains!(du.stdout, "total");
}

/// Images added to (or removed from) the folder: `resize` decodes only the new ones, keeps
/// the others where they are (a segmented artifact naming the files that hold them), and
/// every stage's data reads exactly as a cold run's; element-wise stages are views holding no
/// pixels of their own; a damaged segment makes `resize` run again.
#[test]
fn added_images_are_decoded_alone_and_the_result_equals_a_cold_run() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    let first = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(first.line("resize"), "12 rows", "{}", first.stdout);
    assert_not_contains!(first.line("resize"), "reused", "{}", first.stdout);
    let resize_bytes = std::fs::metadata(p.artifact_path("t", "resize")).unwrap().len();
    p.image("images/cat.50.png", 21, 17, 50)
        .image("images/dog.50.png", 23, 16, 1050);
    let second = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(
        second.line("resize"),
        "(2 decoded, 12 reused from the last run)",
        "{}",
        second.stdout
    );
    // Only the new images' pixels were written: the new resize file holds rows, not pixels.
    let segmented = std::fs::metadata(p.artifact_path("t", "resize")).unwrap().len();
    assert!(segmented < resize_bytes, "{segmented} vs {resize_bytes}");
    p.image("images/cat.51.png", 22, 18, 51);
    let third = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(
        third.line("resize"),
        "(1 decoded, 14 reused from the last run)",
        "{}",
        third.stdout
    );
    // The same folder into an empty cache: the same data, stage by stage.
    let cold = p.path("cold-cache");
    let cold_env = [("PIPELINE_CACHE", cold.to_str().unwrap())];
    p.run_env(&["run", "pipeline.yaml"], &cold_env).ok();
    for stage in ["ingest", "split"] {
        let warm = p.artifact_path("t", stage);
        let other = cold.join("artifacts").join(warm.file_name().unwrap());
        assert_eq!(std::fs::read(&warm).unwrap(), std::fs::read(&other).unwrap(), "{stage}");
    }
    for stage in ["resize", "mean_subtract", "normalize"] {
        let (a, b) = (p.path(&format!("{stage}.a.arrow")), p.path(&format!("{stage}.b.arrow")));
        p.run(&["export", "pipeline.yaml", "--stage", stage, "-o", a.to_str().unwrap()])
            .ok();
        p.run_env(
            &["export", "pipeline.yaml", "--stage", stage, "-o", b.to_str().unwrap()],
            &cold_env,
        )
        .ok();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{stage} differs from a cold run"
        );
    }
    // Views: the element-wise stages' files hold rows, not another copy of the pixels.
    for stage in ["mean_subtract", "normalize"] {
        let batches = p.read_artifact("t", stage);
        assert!(batches[0].schema().field_with_name("pixels").is_err(), "{stage}");
    }
    // Removing an image decodes nothing.
    std::fs::remove_file(p.path("images/dog.3.png")).unwrap();
    let fourth = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(
        fourth.line("resize"),
        "(0 decoded, 14 reused from the last run)",
        "{}",
        fourth.stdout
    );
    let verify = p.run(&["cache", "verify", "pipeline.yaml"]).ok();
    assert_contains!(verify.stdout, "0 damaged");
    // A segment that goes missing is noticed, and resize runs again from the images.
    let segments: Vec<std::path::PathBuf> = std::fs::read_dir(p.path("cache/artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| {
            f.extension().is_some_and(|x| x == "json") && std::fs::read_to_string(f).unwrap().contains("(new images)")
        })
        .collect();
    assert_eq!(segments.len(), 2, "{segments:?}");
    std::fs::remove_file(segments[0].with_extension("arrow")).unwrap();
    let fifth = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(
        fifth.ran("resize") && fifth.line("resize").contains("is missing or damaged"),
        "{}",
        fifth.stdout
    );
}

/// Damage planted at seeded random offsets of an artifact above the size checked whole on
/// lookup (64 MiB; such an artifact is trusted on lookup by its size): the stage reading it
/// finds the damage before using the bytes, fails naming the file, and marks it; `status`
/// says so, and the next run recomputes it to the very same bytes.
#[test]
fn damage_in_an_artifact_too_big_to_check_on_lookup_is_found_before_use_and_recomputed() {
    let p = Project::new();
    // 400 images at 256x256: 78.6 MB of pixels.
    p.kaggle_images(&["cat", "dog"], 200)
        .pipeline(&BASIC.replace("size: [8, 8]", "size: [256, 256]"));
    p.run(&["run", "pipeline.yaml"]).ok();
    let resize = p.artifact_path("t", "resize");
    let good = std::fs::read(&resize).unwrap();
    assert!(good.len() > 64 << 20, "{} bytes", good.len());
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % good.len() as u64) as usize;
        let mut bytes = good.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(&resize, &bytes).unwrap();

        let status = p.run(&["status", "pipeline.yaml"]).ok();
        assert!(
            !status.line("resize").contains("stale"),
            "trusted by size: {}",
            status.stdout
        );
        // `mean_subtract` (fitted on the pixels) reads the whole artifact again.
        let failed = p.run(&["run", "pipeline.yaml", "--force", "mean_subtract"]);
        let what = format!("damage at byte {at}:\n{}\n{}", failed.stdout, failed.stderr);
        assert_eq!(failed.code, 1, "{what}");
        assert_contains!(failed.stderr, &*resize.file_name().unwrap().to_string_lossy(), "{what}");
        assert_contains!(
            failed.stderr,
            "the artifact is damaged and marked so: run again to recompute it",
            "{what}"
        );
        let status = p.run(&["status", "pipeline.yaml"]).ok();
        assert_contains!(
            status.line("resize"),
            "it was found damaged when read",
            "{}",
            status.stdout
        );

        let again = p.run(&["run", "pipeline.yaml"]).ok();
        // Only the damaged artifact is recomputed: `mean_subtract`'s own stays valid.
        assert!(again.ran("resize") && again.cached("mean_subtract"), "{}", again.stdout);
        assert!(
            std::fs::read(&resize).unwrap() == good,
            "recomputed to other bytes (damage at {at})"
        );
        assert!(!std::path::Path::new(&resize.with_extension("damaged")).exists());
    }
    p.run(&["cache", "verify", "pipeline.yaml"]).ok();
}

/// Every file and folder under `dir` is readable and writable by the group (folders also
/// searchable and keeping their group); returns how many were checked.
fn assert_group_shared(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        let want = if path.is_dir() { 0o2070 } else { 0o060 };
        assert_eq!(mode & want, want, "{} has mode {mode:o}", path.display());
        n += 1;
        if path.is_dir() {
            n += assert_group_shared(&path);
        }
    }
    n
}

/// A cache folder made group-writable is shared: what a run makes in it is group-writable
/// too under a umask of 077, and (when this machine lets us switch users) another user of
/// the group runs another pipeline on it and the first user's runs go on working.
#[test]
fn a_group_writable_cache_stays_usable_by_the_group() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    let cache = p.path("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let bin = env!("CARGO_BIN_EXE_pipeline");
    let sh = |prefix: &str, args: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("umask 077; exec {prefix} {bin} {args}")])
            .current_dir(p.root())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = sh("", "run pipeline.yaml");
    assert!(ok, "{err}");
    assert!(assert_group_shared(&cache) > 15);

    // Another user in the cache's group (root's group 0 here, as nobody).
    let switch = "setpriv --reuid=65534 --regid=65534 --groups=0";
    let can_switch = std::process::Command::new("sh")
        .args(["-c", &format!("{switch} true")])
        .status()
        .is_ok_and(|s| s.success());
    if !can_switch {
        eprintln!("skipped the second user: setpriv cannot switch users here");
        return;
    }
    std::fs::set_permissions(p.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, err) = sh(switch, "run pipeline.yaml --set resize.size=[6,6]");
    assert!(ok, "the second user's run: {err}");
    let (ok, err) = sh(switch, "run pipeline.yaml");
    assert!(ok, "the second user's warm run: {err}");
    assert_group_shared(&cache);
    let (ok, err) = sh("", "run pipeline.yaml --set resize.size=[5,5]");
    assert!(ok, "the first user after the second: {err}");
    p.run(&["cache", "verify", "pipeline.yaml"]).ok();
}

/// A cache on a read-only mount (when this machine lets us bind-mount one) is read: a warm
/// run, `status` and `cache verify` work; a stage that must be computed is a clear error.
#[test]
fn a_read_only_cache_is_read_and_refuses_only_what_must_be_written() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml"]).ok();
    let ro = p.path("ro-cache");
    std::fs::create_dir_all(&ro).unwrap();
    let mount = |args: &[&str]| {
        std::process::Command::new("mount")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let (cache, ro_s) = (p.path("cache"), ro.to_str().unwrap().to_string());
    if !mount(&["--bind", cache.to_str().unwrap(), &ro_s]) {
        eprintln!("skipped: cannot bind-mount here");
        return;
    }
    let remounted = mount(&["-o", "remount,bind,ro", &ro_s]);
    let env = [("PIPELINE_CACHE", ro_s.as_str())];
    let warm = p.run_env(&["run", "pipeline.yaml"], &env);
    let status = p.run_env(&["status", "pipeline.yaml"], &env);
    let verify = p.run_env(&["cache", "verify", "pipeline.yaml"], &env);
    let stale = p.run_env(&["run", "pipeline.yaml", "--set", "resize.size=[6,6]"], &env);
    std::process::Command::new("umount").arg(&ro).status().unwrap();
    assert!(remounted, "bind-mounted but could not make it read-only");
    assert_eq!(warm.code, 0, "{}{}", warm.stdout, warm.stderr);
    assert!(
        warm.stdout.lines().filter(|l| l.contains(" cached ")).count() >= 5,
        "{}",
        warm.stdout
    );
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    assert_eq!(stale.code, 1, "{}", stale.stdout);
    assert_contains!(stale.stderr, "stage `resize` must be computed, but the cache");
    assert_contains!(stale.stderr, "is read-only: nothing can be stored there");
}
