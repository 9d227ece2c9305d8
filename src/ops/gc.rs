//! `pipeline cache gc FILE...`: removes from the cache what none of the given pipeline files
//! needs (with `--keep-recent DAYS`, also keeping what was made or used in the last DAYS), and
//! the files no record commits (what killed runs left), and says what it freed.
//!
//! What a pipeline needs is what `status` would use: the artifact of each of its stages at
//! its current fingerprint, with the artifacts those read their pixels from (a view's stored
//! artifact, a segmented artifact's segments). `gc` holds the cache's run lock while it
//! works, so it never runs beside a `pipeline run` on the same cache: a run waits for it, or
//! it waits for the run, and nothing a run is reading or writing goes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};

use crate::cache::store::{Cache, Garbage, Lookup};
use crate::pipeline::executor::resolve_closure;
use crate::pipeline::plan::Plan;

pub struct GcOptions {
    /// Keep what was made or used within this many days, whatever needs it.
    pub keep_recent_days: Option<f64>,
    /// Say what would go, remove nothing.
    pub dry_run: bool,
}

/// Collects the garbage of the cache the `plans` share; `waiting` is told when a run holds
/// the lock. Returns the report.
pub fn gc(plans: &[Plan], opts: &GcOptions, waiting: impl FnOnce(&Path) -> Result<()>) -> Result<String> {
    let Some(first) = plans.first() else {
        bail!("cache gc needs at least one pipeline file: what they need is kept");
    };
    if let Some(other) = plans
        .iter()
        .find(|p| (&p.cache_dir, &p.cache_remote) != (&first.cache_dir, &first.cache_remote))
    {
        bail!(
            "{} uses the cache {} and {} uses {}: run `cache gc` once per cache, with the files that use it",
            first.file.display(),
            first.cache_dir.display(),
            other.file.display(),
            other.cache_dir.display()
        );
    }
    let cache = first.open_cache()?;
    let _lock = cache.lock(waiting)?;
    let mut needed = BTreeSet::new();
    for plan in plans {
        for r in resolve_closure(plan, &cache, &plan.order)?.into_iter().flatten() {
            keep_with_sources(&cache, &r.fingerprint, &mut needed);
        }
    }
    let recent = opts
        .keep_recent_days
        .map(|days| SystemTime::now() - Duration::from_secs_f64(days.max(0.0) * 86_400.0));
    let garbage = cache.garbage(|r| {
        needed.contains(&r.fingerprint)
            || recent.is_some_and(|t| cache.last_used(&r.fingerprint).is_some_and(|u| u >= t))
    })?;
    let temps = if opts.dry_run { 0 } else { cache.remove_stale_temps() };

    let verb = if opts.dry_run { "would remove" } else { "removed" };
    let mut text = String::new();
    let mut freed = 0;
    for g in &garbage {
        if !opts.dry_run {
            cache.remove(g)?;
        }
        freed += g.bytes();
        let _ = match g {
            Garbage::Artifact(r) => writeln!(
                text,
                "{verb}  {} / {} ({}) {}  {}",
                r.pipeline,
                r.stage,
                r.kind,
                &r.fingerprint[..12.min(r.fingerprint.len())],
                megabytes(r.bytes)
            ),
            Garbage::Orphan { path, bytes } => writeln!(
                text,
                "{verb}  {} (no record commits it)  {}",
                path.display(),
                megabytes(*bytes)
            ),
        };
    }
    let artifacts = garbage.iter().filter(|g| matches!(g, Garbage::Artifact(_))).count();
    let kept = cache.records()?.len() - if opts.dry_run { artifacts } else { 0 };
    let why = match opts.keep_recent_days {
        Some(days) => format!("needed by the given files or made or used in the last {days} day(s)"),
        None => "needed by the given files".to_string(),
    };
    let _ = writeln!(
        text,
        "{} {artifacts} artifact(s) and {} other file(s), {}; kept {kept} artifact(s) {why}{}",
        if opts.dry_run { "would free" } else { "freed" },
        garbage.len() - artifacts + temps,
        megabytes(freed),
        if opts.dry_run {
            " (dry run: nothing was removed)"
        } else {
            ""
        }
    );
    Ok(text)
}

/// Adds `fingerprint` to `needed` when the cache holds it, with the artifacts holding its
/// pixels: a segmented artifact's segments and a view's stored artifact.
fn keep_with_sources(cache: &Cache, fingerprint: &str, needed: &mut BTreeSet<String>) {
    if needed.contains(fingerprint) {
        return;
    }
    let Lookup::Present(record) = cache.lookup(fingerprint) else {
        return;
    };
    needed.insert(fingerprint.to_string());
    for source in cache.pixel_sources(&record) {
        keep_with_sources(cache, &source, needed);
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
