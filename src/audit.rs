//! `pipeline audit`: how every artifact of a pipeline was made and what it holds, per
//! partition — lineage, fitted params, dtype, shape, rows, per-channel statistics, drift and
//! leakage — and whether it is consistent. Also renders `validate` reports as text.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::analysis::{self, Analysis, Finding, Severity, Thresholds, short};
use crate::cache::{Cache, Lookup};
use crate::executor::{Resolved, resolve_closure};
use crate::plan::Plan;

/// The audit of one stage's artifact.
pub struct StageAudit {
    pub json: Value,
    pub text: String,
    pub consistent: bool,
}

/// Audits every stage of the plan. Returns the text (or JSON) and whether all is consistent.
pub fn audit(plan: &Plan, json_out: bool) -> Result<(String, bool)> {
    let cache = Cache::open(&plan.cache_dir)?;
    let done = resolve_closure(plan, &cache, &plan.order)?;
    let mut stages = Vec::new();
    let mut text = String::new();
    let mut consistent = true;
    for &i in &plan.order {
        let r = done[i].as_ref().context("stage not resolved")?;
        let a = audit_stage(plan, &cache, i, r)?;
        consistent &= a.consistent;
        text.push_str(&a.text);
        stages.push(a.json);
    }
    let _ = writeln!(
        text,
        "audit: {}",
        if consistent {
            "consistent"
        } else {
            "INCONSISTENT (see above)"
        }
    );
    if json_out {
        let doc = json!({ "pipeline": plan.spec.name, "consistent": consistent, "stages": stages });
        return Ok((serde_json::to_string_pretty(&doc)? + "\n", consistent));
    }
    Ok((text, consistent))
}

fn audit_stage(plan: &Plan, cache: &Cache, i: usize, r: &Resolved) -> Result<StageAudit> {
    let s = plan.stage(i);
    let mut text = String::new();
    let head = format!("== {} ({}) {}", s.name, s.params.kind(), short(&r.fingerprint));
    // The stage's JSON entry: who it is, plus what the audit found under `key`.
    let entry = |built: bool, key: &str, value: Value, text: String, consistent: bool| {
        let mut json =
            json!({ "stage": s.name, "kind": s.params.kind(), "fingerprint": r.fingerprint, "built": built });
        json[key] = value;
        StageAudit { json, text, consistent }
    };
    let read_report = |record: &crate::cache::Record| -> Result<Value> {
        let path = cache.data_file(&record.fingerprint, record.format);
        Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
    };
    let record = match cache.lookup(&r.fingerprint) {
        Lookup::Present(rec) => *rec,
        other => {
            let why = match other {
                Lookup::Damaged(w) => w,
                _ => "not built".into(),
            };
            let _ = writeln!(text, "{head}: {why}; run `pipeline run` first\n");
            return Ok(entry(false, "problem", json!(why), text, false));
        }
    };
    if let crate::stage::Params::Train(_) = s.params {
        let sm = &record.summary;
        let _ = writeln!(
            text,
            "{head}: model {}, trained on {} rows, best epoch {} of {} (val accuracy {:.4})\n   data lineage: {}\n",
            sm["architecture"],
            sm["train_rows"],
            sm["best_epoch"],
            sm["epochs_run"],
            sm["best_val_accuracy"].as_f64().unwrap_or(f64::NAN),
            sm["data_lineage"]
                .as_array()
                .map(|l| l
                    .iter()
                    .map(|e| format!(
                        "{}@{}",
                        e["stage"].as_str().unwrap_or("?"),
                        short(e["fingerprint"].as_str().unwrap_or(""))
                    ))
                    .collect::<Vec<_>>()
                    .join(" -> "))
                .unwrap_or_default()
        );
        return Ok(entry(true, "model", sm.clone(), text, true));
    }
    if let crate::stage::Params::Evaluate(_) = s.params {
        let mut report = read_report(&record)?;
        let _ = writeln!(text, "{head}: evaluation");
        text.push_str(&crate::stage::evaluate::render(
            &report,
            &plan.file.display().to_string(),
        ));
        text.push('\n');
        if let Some(o) = report.as_object_mut() {
            o.remove("predictions");
        }
        return Ok(entry(true, "evaluation", report, text, true));
    }
    if s.params.is_report() {
        let report = read_report(&record)?;
        let errors = report.get("errors").and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(text, "{head}: validation report");
        text.push_str(&render_report(&report, false));
        text.push('\n');
        return Ok(entry(true, "report", report, text, errors == 0));
    }
    let path = cache.data_path(&record.fingerprint);
    let mut t = Thresholds::default();
    let meta = crate::dataset::open(&path)?.0;
    if let Some((_, d)) = meta.pixels {
        t.dtype = d;
    }
    let analysis = analysis::analyze(&path, &t)?;
    let findings: Vec<Finding> = analysis
        .findings(&t, Some(cache))
        .into_iter()
        .filter(|f| !(f.check == "partitions" || (f.check == "dtype" && analysis.dtype.is_none())))
        .collect();
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    let _ = writeln!(
        text,
        "{head}: {} rows, {}",
        record.rows,
        match (analysis.dtype, analysis.shape) {
            (Some(d), Some(sh)) => format!("{} [{}, {}, {}] RGB", d.name(), sh[0], sh[1], sh[2]),
            _ => "no pixels".into(),
        }
    );
    let chain: Vec<String> = meta
        .lineage
        .iter()
        .map(|e| format!("{}@{}", e.stage, short(&e.fingerprint)))
        .collect();
    let _ = writeln!(text, "   lineage: {}", chain.join(" -> "));
    if let Some(own) = meta.lineage.last() {
        let _ = writeln!(text, "   params:  {} v{} {}", own.kind, own.version, own.params);
    }
    for e in meta.lineage.iter().filter(|e| !e.fitted.is_null()) {
        let _ = writeln!(text, "   fitted:  {} {}", e.stage, e.fitted);
    }
    let skipped = record.summary["skipped"].as_array().cloned().unwrap_or_default();
    for f in &skipped {
        let _ = writeln!(
            text,
            "   skipped: {}: {}",
            f["path"].as_str().unwrap_or("?"),
            f["reason"].as_str().unwrap_or("?")
        );
    }
    text.push_str(&render_analysis(&analysis));
    text.push_str(&render_findings(&findings, false));
    text.push('\n');
    let mut audit = entry(true, "analysis", serde_json::to_value(&analysis)?, text, errors == 0);
    audit.json["rows"] = json!(record.rows);
    audit.json["skipped"] = json!(skipped);
    audit.json["lineage"] = serde_json::to_value(&meta.lineage)?;
    audit.json["findings"] = serde_json::to_value(&findings)?;
    Ok(audit)
}

/// Per-partition table, drift and leakage of an analysis.
pub fn render_analysis(a: &Analysis) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "   {:<10} {:>6}  {:<24} {:<27} {:<27}",
        "partition", "rows", "classes", "mean R G B", "std R G B"
    );
    for (name, p) in &a.partitions {
        let classes = p
            .classes
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (mean, std) = if p.channels.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                p.channels
                    .iter()
                    .map(|c| format!("{:8.3}", c.mean))
                    .collect::<Vec<_>>()
                    .join(" "),
                p.channels
                    .iter()
                    .map(|c| format!("{:8.3}", c.std))
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        };
        let _ = writeln!(s, "   {name:<10} {:>6}  {classes:<24} {mean:<27} {std:<27}", p.rows);
    }
    if !a.drift.is_empty() {
        let _ = writeln!(s, "   drift vs train (per channel R G B):");
        let mut parts: Vec<&str> = a.drift.iter().map(|d| d.partition.as_str()).collect();
        parts.dedup();
        for part in parts {
            let ds: Vec<_> = a.drift.iter().filter(|d| d.partition == part).collect();
            let _ = writeln!(
                s,
                "     {part:<8} L-inf {}   JS {}",
                ds.iter()
                    .map(|d| format!("{:.4}", d.linf))
                    .collect::<Vec<_>>()
                    .join(" "),
                ds.iter().map(|d| format!("{:.5}", d.js)).collect::<Vec<_>>().join(" ")
            );
        }
    }
    if a.shape.is_some() {
        let _ = writeln!(
            s,
            "   leakage: {} identical and {} near-identical image pair(s) across partitions; {} non-finite row(s)",
            a.duplicates.len(),
            a.near_duplicates.len(),
            a.nonfinite_rows
        );
        if let Some(p) = &a.closest_pair {
            let _ = writeln!(
                s,
                "   most similar distinct pair across partitions: {}",
                analysis::pair_text(p)
            );
        }
    }
    s
}

/// Findings as text, one block each.
pub fn render_findings(findings: &[Finding], errors_only: bool) -> String {
    let mut s = String::new();
    for f in findings
        .iter()
        .filter(|f| !errors_only || f.severity == Severity::Error)
    {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(s, "   {sev:<7} [{}] {}", f.check, f.message);
        for r in &f.rows {
            let _ = writeln!(s, "             {r}");
        }
        let _ = writeln!(s, "             likely cause: {}", f.cause);
    }
    s
}

/// A `validate` report as text: the numbers and the findings (only errors when `errors_only`).
pub fn render_report(report: &Value, errors_only: bool) -> String {
    let mut s = String::new();
    let analysis: Option<Analysis> = report
        .get("analysis")
        .and_then(|a| serde_json::from_value(a.clone()).ok());
    let findings: Vec<Finding> = report
        .get("findings")
        .and_then(|f| serde_json::from_value(f.clone()).ok())
        .unwrap_or_default();
    if !errors_only && let Some(a) = &analysis {
        s.push_str(&render_analysis(a));
    }
    s.push_str(&render_findings(&findings, errors_only));
    let n = |k: &str| report.get(k).and_then(Value::as_u64).unwrap_or(0);
    let _ = writeln!(s, "   validate: {} error(s), {} warning(s)", n("errors"), n("warnings"));
    s
}

/// `audit --compare`: compares each external features file with the features of stage
/// `against` (default: the dataset the last stage holds or reports on).
pub fn compare(
    plan: &Plan,
    paths: &[std::path::PathBuf],
    against: Option<&str>,
    json_out: bool,
) -> Result<(String, bool)> {
    let cache = Cache::open(&plan.cache_dir)?;
    let target = match against {
        Some(name) => plan.index_of(name).context("unknown stage")?,
        None => *plan.order.last().context("the pipeline has no stages")?,
    };
    let target = plan.data_source(target);
    let done = resolve_closure(plan, &cache, &[target])?;
    let r = done[target].as_ref().context("target stage was not resolved")?;
    let stage = &plan.stage(target).name;
    if !matches!(cache.lookup(&r.fingerprint), Lookup::Present(_)) {
        anyhow::bail!("stage `{stage}` is not built for the current pipeline; run `pipeline run` first");
    }
    let data = cache.data_path(&r.fingerprint);
    let images_root = plan
        .ingest_of(target)
        .and_then(|j| done[j].as_ref())
        .and_then(|d| d.scan.as_ref())
        .map(|s| s.root.clone());
    let ours = crate::compare::Ours {
        cache: &cache,
        stage,
        data: &data,
        images_root: images_root.as_deref(),
    };
    let mut text = String::new();
    let mut docs = Vec::new();
    let mut consistent = true;
    for p in paths {
        let c = crate::compare::compare(p, &ours)?;
        consistent &= c.consistent;
        text.push_str(&c.text);
        text.push('\n');
        docs.push(c.json);
    }
    if json_out {
        return Ok((
            serde_json::to_string_pretty(&json!({ "consistent": consistent, "comparisons": docs }))? + "\n",
            consistent,
        ));
    }
    Ok((text, consistent))
}
