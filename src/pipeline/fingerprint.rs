//! Stage fingerprints: the name of an artifact in the cache.
//!
//! A fingerprint is the SHA-256 (hex) of a canonical JSON document built from exactly these
//! items, so that two runs that would compute the same output name the same artifact, and any
//! change that could alter the output names a different one:
//!
//! | item                | why it is there                                                   |
//! |---------------------|-------------------------------------------------------------------|
//! | format version      | a change to this encoding must not reuse old artifacts            |
//! | stage kind          | different kinds compute different things from the same input      |
//! | kind version        | bumped whenever a kind's output for the same input would change   |
//! | params (normalized) | all params with defaults filled in, typed, keys sorted, numbers in shortest round-trip form, so `0.5`/`5e-1` and key order do not matter |
//! | input fingerprints  | in input order: a changed upstream artifact changes everything downstream |
//! | content (`ingest`)  | BLAKE3 over the list of (relative path, SHA-256 of the file's bytes, label), sorted by path: the data itself |
//!
//! Deliberately **not** hashed: modification times, absolute paths (moving a project or its
//! data folder keeps its cache valid), the stage's name (renaming a stage reuses its
//! artifact), the pipeline's name, and the ingest folder's path (content is what matters).
//! Modification times and inodes only serve the stat cache, to skip re-hashing files that
//! did not change; the content hash stays the truth.

use std::collections::BTreeMap;

use crate::data::hash::sha256_hex;

/// Version of the fingerprint encoding itself.
pub const FORMAT: u32 = 1;

/// Computes a stage's fingerprint from its kind, version, canonical params, input
/// fingerprints and (for `ingest`) content hash.
pub fn stage(kind: &str, version: u32, params: &serde_json::Value, inputs: &[&str], content: Option<&str>) -> String {
    let doc = serde_json::json!({
        "format": FORMAT,
        "kind": kind,
        "version": version,
        "params": params,
        "inputs": inputs,
        "content": content,
    });
    sha256_hex(crate::pipeline::fingerprint::canonical(&doc).as_bytes())
}

/// Canonical JSON of a value for fingerprints: object keys sorted (serde_json's map is a
/// BTreeMap), numbers in serde_json's shortest round-trip form.
pub fn canonical(value: &serde_json::Value) -> String {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_number_format_do_not_matter() {
        let a: serde_json::Value = serde_json::from_str(r#"{"size":[32,32],"scale":0.5}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"scale":5e-1,"size":[32,32]}"#).unwrap();
        assert_eq!(
            stage("resize", 1, &a, &["x"], None),
            stage("resize", 1, &b, &["x"], None)
        );
        assert_ne!(
            stage("resize", 1, &a, &["x"], None),
            stage("resize", 2, &a, &["x"], None)
        );
        assert_ne!(
            stage("resize", 1, &a, &["x"], None),
            stage("resize", 1, &a, &["y"], None)
        );
    }
}
