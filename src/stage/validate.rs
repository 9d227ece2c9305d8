//! `validate`: the gate before training. Checks its input dataset and refuses inconsistent
//! data, reporting every finding at once (see [`crate::check::analysis`] for the checks).
//!
//! Its artifact is the report (JSON); stages after it read its input's data, unchanged. A
//! report with errors is cached like any result, and every run that meets it — fresh or
//! cached — prints the errors and stops with exit code 1, so bad data cannot slip through on
//! a warm cache.

use anyhow::Result;

use super::{Kind, Output, RunCtx};
use crate::check::analysis::scan::analyze;
use crate::check::analysis::{Severity, Thresholds};
use crate::data::dataset::Dtype;
use crate::source::diag::Diagnostic;
use crate::source::fields::{Fields, get_choice, get_f64, get_u64};

#[derive(Clone, Debug)]
pub struct Validate {
    pub thresholds: Thresholds,
}

impl Kind for Validate {
    const KIND: &'static str = "validate";
    // 2: the report keeps the per-channel histograms of each partition.
    const VERSION: u32 = 2;
    const PARAMS: &'static [&'static str] = &[
        "dtype",
        "max_class_ratio",
        "mean_tolerance",
        "std_tolerance",
        "drift_linf",
        "drift_js",
        "near_duplicate",
        "bins",
    ];

    fn parse(f: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Self> {
        let mut t = Thresholds::default();
        let mut ok = true;
        if let Some(n) = f.get("dtype") {
            match get_choice(
                n,
                "dtype",
                &[("float32", Dtype::Float32), ("uint8", Dtype::Uint8)],
                diags,
            ) {
                Some(d) => t.dtype = d,
                None => ok = false,
            }
        }
        let mut number = |key: &str, range: (f64, f64), slot: &mut f64| {
            if let Some(n) = f.get(key) {
                match get_f64(n, key, range, diags) {
                    Some(v) => *slot = v,
                    None => ok = false,
                }
            }
        };
        number("max_class_ratio", (1.0, 1e9), &mut t.max_class_ratio);
        number("mean_tolerance", (0.0, 1e9), &mut t.mean_tolerance);
        number("std_tolerance", (0.0, 1e9), &mut t.std_tolerance);
        number("drift_linf", (0.0, 1.0), &mut t.drift_linf);
        number("drift_js", (0.0, 1.0), &mut t.drift_js);
        number("near_duplicate", (0.5, 1.0), &mut t.near_duplicate);
        if let Some(n) = f.get("bins") {
            match get_u64(n, "bins", (2, 4096), diags) {
                Some(b) => t.bins = b as usize,
                None => ok = false,
            }
        }
        ok.then_some(Validate { thresholds: t })
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.thresholds).unwrap_or_default()
    }
}

impl Validate {
    pub fn run(&self, ctx: &RunCtx<'_>) -> Result<Output> {
        let input = ctx.input_path()?;
        let analysis = analyze(input, &ctx.integrity, &self.thresholds)?;
        ctx.progress.inc(analysis.rows);
        let findings = analysis.findings(&self.thresholds, ctx.cache);
        let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
        let warnings = findings.len() - errors;
        let report = serde_json::json!({
            "analysis": analysis,
            "findings": findings,
            "errors": errors,
            "warnings": warnings,
        });
        Ok(Output {
            written: ctx.write_file(&serde_json::to_vec_pretty(&report)?, analysis.rows)?,
            fitted: serde_json::Value::Null,
            summary: serde_json::json!({ "errors": errors, "warnings": warnings }),
        })
    }
}
