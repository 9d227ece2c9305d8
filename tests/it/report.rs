//! `pipeline report`: the HTML page and its figures, made from a real run; the page rendered
//! in headless Chromium.

use std::path::Path;
use std::process::Command;

use crate::support::{Project, TRAIN_DATA};

const MODEL: &str = "  train:\n    kind: train\n    model: mlp\n    hidden: [16]\n    epochs: 8\n    lr: 0.01\n    \
                     batch_size: 16\n  evaluate:\n    kind: evaluate\n    input: train\n";

/// A trained and evaluated project, and its report written to `out/report.html`.
fn reported() -> (Project, serde_json::Value) {
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{MODEL}"));
    p.run(&["run", "pipeline.yaml"]).ok();
    let out = p.run(&["report", "pipeline.yaml", "-o", "out/report.html"]).ok();
    assert!(out.stdout.starts_with("wrote out/report.html ("), "{}", out.stdout);
    let evaluate = p.report("m", "evaluate");
    (p, evaluate)
}

/// Checks a figure's PNG and SVG and returns the SVG text.
fn figure(dir: &Path, name: &str) -> String {
    let png = std::fs::read(dir.join(format!("{name}.png"))).unwrap_or_else(|e| panic!("{name}.png: {e}"));
    let img = image::load_from_memory(&png).unwrap_or_else(|e| panic!("{name}.png is not a PNG: {e}"));
    assert!(
        img.width() >= 320 && img.height() >= 200,
        "{name}.png is {}x{}",
        img.width(),
        img.height()
    );
    let rgb = img.to_rgb8();
    let first = rgb.get_pixel(0, 0);
    assert!(rgb.pixels().any(|p| p != first), "{name}.png is blank");
    let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
    let t = svg.trim();
    assert!(
        t.starts_with("<svg") || t.starts_with("<?xml"),
        "{name}.svg: {}",
        &t[..t.len().min(80)]
    );
    assert!(t.ends_with("</svg>"), "{name}.svg does not end with </svg>");
    svg
}

/// The text elements of an SVG, trimmed.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split("</text>").next()?.trim().to_string()))
        .collect()
}

/// Data series of a line chart: polylines drawn 2 px wide (axes and ticks are 1 px).
fn line_series(svg: &str) -> usize {
    svg.match_indices("<polyline")
        .filter(|(i, _)| svg[*i..].split('>').next().unwrap().contains("stroke-width=\"2\""))
        .count()
}

#[test]
fn the_report_has_every_figure_from_real_data() {
    let (p, evaluate) = reported();
    let dir = p.path("out/report-plots");
    // Training curves: train and val loss; train and val accuracy and the majority share.
    let epochs = evaluate["history"].as_array().unwrap().len();
    assert!(epochs >= 1);
    assert_eq!(line_series(&figure(&dir, "training_loss")), 2);
    assert_eq!(line_series(&figure(&dir, "training_accuracy")), 3);
    // From the diagnosis: the LR sweep (raw and smoothed) and the learning curve.
    let lr = figure(&dir, "lr_range");
    assert_eq!(line_series(&lr), 2);
    assert!(
        texts(&lr).iter().any(|t| t.starts_with("suggested ")),
        "the suggestion is marked"
    );
    assert_eq!(line_series(&figure(&dir, "learning_curve")), 2);
    // From evaluate: probabilities per true class, and the confusion matrix with its counts.
    let probs = figure(&dir, "probabilities");
    let legend = texts(&probs);
    assert!(
        legend.contains(&"true cat".into()) && legend.contains(&"true dog".into()),
        "{legend:?}"
    );
    let confusion = figure(&dir, "confusion");
    let matrix: Vec<Vec<u64>> = serde_json::from_value(evaluate["metrics"]["test"]["confusion"].clone()).unwrap();
    let cells = texts(&confusion);
    for count in matrix.iter().flatten() {
        assert!(
            cells.contains(&count.to_string()),
            "count {count} is written in the matrix: {cells:?}"
        );
    }
    // From validate: one histogram per channel, one series per partition.
    for c in ["R", "G", "B"] {
        let legend = texts(&figure(&dir, &format!("pixels_{c}")));
        for part in ["train", "val", "test"] {
            assert!(
                legend.contains(&part.to_string()),
                "pixels_{c} has a `{part}` series: {legend:?}"
            );
        }
    }
    // The page: self-contained (figures inline, no external resources), metrics shown.
    let html = std::fs::read_to_string(p.path("out/report.html")).unwrap();
    let acc = evaluate["metrics"]["test"]["accuracy"].as_f64().unwrap();
    assert_contains!(html, &format!("{acc:.4}"), "the test accuracy {acc:.4} is on the page");
    assert_eq!(html.matches("<figure").count(), 9, "every figure is inline");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no external resources"
    );
    assert_contains!(html, "verdict:", "the diagnosis is on the page");
}

/// Renders the page in headless Chromium: it loads, its script runs (it marks the body with
/// the number of inline figures), nothing is logged to the console, and the metrics show.
/// Needs `chromium` (installed by .ci/run; required when CI is set).
#[test]
fn the_report_renders_in_headless_chromium() {
    let Some(browser) = ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (.ci/run does)"
        );
        eprintln!("skipped: no chromium on this machine");
        return;
    };
    let (p, evaluate) = reported();
    let page = p.path("out/report.html");
    let profile = p.path("chromium-profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            // No network here: keep Chromium from trying (and logging refused connections).
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed:\n{log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages:\n{}", console.join("\n"));
    assert_contains!(
        dom,
        "data-ready=\"9\"",
        "the page's script ran over 9 figures:\n{}",
        &dom[..dom.len().min(500)]
    );
    assert_contains!(
        dom,
        "<a href=\"#metrics\">Metrics</a>",
        "the table of contents was built"
    );
    let acc = evaluate["metrics"]["test"]["accuracy"].as_f64().unwrap();
    assert_contains!(dom, &format!("{acc:.4}"), "the rendered page shows the test accuracy");
}
