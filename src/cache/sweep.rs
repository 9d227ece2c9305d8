//! What `cache gc` takes out of a shared cache on object storage, where no lock orders the
//! machines that use it: a run elsewhere may be uploading or reading while `gc` looks.
//!
//! So nothing younger than a grace period (longer than any run) goes, and nothing a kept
//! record references:
//!
//! | object | removed when |
//! |---|---|
//! | an artifact's record and data | no given pipeline needs it, no kept record reads it (as an input, or as the segment or stored artifact holding its pixels), and its record is older than the grace period (and, with `--keep-recent`, older than that too) |
//! | a data object no record names | it is older than the grace period: what a run killed between data and record left, or the loser of a race |
//! | a record that is not one | it is older than the grace period |
//! | an upload in parts never finished | its note (`uploads/`) is older than the grace period: the upload is aborted, dropping its parts |
//!
//! A run writing now makes objects younger than the grace period, so it loses nothing. A
//! record goes before its data, so a reader never trusts an artifact whose data went first;
//! one that read a record just before it went finds the data gone or damaged, and recomputes.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use anyhow::Result;

use crate::cache::remote::record_key;
use crate::cache::store::{Cache, Record};

/// What `cache gc` may take out of a shared cache.
#[derive(Debug)]
pub enum SharedGarbage {
    /// A committed artifact: record, then data.
    Artifact(Box<Record>),
    /// An object no record commits (data of a killed run or a lost race, a broken record).
    Orphan { key: String, bytes: u64, age: Duration },
    /// An upload in parts a process never finished, by its note's key.
    Upload { marker: String, age: Duration },
}

impl SharedGarbage {
    /// The bytes removing it frees (unknown for an upload's parts: 0).
    pub fn bytes(&self) -> u64 {
        match self {
            SharedGarbage::Artifact(r) => r.bytes,
            SharedGarbage::Orphan { bytes, .. } => *bytes,
            SharedGarbage::Upload { .. } => 0,
        }
    }
}

/// What a look at a shared cache found: what may go, and how many artifacts stay.
#[derive(Debug, Default)]
pub struct Sweep {
    pub garbage: Vec<SharedGarbage>,
    pub kept: usize,
}

/// Whether `key` names a record (`artifacts/<64 hex digits>.json`), and of which fingerprint.
fn record_fingerprint(key: &str) -> Option<&str> {
    let fp = key.strip_prefix("artifacts/")?.strip_suffix(".json")?;
    (fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit())).then_some(fp)
}

/// The artifacts `record` reads: its inputs, and the segments holding its pixels. A view's
/// stored artifact is one of its inputs' (its lineage starts the view's), so following inputs
/// reaches it.
fn references(record: &Record) -> impl Iterator<Item = &str> {
    let segments = record.summary["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str());
    record.inputs.iter().map(|(_, fp)| fp.as_str()).chain(segments)
}

impl Cache {
    /// What may go from the shared cache behind this one (`None` without one): `needed` and
    /// what was made after `recent` stay, with everything they reference, and everything
    /// younger than `grace`.
    pub fn shared_garbage(
        &self,
        needed: &BTreeSet<String>,
        recent: Option<SystemTime>,
        grace: Duration,
    ) -> Result<Option<Sweep>> {
        let Some(remote) = self.shared_storage() else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        let listing = remote.list("artifacts")?;
        let mut records: HashMap<String, (Record, SystemTime)> = HashMap::new();
        let mut out = Sweep::default();
        for (key, bytes, modified) in &listing {
            let Some(fp) = record_fingerprint(key) else { continue };
            match remote.get(key)?.map(|t| Record::shared(&t, fp)) {
                Some(Some(r)) => {
                    records.insert(fp.to_string(), (r, *modified));
                }
                // Gone since the listing: nothing to do.
                None => {}
                Some(_) if age(*modified) >= grace => out.garbage.push(SharedGarbage::Orphan {
                    key: key.clone(),
                    bytes: *bytes,
                    age: age(*modified),
                }),
                Some(_) => {}
            }
        }
        // Kept: what the files need, what is young or recent, and what those read.
        let mut stack: Vec<String> = records
            .iter()
            .filter(|(fp, (_, modified))| {
                needed.contains(*fp) || age(*modified) < grace || recent.is_some_and(|r| *modified >= r)
            })
            .map(|(fp, _)| fp.clone())
            .collect();
        let mut kept = BTreeSet::new();
        while let Some(fp) = stack.pop() {
            if !kept.insert(fp.clone()) {
                continue;
            }
            if let Some((record, _)) = records.get(&fp) {
                stack.extend(references(record).map(String::from));
            }
        }
        // Data objects the records name (records themselves were sorted out above).
        let named: BTreeSet<String> = records.values().map(|(r, _)| r.shared_data_key()).collect();
        for (key, bytes, modified) in &listing {
            if !named.contains(key) && record_fingerprint(key).is_none() && age(*modified) >= grace {
                out.garbage.push(SharedGarbage::Orphan {
                    key: key.clone(),
                    bytes: *bytes,
                    age: age(*modified),
                });
            }
        }
        let mut gone: Vec<Record> = records
            .into_values()
            .map(|(r, _)| r)
            .filter(|r| !kept.contains(&r.fingerprint))
            .collect();
        gone.sort_by(|a, b| (&a.pipeline, &a.stage, &a.fingerprint).cmp(&(&b.pipeline, &b.stage, &b.fingerprint)));
        out.kept = kept.len();
        out.garbage
            .extend(gone.into_iter().map(|r| SharedGarbage::Artifact(Box::new(r))));
        for (marker, _, modified) in remote.list("uploads")? {
            if age(modified) >= grace {
                out.garbage.push(SharedGarbage::Upload {
                    marker,
                    age: age(modified),
                });
            }
        }
        Ok(Some(out))
    }

    /// Removes what [`Cache::shared_garbage`] found from the shared cache: an artifact's
    /// record first, so no reader trusts it once its data may be going.
    pub fn remove_shared(&self, garbage: &SharedGarbage) -> Result<()> {
        let Some(remote) = self.shared_storage() else {
            return Ok(());
        };
        match garbage {
            SharedGarbage::Artifact(r) => {
                remote.delete(&record_key(&r.fingerprint))?;
                remote.delete(&r.shared_data_key())
            }
            SharedGarbage::Orphan { key, .. } => remote.delete(key),
            SharedGarbage::Upload { marker, .. } => remote.abort_upload(marker),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::cache::remote::Url;
    use crate::cache::store::tests::put;

    fn fp(c: char) -> String {
        c.to_string().repeat(64)
    }

    /// Makes every object of the shared folder whose key starts with `key` look `hours` old.
    fn age(shared: &Path, key: &str, hours: u64) {
        let (dir, name) = key.rsplit_once('/').unwrap();
        for entry in fs::read_dir(shared.join(dir)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().starts_with(name) {
                let file = fs::File::options().write(true).open(entry.path()).unwrap();
                file.set_modified(SystemTime::now() - Duration::from_secs(hours * 3600))
                    .unwrap();
            }
        }
    }

    /// Names what a sweep would take, sorted: `artifact <fp char>`, `orphan <key>`, `upload <key>`.
    fn names(sweep: &Sweep) -> Vec<String> {
        let mut out: Vec<String> = sweep
            .garbage
            .iter()
            .map(|g| match g {
                SharedGarbage::Artifact(r) => format!("artifact {}", &r.fingerprint[..1]),
                SharedGarbage::Orphan { key, .. } => format!("orphan {key}"),
                SharedGarbage::Upload { marker, .. } => format!("upload {marker}"),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn only_what_is_old_unneeded_and_unread_by_what_stays_goes() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let url = Url::parse(&format!("file://{}", shared.display())).unwrap();
        let cache = Cache::open_with(&dir.path().join("cache"), Some(&url)).unwrap();
        let none = serde_json::json!({});
        // a: needed. b: read by c, which is young. d: unneeded, reads e. f: made recently.
        for (c, inputs) in [('a', vec![]), ('b', vec![]), ('e', vec![]), ('f', vec![])] {
            put(&cache, &fp(c), c.to_string().as_bytes(), 1, none.clone(), &inputs);
        }
        put(&cache, &fp('c'), b"c", 1, none.clone(), &[("b", &fp('b'))]);
        put(&cache, &fp('d'), b"d", 1, none.clone(), &[("e", &fp('e'))]);
        for c in ['a', 'b', 'd', 'e'] {
            age(&shared, &format!("artifacts/{}", fp(c)), 48);
        }
        age(&shared, &format!("artifacts/{}", fp('f')), 30);
        // Data a killed run left (old, and young: still being written), a broken record, the
        // note of an upload that never finished, and one of an upload still running.
        let old_data = format!("artifacts/{}.0123.arrow", fp('9'));
        let young_data = format!("artifacts/{}.4567.arrow", fp('8'));
        let broken = format!("artifacts/{}.json", fp('7'));
        fs::write(shared.join(&old_data), b"half").unwrap();
        fs::write(shared.join(&young_data), b"half").unwrap();
        fs::write(shared.join(&broken), b"{").unwrap();
        fs::create_dir_all(shared.join("uploads")).unwrap();
        fs::write(shared.join("uploads/old.json"), b"{}").unwrap();
        fs::write(shared.join("uploads/new.json"), b"{}").unwrap();
        for key in [&old_data, &broken, &"uploads/old.json".to_string()] {
            age(&shared, key, 25);
        }

        let needed: BTreeSet<String> = [fp('a')].into();
        let day = Duration::from_secs(24 * 3600);
        let sweep = cache.shared_garbage(&needed, None, day).unwrap().unwrap();
        let expected = [
            "artifact d".to_string(),
            "artifact e".to_string(),
            "artifact f".to_string(),
            format!("orphan {old_data}"),
            format!("orphan {broken}"),
            "upload uploads/old.json".to_string(),
        ];
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(names(&sweep), expected);
        assert_eq!(sweep.kept, 3, "a, c and what c reads, b");
        // With --keep-recent 2 (days), f stays; with a grace of 60 hours, all but the orphans'
        // young relatives do.
        let two_days = SystemTime::now() - Duration::from_secs(48 * 3600 - 60);
        let recent = cache.shared_garbage(&needed, Some(two_days), day).unwrap().unwrap();
        assert!(
            !names(&recent).contains(&"artifact f".to_string()),
            "{:?}",
            names(&recent)
        );
        let long = cache
            .shared_garbage(&needed, None, Duration::from_secs(60 * 3600))
            .unwrap()
            .unwrap();
        assert!(long.garbage.is_empty(), "{:?}", names(&long));

        for g in &sweep.garbage {
            cache.remove_shared(g).unwrap();
        }
        let mut left: Vec<String> = fs::read_dir(shared.join("artifacts"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy()[..1].to_string())
            .collect();
        left.sort();
        // a, b, c (record and data each) and the young data.
        assert_eq!(left, ["8", "a", "a", "b", "b", "c", "c"]);
        assert!(shared.join("uploads/new.json").exists() && !shared.join("uploads/old.json").exists());
        let again = cache.shared_garbage(&needed, None, day).unwrap().unwrap();
        assert!(again.garbage.is_empty(), "{:?}", names(&again));
    }
}
