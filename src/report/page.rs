//! `pipeline report FILE`: one self-contained HTML page — the DAG and each stage's status,
//! params, fingerprint, rows and time; the audit and `validate`'s findings; the metrics; the
//! diagnosis and every figure (inline SVG, so the page needs no server and no other file).
//! The figures are also written as PNG and SVG files beside the page.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cache::store::{Format, Lookup, Record};
use crate::pipeline::executor::{self, resolve_closure};
use crate::pipeline::plan::Plan;
use crate::report::charts;
use crate::report::charts::Figure;
use crate::report::dag;
use crate::report::html::esc;
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
    let cache = plan.open_cache()?;
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
    let audits = crate::ops::audit::audit_stages(plan);

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
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title>\n<style>{CSS}</style></head>\n\
         <body>\n<h1>{}</h1>\n<p class=\"meta\">{} · cache {} · {} stage(s)</p>\n<nav id=\"toc\"></nav>\n",
        esc(&title),
        esc(&title),
        esc(&plan.file.display().to_string()),
        esc(&plan.cache_dir.display().to_string()),
        plan.order.len()
    );

    section(&mut h, "stages", "Stages");
    let _ = writeln!(h, "<div class=\"dag\">{}</div>", dag::svg(plan, &statuses));
    h.push_str("<p class=\"legend\">");
    for (class, fill, stroke, text) in dag::STATES {
        let _ = write!(
            h,
            "<span class=\"key {class}\"><i style=\"background:{fill};border-color:{stroke}\"></i>{}</span> ",
            esc(text)
        );
    }
    h.push_str("</p>\n");
    let rows = plan.order.iter().enumerate().map(|(k, &i)| {
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
        vec![
            esc(&s.name),
            s.params.kind().to_string(),
            status,
            rec.as_ref().map_or("-".into(), |r| r.rows.to_string()),
            rec.as_ref().map_or("-".into(), |r| format!("{:.2}&nbsp;s", r.seconds)),
            format!("<code title=\"{}\">{}</code>", esc(fp), esc(&fp[..fp.len().min(12)])),
            format!("<code>{}</code>", esc(&s.params_shown())),
        ]
    });
    table(
        &mut h,
        "stages",
        &["stage", "kind", "status", "rows", "time", "fingerprint", "params"],
        rows,
    );

    section(&mut h, "metrics", "Metrics");
    match &evaluate {
        Some(e) => metrics_table(&mut h, e),
        None => h.push_str("<p>No `evaluate` stage has run.</p>\n"),
    }

    section(&mut h, "diagnosis", "Diagnosis");
    match &diagnosis {
        Some(Ok(d)) => diagnosis_tables(&mut h, d),
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
        let _ = writeln!(
            h,
            "<p>validate: {} error(s), {} warning(s)</p>",
            v["errors"].as_u64().unwrap_or(0),
            v["warnings"].as_u64().unwrap_or(0)
        );
        findings_table(&mut h, v["findings"].as_array().map_or(&[], Vec::as_slice));
    }
    match &audits {
        Ok(stages) => audit_table(&mut h, stages),
        Err(e) => {
            let _ = writeln!(h, "<p class=\"bad\">audit failed: {}</p>", esc(&format!("{e:#}")));
        }
    }
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

/// A table: `headers`, then `rows` of cells already HTML. Each cell carries its column's name
/// (`data-label`), which a narrow screen shows beside it when the table becomes a list.
fn table(h: &mut String, class: &str, headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = write!(h, "<table class=\"{class}\"><thead><tr>");
    for t in headers {
        let _ = write!(h, "<th>{}</th>", esc(t));
    }
    h.push_str("</tr></thead><tbody>\n");
    for row in rows {
        h.push_str("<tr>");
        for (cell, label) in row.iter().zip(headers) {
            let _ = write!(h, "<td data-label=\"{}\">{cell}</td>", esc(label));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");
}

/// A severity as a coloured cell.
fn severity(s: &str) -> String {
    format!("<span class=\"sev sev-{0}\">{0}</span>", esc(s))
}

/// `items` as an HTML list (empty: a dash).
fn list(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| format!("<li>{i}</li>")).collect();
    if items.is_empty() {
        "-".into()
    } else {
        format!("<ul>{}</ul>", items.concat())
    }
}

/// `validate`'s (or the audit's) findings: severity, check, what was found, the likely cause.
fn findings_table(h: &mut String, findings: &[Value]) {
    if findings.is_empty() {
        h.push_str("<p class=\"ok\">No findings.</p>\n");
        return;
    }
    let text = |f: &Value, k: &str| esc(f[k].as_str().unwrap_or(""));
    let rows = findings.iter().map(|f| {
        vec![
            severity(f["severity"].as_str().unwrap_or("")),
            text(f, "check"),
            text(f, "message"),
            text(f, "cause"),
        ]
    });
    table(h, "findings", &["severity", "check", "finding", "likely cause"], rows);
}

/// The diagnosis: the verdict, each cause with its evidence and change, and the checks run.
fn diagnosis_tables(h: &mut String, d: &crate::diagnose::diagnosis::Diagnosis) {
    let class = if d.blocking > 0 { "bad" } else { "ok" };
    let _ = writeln!(h, "<p class=\"verdict {class}\">verdict: {}</p>", esc(&d.headline()));
    let causes = d.verdict.iter().enumerate().map(|(k, r)| {
        vec![
            (k + 1).to_string(),
            esc(r.title),
            severity(if r.blocking { "blocking" } else { "to improve" }),
            list(r.evidence.iter().map(|e| esc(e))),
            list(r.changes.iter().map(|c| format!("<code>{}</code>", esc(c)))),
        ]
    });
    if !d.verdict.is_empty() {
        table(h, "causes", &["#", "cause", "severity", "evidence", "change"], causes);
    }
    let checks = d.checks.iter().map(|c| {
        let status = format!("{:?}", c.status).to_lowercase();
        vec![
            esc(c.name),
            format!("<span class=\"check-{status}\">{status}</span>"),
            esc(&c.summary),
            format!("{:.1}&nbsp;s", c.seconds),
        ]
    });
    table(h, "checks", &["check", "result", "measured", "time"], checks);
    if !d.ruled_out.is_empty() {
        let _ = writeln!(h, "<p>Ruled out: {}.</p>", esc(&d.ruled_out.join("; ")));
    }
}

/// The audit: one row per stage with its findings, the full text folded under it.
fn audit_table(h: &mut String, stages: &[crate::ops::audit::StageAudit]) {
    let consistent = stages.iter().all(|a| a.consistent);
    let _ = writeln!(
        h,
        "<p>audit: <span class=\"{}\">{}</span></p>",
        if consistent { "ok" } else { "bad" },
        if consistent { "consistent" } else { "INCONSISTENT" }
    );
    let rows = stages.iter().map(|a| {
        let j = &a.json;
        let fp = j["fingerprint"].as_str().unwrap_or("");
        let mut found: Vec<String> = j["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "{} {}",
                    severity(f["severity"].as_str().unwrap_or("")),
                    esc(f["message"].as_str().unwrap_or(""))
                )
            })
            .collect();
        found.extend(
            j["problem"]
                .as_str()
                .map(|p| format!("{} {}", severity("error"), esc(p))),
        );
        vec![
            esc(j["stage"].as_str().unwrap_or("")),
            esc(j["kind"].as_str().unwrap_or("")),
            format!("<code title=\"{}\">{}</code>", esc(fp), esc(&fp[..fp.len().min(12)])),
            if a.consistent {
                "<span class=\"ok\">yes</span>".into()
            } else {
                "<span class=\"bad\">no</span>".into()
            },
            list(found),
            format!(
                "<details><summary>details</summary><pre>{}</pre></details>",
                esc(a.text.trim_end())
            ),
        ]
    });
    table(
        h,
        "audit",
        &["stage", "kind", "fingerprint", "consistent", "findings", "audit"],
        rows,
    );
}

fn metrics_table(h: &mut String, e: &Value) {
    let num = |v: &Value| v.as_f64().map_or("NaN".to_string(), |x| format!("{x:.4}"));
    let rows = e["metrics"].as_object().into_iter().flatten().map(|(part, m)| {
        vec![
            esc(part),
            m["rows"].to_string(),
            format!("<span class=\"acc\">{}</span>", num(&m["accuracy"])),
            num(&m["macro_f1"]),
            num(&m["roc_auc"]),
            num(&m["log_loss"]),
            format!(
                "{:.1}%",
                100.0 * m["collapse"]["majority_fraction"].as_f64().unwrap_or(0.0)
            ),
            format!("<code>{}</code>", esc(&m["confusion"].to_string())),
        ]
    });
    table(
        h,
        "metrics",
        &[
            "partition",
            "rows",
            "accuracy",
            "macro F1",
            "ROC-AUC",
            "log-loss",
            "majority share",
            "confusion",
        ],
        rows,
    );
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

/// An SVG document made fit to inline: without its `<?xml …?>` declaration.
fn strip_xml_header(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

/// The page's style: everything wraps inside the page's width (no sideways scrolling at 1280 px
/// or on a 390 px phone); figures and the DAG scale down; on a narrow screen each table row
/// becomes a block of labelled cells.
const CSS: &str = "*{box-sizing:border-box}body{font-family:sans-serif;max-width:1100px;margin:2em auto;\
padding:0 1em;color:#222;overflow-wrap:break-word}table{border-collapse:collapse;margin:1em 0;font-size:90%;width:100%}\
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}th{background:#f3f3f3}\
td ul{margin:0;padding-left:1.1em}code{font-size:85%;overflow-wrap:anywhere}pre{background:#f6f6f6;padding:.6em;font-size:85%;\
white-space:pre-wrap}.ok{color:#080}.bad{color:#b00;font-weight:bold}.sev{padding:0 .3em;border-radius:3px;\
white-space:nowrap}.sev-error,.sev-blocking{background:#fde0e0;color:#a00;font-weight:bold}.sev-warning,\
.sev-to{background:#fff1c9;color:#7a5b00}.check-finding{color:#a00;font-weight:bold}.check-skipped{color:#777}\
.verdict{font-size:110%}figure{display:inline-block;margin:.5em 0;vertical-align:top;width:660px;max-width:100%}\
figure svg,.dag svg{display:block;max-width:100%;height:auto}figcaption{font-size:85%;color:#555}\
.meta{color:#666}nav a{margin-right:1em;display:inline-block}.legend .key{margin-right:1.2em;display:inline-block;max-width:100%}\
.legend i{display:inline-block;width:1em;height:.8em;border:1px solid;margin-right:.3em;vertical-align:middle}\
@media (max-width:700px){body{margin:1em auto}table,tbody,tr,td{display:block}thead{display:none}\
tr{border:1px solid #ccc;margin:.6em 0}td{border:none;border-bottom:1px solid #eee}\
td::before{content:attr(data-label) \": \";font-weight:bold;color:#555}}";

/// Builds the table of contents; marks the page ready (the end-to-end test waits for it).
const SCRIPT: &str = "<script>\n(function(){\n  var nav=document.getElementById('toc');\n  \
document.querySelectorAll('h2[id]').forEach(function(h){var a=document.createElement('a');\
a.href='#'+h.id;a.textContent=h.textContent;nav.appendChild(a);});\n  \
document.body.setAttribute('data-ready', String(document.querySelectorAll('figure svg').length));\n})();\n</script>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_go_beside_the_page() {
        assert_eq!(
            plots_dir(Path::new("/tmp/r/report.html")),
            Path::new("/tmp/r/report-plots")
        );
    }
}
