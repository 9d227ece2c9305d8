//! `pipeline cache ls|du|verify`: look into the cache and check it.
//!
//! `verify` re-reads every committed artifact and checks it against its record: the data
//! file exists, has the recorded size and BLAKE3 checksum, and (for datasets) opens as an
//! Arrow IPC file with the documented metadata. A damaged artifact is named with what is
//! wrong; the next `pipeline run` that needs it recomputes it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cache::store::{Cache, Format, Record};
use crate::data::integrity::ChunkSums;

/// One line per artifact: pipeline, stage, kind, fingerprint, rows, bytes.
pub fn ls(cache_dir: &Path) -> Result<String> {
    let cache = Cache::open(cache_dir)?;
    let mut s = String::new();
    for r in cache.records()? {
        let _ = writeln!(
            s,
            "{:<20} {:<14} {:<14} {}  {:>8} rows  {:>12} bytes",
            r.pipeline,
            r.stage,
            r.kind,
            &r.fingerprint[..12.min(r.fingerprint.len())],
            r.rows,
            r.bytes
        );
    }
    Ok(s)
}

/// Bytes per stage kind and in total.
pub fn du(cache_dir: &Path) -> Result<String> {
    let cache = Cache::open(cache_dir)?;
    let mut by_kind: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for r in cache.records()? {
        let e = by_kind.entry(r.kind.clone()).or_default();
        e.0 += 1;
        e.1 += r.bytes;
    }
    let mut s = String::new();
    let mut total = 0;
    for (kind, (n, bytes)) in &by_kind {
        total += bytes;
        let _ = writeln!(s, "{kind:<14} {n:>4} artifacts  {:>10.1} MB", *bytes as f64 / 1e6);
    }
    let _ = writeln!(
        s,
        "{:<14} {:>4} artifacts  {:>10.1} MB",
        "total",
        by_kind.values().map(|v| v.0).sum::<u64>(),
        total as f64 / 1e6
    );
    Ok(s)
}

/// Checks every artifact; returns the report and whether all are intact.
pub fn verify(cache_dir: &Path) -> Result<(String, bool)> {
    let cache = Cache::open(cache_dir)?;
    let mut s = String::new();
    let (mut good, mut bad) = (0, 0);
    for r in cache.records()? {
        let path = cache.data_file(&r.fingerprint, r.format);
        match check(&cache, &path, &r) {
            Ok(()) => good += 1,
            Err(why) => {
                bad += 1;
                let _ = writeln!(
                    s,
                    "damaged  {} / {} ({}) {}: {why:#}",
                    r.pipeline,
                    r.stage,
                    r.kind,
                    &r.fingerprint[..12.min(r.fingerprint.len())]
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "verified {} artifact(s): {good} intact, {bad} damaged{}",
        good + bad,
        if bad > 0 {
            " (the next `pipeline run` recomputes them)"
        } else {
            ""
        }
    );
    Ok((s, bad == 0))
}

/// Checks an artifact whole: its size, its BLAKE3 and chunk sums against the record, and
/// for a dataset that it reads as one (the file as stored: a view's pixels are its stored
/// artifact's, checked on their own).
fn check(cache: &Cache, path: &Path, r: &Record) -> Result<()> {
    let len = std::fs::metadata(path).context("the data file is missing")?.len();
    if len != r.bytes {
        anyhow::bail!("the data file has {len} bytes, the record says {}", r.bytes);
    }
    let map = crate::data::integrity::map(path)?;
    let (chunks, sum) = ChunkSums::of(&map);
    if sum != r.blake3 {
        anyhow::bail!(
            "checksum mismatch: BLAKE3 {} but the record says {}",
            &sum[..16],
            &r.blake3[..16.min(r.blake3.len())]
        );
    }
    if r.chunks.as_ref().is_some_and(|c| *c != chunks) {
        anyhow::bail!("the record's chunk sums are not those of its data file (the record is damaged)");
    }
    if r.format == Format::Arrow {
        let (_, batches) = crate::data::dataset::reader::open_file(path, &cache.integrity())?;
        for batch in batches {
            batch.context("not a readable dataset")?;
        }
    }
    Ok(())
}
