//! Text rendering of the checks' results: the per-partition analysis table and the findings,
//! as `run` prints a `validate` gate and `audit` prints each stage.

use std::fmt::Write as _;

use serde_json::Value;

use crate::check::analysis::{self, Analysis, Finding, Severity};
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
