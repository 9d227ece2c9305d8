//! `split`: assign every row to `train`, `val` or `test`.
//!
//! A row's partition depends only on its content id and the seed: a uniform number is drawn
//! from SHA-256(`seed:id`) and compared with the cumulative fractions. Adding or removing
//! other images therefore never moves an image, and byte-identical duplicates always land in
//! the same partition. Because each class is split by the same independent draw, the split
//! is stratified by label in expectation (each class gets the requested fractions up to
//! sampling noise); the exact counts per class and partition are recorded and printed.
//! The partition is a column: all rows keep flowing through the same later stages.
//!
//! `method: folder` takes the partition from the first folder of each path instead
//! (`train/`, `val/` or `valid/`, `test/`), for datasets that come split; there the same photo
//! can sit in two folders, which the `validate` stage reports as leakage.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{Kind, Output, RunCtx};
use crate::data::dataset::mapped::Mapped;
use crate::source::diag::Diagnostic;
use crate::source::fields::{Fields, get_choice, get_f64, get_u64};

pub const PARTITIONS: [&str; 3] = ["train", "val", "test"];

#[derive(Clone, Debug)]
pub struct Split {
    pub method: Method,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Drawn from the content id and the seed.
    Hash {
        fractions: [f64; 3],
        /// Overrides the pipeline's `seed` for this split.
        seed: Option<u64>,
    },
    /// Taken from the first folder of each image's path (`train/cat/1.jpg`), for datasets
    /// that come split already.
    Folder,
}

impl Kind for Split {
    const KIND: &'static str = "split";
    /// 2: with pixels, a view of the stored ones.
    const VERSION: u32 = 2;
    const PARAMS: &'static [&'static str] = &["method", "train", "val", "test", "seed"];

    fn parse(f: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Self> {
        let method = match f.get("method") {
            Some(n) => get_choice(n, "method", &[("hash", false), ("folder", true)], diags)?,
            None => false,
        };
        if method {
            for key in ["train", "val", "test", "seed"] {
                if let Some(n) = f.get(key) {
                    diags.push(
                        Diagnostic::new(n.span, format!("`{key}` has no meaning with `method: folder`"))
                            .with_help("the partition is the image's first folder: train/, val/ or test/"),
                    );
                }
            }
            return Some(Split { method: Method::Folder });
        }
        let mut fractions = [0.0; 3];
        let mut ok = true;
        let mut given = 0;
        for (slot, name) in fractions.iter_mut().zip(PARTITIONS) {
            if let Some(n) = f.get(name) {
                given += 1;
                match get_f64(n, name, (0.0, 1.0), diags) {
                    Some(v) => *slot = v,
                    None => ok = false,
                }
            }
        }
        if given == 0 {
            diags.push(
                Diagnostic::new(f.span, format!("{} gives no fractions", f.what))
                    .with_help("add e.g. `train: 0.7`, `val: 0.15`, `test: 0.15`"),
            );
            return None;
        }
        let sum: f64 = fractions.iter().sum();
        if ok && (sum - 1.0).abs() > 1e-6 {
            diags.push(
                Diagnostic::new(f.span, format!("the fractions of {} add up to {sum}, not 1", f.what))
                    .with_help("make `train + val + test` equal 1"),
            );
            ok = false;
        }
        if ok && fractions[0] == 0.0 {
            diags.push(Diagnostic::new(f.span, format!("{} puts no rows in `train`", f.what)));
            ok = false;
        }
        let seed = f
            .get("seed")
            .and_then(|n| get_u64(n, "seed", (0, u64::MAX >> 1), diags));
        ok.then_some(Split {
            method: Method::Hash { fractions, seed },
        })
    }

    fn to_json(&self) -> serde_json::Value {
        match self.method {
            Method::Hash { fractions, seed } => serde_json::json!({
                "train": fractions[0],
                "val": fractions[1],
                "test": fractions[2],
                "seed": seed,
            }),
            Method::Folder => serde_json::json!({ "method": "folder" }),
        }
    }

    fn inherit_seed(&mut self, pipeline: u64) -> bool {
        match &mut self.method {
            Method::Hash { seed: seed @ None, .. } => {
                *seed = Some(pipeline);
                true
            }
            _ => false,
        }
    }
}

/// The partition of one image: a pure function of its content id and the seed.
pub fn partition_of(id: &str, seed: u64, fractions: [f64; 3]) -> &'static str {
    let digest = crate::data::hash::sha256_hex(format!("{seed}:{id}").as_bytes());
    let draw = u64::from_str_radix(&digest[..16], 16).unwrap_or(0) as f64 / 2f64.powi(64);
    if draw < fractions[0] {
        "train"
    } else if draw < fractions[0] + fractions[1] {
        "val"
    } else {
        "test"
    }
}

/// The partition named by the first folder of `path`.
fn folder_partition(path: &str) -> Result<String> {
    let first = path.split('/').next().unwrap_or_default();
    let name = match first {
        "train" | "training" => "train",
        "val" | "valid" | "validation" => "val",
        "test" | "testing" => "test",
        _ => anyhow::bail!("`{path}` is not under a train/, val/ or test/ folder, which `split: method: folder` needs"),
    };
    Ok(name.to_string())
}

impl Split {
    pub fn run(&self, ctx: &RunCtx<'_>) -> Result<Output> {
        let input = ctx.input_path()?;
        // The row columns as stored (a view's pixels are never materialized here).
        let data = Mapped::open(input, &ctx.integrity)?;
        let meta = &data.meta;
        // Pixels pass through untouched: with pixels, the artifact is a view of the stored ones.
        let mut writer = match meta.pixels {
            Some((_, dtype)) => ctx.view_writer(meta, dtype, true, &serde_json::Value::Null)?,
            None => ctx.writer(meta, None, true, &serde_json::Value::Null)?,
        };
        let mut counts: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
        for rows in data.row_batches() {
            let mut rows = rows?;
            let parts: Vec<String> = match self.method {
                Method::Hash { fractions, seed } => {
                    let seed = seed.unwrap_or(ctx.seed);
                    rows.id
                        .iter()
                        .map(|id| partition_of(id, seed, fractions).to_string())
                        .collect()
                }
                Method::Folder => rows.path.iter().map(|p| folder_partition(p)).collect::<Result<_>>()?,
            };
            for (p, class) in parts.iter().zip(&rows.class) {
                let p = PARTITIONS.iter().find(|x| **x == p).copied().unwrap_or("test");
                *counts.entry(p).or_default().entry(class.clone()).or_default() += 1;
            }
            rows.partition = Some(parts);
            writer.write(&rows, None)?;
            ctx.progress.inc(rows.len() as u64);
        }
        Ok(Output {
            written: writer.finish()?,
            fitted: serde_json::Value::Null,
            summary: serde_json::json!({ "partitions": counts }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_depends_on_id_and_seed_only() {
        let f = [0.7, 0.15, 0.15];
        let ids: Vec<String> = (0..2000)
            .map(|i| crate::data::hash::sha256_hex(&[i as u8, (i >> 8) as u8]))
            .collect();
        let parts: Vec<&str> = ids.iter().map(|id| partition_of(id, 7, f)).collect();
        let train = parts.iter().filter(|p| **p == "train").count();
        assert!((1300..1500).contains(&train), "train share {train}/2000");
        assert_eq!(parts[5], partition_of(&ids[5], 7, f));
        let other_seed: Vec<&str> = ids.iter().map(|id| partition_of(id, 8, f)).collect();
        assert_ne!(parts, other_seed);
    }
}
