//! Why a stage is stale: cache misses explained, as data first and words second.
//!
//! A stage's new fingerprint is compared with the one the same stage of the same pipeline
//! produced last time (kept in the cache); when they differ, the two records are compared
//! item by item (see [`crate::pipeline::fingerprint`] for what is hashed) to say what changed.

use std::collections::BTreeMap;
use std::fmt;

use crate::cache::store::{Cache, Lookup, Record};
use crate::data::dataset::columns::Rows;
use crate::data::dataset::reader;
use crate::stage::ingest::Scan;

/// The reasons a stage must be (re)computed.
#[derive(Clone, Debug, PartialEq)]
pub enum DirtyReason {
    /// The stage has never produced an artifact in this cache.
    NeverRun,
    /// `--force` was given for it.
    Forced,
    /// The artifact that was produced is gone or damaged.
    ArtifactMissing(String),
    KindVersionChanged {
        old: u32,
        new: u32,
    },
    ParamChanged {
        name: String,
        old: String,
        new: String,
    },
    InputChanged {
        input: String,
    },
    /// The images changed (ingest): counts of files added, removed, changed, relabelled.
    FilesChanged {
        added: usize,
        removed: usize,
        changed: usize,
        relabeled: usize,
    },
    /// The last record is gone, so what changed cannot be told.
    Unknown,
}

impl fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirtyReason::NeverRun => write!(f, "never run"),
            DirtyReason::Forced => write!(f, "forced"),
            DirtyReason::ArtifactMissing(why) => write!(f, "cached artifact unusable: {why}"),
            DirtyReason::KindVersionChanged { old, new } => write!(f, "stage kind version changed {old} -> {new}"),
            DirtyReason::ParamChanged { name, old, new } => write!(f, "param {name} changed {old} -> {new}"),
            DirtyReason::InputChanged { input } => write!(f, "input {input} changed"),
            DirtyReason::FilesChanged {
                added,
                removed,
                changed,
                relabeled,
            } => {
                let mut parts = Vec::new();
                for (n, what) in [
                    (added, "added"),
                    (changed, "changed"),
                    (removed, "removed"),
                    (relabeled, "relabeled"),
                ] {
                    if *n > 0 {
                        parts.push(format!("{n} {} {what}", if *n == 1 { "file" } else { "files" }));
                    }
                }
                if parts.is_empty() {
                    write!(f, "file list changed")
                } else {
                    write!(f, "{}", parts.join(", "))
                }
            }
            DirtyReason::Unknown => write!(f, "changed (the previous record is gone)"),
        }
    }
}

/// What a stage would produce now, for comparison with what it produced last.
pub struct Candidate<'a> {
    pub fingerprint: &'a str,
    pub version: u32,
    pub params: &'a serde_json::Value,
    /// Input stage name -> fingerprint.
    pub inputs: &'a [(String, String)],
    pub scan: Option<&'a Scan>,
}

/// The record of the stage's artifact for `now` when it is present (fresh); otherwise
/// every reason it is not.
pub fn explain(cache: &Cache, pipeline: &str, stage: &str, now: &Candidate<'_>) -> Result<Record, Vec<DirtyReason>> {
    match cache.lookup(now.fingerprint) {
        Lookup::Present(record) => return Ok(*record),
        Lookup::Damaged(why) => return Err(vec![DirtyReason::ArtifactMissing(why)]),
        Lookup::Absent => {}
    }
    let Some(last) = cache.last_fingerprint(pipeline, stage) else {
        return Err(vec![DirtyReason::NeverRun]);
    };
    if last == now.fingerprint {
        return Err(vec![DirtyReason::ArtifactMissing(
            "it was removed from the cache".into(),
        )]);
    }
    let Some(old) = cache.record(&last) else {
        return Err(vec![DirtyReason::Unknown]);
    };
    let mut reasons = Vec::new();
    if old.version != now.version {
        reasons.push(DirtyReason::KindVersionChanged {
            old: old.version,
            new: now.version,
        });
    }
    reasons.extend(param_changes(&old.params, now.params));
    for (name, fp) in now.inputs {
        let before = old.inputs.iter().find(|(n, _)| n == name).map(|(_, f)| f);
        if before != Some(fp) {
            reasons.push(DirtyReason::InputChanged { input: name.clone() });
        }
    }
    // A new kind version may digest the file list differently: the version explains it.
    if let Some(scan) = now.scan
        && old.version == now.version
        && old.content.as_deref() != Some(scan.content.as_str())
    {
        reasons.push(files_changed(cache, &old, scan));
    }
    if reasons.is_empty() {
        reasons.push(DirtyReason::Unknown);
    }
    Err(reasons)
}

fn param_changes(old: &serde_json::Value, new: &serde_json::Value) -> Vec<DirtyReason> {
    let empty = serde_json::Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let keys: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let show = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => "(unset)".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(a)) => {
            format!("[{}]", a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
        }
        Some(v) => v.to_string(),
    };
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| DirtyReason::ParamChanged {
            name: k.clone(),
            old: show(o.get(k)),
            new: show(n.get(k)),
        })
        .collect()
}

/// Compares the previous ingest artifact's rows with a new scan.
fn files_changed(cache: &Cache, old: &Record, scan: &Scan) -> DirtyReason {
    let mut before: BTreeMap<String, (String, String)> = BTreeMap::new();
    let read = reader::for_each_batch(&cache.data_path(&old.fingerprint), &cache.integrity(), |batch| {
        let rows = Rows::from_batch(batch)?;
        for i in 0..rows.len() {
            before.insert(rows.path[i].clone(), (rows.id[i].clone(), rows.class[i].clone()));
        }
        Ok(())
    });
    if read.is_err() {
        return DirtyReason::Unknown;
    }
    let (mut added, mut changed, mut relabeled) = (0, 0, 0);
    for f in &scan.files {
        match before.remove(&f.path) {
            None => added += 1,
            Some((id, class)) => {
                if id != f.sha256() {
                    changed += 1;
                } else if class != scan.classes[f.label] {
                    relabeled += 1;
                }
            }
        }
    }
    DirtyReason::FilesChanged {
        added,
        removed: before.len(),
        changed,
        relabeled,
    }
}

/// Joins reasons for one line of output.
pub fn join(reasons: &[DirtyReason]) -> String {
    reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::Format;
    use crate::cache::store::tests::{put, temp_cache};
    use serde_json::json;

    fn param(name: &str, old: &str, new: &str) -> DirtyReason {
        DirtyReason::ParamChanged {
            name: name.into(),
            old: old.into(),
            new: new.into(),
        }
    }

    fn files(added: usize, removed: usize, changed: usize, relabeled: usize) -> DirtyReason {
        DirtyReason::FilesChanged {
            added,
            removed,
            changed,
            relabeled,
        }
    }

    #[test]
    fn every_reason_reads_as_the_user_sees_it() {
        let cases = [
            (DirtyReason::NeverRun, "never run"),
            (DirtyReason::Forced, "forced"),
            (
                DirtyReason::ArtifactMissing("its data file is missing".into()),
                "cached artifact unusable: its data file is missing",
            ),
            (
                DirtyReason::KindVersionChanged { old: 1, new: 2 },
                "stage kind version changed 1 -> 2",
            ),
            (
                param("size", "[64, 64]", "[96, 96]"),
                "param size changed [64, 64] -> [96, 96]",
            ),
            (
                DirtyReason::InputChanged { input: "split".into() },
                "input split changed",
            ),
            (files(1, 0, 0, 0), "1 file added"),
            (
                files(2, 3, 1, 4),
                "2 files added, 1 file changed, 3 files removed, 4 files relabeled",
            ),
            (files(0, 0, 0, 0), "file list changed"),
            (DirtyReason::Unknown, "changed (the previous record is gone)"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text, "{reason:?}");
        }
        assert_eq!(join(&[DirtyReason::Forced, DirtyReason::NeverRun]), "forced; never run");
    }

    /// A candidate for `resize` of pipeline `p` with these items.
    fn explain_now(
        cache: &Cache,
        fingerprint: &str,
        version: u32,
        params: &serde_json::Value,
        inputs: &[(String, String)],
    ) -> Result<Record, Vec<DirtyReason>> {
        let now = Candidate {
            fingerprint,
            version,
            params,
            inputs,
            scan: None,
        };
        explain(cache, "p", "resize", &now)
    }

    fn inputs(fp: &str) -> Vec<(String, String)> {
        vec![("split".to_string(), fp.to_string())]
    }

    #[test]
    fn a_changed_version_params_and_input_are_each_named() {
        let (_dir, cache) = temp_cache();
        put(
            &cache,
            "old",
            b"data",
            1,
            json!({"size": [8, 8], "filter": "bilinear"}),
            &[("split", "s1")],
        );
        cache.set_last_fingerprint("p", "resize", "old").unwrap();
        let params = json!({"size": [16, 16], "filter": "bilinear", "fill": 0});
        let reasons = explain_now(&cache, "new", 2, &params, &inputs("s2")).unwrap_err();
        assert_eq!(
            reasons,
            [
                DirtyReason::KindVersionChanged { old: 1, new: 2 },
                param("fill", "(unset)", "0"),
                param("size", "[8, 8]", "[16, 16]"),
                DirtyReason::InputChanged { input: "split".into() },
            ]
        );
        assert_eq!(
            join(&reasons),
            "stage kind version changed 1 -> 2; param fill changed (unset) -> 0; \
             param size changed [8, 8] -> [16, 16]; input split changed"
        );
    }

    #[test]
    fn a_present_artifact_is_fresh() {
        let (_dir, cache) = temp_cache();
        let params = json!({"size": [8, 8]});
        let record = put(&cache, "old", b"data", 1, params.clone(), &[("split", "s1")]);
        assert_eq!(explain_now(&cache, "old", 1, &params, &inputs("s1")), Ok(record));
    }

    #[test]
    fn a_stage_without_a_usable_past_says_why() {
        let (_dir, cache) = temp_cache();
        let params = json!({"size": [8, 8]});
        let explained = |fp: &str| explain_now(&cache, fp, 1, &params, &inputs("s1")).unwrap_err();
        assert_eq!(explained("old"), [DirtyReason::NeverRun]);

        put(&cache, "old", b"data", 1, params.clone(), &[("split", "s1")]);
        cache.set_last_fingerprint("p", "resize", "old").unwrap();
        std::fs::write(cache.data_file("old", Format::Report), b"DATA").unwrap();
        assert_eq!(
            explained("old"),
            [DirtyReason::ArtifactMissing(
                "its data file does not match its recorded BLAKE3 checksum".into()
            )]
        );

        std::fs::remove_file(cache.root().join("artifacts/old.json")).unwrap();
        assert_eq!(
            explained("old"),
            [DirtyReason::ArtifactMissing("it was removed from the cache".into())]
        );
        assert_eq!(explained("new"), [DirtyReason::Unknown]);
    }
}
