//! `pipeline audit`: how every artifact of a pipeline was made and what it holds, per
//! partition — lineage, fitted params, dtype, shape, rows, per-channel statistics, drift and
//! leakage — and whether it is consistent. Also renders `validate` reports as text.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::cache::store::{Cache, Lookup};
use crate::check::analysis::scan::analyze;
use crate::check::analysis::{Finding, Severity, Thresholds, short};
use crate::check::render::{render_analysis, render_findings, render_report};
use crate::pipeline::executor::{Resolved, resolve_closure};
use crate::pipeline::plan::Plan;

/// The audit of one stage's artifact.
pub struct StageAudit {
    pub json: Value,
    pub text: String,
    pub consistent: bool,
}

/// Audits every stage of the plan, in run order.
pub fn audit_stages(plan: &Plan) -> Result<Vec<StageAudit>> {
    let cache = plan.open_cache()?;
    let done = resolve_closure(plan, &cache, &plan.order)?;
    plan.order
        .iter()
        .map(|&i| audit_stage(plan, &cache, i, done[i].as_ref().context("stage not resolved")?))
        .collect()
}

/// Audits every stage of the plan. Returns the text (or JSON) and whether all is consistent.
pub fn audit(plan: &Plan, json_out: bool) -> Result<(String, bool)> {
    let mut stages = Vec::new();
    let mut text = String::new();
    let mut consistent = true;
    for a in audit_stages(plan)? {
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
    let read_report = |record: &crate::cache::store::Record| -> Result<Value> {
        Ok(serde_json::from_slice(
            &cache.read_checked(&record.fingerprint, record.format)?,
        )?)
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
    if let crate::stage::params::Params::Train(_) = s.params {
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
    if let crate::stage::params::Params::Evaluate(_) = s.params {
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
    let meta = crate::data::dataset::reader::open(&path, &cache.integrity())?.0;
    if let Some((_, d)) = meta.pixels {
        t.dtype = d;
    }
    let analysis = analyze(&path, &cache.integrity(), &t)?;
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
        let _ = writeln!(text, "   params:  {} v{} {}", own.kind, own.version, s.params_shown());
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

/// `audit --compare`: compares each external features file with the features of stage
/// `against` (default: the dataset the last stage holds or reports on).
pub fn compare(
    plan: &Plan,
    paths: &[std::path::PathBuf],
    against: Option<&str>,
    json_out: bool,
) -> Result<(String, bool)> {
    let cache = plan.open_cache()?;
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
    let ours = crate::check::compare::Ours {
        cache: &cache,
        stage,
        data: &data,
        images_root: images_root.as_deref(),
    };
    let mut text = String::new();
    let mut docs = Vec::new();
    let mut consistent = true;
    for p in paths {
        let c = crate::check::compare::run::compare(p, &ours)?;
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
