//! Runs a plan: decides per stage whether its artifact is cached, runs the stale ones in
//! order, and says what it did, one line per stage.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cache::stat_cache::StatCache;
use crate::cache::store::{Cache, Format, Record};
use crate::data::lineage::LineageEntry;
use crate::pipeline::dirty::{self, Candidate, DirtyReason};
use crate::pipeline::events::{Event, Sink, Text};
use crate::pipeline::plan::Plan;
use crate::pipeline::shard::{self, Shard};
use crate::stage::ingest::Scan;
use crate::stage::params::Params;
use crate::stage::{Output, RunCtx};

/// Which stages to run and which to recompute regardless of the cache.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Run only these stages and what they need (all when empty).
    pub targets: Vec<String>,
    /// `Some(None)`: recompute everything run; `Some(Some(name))`: recompute that stage.
    pub force: Option<Option<String>>,
    /// Do only this shard's part of the per-image stages (see [`crate::pipeline::shard`]).
    pub shard: Option<Shard>,
}

/// The state of one stage after resolving its fingerprint.
pub struct Resolved {
    pub index: usize,
    pub fingerprint: String,
    pub params: serde_json::Value,
    pub inputs: Vec<(String, String)>,
    pub scan: Option<Scan>,
}

impl Resolved {
    pub fn candidate(&self, version: u32) -> Candidate<'_> {
        Candidate {
            fingerprint: &self.fingerprint,
            version,
            params: &self.params,
            inputs: &self.inputs,
            scan: self.scan.as_ref(),
        }
    }
}

/// Computes a stage's fingerprint from its params and its inputs' fingerprints (scanning
/// the image folder for `ingest`).
pub fn resolve(plan: &Plan, i: usize, done: &[Option<Resolved>], stat_cache: &mut StatCache) -> Result<Resolved> {
    resolve_with(plan, i, done, stat_cache, None)
}

/// [`resolve`], for `shard`'s part when one is given: `ingest` scans only the shard's files
/// and its params name the shard, so every part has a fingerprint of its own.
fn resolve_with(
    plan: &Plan,
    i: usize,
    done: &[Option<Resolved>],
    stat_cache: &mut StatCache,
    shard: Option<Shard>,
) -> Result<Resolved> {
    let s = plan.stage(i);
    let mut params = s.params.to_json();
    let inputs: Vec<(String, String)> = plan.inputs[i]
        .iter()
        .map(|&j| {
            let fp = done[j].as_ref().map(|r| r.fingerprint.clone()).unwrap_or_default();
            (plan.stage(j).name.clone(), fp)
        })
        .collect();
    let scan = match &s.params {
        Params::Ingest(p) => {
            let holds = shard.map(|sh| move |rel: &str| sh.holds(rel));
            let keep = holds.as_ref().map(|h| h as &(dyn Fn(&str) -> bool + Sync));
            if let Some(sh) = shard {
                params["shard"] = sh.tag().into();
            }
            Some(
                p.scan(&plan.base_dir, stat_cache, keep)
                    .with_context(|| format!("stage `{}`", s.name))?,
            )
        }
        _ => None,
    };
    let input_fps: Vec<&str> = inputs.iter().map(|(_, f)| f.as_str()).collect();
    let fingerprint = crate::pipeline::fingerprint::stage(
        s.params.kind(),
        s.params.version(),
        &params,
        &input_fps,
        scan.as_ref().map(|sc| sc.content.as_str()),
    );
    Ok(Resolved {
        index: i,
        fingerprint,
        params,
        inputs,
        scan,
    })
}

/// Runs the plan. Writes one line per stage to `out`.
pub fn run(plan: &Plan, opts: &RunOptions, out: &mut dyn Write) -> Result<()> {
    run_with(plan, opts, &mut Text::new(out, name_width(plan), &plan.file))
}

/// The width stage names are aligned to in text output.
pub fn name_width(plan: &Plan) -> usize {
    plan.spec.stages.iter().map(|s| s.name.len()).max().unwrap_or(0)
}

/// Runs the plan, reporting what happens to `events`: each stage cached or started and ran,
/// the reports of gates, and how the run ended (`failed`, with the stage it was in, or
/// `finished`).
pub fn run_with(plan: &Plan, opts: &RunOptions, events: &mut dyn Sink) -> Result<()> {
    let started = Instant::now();
    let mut current: Option<usize> = None;
    let mut counts = (0usize, 0usize);
    match run_stages(plan, opts, events, &mut current, &mut counts) {
        Ok(()) => events.emit(Event::Finished {
            ran: counts.0,
            cached: counts.1,
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            events.emit(Event::Failed {
                stage: current.map(|i| plan.stage(i).name.as_str()),
                error: format!("{e:#}"),
            })?;
            Err(e)
        }
    }
}

/// The body of [`run_with`]: `current` is the stage being worked on, `counts` the stages
/// (ran, cached) so far.
fn run_stages(
    plan: &Plan,
    opts: &RunOptions,
    events: &mut dyn Sink,
    current: &mut Option<usize>,
    counts: &mut (usize, usize),
) -> Result<()> {
    let cache = plan.open_cache()?;
    tracing::debug!(cache = %plan.cache_dir.display(), base = %plan.base_dir.display(), "opened cache");
    let shard = opts.shard;
    let waiting = |lock: &std::path::Path| events.emit(Event::Waiting { lock });
    // The shards of one job on one node share the lock: each writes only its own parts.
    let _lock = if shard.is_some() {
        cache.lock_shared(waiting)?
    } else {
        cache.lock(waiting)?
    };
    let litter = cache.remove_stale_temps();
    if litter > 0 {
        tracing::debug!(files = litter, "removed temporary files of runs that died");
    }
    let targets: Vec<usize> = if opts.targets.is_empty() {
        plan.order.clone()
    } else {
        opts.targets.iter().filter_map(|t| plan.index_of(t)).collect()
    };
    let mut selected = plan.closure(&targets);
    if shard.is_some() {
        let runs = shard::per_image(plan);
        let later: Vec<String> = selected
            .iter()
            .filter(|&&i| !runs[i])
            .map(|&i| format!("`{}`", plan.stage(i).name))
            .collect();
        if let Some(&first) = selected.iter().find(|&&i| !runs[i]) {
            events.emit(Event::Warning {
                stage: &plan.stage(first).name,
                message: format!(
                    "{} run{} after the merge: {} every shard's rows (run `pipeline run FILE` without --shard \
                     once every shard has finished)",
                    later.join(", "),
                    if later.len() == 1 { "s" } else { "" },
                    if later.len() == 1 { "it needs" } else { "they need" },
                ),
            })?;
        }
        selected.retain(|&i| runs[i]);
    }
    let mut stat_cache = cache.stat_cache();
    let mut done: Vec<Option<Resolved>> = (0..plan.spec.stages.len()).map(|_| None).collect();
    // The merge: each per-image stage's parts made by the shards of a complete set, if any.
    let mut parts: Vec<Option<Vec<String>>> = vec![None; plan.spec.stages.len()];
    let runs = shard::per_image(plan);
    for &i in &selected {
        *current = Some(i);
        let s = plan.stage(i);
        let kind = s.params.kind();
        // Timed from here: for `ingest`, scanning and hashing the files is its work.
        let started = Instant::now();
        if shard.is_none() && runs[i] {
            parts[i] = if matches!(s.params, Params::Ingest(_)) {
                shard_parts(plan, i, &cache, &mut stat_cache)?
            } else {
                part_fingerprints(plan, i, &parts)
            };
        }
        let resolved = resolve_with(plan, i, &done, &mut stat_cache, shard)?;
        cache.save_stat_cache(&stat_cache)?;
        tracing::debug!(
            stage = %s.name,
            kind,
            fingerprint = %resolved.fingerprint,
            params = %s.params_shown(),
            resolve_s = started.elapsed().as_secs_f64(),
            "resolved fingerprint"
        );
        if let Params::Train(t) = &s.params
            && t.unvalidated
        {
            events.emit(Event::Warning {
                stage: &s.name,
                message: format!(
                    "stage `{}` trains on data no `validate` stage checked (`unvalidated: true`)",
                    s.name
                ),
            })?;
        }
        let forced = match &opts.force {
            Some(None) => true,
            Some(Some(name)) => *name == s.name,
            None => false,
        };
        let freshness = if forced {
            Err(vec![DirtyReason::Forced])
        } else {
            dirty::explain(
                &cache,
                &plan.spec.name,
                &s.name,
                &resolved.candidate(s.params.version()),
            )
        };
        let (record, fresh) = match freshness {
            Ok(record) => {
                tracing::debug!(stage = %s.name, fingerprint = %resolved.fingerprint, "cached");
                cache.mark_used(&resolved.fingerprint);
                // Made here before the shared cache had it (or a publish failed): it gets it.
                cache.publish(&record)?;
                counts.1 += 1;
                events.emit(Event::Cached {
                    stage: &s.name,
                    kind,
                    record: &record,
                })?;
                (record, false)
            }
            Err(reasons) => {
                events.emit(Event::Started {
                    stage: &s.name,
                    kind,
                    fingerprint: &resolved.fingerprint,
                    reasons: &reasons,
                })?;
                let donors = match (&s.params, &parts[i]) {
                    (Params::Resize(_), Some(fps)) => fps
                        .iter()
                        .filter(|fp| matches!(cache.lookup(fp), crate::cache::store::Lookup::Present(_)))
                        .map(|fp| cache.data_path(fp))
                        .collect(),
                    _ => Vec::new(),
                };
                let (record, warnings) = execute(plan, &cache, &resolved, &done, &stat_cache, shard.is_some(), donors)
                    .with_context(|| format!("stage `{}` failed", s.name))?;
                for message in warnings {
                    events.emit(Event::Warning {
                        stage: &s.name,
                        message,
                    })?;
                }
                counts.0 += 1;
                events.emit(Event::Ran {
                    stage: &s.name,
                    kind,
                    record: &record,
                    seconds: started.elapsed().as_secs_f64(),
                    reasons: &reasons,
                })?;
                (record, true)
            }
        };
        if s.params.is_report() {
            cache.set_last_fingerprint(&plan.spec.name, &s.name, &resolved.fingerprint)?;
            gate(&cache, &record, &s.params, &s.name, fresh, events)?;
        }
        // A shard's artifacts are parts, not what the stage stands for.
        if shard.is_none() {
            cache.set_last_fingerprint(&plan.spec.name, &s.name, &resolved.fingerprint)?;
        }
        done[i] = Some(resolved);
    }
    *current = None;
    if let Some(shard) = shard {
        for r in done.iter().flatten() {
            if let Some(scan) = &r.scan {
                let entry = shard_entry(plan, r, scan, &stat_cache, shard);
                cache.put_shard_entry(
                    &shard::entry_key(plan, r.index, shard),
                    &serde_json::to_vec_pretty(&entry)?,
                )?;
            }
        }
    }
    tracing::debug!(ran = counts.0, "run finished");
    Ok(())
}

/// What a finished shard leaves for the merge about its `ingest` part: its fingerprint and
/// its files' stat-cache lines.
fn shard_entry(plan: &Plan, r: &Resolved, scan: &Scan, stat_cache: &StatCache, shard: Shard) -> shard::Entry {
    let prefix = scan.root.join("").to_string_lossy().into_owned();
    let keys: Vec<String> = scan.files.iter().map(|f| format!("{prefix}{}", f.path)).collect();
    let lines = keys
        .iter()
        .filter_map(|k| stat_cache.entry(k).map(|(stat, sha)| (k.clone(), stat, sha)));
    shard::Entry {
        shard: shard.tag(),
        ingest: r.fingerprint.clone(),
        params: plan.stage(r.index).params.to_json(),
        stat: String::from_utf8_lossy(&StatCache::text_of(lines)).into_owned(),
        files: scan.files.len() as u64,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The `ingest` parts of the newest complete set of shards of stage `i` (their files'
/// hashes learned into `stat_cache`, so the merge reads none of them again); `None` when no
/// set is complete.
fn shard_parts(plan: &Plan, i: usize, cache: &Cache, stat_cache: &mut StatCache) -> Result<Option<Vec<String>>> {
    let entries = cache.shard_entries(&shard::set_key(plan, i))?;
    if entries.is_empty() {
        return Ok(None);
    }
    let Some(set) = shard::complete_set(entries, &plan.stage(i).params.to_json()) else {
        return Ok(None);
    };
    for entry in &set {
        stat_cache.absorb(entry.stat.as_bytes());
    }
    tracing::debug!(stage = %plan.stage(i).name, shards = set.len(), "merging shards");
    Ok(Some(set.into_iter().map(|e| e.ingest).collect()))
}

/// The fingerprints the shards gave stage `i`'s parts: its params over each part of its
/// inputs, as each shard resolved them.
fn part_fingerprints(plan: &Plan, i: usize, parts: &[Option<Vec<String>>]) -> Option<Vec<String>> {
    let s = plan.stage(i);
    let inputs: Vec<&Vec<String>> = plan.inputs[i]
        .iter()
        .map(|&j| parts[j].as_ref())
        .collect::<Option<_>>()?;
    let count = inputs.first()?.len();
    let params = s.params.to_json();
    Some(
        (0..count)
            .map(|k| {
                let fps: Vec<&str> = inputs.iter().map(|p| p[k].as_str()).collect();
                crate::pipeline::fingerprint::stage(s.params.kind(), s.params.version(), &params, &fps, None)
            })
            .collect(),
    )
}

/// What kind of file a stage's artifact is.
pub fn format_of(p: &Params) -> Format {
    match p {
        Params::Train(_) => Format::Model,
        _ if p.is_report() => Format::Report,
        _ => Format::Arrow,
    }
}

/// Reports a validation or evaluation report (all of it when it was just computed; from the
/// cache, a validation report with errors or an evaluation that collapsed) and stops the run
/// when a validation report holds errors.
fn gate(
    cache: &Cache,
    record: &Record,
    params: &Params,
    stage: &str,
    fresh: bool,
    events: &mut dyn Sink,
) -> Result<()> {
    let report: serde_json::Value = serde_json::from_slice(&cache.read_checked(&record.fingerprint, record.format)?)?;
    let errors = report.get("errors").and_then(|v| v.as_u64()).unwrap_or(0);
    let evaluate = matches!(params, Params::Evaluate(_));
    let shown = if evaluate {
        fresh || report["collapsed"].as_array().is_some_and(|c| !c.is_empty())
    } else {
        fresh || errors > 0
    };
    if shown {
        events.emit(Event::Report {
            stage,
            kind: params.kind(),
            report: &report,
            fresh,
        })?;
    }
    if !evaluate && errors > 0 {
        anyhow::bail!(
            "stage `{stage}` found {errors} error(s) in the data; fix them (see above) before training. \
             `pipeline audit FILE` shows the full picture"
        );
    }
    Ok(())
}

/// Runs one stage into a temporary file and commits it to the cache.
fn execute(
    plan: &Plan,
    cache: &Cache,
    r: &Resolved,
    done: &[Option<Resolved>],
    stat_cache: &StatCache,
    shard: bool,
    donors: Vec<std::path::PathBuf>,
) -> Result<(Record, Vec<String>)> {
    let s = plan.stage(r.index);
    if !cache.writable() {
        anyhow::bail!(
            "stage `{}` must be computed, but the cache {} is read-only: nothing can be stored there. \
             Point PIPELINE_CACHE at a writable folder (a fresh one, or a copy of this one) to run it",
            s.name,
            plan.cache_dir.display()
        );
    }
    crate::data::fault::point(|| format!("{}: starting", s.name));
    let started = Instant::now();
    let checking = crate::data::integrity::seconds_checking();
    let input = plan
        .data_input(r.index)
        .and_then(|j| done[j].as_ref())
        .map(|d| cache.data_path(&d.fingerprint));
    let model_fp = match s.params {
        Params::Evaluate(_) => plan.inputs[r.index]
            .first()
            .and_then(|&j| done[j].as_ref())
            .map(|d| d.fingerprint.clone()),
        _ => None,
    };
    let scan = plan
        .ingest_of(r.index)
        .and_then(|j| done[j].as_ref())
        .and_then(|d| d.scan.as_ref());
    let images_root = scan.map(|sc| sc.root.clone());
    let rows_hint = scan.map_or(0, |sc| sc.files.len() as u64);
    let progress = progress_bar(&s.name, rows_hint);
    let temp = cache.temp_path(&r.fingerprint);
    let ingest = plan.ingest_of(r.index).and_then(|j| match &plan.stage(j).params {
        Params::Ingest(p) => Some(p),
        _ => None,
    });
    // A per-image stage whose input changed (images added or removed) reuses the rows of
    // the images its last artifact in this pipeline holds, when made with the same params.
    let previous = match s.params {
        Params::Resize(_) if !shard => cache
            .last_fingerprint(&plan.spec.name, &s.name)
            .filter(|fp| *fp != r.fingerprint)
            .and_then(|fp| match cache.lookup(&fp) {
                crate::cache::store::Lookup::Present(rec)
                    if rec.kind == s.params.kind() && rec.version == s.params.version() && rec.params == r.params =>
                {
                    Some(cache.data_path(&fp))
                }
                _ => None,
            }),
        _ => None,
    };
    let ctx = RunCtx {
        stat_cache: Some(stat_cache),
        previous,
        donors,
        input,
        images_root,
        skip_errors: ingest.is_some_and(|p| p.skip_errors),
        limits: ingest.map(|p| p.limits).unwrap_or_default(),
        seed: plan.spec.seed,
        entry: LineageEntry {
            stage: s.name.clone(),
            kind: s.params.kind().to_string(),
            version: s.params.version(),
            params: r.params.clone(),
            fingerprint: r.fingerprint.clone(),
            fitted: serde_json::Value::Null,
        },
        out_path: temp.clone(),
        progress: &progress,
        cache: Some(cache),
        integrity: cache.integrity(),
        model_record: model_fp.as_ref().and_then(|fp| cache.record(fp)),
        warnings: Default::default(),
    };
    let result: Result<Output> = match &s.params {
        Params::Ingest(p) => p.run(r.scan.as_ref().context("ingest ran without a scan")?, &ctx),
        Params::Split(p) => p.run(&ctx),
        Params::Resize(p) => p.run(&ctx),
        Params::MeanSubtract(p) => p.run(&ctx),
        Params::Normalize(p) => p.run(&ctx),
        Params::Validate(p) => p.run(&ctx),
        Params::Train(p) => p.run(&ctx),
        Params::Evaluate(p) => p.run(&ctx),
    };
    progress.finish_and_clear();
    let output = match result {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    let record = Record {
        fingerprint: r.fingerprint.clone(),
        format: format_of(&s.params),
        kind: s.params.kind().to_string(),
        version: s.params.version(),
        pipeline: plan.spec.name.clone(),
        stage: s.name.clone(),
        params: r.params.clone(),
        inputs: r.inputs.clone(),
        content: r.scan.as_ref().map(|sc| sc.content.clone()),
        rows: output.written.rows,
        bytes: output.written.bytes,
        blake3: output.written.blake3,
        chunks: Some(output.written.chunks),
        fitted: output.fitted,
        summary: output.summary,
        seconds: started.elapsed().as_secs_f64(),
        check_seconds: crate::data::integrity::seconds_checking() - checking,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    cache.commit(&temp, &record)?;
    tracing::debug!(
        stage = %s.name,
        rows = record.rows,
        bytes = record.bytes,
        blake3 = %record.blake3,
        seconds = record.seconds,
        "committed artifact"
    );
    let warnings = ctx.warnings.into_inner().unwrap_or_default();
    Ok((record, warnings))
}

fn progress_bar(name: &str, len: u64) -> indicatif::ProgressBar {
    if !std::io::stdout().is_terminal() || len < 500 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(name.to_string());
    bar
}

/// One stage's status line: fresh, or stale with every reason.
pub struct StageStatus {
    pub name: String,
    pub kind: &'static str,
    pub stale: Option<Vec<DirtyReason>>,
}

/// Resolves the fingerprints of `targets` and everything they need, without running
/// anything; index by stage. The stat cache learns any file hashes computed on the way.
pub fn resolve_closure(plan: &Plan, cache: &Cache, targets: &[usize]) -> Result<Vec<Option<Resolved>>> {
    let mut stat_cache = cache.stat_cache();
    let mut done: Vec<Option<Resolved>> = (0..plan.spec.stages.len()).map(|_| None).collect();
    for &i in &plan.closure(targets) {
        done[i] = Some(resolve(plan, i, &done, &mut stat_cache)?);
    }
    cache.save_stat_cache(&stat_cache)?;
    Ok(done)
}

/// Resolves stage `i` and what it needs, and checks that its artifact is built for the
/// pipeline as it is now (else the error says to run it): the resolved stages and the
/// stage's fingerprint.
pub fn resolve_built(plan: &Plan, cache: &Cache, i: usize) -> Result<(Vec<Option<Resolved>>, String)> {
    let done = resolve_closure(plan, cache, &[i])?;
    let fp = done[i].as_ref().context("stage was not resolved")?.fingerprint.clone();
    if !matches!(cache.lookup(&fp), crate::cache::store::Lookup::Present(_)) {
        anyhow::bail!(
            "stage `{}` is not built for the current pipeline; run `pipeline run {}` first",
            plan.stage(i).name,
            plan.file.display()
        );
    }
    Ok((done, fp))
}

/// Computes every stage's status without running anything.
pub fn status(plan: &Plan) -> Result<Vec<StageStatus>> {
    // A shared cache is only looked at: status copies nothing.
    let cache = plan.open_cache()?.looking_only();
    let done = resolve_closure(plan, &cache, &plan.order)?;
    let mut out = Vec::new();
    for &i in &plan.order {
        let s = plan.stage(i);
        let r = done[i].as_ref().context("stage not resolved")?;
        let stale = dirty::explain(&cache, &plan.spec.name, &s.name, &r.candidate(s.params.version())).err();
        out.push(StageStatus {
            name: s.name.clone(),
            kind: s.params.kind(),
            stale,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::pipeline::plan::load_source;

    /// Four stages on `images/`: the files, a partition, 4x4 pixels, a mean fitted on them.
    const PIPELINE: &str = "\
name: tiny
cache: cache
seed: 1
stages:
  ingest:
    kind: ingest
    path: images
  split:
    kind: split
    train: 0.5
    val: 0.25
    test: 0.25
  resize:
    kind: resize
    size: [4, 4]
  mean:
    kind: mean_subtract
    mean: fit
";

    /// A temporary project: six small PNGs per class in `images/` (named `cat.0.png`...).
    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        for (c, class) in ["cat", "dog"].into_iter().enumerate() {
            for n in 0..6u32 {
                let seed = c as u32 * 7 + n;
                let img = image::RgbImage::from_fn(6, 5, |x, y| {
                    image::Rgb([(x * 40 + seed) as u8, (y * 50 + seed * 3) as u8, (seed * 20) as u8])
                });
                img.save(dir.path().join(format!("images/{class}.{n}.png"))).unwrap();
            }
        }
        dir
    }

    /// The plan of [`PIPELINE`] in `dir` with `sets`, its cache in `dir/cache` whatever the
    /// environment says.
    fn plan(dir: &Path, sets: &[&str]) -> Plan {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let mut plan = load_source(&dir.join("pipeline.yaml"), PIPELINE, &sets).unwrap();
        plan.cache_dir = dir.join("cache");
        plan
    }

    /// Runs `plan`; per stage line, the stage, `ran` or `cached`, and the reasons it ran.
    fn run_lines(plan: &Plan, opts: &RunOptions) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        run(plan, opts, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| {
                let mut words = line.split_whitespace();
                let (stage, verb) = (words.next().unwrap(), words.next().unwrap());
                let reasons = match verb {
                    "ran" => line.rsplit_once("  (").unwrap().1.trim_end_matches(')'),
                    _ => "",
                };
                (stage.to_string(), verb.to_string(), reasons.to_string())
            })
            .collect()
    }

    fn lines(expected: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        expected
            .iter()
            .map(|(s, v, r)| (s.to_string(), v.to_string(), r.to_string()))
            .collect()
    }

    /// Each stage's status: `None` when fresh, else its reasons.
    fn statuses(plan: &Plan) -> Vec<(String, Option<Vec<DirtyReason>>)> {
        status(plan).unwrap().into_iter().map(|s| (s.name, s.stale)).collect()
    }

    fn fresh(names: &[&str]) -> Vec<(String, Option<Vec<DirtyReason>>)> {
        names.iter().map(|n| (n.to_string(), None)).collect()
    }

    #[test]
    fn a_run_leaves_every_stage_fresh() {
        let dir = project();
        let plan = plan(dir.path(), &[]);
        let never = |s| (s, "ran", "never run");
        assert_eq!(
            run_lines(&plan, &RunOptions::default()),
            lines(&[never("ingest"), never("split"), never("resize"), never("mean")])
        );
        assert_eq!(statuses(&plan), fresh(&["ingest", "split", "resize", "mean"]));
        let cached = |s| (s, "cached", "");
        assert_eq!(
            run_lines(&plan, &RunOptions::default()),
            lines(&[cached("ingest"), cached("split"), cached("resize"), cached("mean")])
        );
    }

    #[test]
    fn a_changed_param_makes_its_stage_and_those_below_stale() {
        let dir = project();
        run_lines(&plan(dir.path(), &[]), &RunOptions::default());
        let changed = plan(dir.path(), &["resize.size=[6, 6]"]);
        let mut expected = fresh(&["ingest", "split"]);
        expected.push((
            "resize".into(),
            Some(vec![DirtyReason::ParamChanged {
                name: "size".into(),
                old: "[4, 4]".into(),
                new: "[6, 6]".into(),
            }]),
        ));
        expected.push((
            "mean".into(),
            Some(vec![DirtyReason::InputChanged { input: "resize".into() }]),
        ));
        assert_eq!(statuses(&changed), expected);
        assert_eq!(
            run_lines(&changed, &RunOptions::default()),
            lines(&[
                ("ingest", "cached", ""),
                ("split", "cached", ""),
                ("resize", "ran", "param size changed [4, 4] -> [6, 6]"),
                ("mean", "ran", "input resize changed"),
            ])
        );
    }

    #[test]
    fn force_recomputes_all_or_the_stage_named() {
        let dir = project();
        let plan = plan(dir.path(), &[]);
        run_lines(&plan, &RunOptions::default());
        let all = RunOptions {
            force: Some(None),
            ..RunOptions::default()
        };
        let forced = |s| (s, "ran", "forced");
        assert_eq!(
            run_lines(&plan, &all),
            lines(&[forced("ingest"), forced("split"), forced("resize"), forced("mean")])
        );
        let one = RunOptions {
            force: Some(Some("resize".into())),
            ..RunOptions::default()
        };
        assert_eq!(
            run_lines(&plan, &one),
            lines(&[
                ("ingest", "cached", ""),
                ("split", "cached", ""),
                forced("resize"),
                ("mean", "cached", ""),
            ])
        );
    }

    #[test]
    fn targets_run_only_what_they_need() {
        let dir = project();
        let plan = plan(dir.path(), &[]);
        let opts = RunOptions {
            targets: vec!["split".into()],
            ..RunOptions::default()
        };
        assert_eq!(
            run_lines(&plan, &opts),
            lines(&[("ingest", "ran", "never run"), ("split", "ran", "never run")])
        );
        let mut expected = fresh(&["ingest", "split"]);
        for stage in ["resize", "mean"] {
            expected.push((stage.into(), Some(vec![DirtyReason::NeverRun])));
        }
        assert_eq!(statuses(&plan), expected);
    }
}
