//! `pipeline report FILE`: one self-contained HTML page — the DAG and each stage's status,
//! params, fingerprint, rows and time; the audit and `validate`'s findings; the metrics; the
//! diagnosis and every figure (inline SVG, so the page needs no server and no other file).
//! The figures are also written as PNG and SVG files beside the page.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cache::store::{Cache, Format, Lookup, Record};
use crate::pipeline::executor::{self, resolve_closure};
use crate::pipeline::plan::Plan;
use crate::report::charts;
use crate::report::charts::Figure;
use crate::stage::params::Params;
use crate::stage::train::Epoch;

/// What [`report`] wrote.
pub struct Written {
    pub html: PathBuf,
    /// PNG and SVG of every figure.
    pub plots: Vec<PathBuf>,
    pub figures: usize,
}

/// Writes the report of `plan` to `out`, and its figures to `<out stem>-plots/`. Runs
/// `diagnose` unless `diagnose` is false; its data-stage lines go to `progress`.
pub fn report(plan: &Plan, out: &Path, diagnose: bool, progress: &mut dyn Write) -> Result<Written> {
    let cache = Cache::open(&plan.cache_dir)?;
    let statuses = executor::status(plan)?;
    let done = resolve_closure(plan, &cache, &plan.order)?;
    let record = |i: usize| -> Option<Record> {
        match cache.lookup(&done[i].as_ref()?.fingerprint) {
            Lookup::Present(r) => Some(*r),
            _ => None,
        }
    };
    let report_of = |i: usize| -> Option<Value> {
        let r = record(i)?;
        let bytes = cache.read_checked(&r.fingerprint, Format::Report).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let first = |pred: fn(&Params) -> bool| plan.order.iter().copied().find(|&i| pred(&plan.stage(i).params));
    let validate = first(|p| matches!(p, Params::Validate(_))).and_then(report_of);
    let evaluate = first(|p| matches!(p, Params::Evaluate(_))).and_then(report_of);
    let train = first(|p| matches!(p, Params::Train(_)));
    let history: Vec<Epoch> = train
        .and_then(record)
        .and_then(|r| serde_json::from_value(r.summary["history"].clone()).ok())
        .unwrap_or_default();
    let diagnosis = match (diagnose, train) {
        (true, Some(_)) => Some(crate::diagnose::diagnosis::diagnose(plan, None, &[], progress)),
        _ => None,
    };
    let (audit_text, consistent) = match crate::ops::audit::audit(plan, false) {
        Ok(a) => a,
        Err(e) => (format!("audit failed: {e:#}"), false),
    };

    // Figures, in the order the page shows them.
    let mut figures: Vec<Figure> = charts::training_curves(&history);
    if let Some(Ok(d)) = &diagnosis {
        let data = |name: &str| d.checks.iter().find(|c| c.name == name).map(|c| &c.data);
        figures.extend(data("lr_range").and_then(charts::lr_range));
        figures.extend(data("learning_curve").and_then(charts::learning_curve));
    }
    if let Some(e) = &evaluate {
        let part = if e["metrics"].get("test").is_some() {
            "test"
        } else {
            "val"
        };
        figures.extend(charts::evaluation(e, part));
    }
    if let Some(v) = &validate
        && let Ok(h) = serde_json::from_value(v["analysis"]["histograms"].clone())
    {
        figures.extend(charts::pixel_histograms(&h));
    }
    let plots_dir = plots_dir(out);
    std::fs::create_dir_all(&plots_dir).with_context(|| format!("cannot create {}", plots_dir.display()))?;
    let mut plots = Vec::new();
    for f in &figures {
        for (ext, bytes) in [("png", f.chart.png.as_slice()), ("svg", f.chart.svg.as_bytes())] {
            let path = plots_dir.join(format!("{}.{ext}", f.name));
            std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
            plots.push(path);
        }
    }

    // The page.
    let mut h = String::new();
    let title = format!("pipeline report: {}", plan.spec.name);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{CSS}</style></head>\n\
         <body>\n<h1>{}</h1>\n<p class=\"meta\">{} · cache {} · {} stage(s)</p>\n<nav id=\"toc\"></nav>\n",
        esc(&title),
        esc(&title),
        esc(&plan.file.display().to_string()),
        esc(&plan.cache_dir.display().to_string()),
        plan.order.len()
    );

    section(&mut h, "stages", "Stages");
    let _ = writeln!(
        h,
        "<pre>{}</pre>",
        esc(&crate::pipeline::dag::dag(plan, crate::pipeline::dag::DagFormat::Text))
    );
    h.push_str(
        "<table><tr><th>stage</th><th>kind</th><th>status</th><th>rows</th><th>time</th><th>fingerprint</th>\
         <th>params</th></tr>\n",
    );
    for (k, &i) in plan.order.iter().enumerate() {
        let s = plan.stage(i);
        let status = match statuses.get(k).and_then(|st| st.stale.as_ref()) {
            None => "<span class=\"ok\">fresh</span>".to_string(),
            Some(reasons) => format!(
                "<span class=\"bad\">stale</span>: {}",
                esc(&reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
            ),
        };
        let rec = record(i);
        let fp = done[i].as_ref().map(|r| r.fingerprint.as_str()).unwrap_or("");
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td><code title=\"{}\">{}</code></td>\
             <td><code>{}</code></td></tr>",
            esc(&s.name),
            s.params.kind(),
            rec.as_ref().map_or("-".into(), |r| r.rows.to_string()),
            rec.as_ref().map_or("-".into(), |r| format!("{:.2} s", r.seconds)),
            esc(fp),
            esc(&fp[..fp.len().min(12)]),
            esc(&s.params_shown())
        );
    }
    h.push_str("</table>\n");

    section(&mut h, "metrics", "Metrics");
    match &evaluate {
        Some(e) => metrics_table(&mut h, e),
        None => h.push_str("<p>No `evaluate` stage has run.</p>\n"),
    }

    section(&mut h, "diagnosis", "Diagnosis");
    match &diagnosis {
        Some(Ok(d)) => {
            let _ = writeln!(h, "<pre class=\"verdict\">{}</pre>", esc(&d.to_text()));
        }
        Some(Err(e)) => {
            let _ = writeln!(h, "<p class=\"bad\">diagnose failed: {}</p>", esc(&format!("{e:#}")));
        }
        None => h.push_str("<p>Not run (no `train` stage, or `--no-diagnose`).</p>\n"),
    }

    section(&mut h, "figures", "Figures");
    for f in &figures {
        let _ = writeln!(
            h,
            "<figure id=\"fig-{}\">{}<figcaption>{}</figcaption></figure>",
            esc(&f.name),
            strip_xml_header(&f.chart.svg),
            esc(&f.caption)
        );
    }

    section(&mut h, "validation", "Validation and audit");
    if let Some(v) = &validate {
        let findings = v["findings"].as_array().cloned().unwrap_or_default();
        let _ = writeln!(
            h,
            "<p>validate: {} error(s), {} warning(s)</p><ul>",
            v["errors"].as_u64().unwrap_or(0),
            v["warnings"].as_u64().unwrap_or(0)
        );
        for f in findings {
            let _ = writeln!(
                h,
                "<li><b>{}</b> {}: {}</li>",
                esc(f["severity"].as_str().unwrap_or("")),
                esc(f["check"].as_str().unwrap_or("")),
                esc(f["message"].as_str().unwrap_or(""))
            );
        }
        h.push_str("</ul>\n");
    }
    let _ = writeln!(
        h,
        "<p>audit: <span class=\"{}\">{}</span></p><pre>{}</pre>",
        if consistent { "ok" } else { "bad" },
        if consistent { "consistent" } else { "INCONSISTENT" },
        esc(&audit_text)
    );
    h.push_str(SCRIPT);
    h.push_str("</body></html>\n");
    std::fs::write(out, h).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(Written {
        html: out.to_path_buf(),
        figures: figures.len(),
        plots,
    })
}

/// `report.html` → `report-plots/`.
pub fn plots_dir(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or("report".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-plots"))
}

fn section(h: &mut String, id: &str, title: &str) {
    let _ = writeln!(h, "<h2 id=\"{id}\">{}</h2>", esc(title));
}

fn metrics_table(h: &mut String, e: &Value) {
    h.push_str(
        "<table class=\"metrics\"><tr><th>partition</th><th>rows</th><th>accuracy</th><th>macro F1</th>\
         <th>ROC-AUC</th><th>log-loss</th><th>majority share</th><th>confusion</th></tr>\n",
    );
    let num = |v: &Value| v.as_f64().map_or("NaN".to_string(), |x| format!("{x:.4}"));
    for (part, m) in e["metrics"].as_object().into_iter().flatten() {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"acc\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td>\
             <td><code>{}</code></td></tr>",
            esc(part),
            m["rows"],
            num(&m["accuracy"]),
            num(&m["macro_f1"]),
            num(&m["roc_auc"]),
            num(&m["log_loss"]),
            100.0 * m["collapse"]["majority_fraction"].as_f64().unwrap_or(0.0),
            esc(&m["confusion"].to_string())
        );
    }
    h.push_str("</table>\n");
    for (part, m) in e["metrics"].as_object().into_iter().flatten() {
        if m["collapse"]["collapsed"] == true {
            let _ = writeln!(
                h,
                "<p class=\"bad\">COLLAPSE on {}: {}</p>",
                esc(part),
                esc(m["collapse"]["observed"].as_str().unwrap_or(""))
            );
        }
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG document made fit to inline: without its `<?xml …?>` declaration.
fn strip_xml_header(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

const CSS: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 6px;\
text-align:left;vertical-align:top}code{font-size:85%;word-break:break-all}pre{background:#f6f6f6;padding:.6em;\
overflow-x:auto;font-size:85%}.ok{color:#080}.bad{color:#b00;font-weight:bold}figure{display:inline-block;\
margin:.5em;vertical-align:top;max-width:660px}figcaption{font-size:85%;color:#555}.meta{color:#666}\
nav a{margin-right:1em}";

/// Builds the table of contents; marks the page ready (the end-to-end test waits for it).
const SCRIPT: &str = "<script>\n(function(){\n  var nav=document.getElementById('toc');\n  \
document.querySelectorAll('h2[id]').forEach(function(h){var a=document.createElement('a');\
a.href='#'+h.id;a.textContent=h.textContent;nav.appendChild(a);});\n  \
document.body.setAttribute('data-ready', String(document.querySelectorAll('figure svg').length));\n})();\n</script>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn plots_go_beside_the_page() {
        assert_eq!(
            plots_dir(Path::new("/tmp/r/report.html")),
            Path::new("/tmp/r/report-plots")
        );
    }
}
