//! `pipeline cache gc FILE...`: removes from the cache what none of the given pipeline files
//! needs (with `--keep-recent DAYS`, also keeping what was made or used in the last DAYS), and
//! the files no record commits (what killed runs left), and says what it freed.
//!
//! What a pipeline needs is what `status` would use: the artifact of each of its stages at
//! its current fingerprint, with the artifacts those read their pixels from (a view's stored
//! artifact, a segmented artifact's segments). `gc` holds the cache's run lock while it
//! works, so it never runs beside a `pipeline run` on the same cache: a run waits for it, or
//! it waits for the run, and nothing a run is reading or writing goes.
//!
//! A shared cache on object storage (`s3://…`) has no lock: there, what the files do not need
//! goes only once it is older than a grace period longer than any run, with the parts of
//! uploads killed processes left ([`crate::cache::sweep`] has the rules).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};

use crate::cache::store::{Cache, Garbage, Lookup};
use crate::cache::sweep::SharedGarbage;
use crate::pipeline::executor::resolve_closure;
use crate::pipeline::plan::Plan;

/// The grace period of a shared cache unless `--grace` says otherwise: a day, longer than
/// the runs this tool makes (preprocessing and training on one machine).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

pub struct GcOptions {
    /// Keep what was made or used within this many days, whatever needs it.
    pub keep_recent_days: Option<f64>,
    /// Say what would go, remove nothing.
    pub dry_run: bool,
    /// In a shared cache, nothing younger than this goes (a run elsewhere may be writing it).
    pub grace: Duration,
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
    let (mut wanted, mut needed) = (BTreeSet::new(), BTreeSet::new());
    for plan in plans {
        for r in resolve_closure(plan, &cache, &plan.order)?.into_iter().flatten() {
            keep_with_sources(&cache, &r.fingerprint, &mut needed);
            wanted.insert(r.fingerprint);
        }
    }
    let recent = opts
        .keep_recent_days
        .map(|days| SystemTime::now() - Duration::from_secs_f64(days.max(0.0) * 86_400.0));
    let mut garbage = cache.garbage(|r| {
        needed.contains(&r.fingerprint)
            || recent.is_some_and(|t| cache.last_used(&r.fingerprint).is_some_and(|u| u >= t))
    })?;
    // A checkpoint lets the next run of its `train` stage resume: kept while a file needs it.
    garbage.extend(cache.stale_checkpoints(|fp| wanted.contains(fp)));
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
            Garbage::Artifact(r) => writeln!(text, "{verb}  {}", artifact(r)),
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
    let here = match cache.shared_storage() {
        Some(_) => format!("local cache {}: ", first.cache_dir.display()),
        None => String::new(),
    };
    let _ = writeln!(
        text,
        "{here}{} {artifacts} artifact(s) and {} other file(s), {}; kept {kept} artifact(s) {why}{}",
        if opts.dry_run { "would free" } else { "freed" },
        garbage.len() - artifacts + temps,
        megabytes(freed),
        if opts.dry_run {
            " (dry run: nothing was removed)"
        } else {
            ""
        }
    );
    wanted.extend(needed);
    if let Some(sweep) = cache.shared_garbage(&wanted, recent, opts.grace)? {
        sweep_shared(&cache, sweep, opts, &why, &mut text)?;
    }
    Ok(text)
}

/// Removes (or, dry, lists) what [`Cache::shared_garbage`] found, and says so under the
/// shared cache's URL.
fn sweep_shared(
    cache: &Cache,
    sweep: crate::cache::sweep::Sweep,
    opts: &GcOptions,
    why: &str,
    text: &mut String,
) -> Result<()> {
    let url = cache.shared_storage().map(|s| s.url().to_string()).unwrap_or_default();
    let verb = if opts.dry_run { "would remove" } else { "removed" };
    let mut freed = 0;
    for g in &sweep.garbage {
        if !opts.dry_run {
            cache.remove_shared(g)?;
        }
        freed += g.bytes();
        let _ = match g {
            SharedGarbage::Artifact(r) => writeln!(text, "{verb}  {}  from {url}", artifact(r)),
            SharedGarbage::Orphan { key, bytes, age } => writeln!(
                text,
                "{verb}  {url}/{key} (no record commits it; {} old)  {}",
                hours(*age),
                megabytes(*bytes)
            ),
            SharedGarbage::Upload { marker, age } => writeln!(
                text,
                "{}  the upload noted in {url}/{marker} (started {} ago, never finished)",
                if opts.dry_run { "would abort" } else { "aborted" },
                hours(*age)
            ),
        };
    }
    let artifacts = sweep
        .garbage
        .iter()
        .filter(|g| matches!(g, SharedGarbage::Artifact(_)))
        .count();
    let uploads = sweep
        .garbage
        .iter()
        .filter(|g| matches!(g, SharedGarbage::Upload { .. }))
        .count();
    let _ = writeln!(
        text,
        "shared cache {url}: {} {artifacts} artifact(s), {} other object(s) and {uploads} unfinished upload(s), {}; \
         kept {} artifact(s) {why}, what they read, or made in the last {} (the grace period)",
        if opts.dry_run { "would free" } else { "freed" },
        sweep.garbage.len() - artifacts - uploads,
        megabytes(freed),
        sweep.kept,
        hours(opts.grace)
    );
    Ok(())
}

/// A duration as people say it: `90 s`, `2.5 h`.
fn hours(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Adds `fingerprint` to `needed` when the cache holds it, with the artifacts holding its
/// pixels: a segmented artifact's segments and a view's stored artifact.
fn keep_with_sources(cache: &Cache, fingerprint: &str, needed: &mut BTreeSet<String>) {
    if needed.contains(fingerprint) {
        return;
    }
    let Lookup::Present(record) = cache.lookup_here(fingerprint) else {
        return;
    };
    needed.insert(fingerprint.to_string());
    for source in cache.pixel_sources(&record) {
        keep_with_sources(cache, &source, needed);
    }
}

/// An artifact as a removal line names it: pipeline / stage (kind), fingerprint, size.
fn artifact(r: &crate::cache::store::Record) -> String {
    format!(
        "{} / {} ({}) {}  {}",
        r.pipeline,
        r.stage,
        r.kind,
        &r.fingerprint[..12.min(r.fingerprint.len())],
        megabytes(r.bytes)
    )
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
