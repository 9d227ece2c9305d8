//! Sharded runs: `pipeline run FILE --shard I/N` does the per-image work (`ingest`, `split`,
//! `resize`: each row depends on its own image only) for the files of shard I alone, as
//! parts of those stages' artifacts; the stages that need every row (fitted statistics,
//! `validate`, `train`, `evaluate`) wait for the merge, a later `pipeline run FILE` without
//! `--shard`, which assembles the parts without recomputing them into exactly what a single
//! process makes: the same fingerprints, rows in the same order, the same pixels.
//!
//! A file belongs to the shard that the first 8 bytes of the BLAKE3 of its path (relative to
//! the image folder), as a little-endian number, modulo N name: stable across machines and
//! runs, and known without reading the file, so each shard lists the folder but hashes only
//! its own files. When a shard finishes it writes its entry (`shards/<pipeline>/<ingest
//! stage>/<N>/<I>.json` in the cache and the shared cache): the fingerprint of its `ingest`
//! part and the stat-cache lines of its files. The merge reads the entries of a complete set
//! (every I of one N): their lines spare it hashing the files again (where path, size, mtime
//! and inode match: a shared file system), and the parts of the later per-image stages,
//! whose fingerprints follow from the `ingest` parts and the pipeline file, become the
//! segments of the merged `resize`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pipeline::plan::Plan;
use crate::stage::params::Params;

/// Shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// At most this many shards: the merged artifact addresses its parts with 16-bit numbers.
pub const MAX_SHARDS: u32 = 65_535;

impl Shard {
    /// `I/N`, `auto` (a Slurm array task: `SLURM_ARRAY_TASK_ID` from `SLURM_ARRAY_TASK_MIN`,
    /// of `SLURM_ARRAY_TASK_COUNT`) or `auto/N` (the index from Kubernetes'
    /// `JOB_COMPLETION_INDEX`, else Slurm's).
    pub fn parse(value: &str) -> Result<Shard, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |text: &str, what: &str| -> Result<u32, String> {
            text.trim()
                .parse::<u32>()
                .map_err(|_| format!("`--shard {value}`: {what} `{text}` is not a whole number"))
        };
        let slurm_index = || -> Result<Option<u32>, String> {
            let Some(id) = env("SLURM_ARRAY_TASK_ID") else {
                return Ok(None);
            };
            let min = env("SLURM_ARRAY_TASK_MIN").unwrap_or_else(|| "0".into());
            let (id, min) = (
                number(&id, "SLURM_ARRAY_TASK_ID")?,
                number(&min, "SLURM_ARRAY_TASK_MIN")?,
            );
            id.checked_sub(min)
                .map(Some)
                .ok_or_else(|| format!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"))
        };
        let (index, count) = match value.split_once('/') {
            _ if value == "auto" => {
                let index = slurm_index()?.ok_or_else(|| {
                    "`--shard auto` reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, which are not set: run it \
                     in a Slurm array job (`sbatch --array=0-3`), or give the count, `--shard auto/4`, in a \
                     Kubernetes Indexed Job"
                        .to_string()
                })?;
                let count = env("SLURM_ARRAY_TASK_COUNT")
                    .ok_or("`--shard auto`: SLURM_ARRAY_TASK_COUNT is not set; give the count: `--shard auto/N`")?;
                (index, number(&count, "SLURM_ARRAY_TASK_COUNT")?)
            }
            Some(("auto", count)) => {
                let index = match env("JOB_COMPLETION_INDEX") {
                    Some(i) => number(&i, "JOB_COMPLETION_INDEX")?,
                    None => slurm_index()?.ok_or_else(|| {
                        format!(
                            "`--shard {value}` reads JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) or \
                             SLURM_ARRAY_TASK_ID (a Slurm array job); neither is set"
                        )
                    })?,
                };
                (index, number(count, "the count")?)
            }
            Some((i, n)) => (number(i, "the shard")?, number(n, "the count")?),
            None => {
                return Err(format!(
                    "`--shard {value}`: write I/N (shard I of N, counted from 0: `--shard 0/4` … `--shard 3/4`), \
                     `auto` in a Slurm array job, or `auto/N`"
                ));
            }
        };
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "`--shard {value}`: the count must be 1 to {MAX_SHARDS}, not {count}"
            ));
        }
        if index >= count {
            return Err(format!(
                "`--shard {value}`: shards are counted from 0, so shard {index} of {count} does not exist (the last \
                 is {}/{count})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether the image at `rel` (relative to the image folder) is this shard's.
    pub fn holds(&self, rel: &str) -> bool {
        let hash = blake3::hash(rel.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first) % u64::from(self.count) == u64::from(self.index)
    }

    /// `I/N`, as it is written into the `ingest` part's params.
    pub fn tag(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

/// For each stage, whether a shard runs it: `ingest`, `split` and `resize` whose inputs it
/// runs too (the rest needs every shard's rows).
pub fn per_image(plan: &Plan) -> Vec<bool> {
    let mut runs = vec![false; plan.spec.stages.len()];
    for &i in &plan.order {
        runs[i] = matches!(
            plan.stage(i).params,
            Params::Ingest(_) | Params::Split(_) | Params::Resize(_)
        ) && plan.inputs[i].iter().all(|&j| runs[j]);
    }
    runs
}

/// Where a shard's entry is kept, under `shards/` of the cache.
pub fn entry_key(plan: &Plan, ingest: usize, shard: Shard) -> String {
    format!("{}/{}/{}.json", set_key(plan, ingest), shard.count, shard.index)
}

/// The folder of the entries of every shard count of `ingest`.
pub fn set_key(plan: &Plan, ingest: usize) -> String {
    format!("{}/{}", plan.spec.name, plan.stage(ingest).name)
}

/// What a finished shard leaves for the merge.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// `I/N`.
    pub shard: String,
    /// The fingerprint of its `ingest` part.
    pub ingest: String,
    /// The `ingest` params (without the shard) it ran with: a merge of other params ignores it.
    pub params: serde_json::Value,
    /// Its files' stat-cache lines (`sha256 size mtime_ns inode path`).
    pub stat: String,
    pub files: u64,
    pub created_unix: u64,
}

/// The newest complete set among `entries` (key relative to the set folder: `N/I.json`)
/// made with `params`: every shard of one count, in shard order.
pub fn complete_set(entries: Vec<(String, Vec<u8>)>, params: &serde_json::Value) -> Option<Vec<Entry>> {
    let mut by_count: BTreeMap<u32, BTreeMap<u32, Entry>> = BTreeMap::new();
    for (key, bytes) in entries {
        let Some((count, index)) = key
            .strip_suffix(".json")
            .and_then(|k| k.split_once('/'))
            .and_then(|(n, i)| Some((n.parse::<u32>().ok()?, i.parse::<u32>().ok()?)))
        else {
            continue;
        };
        match serde_json::from_slice::<Entry>(&bytes) {
            Ok(e) if e.params == *params && e.shard == format!("{index}/{count}") => {
                by_count.entry(count).or_default().insert(index, e);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(key, error = %e, "unreadable shard entry"),
        }
    }
    by_count
        .into_iter()
        .filter(|(count, shards)| shards.len() == *count as usize)
        .max_by_key(|(_, shards)| shards.values().map(|e| e.created_unix).max())
        .map(|(_, shards)| shards.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_arguments_are_checked_with_a_fix() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(Shard::parse("0/1"), Ok(Shard { index: 0, count: 1 }));
        let err = Shard::parse("4/4").unwrap_err();
        assert!(err.contains("shard 4 of 4 does not exist (the last is 3/4)"), "{err}");
        let err = Shard::parse("0/0").unwrap_err();
        assert!(err.contains("the count must be 1 to 65535, not 0"), "{err}");
        let err = Shard::parse("a/b").unwrap_err();
        assert!(err.contains("the shard `a` is not a whole number"), "{err}");
        let err = Shard::parse("3").unwrap_err();
        assert!(err.contains("write I/N"), "{err}");
    }

    #[test]
    fn every_file_is_in_exactly_one_shard_and_they_are_balanced() {
        let shards: Vec<Shard> = (0..4).map(|index| Shard { index, count: 4 }).collect();
        let mut sizes = [0usize; 4];
        for i in 0..4000 {
            let rel = format!("cat/{i}.jpg");
            let owners: Vec<usize> = (0..4).filter(|&s| shards[s].holds(&rel)).collect();
            assert_eq!(owners.len(), 1, "{rel}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| (900..1100).contains(&n)), "{sizes:?}");
        // Stable: the rule is the path's BLAKE3, not a seed or the machine.
        assert!(Shard { index: 0, count: 1 }.holds("anything"));
    }

    #[test]
    fn the_merge_takes_the_newest_complete_set_made_with_its_params() {
        let params = serde_json::json!({"labels": "prefix"});
        let entry = |shard: &str, at: u64, params: &serde_json::Value| {
            let e = Entry {
                shard: shard.into(),
                ingest: format!("fp-{shard}"),
                params: params.clone(),
                stat: String::new(),
                files: 1,
                created_unix: at,
            };
            serde_json::to_vec(&e).unwrap()
        };
        let other = serde_json::json!({"labels": "folder"});
        let entries = vec![
            ("2/0.json".to_string(), entry("0/2", 5, &params)),
            ("2/1.json".to_string(), entry("1/2", 6, &params)),
            // Newer, but incomplete (shard 2 of 3 is missing).
            ("3/0.json".to_string(), entry("0/3", 9, &params)),
            ("3/1.json".to_string(), entry("1/3", 9, &params)),
            // Complete and newer, but made with other params.
            ("1/0.json".to_string(), entry("0/1", 10, &other)),
            ("junk".to_string(), b"{".to_vec()),
        ];
        let set = complete_set(entries, &params).unwrap();
        let fps: Vec<&str> = set.iter().map(|e| e.ingest.as_str()).collect();
        assert_eq!(fps, ["fp-0/2", "fp-1/2"]);
        assert_eq!(complete_set(Vec::new(), &params), None);
    }
}
