//! The binary as a user runs it: caching, staleness and its reasons, errors in the YAML.

use crate::support::{BASIC, Project};

#[test]
fn second_run_recomputes_nothing() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    let first = p.run(&["run", "pipeline.yaml"]).ok();
    for stage in ["ingest", "split", "resize", "mean_subtract", "normalize"] {
        assert!(first.ran(stage), "{}", first.stdout);
    }
    let records_before = records(&p);
    let second = p.run(&["run", "pipeline.yaml"]).ok();
    for stage in ["ingest", "split", "resize", "mean_subtract", "normalize"] {
        assert!(second.cached(stage), "{}", second.stdout);
        assert!(second.line(stage).ends_with("12 rows"), "{}", second.line(stage));
    }
    assert_eq!(records(&p), records_before, "a warm run must not rewrite any artifact");
    let status = p.run(&["status", "pipeline.yaml"]).ok();
    assert_eq!(status.stdout.matches("fresh").count(), 5, "{}", status.stdout);
}

/// Every artifact record in the cache, with its content.
fn records(p: &Project) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(p.path("cache/artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap_or_default(),
            )
        })
        .filter(|(n, _)| n.ends_with(".json"))
        .collect();
    v.sort();
    v
}

#[test]
fn changing_resize_size_restales_resize_and_downstream_only() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 5).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml"]).ok();
    p.pipeline(&BASIC.replace("size: [8, 8]", "size: [12, 10]"));
    let status = p.run(&["status", "pipeline.yaml"]).ok();
    assert_contains!(status.line("ingest"), "fresh");
    assert_contains!(status.line("split"), "fresh");
    assert_contains!(
        status.line("resize"),
        "stale  param size changed [8, 8] -> [12, 10]",
        "{}",
        status.stdout
    );
    assert_contains!(status.line("mean_subtract"), "stale  input resize changed");
    assert_contains!(status.line("normalize"), "stale  input mean_subtract changed");
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(run.cached("ingest") && run.cached("split"), "{}", run.stdout);
    assert!(run.ran("resize") && run.ran("mean_subtract") && run.ran("normalize"));
    assert_contains!(run.line("resize"), "param size changed [8, 8] -> [12, 10]");
}

#[test]
fn set_override_enters_the_fingerprint_like_a_param() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 4).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml"]).ok();
    let run = p.run(&["run", "pipeline.yaml", "--set", "resize.size=[16,16]"]).ok();
    assert!(run.cached("split") && run.ran("resize"), "{}", run.stdout);
    assert_contains!(run.line("resize"), "param size changed [8, 8] -> [16, 16]");
    // Back to the file's value: the first artifact is still cached.
    let back = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(back.cached("resize"), "{}", back.stdout);
    let bad = p.run(&["run", "pipeline.yaml", "--set", "resise.size=[16,16]"]);
    assert_eq!(bad.code, 2);
    assert_contains!(bad.stderr, "there is no stage `resise`");
    assert_contains!(bad.stderr, "did you mean `resize`?");
}

/// A bad `--set` value is reported against the argument that carried it (with a caret under
/// the value and what it overrides), by every command that loads the pipeline, never against
/// a line of the file.
#[test]
fn a_bad_set_is_reported_against_its_argument_by_every_command() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 2).pipeline(BASIC);
    let commands: [&[&str]; 5] = [
        &["run"],
        &["status"],
        &["check"],
        &["diagnose"],
        &["export", "-o", "out.arrow"],
    ];
    for command in commands {
        for (set, caret, note) in [
            (
                "resize.size=[0,32]",
                "  | --set resize.size=[0,32]\n  |                    ^\n",
                "overrides `size` of stage `resize`, set in pipeline.yaml:14:",
            ),
            (
                "split.train=abc",
                "  | --set split.train=abc\n  |                   ^^^\n",
                "overrides `train` of stage `split`, set in pipeline.yaml:",
            ),
            (
                "split.tran=0.5",
                "  | --set split.tran=0.5\n  |             ^^^^\n",
                "adds `tran` to stage `split`; the file does not set it",
            ),
        ] {
            let mut args = command.to_vec();
            args.extend(["pipeline.yaml", "--set", set]);
            let bad = p.run(&args);
            assert_eq!(bad.code, 2, "{args:?}: {}", bad.stderr);
            assert_contains!(bad.stderr, "--> the command line");
            assert_contains!(bad.stderr, caret);
            assert_contains!(bad.stderr, note);
            assert_not_contains!(bad.stderr, "--> pipeline.yaml:");
        }
    }
    // A value an earlier `--set` gave is named as that argument's, not as a line of the file.
    let twice = p.run(&[
        "check",
        "pipeline.yaml",
        "--set",
        "split.train=0.5",
        "--set",
        "split.train=abc",
    ]);
    assert_contains!(
        twice.stderr,
        "overrides `train` of stage `split`, set by `--set split.train=0.5` before it"
    );
    assert!(
        !p.path("cache").exists() && !p.path("out.arrow").exists(),
        "nothing ran"
    );
}

/// The pipeline's `seed` is what a `split` without its own seed draws with: changing it
/// re-splits (the reason says so), and `audit` and `status -v` show the seed used.
#[test]
fn the_pipeline_seed_is_the_split_seed_it_uses() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml"]).ok();
    let before = p.column("t", "split", "partition");
    p.pipeline(&BASIC.replace("seed: 7", "seed: 8"));
    let status = p.run(&["-v", "status", "pipeline.yaml"]).ok();
    assert_contains!(status.line("split"), "stale  param seed changed 7 -> 8");
    assert_contains!(
        status.stdout,
        "params: seed: 8 (the pipeline's), test: 0.2, train: 0.6, val: 0.2"
    );
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(run.cached("ingest") && run.ran("split"), "{}", run.stdout);
    let after = p.column("t", "split", "partition");
    assert_ne!(before, after, "another seed draws other partitions");
    let audit = p.run(&["audit", "pipeline.yaml"]).ok();
    assert_contains!(audit.stdout, "params:  split v2 seed: 8 (the pipeline's)");
    // A split's own seed is its own.
    let own = BASIC.replace("    test: 0.2\n", "    test: 0.2\n    seed: 8\n");
    p.pipeline(&own);
    let status = p.run(&["-v", "status", "pipeline.yaml"]).ok();
    assert_contains!(status.line("split"), "fresh");
    assert_contains!(status.stdout, "params: seed: 8, test: 0.2");
}

#[test]
fn adding_changing_and_removing_images_restales_ingest_with_counts() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 5).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml"]).ok();
    p.image("images/cat.100.png", 20, 20, 9001);
    p.image("images/dog.100.png", 20, 20, 9002);
    p.image("images/dog.101.png", 20, 20, 9003);
    p.image("images/cat.0.png", 21, 21, 9004);
    std::fs::remove_file(p.path("images/dog.4.png")).unwrap();
    let status = p.run(&["status", "pipeline.yaml"]).ok();
    assert_eq!(
        status.line("ingest"),
        "ingest         stale  3 files added, 1 file changed, 1 file removed",
        "{}",
        status.stdout
    );
    assert_contains!(status.line("split"), "stale  input ingest changed");
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(
        run.ran("ingest") && run.line("ingest").contains("12 rows"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_partition_survives_adding_100_images() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 30).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml", "--stage", "split"]).ok();
    let before: std::collections::BTreeMap<String, String> = p
        .column("t", "split", "id")
        .into_iter()
        .zip(p.column("t", "split", "partition"))
        .collect();
    assert_eq!(before.len(), 60);
    for i in 0..50 {
        p.image(&format!("images/cat.new{i}.png"), 18, 18, 50_000 + i);
        p.image(&format!("images/dog.new{i}.png"), 18, 18, 60_000 + i);
    }
    p.run(&["run", "pipeline.yaml", "--stage", "split"]).ok();
    let after: std::collections::BTreeMap<String, String> = p
        .column("t", "split", "id")
        .into_iter()
        .zip(p.column("t", "split", "partition"))
        .collect();
    assert_eq!(after.len(), 160);
    for (id, part) in &before {
        assert_eq!(after.get(id), Some(part), "image {id} moved partition");
    }
    let parts: std::collections::BTreeSet<&String> = after.values().collect();
    assert_eq!(parts.len(), 3, "all three partitions are used");
}

#[test]
fn typo_in_param_gets_position_and_suggestion() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 2).pipeline(
        &BASIC
            .replace("size: [8, 8]", "sise: [8, 8]")
            .replace("per_image", "per_imag"),
    );
    let out = p.run(&["check", "pipeline.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_contains!(
        out.stderr,
        "error: unknown param `sise` in stage `resize`\n  --> pipeline.yaml:14:5\n"
    );
    assert_contains!(out.stderr, "   |     ^^^^\n   = help: did you mean `size`?");
    assert_contains!(out.stderr, "pipeline.yaml:20:13");
    assert_contains!(out.stderr, "did you mean `per_image`?");
    assert_contains!(out.stderr, "pipeline.yaml: 2 problems found");
}

#[test]
fn fit_without_split_is_rejected_with_the_leakage_explained() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 2).pipeline(
        "name: t\nstages:\n  ingest:\n    kind: ingest\n    path: images\n  resize:\n    kind: resize\n    size: [8, 8]\n  \
         ms:\n    kind: mean_subtract\n    mean: fit\n",
    );
    let out = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(out.code, 2);
    assert_contains!(
        out.stderr,
        "stage `ms` fits statistics on the data, but no `split` stage is upstream of it"
    );
    assert_contains!(out.stderr, "leaking them into the preprocessing");
    assert!(
        !p.path("cache/artifacts").exists(),
        "nothing may run when the plan is rejected"
    );
}

#[test]
fn cycles_are_named_and_unknown_kinds_get_a_suggestion() {
    let p = Project::new();
    p.pipeline(
        "name: t\nstages:\n  a:\n    kind: resize\n    input: c\n    size: [4, 4]\n  b:\n    kind: normalize\n    \
         input: a\n    method: per_image\n  c:\n    kind: normalize\n    input: b\n    method: per_image\n  \
         m:\n    kind: trian\n",
    );
    let out = p.run(&["check", "pipeline.yaml"]);
    assert_eq!(out.code, 2);
    assert_contains!(out.stderr, "the stages form a cycle: ");
    assert!(
        out.stderr.contains("a -> b -> c -> a") || out.stderr.contains("b -> c -> a -> b"),
        "{}",
        out.stderr
    );
    assert_contains!(out.stderr, "unknown stage kind `trian`");
    assert_contains!(out.stderr, "did you mean `train`?");
}

#[test]
fn force_and_stage_select_what_runs() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 3).pipeline(BASIC);
    let partial = p.run(&["run", "pipeline.yaml", "--stage", "resize"]).ok();
    assert_eq!(partial.stdout.lines().count(), 3, "{}", partial.stdout);
    let forced = p.run(&["run", "pipeline.yaml", "--force", "split"]).ok();
    assert!(forced.cached("ingest") && forced.ran("split"), "{}", forced.stdout);
    assert_contains!(forced.line("split"), "(forced)");
    // Forcing split rebuilt an identical artifact, so resize is still cached.
    assert!(forced.cached("resize"), "{}", forced.stdout);
    assert!(forced.ran("mean_subtract"), "never run before");
    let all = p.run(&["run", "pipeline.yaml", "--force"]).ok();
    assert_eq!(all.stdout.matches(" ran ").count(), 5, "{}", all.stdout);
}

#[test]
fn dag_prints_text_dot_and_mermaid() {
    let p = Project::new();
    p.pipeline(BASIC);
    let text = p.run(&["dag", "pipeline.yaml"]).ok();
    assert_eq!(
        text.stdout,
        "ingest (ingest)\nsplit (split) <- ingest\nresize (resize) <- split\nmean_subtract (mean_subtract) <- resize\nnormalize (normalize) <- mean_subtract\n"
    );
    let dot = p.run(&["dag", "pipeline.yaml", "--format", "dot"]).ok();
    assert_contains!(dot.stdout, "\"split\" -> \"resize\";");
    let mermaid = p.run(&["dag", "pipeline.yaml", "--format", "mermaid"]).ok();
    assert_contains!(mermaid.stdout, "resize --> mean_subtract");
}

#[test]
fn labels_from_folders_and_csv() {
    let p = Project::new();
    p.image("imgs/cat/a.png", 10, 10, 1)
        .image("imgs/cat/b.png", 10, 10, 2)
        .image("imgs/dog/c.png", 10, 10, 3)
        .write("labels.csv", "path,label\ncat/a.png,x\ncat/b.png,y\ndog/c.png,x\n")
        .pipeline(
            "name: f\nstages:\n  folders:\n    kind: ingest\n    path: imgs\n    labels: folder\n  \
             csv:\n    kind: ingest\n    path: imgs\n    labels: csv\n    csv: labels.csv\n",
        );
    p.run(&["run", "pipeline.yaml"]).ok();
    assert_eq!(p.column("f", "folders", "class"), vec!["cat", "cat", "dog"]);
    assert_eq!(p.column("f", "csv", "class"), vec!["x", "y", "x"]);
    assert_eq!(
        p.column("f", "folders", "path"),
        vec!["cat/a.png", "cat/b.png", "dog/c.png"]
    );
    // Renaming a class in the csv (same files, same order of names) is a change of ingest's
    // output: the names are part of what its fingerprint covers.
    p.write("labels.csv", "path,label\ncat/a.png,xx\ncat/b.png,y\ndog/c.png,xx\n");
    let renamed = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(renamed.ran("csv"), "{}", renamed.stdout);
    assert!(!renamed.ran("folders"), "{}", renamed.stdout);
    assert_eq!(p.column("f", "csv", "class"), vec!["xx", "y", "xx"]);
}

#[test]
fn unreadable_images_are_all_listed_and_nothing_is_cached_for_the_stage() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 3).pipeline(BASIC);
    p.write("images/cat.bad.png", "this is not a png");
    std::fs::write(p.path("images/dog.empty.png"), b"").unwrap();
    let out = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_contains!(out.stderr, "stage `resize` failed");
    assert_contains!(out.stderr, "2 image(s) could not be used");
    assert_contains!(out.stderr, "cat.bad.png");
    assert_contains!(out.stderr, "dog.empty.png");
    // What finished before the failure stays cached.
    std::fs::remove_file(p.path("images/cat.bad.png")).unwrap();
    std::fs::remove_file(p.path("images/dog.empty.png")).unwrap();
    let again = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(again.ran("ingest"), "file list changed: {}", again.stdout);
    assert!(
        std::fs::read_dir(p.path("cache/tmp")).unwrap().next().is_none(),
        "no litter"
    );
}

#[test]
fn grayscale_and_rgba_images_become_rgb_by_the_documented_rule() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("images")).unwrap();
    image::GrayImage::from_fn(4, 3, |x, y| image::Luma([(x * 40 + y) as u8]))
        .save(p.path("images/gray.0.png"))
        .unwrap();
    image::RgbaImage::from_fn(4, 3, |x, y| image::Rgba([x as u8, y as u8, 200, (x * 60) as u8]))
        .save(p.path("images/rgba.0.png"))
        .unwrap();
    p.pipeline(
        "name: g\nstages:\n  ingest:\n    kind: ingest\n    path: images\n  resize:\n    kind: resize\n    \
         size: [3, 4]\n",
    );
    p.run(&["run", "pipeline.yaml"]).ok();
    let batches = p.read_artifact("g", "resize");
    let list = batches[0]
        .column_by_name("pixels")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow_array::FixedSizeListArray>()
        .unwrap()
        .clone();
    let values = list
        .values()
        .as_any()
        .downcast_ref::<arrow_array::UInt8Array>()
        .unwrap();
    let px: Vec<u8> = values.values().to_vec();
    assert_eq!(list.value_length(), 36);
    // Row 0 is gray.0.png (sorted paths): every pixel's three channels equal the gray value.
    for (i, rgb) in px[..36].chunks(3).enumerate() {
        let (x, y) = ((i % 4) as u8, (i / 4) as u8);
        assert_eq!(rgb, [x * 40 + y; 3]);
    }
    // Row 1 is rgba.0.png: the alpha channel is dropped, colour values kept as stored.
    for (i, rgb) in px[36..].chunks(3).enumerate() {
        let (x, y) = ((i % 4) as u8, (i / 4) as u8);
        assert_eq!(rgb, [x, y, 200]);
    }
}

#[test]
fn a_closed_stdout_ends_quietly_not_with_an_error() {
    use std::process::{Command, Stdio};
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    p.run(&["run", "pipeline.yaml"]).ok();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["audit", "pipeline.yaml", "--json"])
        .current_dir(p.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before the first line
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_not_contains!(stderr, "Broken pipe");
    assert!(matches!(out.status.code(), Some(0 | 141)), "{:?}: {stderr}", out.status);
}
