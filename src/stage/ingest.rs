//! `ingest`: find the labelled images of a folder and hash them.
//!
//! Labels come from the file-name prefix (`cat.12.jpg` → `cat`, the part before the first
//! dot), from the folder holding the file (`cat/12.jpg` and `train/cat/12.jpg` → `cat`) or
//! from a CSV of `path,label`
//! (paths relative to the image folder, an optional `path,label` header). Classes are the
//! explicit `classes` list, or the sorted label names found. The artifact holds one row per
//! image (`id`, `path`, `label`, `class`) and no pixels: later stages read the files and check
//! each against its `id` (the SHA-256 of its bytes, as `sha256sum` prints it), so a file
//! changed after ingest is detected, never silently used.
//!
//! `on_error` says what to do with images that cannot be used: `fail` (the default) stops
//! with every such file and its reason listed; `skip` goes on without them and records each
//! with its reason (in the record's summary, shown by `run` and `audit`). Ingest meets files it
//! cannot read (permissions, dangling links, link loops); `resize` meets files that do not
//! decode (empty, truncated, not an image, a bad checksum, over the size limits) and follows
//! the same policy. `max_width`, `max_height` and `max_pixels` bound what is decoded (checked
//! from the header, before any pixel is allocated).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use super::{Kind, Output, RunCtx};
use crate::cache::stat_cache::{Cursor, StatCache};
use crate::data::dataset::Meta;
use crate::data::dataset::columns::Rows;
use crate::data::decode::DecodeLimits;
use crate::data::file::FileStat;
use crate::data::hash::sha256_hex;
use crate::data::walk::{Found, regular_file_stat, walk};
use crate::source::diag::Diagnostic;
use crate::source::fields::{Fields, get_choice, get_str, get_u64};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelSource {
    Prefix,
    Folder,
    Csv,
}

impl LabelSource {
    fn name(self) -> &'static str {
        match self {
            LabelSource::Prefix => "prefix",
            LabelSource::Folder => "folder",
            LabelSource::Csv => "csv",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Ingest {
    /// The image folder, relative to the pipeline file.
    pub path: String,
    pub labels: LabelSource,
    /// The label file for `labels: csv`, relative to the pipeline file.
    pub csv: Option<String>,
    pub classes: Option<Vec<String>>,
    pub extensions: Vec<String>,
    /// Skip unusable images (recording why) instead of stopping.
    pub skip_errors: bool,
    pub limits: DecodeLimits,
}

impl Kind for Ingest {
    const KIND: &'static str = "ingest";
    const VERSION: u32 = 2;
    const PARAMS: &'static [&'static str] = &[
        "path",
        "labels",
        "csv",
        "classes",
        "extensions",
        "on_error",
        "max_width",
        "max_height",
        "max_pixels",
    ];

    fn parse(f: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Self> {
        let path = f
            .require("path", "add `path: <folder of images>` (relative to this file)", diags)
            .and_then(|n| get_str(n, "path", diags));
        let labels = match f.get("labels") {
            Some(n) => get_choice(
                n,
                "labels",
                &[
                    ("prefix", LabelSource::Prefix),
                    ("folder", LabelSource::Folder),
                    ("csv", LabelSource::Csv),
                ],
                diags,
            ),
            None => Some(LabelSource::Prefix),
        };
        let csv_node = f.get("csv");
        let csv = csv_node.and_then(|n| get_str(n, "csv", diags));
        if labels == Some(LabelSource::Csv) && csv_node.is_none() {
            diags.push(
                Diagnostic::new(f.span, format!("{} has `labels: csv` but no `csv` file", f.what))
                    .with_help("add `csv: labels.csv` (a file of `path,label` lines)"),
            );
        }
        if let (Some(n), Some(l)) = (csv_node, labels)
            && l != LabelSource::Csv
        {
            diags.push(
                Diagnostic::new(
                    n.span,
                    format!("`csv` is only used with `labels: csv`, not `labels: {}`", l.name()),
                )
                .with_help("add `labels: csv` or remove `csv`"),
            );
        }
        let classes = f.get("classes").and_then(|n| string_list(n, "classes", diags));
        if let (Some(c), Some(n)) = (&classes, f.get("classes")) {
            let unique: BTreeSet<_> = c.iter().collect();
            if unique.len() != c.len() || c.is_empty() {
                diags.push(Diagnostic::new(n.span, "`classes` must list distinct class names"));
            }
        }
        let extensions = match f.get("extensions") {
            Some(n) => string_list(n, "extensions", diags).map(|v| {
                v.into_iter()
                    .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                    .collect()
            }),
            None => Some(vec!["jpg".into(), "jpeg".into(), "png".into()]),
        };
        let skip_errors = match f.get("on_error") {
            Some(n) => get_choice(n, "on_error", &[("fail", false), ("skip", true)], diags),
            None => Some(false),
        };
        let defaults = DecodeLimits::default();
        let mut limit = |key: &str, max: u64, default: u64, diags: &mut Vec<Diagnostic>| match f.get(key) {
            Some(n) => get_u64(n, key, (1, max), diags),
            None => Some(default),
        };
        let max_width = limit("max_width", 1 << 20, u64::from(defaults.max_width), diags);
        let max_height = limit("max_height", 1 << 20, u64::from(defaults.max_height), diags);
        let max_pixels = limit("max_pixels", 1 << 40, defaults.max_pixels, diags);
        Some(Ingest {
            path: path?,
            labels: labels?,
            csv,
            classes,
            extensions: extensions?,
            skip_errors: skip_errors?,
            limits: DecodeLimits {
                max_width: max_width? as u32,
                max_height: max_height? as u32,
                max_pixels: max_pixels?,
            },
        })
    }

    /// The folder and CSV locations are not hashed: the files' content and labels are. The
    /// error policy and limits enter only when set away from their defaults (so that
    /// fingerprints from before they existed stay valid).
    fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "labels": self.labels.name(),
            "classes": self.classes,
            "extensions": self.extensions,
        });
        if self.skip_errors {
            v["on_error"] = "skip".into();
        }
        if self.limits != DecodeLimits::default() {
            v["max_width"] = self.limits.max_width.into();
            v["max_height"] = self.limits.max_height.into();
            v["max_pixels"] = self.limits.max_pixels.into();
        }
        v
    }
}

/// Skipped files as the JSON list records keep: `[{"path", "reason"}]`.
pub fn skipped_json(skipped: &[(String, String)]) -> serde_json::Value {
    skipped
        .iter()
        .map(|(p, r)| serde_json::json!({ "path": p, "reason": r }))
        .collect()
}

fn string_list(node: &crate::source::yaml::Node, field: &str, diags: &mut Vec<Diagnostic>) -> Option<Vec<String>> {
    match node.as_seq() {
        Some(items) => items.iter().map(|i| get_str(i, field, diags)).collect(),
        None => {
            diags.push(Diagnostic::new(
                node.span,
                format!("`{field}` must be a list of strings, found {}", node.describe()),
            ));
            None
        }
    }
}

/// What looking up and hashing one share of a scan's files needs.
struct Share<'a> {
    stat_cache: &'a StatCache,
    root: &'a Path,
    prefix: String,
    /// Each class index as text, for the listing.
    label_text: Vec<String>,
}

/// One share of a scan's files, looked up and hashed.
struct Part {
    files: Vec<FileEntry>,
    /// Their `path\tsha256\tlabel` lines, which the content hash covers.
    listing: String,
    skipped: Vec<(String, String)>,
    /// Files hashed afresh, for the stat cache: (key, stat, hash).
    hashed: Vec<(String, FileStat, String)>,
}

impl Share<'_> {
    /// Looks up and hashes `found` (taking its paths and errors, left empty) with their
    /// `labels`.
    fn look_up_and_hash(&self, found: &mut [Found], labels: &[usize]) -> Part {
        let mut part = Part {
            files: Vec::with_capacity(found.len()),
            listing: String::with_capacity(found.len() * 96),
            skipped: Vec::new(),
            hashed: Vec::new(),
        };
        let (mut key, mut cursor) = (self.prefix.clone(), Cursor::default());
        for ((rel, stat), &label) in found.iter_mut().zip(labels) {
            let rel = std::mem::take(rel);
            let stat = match stat {
                Ok(stat) => *stat,
                Err(reason) => {
                    part.skipped.push((rel, std::mem::take(reason)));
                    continue;
                }
            };
            key.truncate(self.prefix.len());
            key.push_str(&rel);
            let sha = match self.stat_cache.get_from(&mut cursor, &key, stat) {
                Some(sha) => sha256_digits(sha),
                None => match fs::read(self.root.join(&rel)) {
                    Ok(bytes) => {
                        let sha = sha256_hex(&bytes);
                        let digits = sha256_digits(&sha);
                        part.hashed.push((key.clone(), stat, sha));
                        digits
                    }
                    Err(e) => {
                        part.skipped.push((rel, format!("cannot read: {e}")));
                        continue;
                    }
                },
            };
            let hex = std::str::from_utf8(&sha).unwrap_or_default();
            for text in [rel.as_str(), "\t", hex, "\t", &self.label_text[label], "\n"] {
                part.listing.push_str(text);
            }
            part.files.push(FileEntry {
                path: rel,
                sha256: sha,
                label,
            });
        }
        part
    }
}

/// One image found by a scan.
#[derive(Clone, Debug, PartialEq)]
pub struct FileEntry {
    /// Relative to the image folder, `/`-separated.
    pub path: String,
    /// The SHA-256 of its bytes as 64 hex digits (inline: a scan makes one per image).
    sha256: [u8; 64],
    /// Its class: an index into `Scan::classes`.
    pub label: usize,
}

impl FileEntry {
    /// The SHA-256 of its bytes, in hex: its `id`.
    pub fn sha256(&self) -> &str {
        std::str::from_utf8(&self.sha256).unwrap_or_default()
    }
}

/// The hex digits of a SHA-256 (always 64 ASCII hex digits: from `sha256_hex` or the stat
/// cache, which checks them).
fn sha256_digits(hex: &str) -> [u8; 64] {
    let mut digits = [b'0'; 64];
    let n = hex.len().min(64);
    digits[..n].copy_from_slice(&hex.as_bytes()[..n]);
    digits
}

/// The result of scanning the image folder: what `ingest`'s fingerprint covers.
#[derive(Clone, Debug)]
pub struct Scan {
    pub root: PathBuf,
    pub files: Vec<FileEntry>,
    pub classes: Vec<String>,
    /// BLAKE3 over the sorted `path\tsha256\tlabel` lines, then the class names when a csv
    /// gives the labels (SHA-256 took 12 ms of a warm run
    /// at 25,000 images; see docs/design.md, "Hashing").
    pub content: String,
    /// Files left out under `on_error: skip`: (path, reason).
    pub skipped: Vec<(String, String)>,
}

impl Ingest {
    /// Lists, labels and hashes the images (re-hashing only files whose stat changed); with
    /// `keep`, only the files whose path (relative to the image folder) it holds (a shard's),
    /// which are the only ones read.
    pub fn scan(
        &self,
        base: &Path,
        stat_cache: &mut StatCache,
        keep: Option<&(dyn Fn(&str) -> bool + Sync)>,
    ) -> Result<Scan> {
        let root = base.join(&self.path);
        if !root.is_dir() {
            bail!(
                "ingest folder {} does not exist or is not a folder (`path: {}` is relative to the pipeline file)",
                root.display(),
                self.path
            );
        }
        // Each file with its stat (or why it has none), and its label.
        let (found, csv_labels) = match self.labels {
            LabelSource::Csv => {
                let csv_path = base.join(self.csv.as_deref().unwrap_or_default());
                let (rels, labels): (Vec<String>, Vec<String>) = read_csv(&csv_path, &root)?.into_iter().unzip();
                let found: Vec<Found> = rels
                    .into_par_iter()
                    .map(|rel| {
                        let stat = regular_file_stat(&root.join(&rel));
                        (rel, stat)
                    })
                    .collect();
                (found, Some(labels))
            }
            _ => (walk(&root, &self.extensions, &stat_cache.folders)?, None),
        };
        tracing::debug!(files = found.len(), "listed and stat'ed");
        let (found, csv_labels) = match keep {
            None => (found, csv_labels),
            Some(keep) => {
                let all = found.len();
                let kept: Vec<bool> = found.iter().map(|(rel, _)| keep(rel)).collect();
                fn select<T>(v: Vec<T>, kept: &[bool]) -> Vec<T> {
                    v.into_iter().zip(kept).filter(|(_, k)| **k).map(|(x, _)| x).collect()
                }
                let csv_labels = csv_labels.map(|l| select(l, &kept));
                let found = select(found, &kept);
                if found.is_empty() && all > 0 {
                    bail!(
                        "this shard holds none of the {all} images in {}: use fewer shards",
                        root.display()
                    );
                }
                (found, csv_labels)
            }
        };
        if found.is_empty() {
            bail!(
                "no images found in {} (looked for files ending in .{})",
                root.display(),
                self.extensions.join(", .")
            );
        }
        let labels: Vec<&str> = match &csv_labels {
            Some(labels) => labels.iter().map(String::as_str).collect(),
            None => found
                .iter()
                .map(|(rel, _)| self.label_of(rel, &root))
                .collect::<Result<_>>()?,
        };
        let classes: Vec<String> = match &self.classes {
            Some(c) => {
                let known: BTreeSet<&str> = c.iter().map(String::as_str).collect();
                let unknown: BTreeMap<&str, &str> = labels
                    .iter()
                    .zip(&found)
                    .filter(|(l, _)| !known.contains(*l))
                    .map(|(l, (p, _))| (*l, p.as_str()))
                    .collect();
                if !unknown.is_empty() {
                    let list: Vec<String> = unknown.iter().map(|(l, p)| format!("`{l}` (e.g. {p})")).collect();
                    bail!(
                        "labels not in `classes`: {}; add them to `classes` or remove those files",
                        list.join(", ")
                    );
                }
                c.clone()
            }
            None => {
                // Neighbours mostly share a label: each run of one is inserted once.
                let mut names = BTreeSet::new();
                let mut last = None;
                for &l in &labels {
                    if last != Some(l) {
                        names.insert(l);
                        last = Some(l);
                    }
                }
                names.into_iter().map(String::from).collect()
            }
        };
        let class_of: BTreeMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let mut last: Option<(&str, usize)> = None;
        let labels: Vec<usize> = labels
            .iter()
            .map(|&l| match last {
                Some((name, i)) if name == l => i,
                _ => {
                    let i = class_of[l];
                    last = Some((l, i));
                    i
                }
            })
            .collect();
        // Every file is looked up in the stat cache and, unless known, hashed, in shares run in
        // parallel: each share in path order, which reads the cache front to back. A file
        // that cannot be read is an error to list, not a reason to stop at the first.
        let per = found.len().div_ceil(rayon::current_num_threads() * 8).max(256);
        let mut found = found;
        let share = Share {
            stat_cache,
            root: &root,
            // Stat-cache keys are the full paths `root.join(rel)` spells.
            prefix: root.join("").to_string_lossy().into_owned(),
            label_text: (0..classes.len()).map(|i| i.to_string()).collect(),
        };
        let parts: Vec<Part> = found
            .par_chunks_mut(per)
            .zip(labels.par_chunks(per))
            .map(|(files, labels)| share.look_up_and_hash(files, labels))
            .collect();
        let (mut files, mut skipped, mut listing) =
            (Vec::with_capacity(labels.len()), Vec::new(), blake3::Hasher::new());
        for part in parts {
            files.extend(part.files);
            skipped.extend(part.skipped);
            listing.update(part.listing.as_bytes());
            for (key, stat, sha) in part.hashed {
                stat_cache.put(key, stat, &sha);
            }
        }
        if !skipped.is_empty() && !self.skip_errors {
            bail!(
                "{} image(s) could not be read:\n  {}\nfix or remove them, or add `on_error: skip` to this `ingest` to go \
                 on without them",
                skipped.len(),
                skipped
                    .iter()
                    .map(|(p, r)| format!("{}: {r}", root.join(p).display()))
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
        }
        if files.is_empty() {
            bail!(
                "none of the {} image(s) in {} could be read",
                skipped.len(),
                root.display()
            );
        }
        // The listing names each file's class by index. With `folder` and `prefix` labels the
        // path spells the class's name; a csv's names are not in any path, so they are added:
        // renaming a class there changes the rows (their `class`), hence the fingerprint.
        if matches!(self.labels, LabelSource::Csv) {
            for c in &classes {
                listing.update(b"class\t");
                listing.update(c.as_bytes());
                listing.update(b"\n");
            }
        }
        Ok(Scan {
            root,
            files,
            classes,
            content: listing.finalize().to_hex().to_string(),
            skipped,
        })
    }

    /// The label of the image at `rel`: its folder's name or its name up to the first dot.
    fn label_of<'r>(&self, rel: &'r str, root: &Path) -> Result<&'r str> {
        let (dirs, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        Ok(match self.labels {
            LabelSource::Folder if dirs.is_empty() => bail!(
                "{rel} is directly in {}; with `labels: folder` every image must be in a sub-folder named after its class",
                root.display()
            ),
            LabelSource::Folder => dirs.rsplit('/').next().unwrap_or(dirs),
            _ => name.split('.').next().unwrap_or(name),
        })
    }

    pub fn run(&self, scan: &Scan, ctx: &RunCtx<'_>) -> Result<Output> {
        let empty = Meta {
            classes: scan.classes.clone(),
            has_partition: false,
            pixels: None,
            lineage: Vec::new(),
            pixels_from: None,
            segments: Vec::new(),
        };
        let mut writer = ctx.writer(&empty, None, false, &serde_json::Value::Null)?;
        let mut per_class: BTreeMap<&str, u64> = BTreeMap::new();
        for chunk in scan.files.chunks(empty.rows_per_batch()) {
            let mut rows = Rows::default();
            for f in chunk {
                rows.id.push(f.sha256().to_string());
                rows.path.push(f.path.clone());
                let class = &scan.classes[f.label];
                rows.label.push(f.label as i32);
                rows.class.push(class.clone());
                *per_class.entry(class).or_default() += 1;
            }
            writer.write(&rows, None)?;
            ctx.progress.inc(chunk.len() as u64);
        }
        let mut summary = serde_json::json!({ "classes": per_class });
        if !scan.skipped.is_empty() {
            summary["skipped"] = skipped_json(&scan.skipped);
        }
        Ok(Output {
            written: writer.finish()?,
            fitted: serde_json::Value::Null,
            summary,
        })
    }
}

/// Reads `path,label` lines (an optional header line `path,label` is skipped).
fn read_csv(csv_path: &Path, root: &Path) -> Result<Vec<(String, String)>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_path(csv_path)
        .with_context(|| format!("cannot read label file {}", csv_path.display()))?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: line {}", csv_path.display(), i + 1))?;
        if rec.len() != 2 {
            bail!(
                "{}:{}: expected `path,label`, found {} fields",
                csv_path.display(),
                i + 1,
                rec.len()
            );
        }
        if i == 0 && &rec[0] == "path" && &rec[1] == "label" {
            continue;
        }
        let rel = rec[0].trim_start_matches("./").to_string();
        if !root.join(&rel).is_file() {
            bail!(
                "{}:{}: image `{rel}` not found in {}",
                csv_path.display(),
                i + 1,
                root.display()
            );
        }
        if !seen.insert(rel.clone()) {
            bail!("{}:{}: image `{rel}` is listed twice", csv_path.display(), i + 1);
        }
        out.push((rel, rec[1].to_string()));
    }
    out.sort();
    Ok(out)
}
