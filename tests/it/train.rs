//! Training, evaluation and prediction through the binary.

use crate::support::{Project, TRAIN_DATA};

const MLP: &str = "  train:\n    kind: train\n    model: mlp\n    hidden: [16]\n    epochs: 15\n    lr: 0.01\n    \
                   batch_size: 16\n  evaluate:\n    kind: evaluate\n    input: train\n";

/// Checks that `predict --json` on the image of an `evaluate` prediction row gives its
/// probabilities; returns the image's path.
fn predict_matches_evaluate(p: &Project, row: &serde_json::Value) -> String {
    let image = format!("images/{}", row["path"].as_str().unwrap());
    let out = p.run(&["predict", "pipeline.yaml", &image, "--json"]).ok();
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let got: Vec<f64> = serde_json::from_value(doc["predictions"][0]["probabilities"].clone()).unwrap();
    let want: Vec<f64> = serde_json::from_value(row["probabilities"].clone()).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "predict {got:?} vs evaluate {want:?}");
    }
    image
}

#[test]
fn predict_gives_the_probabilities_evaluate_gave() {
    let p = Project::new();
    p.learnable_images(40).pipeline(&format!("{TRAIN_DATA}{MLP}"));
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(run.ran("train") && run.ran("evaluate"), "{}", run.stdout);
    assert_contains!(run.stdout, "   test ");
    let report = p.report("m", "evaluate");
    let test_acc = report["metrics"]["test"]["accuracy"].as_f64().unwrap();
    assert!(test_acc >= 0.9, "a learnable problem: test accuracy {test_acc}");
    let row = report["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["partition"] == "test")
        .unwrap()
        .clone();
    let image = predict_matches_evaluate(&p, &row);
    let text = p.run(&["predict", "pipeline.yaml", &image]).ok();
    assert!(text.stdout.starts_with(&format!("{image}  ")), "{}", text.stdout);
    let other = p.run(&["predict", "pipeline.yaml", &image, "--set", "resize.size=[6, 6]"]);
    assert_eq!(other.code, 1, "--set enters the fingerprint: no model is built for it");
    assert_contains!(other.stderr, "is not built for the current pipeline");
}

/// Flip test-time augmentation: `evaluate` and `predict` give the same probabilities, the
/// mean of the image's and its mirror image's, so an image and its mirror get the same ones.
#[test]
fn flip_test_time_augmentation_is_used_by_evaluate_and_predict() {
    let p = Project::new();
    let cnn = "  train:\n    kind: train\n    model: cnn\n    blocks: [4]\n    hidden: [8]\n    epochs: 5\n    \
               batch_size: 16\n    augment: [crop_reflect, cutout]\n";
    let evaluate = "  evaluate:\n    kind: evaluate\n    input: train\n";
    p.learnable_images(40);
    let probabilities = |p: &Project, image: &str| -> Vec<f64> {
        let out = p.run(&["predict", "pipeline.yaml", image, "--json"]).ok();
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        serde_json::from_value(doc["predictions"][0]["probabilities"].clone()).unwrap()
    };
    let gap = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let evaluated = |p: &Project| p.report("m", "evaluate")["predictions"][0].clone();
    p.pipeline(&format!("{TRAIN_DATA}{cnn}{evaluate}"));
    p.run(&["run", "pipeline.yaml"]).ok();
    let path = format!("images/{}", evaluated(&p)["path"].as_str().unwrap());
    let image = image::open(p.path(&path)).unwrap().to_rgb8();
    image::imageops::flip_horizontal(&image)
        .save(p.path("mirror.png"))
        .unwrap();
    let plain = gap(&probabilities(&p, &path), &probabilities(&p, "mirror.png"));
    p.pipeline(&format!("{TRAIN_DATA}{cnn}    tta: [hflip]\n{evaluate}"));
    p.run(&["run", "pipeline.yaml"]).ok();
    let (a, b) = (probabilities(&p, &path), probabilities(&p, "mirror.png"));
    assert!(
        gap(&a, &b) < 1e-5 && plain > 1e-3,
        "mirror gap {} with tta, {plain} without",
        gap(&a, &b)
    );
    let row = evaluated(&p);
    assert_eq!(format!("images/{}", row["path"].as_str().unwrap()), path);
    let want: Vec<f64> = serde_json::from_value(row["probabilities"].clone()).unwrap();
    assert!(gap(&a, &want) < 1e-6, "predict {a:?} vs evaluate {want:?}");
}

/// Regression: `predict` (and `serve`) decoded under the default limits, not the ones
/// `ingest` set, so an image the training data could not hold was classified.
#[test]
fn predict_refuses_what_the_ingest_limits_refuse() {
    let p = Project::new();
    p.learnable_images(40).pipeline(&format!(
        "{}  train:\n    kind: train\n    model: logistic\n    epochs: 1\n",
        TRAIN_DATA.replace("    path: images\n", "    path: images\n    max_pixels: 200\n")
    ));
    p.run(&["run", "pipeline.yaml"]).ok();
    p.image("big.png", 20, 20, 1);
    let out = p.run(&["predict", "pipeline.yaml", "big.png"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_contains!(
        format!("{}{}", out.stdout, out.stderr),
        "exceeds the limit of 20000x20000 and 200 pixels"
    );
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{MLP}"));
    p.run(&["run", "pipeline.yaml", "--stage", "train"]).ok();
    let model = |p: &Project| std::fs::read(p.artifact_path("m", "train").with_extension("safetensors")).unwrap();
    let first = model(&p);
    let again = p
        .run(&["run", "pipeline.yaml", "--stage", "train", "--force", "train"])
        .ok();
    assert!(again.ran("train"), "{}", again.stdout);
    assert_eq!(model(&p), first, "same seed, same weights");
}

/// A step's gradients are computed in shards on every core and merged in a fixed order: the
/// same weights and predictions on one core or two.
#[test]
fn training_gives_the_same_weights_on_one_core_or_two() {
    let p = Project::new();
    p.learnable_images(60).pipeline(&format!(
        "{TRAIN_DATA}  train:\n    kind: train\n    model: cnn\n    blocks: [4]\n    hidden: [8]\n    \
         epochs: 3\n    batch_size: 40\n  evaluate:\n    kind: evaluate\n    input: train\n"
    ));
    let model = |p: &Project| std::fs::read(p.artifact_path("m", "train").with_extension("safetensors")).unwrap();
    p.run(&["run", "pipeline.yaml", "-j", "1"]).ok();
    let (one, report) = (model(&p), p.report("m", "evaluate"));
    let again = p.run(&["run", "pipeline.yaml", "-j", "2", "--force", "train"]).ok();
    assert!(again.ran("train"), "{}", again.stdout);
    assert!(model(&p) == one, "-j 1 and -j 2 trained different weights");
    let again = p.run(&["run", "pipeline.yaml", "-j", "2", "--force", "evaluate"]).ok();
    assert!(again.ran("evaluate"), "{}", again.stdout);
    assert_eq!(p.report("m", "evaluate")["predictions"], report["predictions"]);
}

/// SGD with Nesterov momentum, decoupled weight decay and a one-cycle schedule: the learning
/// rate each epoch ended on, in the history, rises to the peak and falls; misuses are refused
/// where they are written.
#[test]
fn a_one_cycle_schedule_moves_the_learning_rate_and_misuses_are_refused() {
    let p = Project::new();
    let train = "  train:\n    kind: train\n    model: cnn\n    blocks: [4]\n    hidden: [8]\n    epochs: 10\n    \
                 batch_size: 16\n    optimizer: sgd\n    momentum: 0.9\n    nesterov: true\n    lr: 0.05\n    \
                 weight_decay: 0.0001\n    schedule: one_cycle\n";
    p.learnable_images(40).pipeline(&format!("{TRAIN_DATA}{train}"));
    p.run(&["run", "pipeline.yaml"]).ok();
    let record = p.record("m", "train");
    let lrs: Vec<f64> = record["summary"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["lr"].as_f64().unwrap())
        .collect();
    let peak = lrs.iter().cloned().fold(0.0, f64::max);
    let top = lrs.iter().position(|&l| l == peak).unwrap();
    assert!(top > 0 && top < 9, "the peak is inside the run: {lrs:?}");
    assert!(lrs[..=top].windows(2).all(|w| w[0] < w[1]), "rises: {lrs:?}");
    assert!(lrs[top..].windows(2).all(|w| w[0] > w[1]), "falls: {lrs:?}");
    assert!(
        (peak - 0.05).abs() < 1e-6 && lrs[9] < 1e-5,
        "the peak is `lr`, the end near 0: {lrs:?}"
    );
    assert_eq!(record["summary"]["hyperparameters"]["schedule"], "one_cycle");
    for (change, message) in [
        (
            "optimizer: sgd",
            "`nesterov` needs `optimizer: sgd` with a `momentum` above 0",
        ),
        (
            "schedule: one_cycle",
            "`warmup_epochs` does not apply to `schedule: one_cycle`",
        ),
        ("schedule: onecycle", "did you mean `one_cycle`?"),
    ] {
        let bad = match change {
            "optimizer: sgd" => train.replace("optimizer: sgd", "optimizer: adam"),
            "schedule: one_cycle" => format!("{train}    warmup_epochs: 2\n"),
            _ => train.replace("one_cycle", "onecycle"),
        };
        p.pipeline(&format!("{TRAIN_DATA}{bad}"));
        let out = p.run(&["check", "pipeline.yaml"]);
        assert_eq!(out.code, 2, "{}", out.stdout);
        assert_contains!(out.stderr, message);
    }
}

/// `ema`: the average of the weights is what each epoch's validation measures and what the
/// run keeps, so `evaluate` on the saved model gives the history's last val loss; it is not
/// the trained weights, and it is part of the fingerprint; a decay of 1 is refused.
#[test]
fn an_average_of_the_weights_is_what_validation_measures_and_the_run_keeps() {
    let p = Project::new();
    let plain = MLP.replace("batch_size: 16\n", "batch_size: 16\n    select: last\n");
    p.learnable_images(40).pipeline(&format!("{TRAIN_DATA}{plain}"));
    let model = |p: &Project| std::fs::read(p.artifact_path("m", "train").with_extension("safetensors")).unwrap();
    p.run(&["run", "pipeline.yaml"]).ok();
    let without = model(&p);
    let averaged = plain.replace("select: last\n", "select: last\n    ema: 0.9\n");
    p.pipeline(&format!("{TRAIN_DATA}{averaged}"));
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(run.ran("train"), "`ema` is part of the fingerprint: {}", run.stdout);
    assert!(model(&p) != without, "the average is not the trained weights");
    let record = p.record("m", "train");
    assert_eq!(record["summary"]["hyperparameters"]["ema"], 0.9);
    let last = record["summary"]["history"].as_array().unwrap().last().unwrap().clone();
    let val = p.report("m", "evaluate")["metrics"]["val"].clone();
    for (history, report) in [("val_loss", "log_loss"), ("val_accuracy", "accuracy")] {
        let (h, r) = (last[history].as_f64().unwrap(), val[report].as_f64().unwrap());
        assert!(
            (h - r).abs() < 1e-6,
            "{history} {h} in the history, {report} {r} from evaluate"
        );
    }
    p.pipeline(&format!("{TRAIN_DATA}{}", averaged.replace("ema: 0.9", "ema: 1")));
    let out = p.run(&["check", "pipeline.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert_contains!(out.stderr, "ema");
}

/// `export --stage train` writes the history in DVCLive's layout; other stages still export
/// their dataset.
#[test]
fn a_train_stage_exports_its_metrics_in_dvclives_layout() {
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{MLP}"));
    p.run(&["run", "pipeline.yaml"]).ok();
    let out = p
        .run(&["export", "pipeline.yaml", "--stage", "train", "-o", "dvclive"])
        .ok();
    assert_contains!(out.stdout, "exported the metrics of stage `train`: 15 epochs");
    let history = p.record("m", "train")["summary"]["history"].as_array().unwrap().clone();
    let read = |rel: &str| std::fs::read_to_string(p.path(&format!("dvclive/{rel}"))).unwrap();
    for (file, key, column) in [
        ("train/loss", "train_loss", "loss"),
        ("train/accuracy", "train_accuracy", "accuracy"),
        ("val/loss", "val_loss", "loss"),
        ("val/accuracy", "val_accuracy", "accuracy"),
        ("lr", "lr", "lr"),
    ] {
        let text = read(&format!("plots/metrics/{file}.tsv"));
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(format!("step\t{column}").as_str()));
        let rows: Vec<(u64, f64)> = lines
            .map(|l| {
                let (step, v) = l.split_once('\t').unwrap();
                (step.parse().unwrap(), v.parse().unwrap())
            })
            .collect();
        assert_eq!(rows.len(), 15, "{file}");
        for (k, (step, v)) in rows.iter().enumerate() {
            assert_eq!(*step, k as u64);
            let want = history[k][key].as_f64().unwrap();
            assert!(
                (v - want).abs() <= 1e-12 * want.abs(),
                "{file} at step {k}: {v} vs {want}"
            );
        }
    }
    let metrics: serde_json::Value = serde_json::from_str(&read("metrics.json")).unwrap();
    assert_eq!(metrics["step"], 14);
    // serde_json reads floats to within a unit in the last place.
    let close = |a: &serde_json::Value, b: &serde_json::Value| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    };
    assert!(
        close(&metrics["val"]["accuracy"], &history[14]["val_accuracy"]),
        "{metrics}"
    );
    assert!(
        close(&metrics["train"]["loss"], &history[14]["train_loss"]),
        "{metrics}"
    );
    assert!(close(&metrics["lr"], &history[14]["lr"]), "{metrics}");
    let data = p
        .run(&["export", "pipeline.yaml", "--stage", "evaluate", "-o", "data.arrow"])
        .ok();
    assert_contains!(data.stdout, "exported stage `normalize`");
}

#[test]
fn evaluating_on_differently_preprocessed_data_is_refused() {
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!(
        "{TRAIN_DATA}  train:\n    kind: train\n    input: validate\n    model: logistic\n    epochs: 2\n  \
         resize2:\n    kind: resize\n    input: split\n    size: [8, 8]\n    filter: nearest\n  \
         normalize2:\n    kind: normalize\n    method: per_image\n  evaluate:\n    kind: evaluate\n    \
         input: [train, normalize2]\n"
    ));
    let out = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_contains!(out.stderr, "refusing to evaluate");
    assert_contains!(out.stderr, "first difference at stage `resize`: its params differ");
}

#[test]
fn train_needs_validate_unless_opted_out_with_a_warning() {
    let p = Project::new();
    p.learnable_images(30);
    let data = TRAIN_DATA.split("  validate:").next().unwrap().to_string();
    p.pipeline(&format!(
        "{data}  train:\n    kind: train\n    model: logistic\n    epochs: 1\n"
    ));
    let out = p.run(&["check", "pipeline.yaml"]);
    assert_eq!(out.code, 2);
    assert_contains!(
        out.stderr,
        "stage `train` trains on data that no `validate` stage checked"
    );
    p.pipeline(&format!(
        "{data}  train:\n    kind: train\n    model: logistic\n    epochs: 1\n    unvalidated: true\n"
    ));
    for _ in 0..2 {
        let run = p.run(&["run", "pipeline.yaml"]).ok();
        assert_contains!(
            run.stdout,
            "warning: stage `train` trains on data no `validate` stage checked"
        );
    }
}

#[test]
fn a_collapsed_model_gets_a_loud_warning() {
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!(
        "{TRAIN_DATA}  train:\n    kind: train\n    model: mlp\n    hidden: [32, 32]\n    optimizer: sgd\n    \
         lr: 10\n    momentum: 0.9\n    epochs: 3\n    batch_size: 8\n  evaluate:\n    kind: evaluate\n"
    ));
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    assert_contains!(run.stdout, "!!! COLLAPSE on `");
    assert_contains!(run.stdout, "of the predictions are class");
    assert_contains!(run.stdout, "learning rate too high");
    assert_contains!(run.stdout, "Run `pipeline diagnose pipeline.yaml`");
    // Loud on every run, also when cached.
    let again = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(
        again.cached("evaluate") && again.stdout.contains("!!! COLLAPSE"),
        "{}",
        again.stdout
    );
}

/// `model: resnet`: batch normalization's running statistics are saved with the weights and
/// used by `evaluate` and `predict` alike; the step is the same on one core or two; its
/// params are checked where they are written.
#[test]
fn a_resnet_learns_and_predict_uses_its_running_statistics() {
    let p = Project::new();
    let train = "  train:\n    kind: train\n    model: resnet\n    widths: [4, 8]\n    residual: [1]\n    \
                 optimizer: sgd\n    momentum: 0.9\n    lr: 0.05\n    epochs: 8\n    batch_size: 40\n";
    let evaluate = "  evaluate:\n    kind: evaluate\n    input: train\n";
    p.learnable_images(40)
        .pipeline(&format!("{TRAIN_DATA}{train}{evaluate}"));
    p.run(&["run", "pipeline.yaml", "-j", "1"]).ok();
    let model = |p: &Project| std::fs::read(p.artifact_path("m", "train").with_extension("safetensors")).unwrap();
    let one = model(&p);
    let header = String::from_utf8_lossy(&one[..one.len().min(4096)]).to_string();
    assert_contains!(header, "bn2.running_var");
    let report = p.report("m", "evaluate");
    let test_acc = report["metrics"]["test"]["accuracy"].as_f64().unwrap();
    assert!(test_acc >= 0.9, "a learnable problem: test accuracy {test_acc}");
    let row = report["predictions"].as_array().unwrap()[0].clone();
    predict_matches_evaluate(&p, &row);
    let again = p.run(&["run", "pipeline.yaml", "-j", "2", "--force", "train"]).ok();
    assert!(again.ran("train"), "{}", again.stdout);
    assert!(model(&p) == one, "-j 1 and -j 2 trained different weights");

    let bad = train.replace("residual: [1]", "residual: [2]\n    hidden: [8]");
    p.pipeline(&format!("{TRAIN_DATA}{bad}{evaluate}"));
    let out = p.run(&["check", "pipeline.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert_contains!(out.stderr, "there is no stage 2: `widths` has 2 (0 is the stem)");
    assert_contains!(out.stderr, "`hidden` does not apply to `model: resnet`");
}
