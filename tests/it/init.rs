//! `pipeline init DIR`: on a folder in each label layout it writes a pipeline file that runs
//! first time (trained for one epoch here), it refuses to write over a file, and it says what
//! it cannot read or tell.

use crate::support::Project;

/// `n` images of each class at `dir/{class}/…` (or named by `name(class, i)`).
fn images(p: &Project, n: u32, name: impl Fn(&str, u32) -> String) {
    for (c, class) in ["cat", "dog"].iter().enumerate() {
        for i in 0..n {
            p.image(&name(class, i), 20 + i % 5, 16 + i % 3, c as u32 * 1000 + i);
        }
    }
}

/// `init ARGS` then `run` on the file it wrote, for one epoch; returns init's stdout.
fn init_and_run(p: &Project, args: &[&str], file: &str) -> String {
    let mut cmd = vec!["init"];
    cmd.extend_from_slice(args);
    let init = p.run(&cmd).ok();
    assert_contains!(init.stdout, &format!("wrote {file}"));
    assert_contains!(init.stdout, &format!("next: pipeline run {file}"));
    let run = p.run(&["run", file, "--set", "train.epochs=1"]).ok();
    for stage in [
        "ingest",
        "split",
        "resize",
        "normalize",
        "validate",
        "train",
        "evaluate",
    ] {
        assert!(run.ran(stage), "{}", run.stdout);
    }
    init.stdout
}

#[test]
fn each_label_layout_gives_a_file_that_runs_first_time() {
    let p = Project::new();
    images(&p, 20, |c, i| format!("prefix/{c}.{i}.png"));
    let out = init_and_run(&p, &["prefix"], "pipelines/prefix.yaml");
    assert_contains!(out, "class name before the first dot");
    assert_contains!(out, "40 images in 2 classes: cat 20, dog 20");
    let yaml = std::fs::read_to_string(p.path("pipelines/prefix.yaml")).unwrap();
    assert_contains!(yaml, "path: \"../prefix\"");
    assert_contains!(yaml, "classes: [\"cat\", \"dog\"]");
    assert_contains!(
        yaml,
        "size: [16, 16]",
        "the shorter side of the median image, a multiple of 8"
    );

    images(&p, 20, |c, i| format!("folders/{c}/{i}.png"));
    let out = init_and_run(&p, &["folders", "-o", "folders.yaml"], "folders.yaml");
    assert_contains!(out, "one folder per class");

    let part = |i: u32| ["train", "train", "train", "val", "test"][i as usize % 5];
    images(&p, 20, |c, i| format!("split/{}/{c}/{i}.png", part(i)));
    let out = init_and_run(&p, &["split", "-o", "split.yaml"], "split.yaml");
    assert_contains!(out, "already split");
    let events = p.run(&["run", "split.yaml", "--json"]).ok().stdout;
    let split: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["stage"] == "split")
        .unwrap();
    let partitions = &split["summary"]["partitions"];
    let sizes: Vec<u64> = ["train", "val", "test"]
        .iter()
        .map(|p| partitions[p]["cat"].as_u64().unwrap() + partitions[p]["dog"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [24, 8, 8], "the partitions are the folders: {partitions}");

    images(&p, 20, |c, i| format!("csv/img{}{i}.png", &c[..1]));
    let mut labels = String::from("path,label\n");
    for c in ["cat", "dog"] {
        for i in 0..20 {
            labels.push_str(&format!("img{}{i}.png,{c}\n", &c[..1]));
        }
    }
    p.write("csv/labels.csv", &labels);
    let out = init_and_run(&p, &["csv", "-o", "csv.yaml"], "csv.yaml");
    assert_contains!(out, "labels from");
    assert_contains!(
        std::fs::read_to_string(p.path("csv.yaml")).unwrap(),
        "csv: \"csv/labels.csv\""
    );
}

#[test]
fn init_never_writes_over_a_file_and_explains_what_it_cannot_tell() {
    let p = Project::new();
    images(&p, 12, |c, i| format!("photos/{c}.{i}.png"));
    p.write("pipelines/photos.yaml", "mine\n");
    let again = p.run(&["init", "photos"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert_contains!(again.stderr, "exists; init never writes over a file");
    assert_eq!(
        std::fs::read_to_string(p.path("pipelines/photos.yaml")).unwrap(),
        "mine\n"
    );

    images(&p, 12, |_, i| format!("unnamed/IMG_{i:04}.png"));
    let unnamed = p.run(&["init", "unnamed", "-o", "unnamed.yaml"]);
    assert_eq!(unnamed.code, 1);
    assert_contains!(unnamed.stderr, "cannot tell the classes");
    assert_contains!(unnamed.stderr, "labels.csv");
    assert!(!p.path("unnamed.yaml").exists());

    p.write("photos/cat.broken.png", "not an image");
    let warned = p.run(&["init", "photos", "-o", "warned.yaml"]).ok();
    assert_contains!(warned.stdout, "warning: cat.broken.png: not a readable image");

    let missing = p.run(&["init", "nowhere"]);
    assert_eq!(missing.code, 2);
    assert_contains!(missing.stderr, "nowhere is not a folder of images");
}
