//! What a run or a status check reports, as events: [`Text`] renders them as the lines a
//! person reads, [`Json`] as one JSON object per line for CI systems and notebooks
//! (`run --json`, `status --json`). Both see the same events in the same order; the schema
//! of the JSON objects is documented in README.md ("Machine-readable runs") and is stable:
//! fields may be added, none renamed or removed.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cache::store::Record;
use crate::pipeline::dirty::{self, DirtyReason};

/// One thing that happened.
pub enum Event<'a> {
    /// Another run holds the cache's lock; this one waits for it.
    Waiting { lock: &'a Path },
    /// Something the user should know that does not stop the run.
    Warning { stage: &'a str, message: String },
    /// A stale stage starts computing.
    Started {
        stage: &'a str,
        kind: &'a str,
        fingerprint: &'a str,
        reasons: &'a [DirtyReason],
    },
    /// A stage's artifact was found in the cache and reused.
    Cached {
        stage: &'a str,
        kind: &'a str,
        record: &'a Record,
    },
    /// A stage was computed.
    Ran {
        stage: &'a str,
        kind: &'a str,
        record: &'a Record,
        seconds: f64,
        reasons: &'a [DirtyReason],
    },
    /// The report of a `validate` or `evaluate` stage: after it was computed (`fresh`), or
    /// from the cache when it holds errors (or a collapse).
    Report {
        stage: &'a str,
        kind: &'a str,
        report: &'a Value,
        fresh: bool,
    },
    /// The run stopped with an error (in `stage`, when one was running).
    Failed { stage: Option<&'a str>, error: String },
    /// The run ended without an error.
    Finished { ran: usize, cached: usize, seconds: f64 },
    /// `status`: one stage, fresh or stale with every reason.
    Status {
        stage: &'a str,
        kind: &'a str,
        stale: Option<&'a [DirtyReason]>,
        /// The params as they are used (`status -v`).
        params: Option<&'a str>,
    },
}

/// Where events go.
pub trait Sink {
    fn emit(&mut self, event: Event<'_>) -> Result<()>;
}

/// The text a person reads: one line per stage, names aligned to `width`.
pub struct Text<'w> {
    out: &'w mut dyn Write,
    width: usize,
    /// The pipeline file as the user named it, for the hints in `evaluate`'s report.
    file: String,
}

impl<'w> Text<'w> {
    pub fn new(out: &'w mut dyn Write, width: usize, file: &Path) -> Self {
        Text {
            out,
            width,
            file: file.display().to_string(),
        }
    }
}

impl Sink for Text<'_> {
    fn emit(&mut self, event: Event<'_>) -> Result<()> {
        let (out, width) = (&mut *self.out, self.width);
        match event {
            Event::Waiting { lock } => writeln!(out, "waiting for another pipeline run that holds {}", lock.display())?,
            Event::Warning { message, .. } => writeln!(out, "warning: {message}")?,
            Event::Cached { stage, record, .. } => writeln!(
                out,
                "{stage:width$}  cached  {} rows{}{}",
                record.rows,
                skipped_text(record),
                findings_text(record)
            )?,
            Event::Ran {
                stage,
                record,
                seconds,
                reasons,
                ..
            } => {
                let extra = summary_text(record) + &skipped_text(record) + &findings_text(record);
                writeln!(
                    out,
                    "{stage:width$}  ran     {} rows in {seconds:.2}s{extra}  ({})",
                    record.rows,
                    dirty::join(reasons)
                )?;
                // Files left out, then files used with a note: `   skipped PATH: REASON`.
                for (list, word, field) in [("skipped", "skipped", "reason"), ("notes", "note", "note")] {
                    for f in record.summary[list].as_array().into_iter().flatten() {
                        writeln!(
                            out,
                            "   {word} {}: {}",
                            f["path"].as_str().unwrap_or("?"),
                            f[field].as_str().unwrap_or("?")
                        )?;
                    }
                }
            }
            Event::Report {
                kind, report, fresh, ..
            } => {
                let text = if kind == "evaluate" {
                    crate::stage::evaluate::render(report, &self.file)
                } else {
                    crate::check::render::render_report(report, !fresh)
                };
                write!(out, "{text}")?;
            }
            Event::Status {
                stage, stale, params, ..
            } => {
                match stale {
                    None => writeln!(out, "{stage:width$}  fresh")?,
                    Some(reasons) => writeln!(out, "{stage:width$}  stale  {}", dirty::join(reasons))?,
                }
                if let Some(p) = params {
                    writeln!(out, "{:width$}  params: {p}", "")?;
                }
            }
            // The error is printed on stderr by `main`; the lines above say what ran.
            Event::Started { .. } | Event::Failed { .. } | Event::Finished { .. } => {}
        }
        Ok(())
    }
}

/// One JSON object per line, each with an `event` field naming its kind.
pub struct Json<'w> {
    out: &'w mut dyn Write,
}

impl<'w> Json<'w> {
    pub fn new(out: &'w mut dyn Write) -> Self {
        Json { out }
    }
}

impl Sink for Json<'_> {
    fn emit(&mut self, event: Event<'_>) -> Result<()> {
        let line = to_json(&event);
        serde_json::to_writer(&mut *self.out, &line)?;
        writeln!(self.out)?;
        self.out.flush()?;
        Ok(())
    }
}

/// The JSON object of one event.
pub fn to_json(event: &Event<'_>) -> Value {
    match event {
        Event::Waiting { lock } => json!({"event": "waiting", "lock": lock.display().to_string()}),
        Event::Warning { stage, message } => json!({"event": "warning", "stage": stage, "message": message}),
        Event::Started {
            stage,
            kind,
            fingerprint,
            reasons,
        } => json!({"event": "started", "stage": stage, "kind": kind, "fingerprint": fingerprint,
                    "reasons": reasons_json(reasons)}),
        Event::Cached { stage, kind, record } => {
            with_record(json!({"event": "cached", "stage": stage, "kind": kind}), record)
        }
        Event::Ran {
            stage,
            kind,
            record,
            seconds,
            reasons,
        } => {
            let v = json!({"event": "ran", "stage": stage, "kind": kind, "seconds": seconds,
                           "reasons": reasons_json(reasons)});
            with_record(v, record)
        }
        Event::Report {
            stage,
            kind,
            report,
            fresh,
        } => json!({"event": "report", "stage": stage, "kind": kind, "fresh": fresh, "report": report}),
        Event::Failed { stage, error } => json!({"event": "failed", "stage": stage, "error": error}),
        Event::Finished { ran, cached, seconds } => {
            json!({"event": "finished", "ran": ran, "cached": cached, "seconds": seconds})
        }
        Event::Status {
            stage,
            kind,
            stale,
            params,
        } => {
            let mut v = json!({"event": "status", "stage": stage, "kind": kind,
                "fresh": stale.is_none(), "reasons": stale.map_or_else(Vec::new, reasons_json)});
            if let (Some(p), Some(o)) = (params, v.as_object_mut()) {
                o.insert("params".into(), json!(p));
            }
            v
        }
    }
}

/// Adds what every `cached` and `ran` event says of the artifact.
fn with_record(mut v: Value, record: &Record) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("fingerprint".into(), json!(record.fingerprint));
        o.insert("rows".into(), json!(record.rows));
        o.insert("bytes".into(), json!(record.bytes));
        o.insert(
            "skipped".into(),
            json!(record.summary["skipped"].as_array().map_or(0, Vec::len)),
        );
        o.insert("summary".into(), record.summary.clone());
    }
    v
}

/// Each reason as `{"reason": <kind>, "text": <as the text output says it>, ...its fields}`.
fn reasons_json(reasons: &[DirtyReason]) -> Vec<Value> {
    reasons
        .iter()
        .map(|r| {
            let mut v = match r {
                DirtyReason::NeverRun => json!({"reason": "never_run"}),
                DirtyReason::Forced => json!({"reason": "forced"}),
                DirtyReason::ArtifactMissing(why) => json!({"reason": "artifact_unusable", "why": why}),
                DirtyReason::KindVersionChanged { old, new } => {
                    json!({"reason": "kind_version_changed", "old": old, "new": new})
                }
                DirtyReason::ParamChanged { name, old, new } => {
                    json!({"reason": "param_changed", "param": name, "old": old, "new": new})
                }
                DirtyReason::InputChanged { input } => json!({"reason": "input_changed", "input": input}),
                DirtyReason::FilesChanged {
                    added,
                    removed,
                    changed,
                    relabeled,
                } => json!({"reason": "files_changed", "added": added, "removed": removed, "changed": changed,
                            "relabeled": relabeled}),
                DirtyReason::Unknown => json!({"reason": "unknown"}),
            };
            v["text"] = json!(r.to_string());
            v
        })
        .collect()
}

/// `(2 errors, 1 warning)` for a report artifact.
fn findings_text(record: &Record) -> String {
    let n = |k: &str| record.summary.get(k).and_then(|v| v.as_u64());
    match (n("errors"), n("warnings")) {
        (Some(e), Some(w)) => format!(
            "  ({e} error{}, {w} warning{})",
            if e == 1 { "" } else { "s" },
            if w == 1 { "" } else { "s" }
        ),
        _ => String::new(),
    }
}

/// `(3 skipped under `on_error: skip`)` for a stage that left files out.
fn skipped_text(record: &Record) -> String {
    match record.summary.get("skipped").and_then(|v| v.as_array()) {
        Some(s) if !s.is_empty() => format!(" ({} skipped under `on_error: skip`)", s.len()),
        _ => String::new(),
    }
}

/// What a computed stage adds to its line: the best epoch, the partition sizes, or how many
/// images were decoded.
fn summary_text(record: &Record) -> String {
    if let Some(best) = record.summary.get("best_epoch").and_then(|v| v.as_u64()) {
        let acc = record
            .summary
            .get("best_val_accuracy")
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN);
        let run = record.summary.get("epochs_run").and_then(|v| v.as_u64()).unwrap_or(0);
        let diverged = record.summary.get("diverged").and_then(|v| v.as_bool()) == Some(true);
        let resumed = match record.summary.get("resumed_after_epoch").and_then(|v| v.as_u64()) {
            Some(e) => format!("; resumed after epoch {e}, from an interrupted run's checkpoint"),
            None => String::new(),
        };
        return format!(
            " (best epoch {best} of {run}: val accuracy {acc:.4}{}{resumed})",
            if diverged { "; the loss diverged" } else { "" }
        );
    }
    if let Some(parts) = record.summary.get("partitions").and_then(|p| p.as_object()) {
        let counts: Vec<String> = ["train", "val", "test"]
            .iter()
            .map(|p| {
                let n: u64 = parts
                    .get(*p)
                    .and_then(|c| c.as_object())
                    .map(|c| c.values().filter_map(|v| v.as_u64()).sum())
                    .unwrap_or(0);
                format!("{p} {n}")
            })
            .collect();
        return format!(" ({})", counts.join(", "));
    }
    if let Some(reused) = record.summary.get("reused").and_then(|v| v.as_u64()) {
        let from = match record.summary.get("shards").and_then(|v| v.as_u64()) {
            Some(n) => format!("{n} shards"),
            None => "the last run".into(),
        };
        return format!(
            " ({} decoded, {reused} reused from {from})",
            record.rows.saturating_sub(reused)
        );
    }
    String::new()
}
