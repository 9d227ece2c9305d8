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

/// The browser on this machine, or `None` (then the test is skipped, except in CI).
fn browser() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (.ci/run does)"
        );
        eprintln!("skipped: no chromium on this machine");
    }
    found
}

/// Runs headless Chromium on `page` with `args` (e.g. `--dump-dom`); its stdout and log.
fn chromium(browser: &str, p: &Project, page: &Path, args: &[String]) -> (String, String) {
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
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed:\n{log}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), log)
}

/// Renders the page in headless Chromium: it loads, its script runs (it marks the body with
/// the number of inline figures), nothing is logged to the console, and the metrics show.
/// Needs `chromium` (installed by .ci/run; required when CI is set).
#[test]
fn the_report_renders_in_headless_chromium() {
    let Some(browser) = browser() else { return };
    let (p, evaluate) = reported();
    let page = p.path("out/report.html");
    let (dom, log) = chromium(browser, &p, &page, &["--dump-dom".into()]);
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

/// Measures the laid-out page in the browser and writes what it found into `data-layout`:
/// elements that reach past the page's sides or scroll sideways, and per figure its legend's
/// box and the series (2 px lines, bars) that the legend overlaps.
const LAYOUT_PROBE: &str = r#"<script>
(function(){
  var W = document.documentElement.clientWidth, out = {width: W, page: document.documentElement.scrollWidth,
    overflow: [], scrolls: [], figures: []};
  var name = function(e){ return e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
    (e.getAttribute('class') ? '.' + e.getAttribute('class').split(' ')[0] : ''); };
  document.querySelectorAll('body *').forEach(function(e){
    if (e.closest('svg') && e.tagName.toLowerCase() !== 'svg') return;
    var r = e.getBoundingClientRect();
    if (r.width > 0 && (r.right > W + 0.5 || r.left < -0.5)) out.overflow.push(name(e) + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
    // Content that spills out of a box that does not clip it (an unbreakable line of text).
    else if (r.width > 0 && r.left + e.scrollWidth > W + 0.5) out.overflow.push(name(e) + ' content ' + Math.round(r.left) + '..' + Math.round(r.left + e.scrollWidth));
    if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible') out.scrolls.push(name(e));
  });
  var meet = function(a, b){ return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom; };
  document.querySelectorAll('figure').forEach(function(f){
    var g = f.querySelector('g.legend'), fig = {id: f.id, legend: null, texts: 0, covered: 0, series: 0, inside: false};
    if (g) {
      var r = g.getBoundingClientRect(), box = f.getBoundingClientRect();
      fig.legend = [r.left, r.top, r.width, r.height].map(Math.round);
      fig.inside = r.left >= box.left - 0.5 && r.right <= box.right + 0.5 && r.top >= box.top - 0.5 && r.bottom <= box.bottom + 0.5;
      fig.texts = Array.prototype.filter.call(g.querySelectorAll('text'), function(t){ return t.textContent.trim() !== ''; }).length;
      f.querySelectorAll('polyline[stroke-width="2"], rect[opacity="0.85"], circle').forEach(function(s){
        fig.series += 1;
        if (meet(s.getBoundingClientRect(), r)) fig.covered += 1;
      });
    }
    out.figures.push(fig);
  });
  document.body.setAttribute('data-layout', JSON.stringify(out));
})();
</script>"#;

/// The page at a desktop (1280 px) and a phone (390 px) width, screenshot and measured: nothing
/// reaches past the page's sides or scrolls sideways, every figure has a legend with text,
/// inside the figure, that covers no series; the DAG is drawn with a box per stage. The
/// screenshots go to the test's temp folder (`target/tmp/report-*.png`) for a person to look at.
#[test]
fn the_report_fits_a_desktop_and_a_phone_and_legends_cover_no_data() {
    let Some(browser) = browser() else { return };
    let (p, _) = reported();
    let html = std::fs::read_to_string(p.path("out/report.html")).unwrap();
    assert_eq!(
        html.matches("<g class=\"stage ").count(),
        8,
        "a box per stage in the DAG"
    );
    assert_not_contains!(html, "\"seed\": null");
    assert_contains!(html, "seed: 3 (the pipeline&#39;s)");
    let probe = p.path("out/probe.html");
    std::fs::write(&probe, html.replace("</body>", &format!("{LAYOUT_PROBE}</body>"))).unwrap();
    // Headless Chromium's window is at least 500 px wide: the page is shown at a phone's width in
    // a frame of that width (a real viewport: the page's media queries apply), and the frame's
    // measurements are copied out.
    std::fs::write(
        p.path("out/frame.html"),
        "<!DOCTYPE html><html><body style=\"margin:0\"><iframe id=\"f\" src=\"probe.html\" \
         style=\"width:390px;height:9000px;border:0\"></iframe><script>var f=document.getElementById('f');\
         f.onload=function(){document.body.setAttribute('data-layout',\
         f.contentDocument.body.getAttribute('data-layout'));};</script></body></html>",
    )
    .unwrap();
    for (width, page) in [(1280, probe.clone()), (390, p.path("out/frame.html"))] {
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{width}.png"));
        let size = format!("--window-size={},2400", width.max(500));
        let files = "--allow-file-access-from-files".to_string();
        let args = [size, files, format!("--screenshot={}", shot.display())];
        chromium(browser, &p, &page, &args);
        let img = image::open(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
        assert!(img.width() >= width, "{}", img.width());
        let (dom, _) = chromium(
            browser,
            &p,
            &page,
            &[args[0].clone(), args[1].clone(), "--dump-dom".into()],
        );
        let attr = dom
            .split("data-layout=\"")
            .nth(1)
            .and_then(|a| a.split('"').next())
            .unwrap_or_else(|| panic!("the probe ran at {width} px:\n{}", &dom[..dom.len().min(400)]));
        let layout: serde_json::Value =
            serde_json::from_str(&attr.replace("&quot;", "\"").replace("&amp;", "&")).unwrap();
        assert_eq!(layout["width"], width, "{layout}");
        assert!(
            layout["page"].as_u64() <= layout["width"].as_u64(),
            "the page scrolls sideways at {width} px: {layout}"
        );
        assert_eq!(
            layout["overflow"],
            serde_json::json!([]),
            "past the page's sides at {width} px"
        );
        assert_eq!(
            layout["scrolls"],
            serde_json::json!([]),
            "scrolls sideways at {width} px"
        );
        let figures = layout["figures"].as_array().unwrap();
        assert_eq!(figures.len(), 9, "{layout}");
        for f in figures {
            assert!(
                f["legend"].is_array() && f["texts"].as_u64() > Some(0),
                "{width} px: a legend: {f}"
            );
            assert_eq!(f["inside"], true, "{width} px: the legend is inside its figure: {f}");
            assert_eq!(f["covered"], 0, "{width} px: the legend covers a series: {f}");
            if f["id"] != "fig-confusion" {
                assert!(f["series"].as_u64() > Some(0), "{width} px: series found: {f}");
            }
        }
    }
}
